"""Config as code: ``manage.py gateway_config apply|export`` (see DESIGN.md, "Config as code").

``config_apply`` validates a whole document (reporting every error with its YAML path)
and applies it in one transaction through the apps' services; ``config_export`` returns
the stored configuration in the same shape, without secrets.
"""

from apps.core.configfile.apply import config_apply
from apps.core.configfile.export import config_export
from apps.core.configfile.report import ApplyReport, Change, GeneratedSecret
from apps.core.configfile.schema import KEEP_CURRENT
from apps.core.configfile.yamlio import ConfigSyntaxError, dump_yaml, load_yaml

__all__ = [
    "KEEP_CURRENT",
    "ApplyReport",
    "Change",
    "ConfigSyntaxError",
    "GeneratedSecret",
    "config_apply",
    "config_export",
    "dump_yaml",
    "load_yaml",
]
