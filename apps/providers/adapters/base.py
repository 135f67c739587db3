"""The adapter interface and its registry.

An adapter speaks one provider's wire format and translates to and from the OpenAI
chat format the gateway uses internally. Adapters are stateless singletons; the
per-call facts (URL, credential, upstream model) come in a :class:`Target`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from apps.core.errors import ProviderError


@dataclass(frozen=True, slots=True)
class Target:
    """Everything an adapter needs to call one deployment."""

    provider_name: str
    kind: str
    base_url: str
    credential: str
    upstream_model: str
    options: dict[str, Any] = field(default_factory=dict)
    timeout: float = 60.0
    deployment_id: int | None = None
    provider_id: int | None = None


class ProviderAdapter:
    """Base class: subclasses set ``kind`` and ``label`` and implement the calls they support.

    ``chat`` returns an OpenAI ``chat.completion`` object; ``stream_chat`` yields OpenAI
    ``chat.completion.chunk`` objects, the last carrying ``usage`` when the provider
    reports it. Every failure is a :class:`ProviderError`.
    """

    kind: ClassVar[str]
    label: ClassVar[str]
    default_base_url: ClassVar[str] = ""
    #: Stripped from the end of a configured base URL, in order: the version or API prefix
    #: people copy along from other SDKs' examples.
    base_url_suffixes: ClassVar[tuple[str, ...]] = ()
    supports_embeddings: ClassVar[bool] = False

    def api_base(self, target: Target) -> str:
        """The base URL without a trailing slash or any of ``base_url_suffixes``."""
        base = (target.base_url or self.default_base_url).rstrip("/")
        for suffix in self.base_url_suffixes:
            base = base.removesuffix(suffix)
        return base

    def url(self, target: Target, path: str) -> str:
        return self.api_base(target) + path

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(f"{self.label} does not support chat", status=400, code="unsupported")

    def stream_chat(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise ProviderError(
            f"{self.label} does not support streaming", status=400, code="unsupported"
        )

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(
            f"{self.label} does not offer embeddings",
            status=400,
            code="unsupported",
            type="invalid_request_error",
        )

    async def list_models(self, target: Target) -> list[str]:
        raise ProviderError(f"{self.label} cannot list models", status=400, code="unsupported")

    async def check(self, target: Target) -> str:
        """A free call proving the provider answers and accepts the credential."""
        models = await self.list_models(target)
        return f"ok: {len(models)} model(s) available"


class AdapterRegistry:
    def __init__(self) -> None:
        self._adapters: dict[str, ProviderAdapter] = {}
        self._frozen = False

    def register(self, cls: type[ProviderAdapter]) -> type[ProviderAdapter]:
        if self._frozen:
            raise RuntimeError(f"adapter registry is frozen; cannot register {cls.kind}")
        if cls.kind in self._adapters:
            raise RuntimeError(f"adapter kind {cls.kind!r} registered twice")
        self._adapters[cls.kind] = cls()
        return cls

    def freeze(self) -> None:
        self._frozen = True

    def get(self, kind: str) -> ProviderAdapter:
        try:
            return self._adapters[kind]
        except KeyError:
            raise ProviderError(
                f"no adapter for provider kind {kind!r}", status=500, code="unknown_provider_kind"
            )

    def kinds(self) -> list[str]:
        return sorted(self._adapters)

    def choices(self) -> list[tuple[str, str]]:
        return [(kind, self._adapters[kind].label) for kind in self.kinds()]


registry = AdapterRegistry()
register: Callable[[type[ProviderAdapter]], type[ProviderAdapter]] = registry.register


def kind_choices() -> list[tuple[str, str]]:
    """``Provider.kind`` choices: whatever kinds are registered."""
    return registry.choices()
