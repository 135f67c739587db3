"""OpenAI and every server that speaks its API (vLLM, Ollama's /v1, Groq, Together, …)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from apps.core.errors import ProviderError
from apps.providers.adapters import _common as common
from apps.providers.adapters.base import ProviderAdapter, Target, register
from apps.providers.http import get_client, iter_sse_data, transport_error

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# Upstream statuses the client can act on pass through; the rest become gateway errors.
PASS_THROUGH = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def parse_retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


def error_from_response(
    provider: str, status: int, content: bytes, headers: httpx.Headers
) -> ProviderError:
    """An upstream error response in the OpenAI error shape, from the gateway's point of view."""
    message = ""
    upstream_code = None
    try:
        payload = orjson.loads(content)
        err = payload.get("error", payload) if isinstance(payload, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            upstream_code = err.get("code")
        elif isinstance(err, str):
            message = err
    except orjson.JSONDecodeError:
        message = content[:300].decode(errors="replace").strip()
    message = message or f"HTTP {status}"
    retry_after = parse_retry_after(headers)
    retryable = status in RETRYABLE_STATUSES
    if status in PASS_THROUGH:
        out_headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
        return ProviderError(
            f"provider {provider}: {message}",
            status=status,
            retryable=retryable,
            retry_after=retry_after,
            code=str(upstream_code)
            if upstream_code
            else ("upstream_rate_limited" if status == 429 else "upstream_invalid_request"),
            type=PASS_THROUGH[status],
            headers=out_headers,
        )
    if status in (401, 403):
        return ProviderError(
            f"provider {provider} rejected the gateway's credential ({status})",
            status=502,
            code="upstream_auth_error",
        )
    if status in (503, 529):
        return ProviderError(
            f"provider {provider} is unavailable: {message}",
            status=503,
            retryable=True,
            retry_after=retry_after,
            code="upstream_unavailable",
        )
    if status == 408 or status == 504:
        return ProviderError(
            f"provider {provider} timed out: {message}",
            status=504,
            retryable=True,
            code="upstream_timeout",
        )
    return ProviderError(
        f"provider {provider} failed with HTTP {status}: {message}",
        status=502,
        retryable=retryable,
        retry_after=retry_after,
        code="upstream_error",
    )


@register
class OpenAIAdapter(ProviderAdapter):
    kind = "openai"
    label = "OpenAI / OpenAI-compatible"
    default_base_url = "https://api.openai.com/v1"
    supports_embeddings = True

    def _headers(self, target: Target) -> dict[str, str]:
        organization = target.options.get("organization")
        return common.request_headers(
            target,
            {"authorization": f"Bearer {target.credential}"},
            {"openai-organization": organization} if organization else None,
        )

    async def _post_json(
        self, target: Target, path: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            response = await get_client().post(
                self.url(target, path),
                content=orjson.dumps(payload),
                headers=self._headers(target),
                timeout=target.timeout,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, target.provider_name)
        if response.status_code >= 400:
            raise error_from_response(
                target.provider_name, response.status_code, response.content, response.headers
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProviderError(
                f"provider {target.provider_name} returned invalid JSON", status=502, retryable=True
            )

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        payload = {**body, "model": target.upstream_model, "stream": False}
        payload.pop("stream_options", None)
        return await self._post_json(target, "/chat/completions", payload)

    async def stream_chat(
        self, target: Target, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        # Always ask for usage: accounting needs it whether or not the client does.
        payload = {
            **body,
            "model": target.upstream_model,
            "stream": True,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        try:
            async with get_client().stream(
                "POST",
                self.url(target, "/chat/completions"),
                content=orjson.dumps(payload),
                headers={**self._headers(target), "accept": "text/event-stream"},
                timeout=target.timeout,
            ) as response:
                if response.status_code >= 400:
                    content = await response.aread()
                    raise error_from_response(
                        target.provider_name, response.status_code, content, response.headers
                    )
                async for data in iter_sse_data(response):
                    if data == "[DONE]":
                        return
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise ProviderError(
                            f"provider {target.provider_name} sent an invalid stream event",
                            status=502,
                        )
                    if isinstance(event, dict) and "error" in event:
                        err = (
                            event["error"]
                            if isinstance(event["error"], dict)
                            else {"message": str(event["error"])}
                        )
                        raise ProviderError(
                            f"provider {target.provider_name}: {err.get('message', 'stream error')}",
                            status=502,
                            code=err.get("code") or "upstream_stream_error",
                        )
                    yield event
        except httpx.HTTPError as exc:
            raise transport_error(exc, target.provider_name)

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_json(
            target, "/embeddings", {**body, "model": target.upstream_model}
        )

    async def list_models(self, target: Target) -> list[str]:
        try:
            response = await get_client().get(
                self.url(target, "/models"),
                headers=self._headers(target),
                timeout=min(target.timeout, 15.0),
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, target.provider_name)
        if response.status_code >= 400:
            raise error_from_response(
                target.provider_name, response.status_code, response.content, response.headers
            )
        data = orjson.loads(response.content).get("data", [])
        return [m["id"] for m in data if isinstance(m, dict) and "id" in m]
