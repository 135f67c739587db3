"""Azure OpenAI: OpenAI's wire format behind per-deployment URLs, an ``api-key`` and an API version.

``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``), as the
``AzureOpenAI`` client's ``azure_endpoint`` takes it; the deployment is the
deployment's ``upstream_model``. Options: ``api_version`` (default ``2024-10-21``, the
current GA data-plane version), ``auth: "bearer"`` to send the credential as a
Microsoft Entra ID token instead of an ``api-key``, ``headers``.

Content filtering, decided here once:
- a filtered *completion* is already OpenAI's vocabulary (``finish_reason:
  "content_filter"``) and passes through unchanged, with Azure's
  ``content_filter_results`` beside it;
- a filtered *prompt* (HTTP 400, ``code: "content_filter"``) becomes the gateway's
  own content-policy error: 400, ``invalid_request_error``,
  ``code: "content_policy_violation"``, ``param: "prompt"`` — the same error the
  gateway's guardrails raise, so clients handle one code whichever side blocked;
- the stream's prompt-annotation chunk (empty ``choices``, ``prompt_filter_results``)
  is dropped: it carries nothing an OpenAI client expects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from apps.core.errors import ProviderError
from apps.providers.adapters import _common as common
from apps.providers.adapters.base import Target, register
from apps.providers.adapters.openai import OpenAIAdapter

API_VERSION = "2024-10-21"
FILTER_CODES = frozenset({"content_filter", "ResponsibleAIPolicyViolation"})


def content_filter_error(exc: ProviderError) -> ProviderError:
    """Azure's prompt filter (400 ``content_filter``) as the gateway's content-policy error."""
    if exc.status == 400 and exc.code in FILTER_CODES:
        return ProviderError(
            exc.message,
            status=400,
            code="content_policy_violation",
            type="invalid_request_error",
            param="prompt",
        )
    return exc


@register
class AzureOpenAIAdapter(OpenAIAdapter):
    kind = "azure_openai"
    label = "Azure OpenAI"
    default_base_url = ""
    base_url_suffixes = ("/openai",)
    supports_embeddings = True

    def url(self, target: Target, path: str) -> str:
        base = self.api_base(target)
        version = quote(str(target.options.get("api_version") or API_VERSION), safe="")
        if path == "/models":
            return f"{base}/openai/models?api-version={version}"
        deployment = quote(target.upstream_model, safe="")
        return f"{base}/openai/deployments/{deployment}{path}?api-version={version}"

    def _headers(self, target: Target) -> dict[str, str]:
        if target.options.get("auth") == "bearer":
            return common.request_headers(target, {"authorization": f"Bearer {target.credential}"})
        return common.request_headers(target, {"api-key": target.credential})

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await super().chat(target, body)
        except ProviderError as exc:
            raise content_filter_error(exc)
        result.pop("prompt_filter_results", None)
        return result

    async def stream_chat(
        self, target: Target, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        stream = super().stream_chat(target, body)
        try:
            async for chunk in stream:
                if not chunk.get("choices") and not chunk.get("usage"):
                    continue
                yield chunk
        except ProviderError as exc:
            raise content_filter_error(exc)
        finally:
            await stream.aclose()
