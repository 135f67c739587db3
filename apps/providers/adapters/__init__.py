"""Provider adapters: one module per kind, registered on import."""

from apps.providers.adapters import mock, openai  # noqa: F401  (registers the kinds)
from apps.providers.adapters.base import ProviderAdapter, Target, register, registry

__all__ = ["ProviderAdapter", "Target", "register", "registry"]
