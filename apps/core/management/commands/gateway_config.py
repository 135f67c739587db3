"""Config as code: ``gateway_config apply FILE.yaml`` and ``gateway_config export``."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management import BaseCommand, CommandError

from apps.audit.context import audit_context
from apps.audit.models import Source
from apps.core.configfile import (
    KEEP_CURRENT,
    ApplyReport,
    ConfigSyntaxError,
    config_apply,
    config_export,
    dump_yaml,
    load_yaml,
)

EXPORT_HEADER = f"""\
# LLM gateway configuration, exported by `manage.py gateway_config export`.
# Secrets are never exported: keys' secrets and signing secrets are left out (apply keeps
# the stored ones), and a provider credential stored encrypted is shown as
# api_key: "{KEEP_CURRENT}", which apply reads as "keep the stored credential".
"""


class Command(BaseCommand):
    help = "Apply a YAML configuration file (providers, models, tenants, keys) or export one."
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="{apply,export}")
        apply = sub.add_parser(
            "apply",
            help="Create or update what the file describes, all or nothing.",
            description="Validate FILE completely, then apply it in one transaction.",
        )
        apply.add_argument("file", help="YAML file to apply; '-' reads standard input.")
        apply.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would change, then roll everything back.",
        )
        apply.add_argument(
            "--prune",
            action="store_true",
            help=(
                "Also delete platform providers/models, tenants and keys that the file does not "
                "list (only in the sections the file contains; keys only for tenants that list "
                "keys). Deleting a tenant deletes its keys and data. Try --dry-run first."
            ),
        )
        export = sub.add_parser("export", help="Print the current configuration as YAML.")
        export.add_argument("--output", "-o", help="Write to this file instead of stdout.")

    def handle(self, *args, action: str, **options):
        if action == "apply":
            # The audit trail shows these changes as config as code's.
            with audit_context(actor="config", source=Source.CONFIG):
                self._apply(
                    options["file"],
                    dry_run=options["dry_run"],
                    prune=options["prune"],
                    stdin=options.get("stdin"),
                )
        else:
            self._export(options.get("output"))

    def _read(self, name: str, stdin) -> str:
        if name == "-":
            return (stdin or sys.stdin).read()
        try:
            return Path(name).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {name}: {exc.strerror}")

    def _apply(self, name: str, *, dry_run: bool, prune: bool, stdin) -> None:
        try:
            data = load_yaml(self._read(name, stdin), source="<stdin>" if name == "-" else name)
        except ConfigSyntaxError as exc:
            raise CommandError(str(exc))
        report = config_apply(data=data, dry_run=dry_run, prune=prune)
        self._print(report)
        if not report.ok:
            raise CommandError(report.summary())

    def _print(self, report: ApplyReport) -> None:
        for error in report.errors:
            self.stderr.write(self.style.ERROR(f"error: {error}"))
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        if not report.ok:
            return
        styles = {
            "created": self.style.SUCCESS,
            "updated": self.style.WARNING,
            "deleted": self.style.ERROR,
        }
        for change in report.changes:
            style = styles.get(change.action)
            line = change.line()
            self.stdout.write(style(line) if style else line)
        if report.generated_secrets:
            self.stdout.write("")
            self.stdout.write(
                self.style.WARNING("New key secrets (shown once, never again: store them now):")
            )
            for generated in report.generated_secrets:
                self.stdout.write(f"  SECRET {generated.key}: {generated.secret}")
            self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(report.summary()))

    def _export(self, output: str | None) -> None:
        text = EXPORT_HEADER + dump_yaml(config_export())
        if output:
            try:
                Path(output).write_text(text)
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc.strerror}")
            self.stderr.write(f"Exported to {output}")
        else:
            self.stdout.write(text, ending="")
