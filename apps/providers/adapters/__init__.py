"""Provider adapters: one module per kind, registered on import."""

from apps.providers.adapters import (  # noqa: F401  (registers the kinds)
    anthropic,
    azure_openai,
    cohere,
    gemini,
    mock,
    ollama,
    openai,
)
from apps.providers.adapters.base import ProviderAdapter, Target, register, registry

__all__ = ["ProviderAdapter", "Target", "register", "registry"]
