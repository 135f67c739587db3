"""Helpers shared by the adapters that translate to a provider's own wire format.

The HTTP plumbing (pooled client, status check, transport-error mapping), one policy
for turning an upstream status into what the client sees, and builders for the
OpenAI shapes (``chat.completion``, ``chat.completion.chunk``, usage) the gateway
speaks internally.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from apps.core.errors import ProviderError
from apps.providers.adapters.base import Target
from apps.providers.http import get_client, transport_error

ErrorMapper = Callable[[int, bytes, httpx.Headers], ProviderError]

DEFAULT_MAX_TOKENS = 4096


# --- errors -------------------------------------------------------------------------


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue
    return None


def upstream_error(
    provider: str,
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    code: str | None = None,
) -> ProviderError:
    """One policy for every translating adapter: what an upstream status means to the client.

    The client's own mistakes (400, 404, 413, 422) and rate limits (429, with
    ``Retry-After``) pass through; a rejected credential is the gateway's problem (502);
    an overloaded or unavailable upstream (503, Anthropic's 529) is a retryable 503;
    timeouts are 504; any other failure is a 502, retryable when it was a 5xx.
    """
    message = message or f"HTTP {status}"
    if status in (400, 404, 413, 422):
        return ProviderError(
            f"provider {provider}: {message}",
            status=status,
            code=code or "upstream_invalid_request",
            type="invalid_request_error",
        )
    if status == 429:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
        return ProviderError(
            f"provider {provider}: {message}",
            status=429,
            retryable=True,
            retry_after=retry_after,
            code=code or "upstream_rate_limited",
            type="rate_limit_error",
            headers=headers,
        )
    if status in (401, 403):
        return ProviderError(
            f"provider {provider} rejected the gateway's credential ({status}): {message}",
            status=502,
            code="upstream_auth_error",
        )
    if status in (408, 504):
        return ProviderError(
            f"provider {provider} timed out: {message}",
            status=504,
            retryable=True,
            code="upstream_timeout",
        )
    if status in (503, 529):
        return ProviderError(
            f"provider {provider} is overloaded or unavailable: {message}",
            status=503,
            retryable=True,
            retry_after=retry_after,
            code="upstream_unavailable",
        )
    return ProviderError(
        f"provider {provider} failed with HTTP {status}: {message}",
        status=502,
        retryable=status >= 500 or status == 409,
        retry_after=retry_after,
        code="upstream_error",
    )


def loads_or_none(content: bytes | str) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def invalid_json(provider: str) -> ProviderError:
    return ProviderError(f"provider {provider} returned invalid JSON", status=502, retryable=True)


def unsupported(message: str, param: str | None = None) -> ProviderError:
    """A request the provider cannot express: the client's to change, so a 400."""
    return ProviderError(
        message,
        status=400,
        code="unsupported_parameter" if param else "unsupported_content",
        type="invalid_request_error",
        param=param,
    )


# --- HTTP ---------------------------------------------------------------------------


def request_headers(
    target: Target, auth: dict[str, str], extra: dict[str, str] | None = None
) -> dict[str, str]:
    """JSON headers, the credential's headers (when there is a credential), ``extra``, then
    ``options.headers``."""
    headers = {"content-type": "application/json", "accept": "application/json"}
    if target.credential:
        headers.update(auth)
    headers.update(extra or {})
    for name, value in (target.options.get("headers") or {}).items():
        headers[str(name).lower()] = str(value)
    return headers


async def post_json(
    target: Target,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    on_error: ErrorMapper,
) -> dict[str, Any]:
    try:
        response = await get_client().post(
            url, content=orjson.dumps(payload), headers=headers, timeout=target.timeout
        )
    except httpx.HTTPError as exc:
        raise transport_error(exc, target.provider_name)
    if response.status_code >= 400:
        raise on_error(response.status_code, response.content, response.headers)
    data = loads_or_none(response.content)
    if not isinstance(data, dict):
        raise invalid_json(target.provider_name)
    return data


async def get_json(
    target: Target,
    url: str,
    headers: dict[str, str],
    on_error: ErrorMapper,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    try:
        response = await get_client().get(
            url, headers=headers, params=params, timeout=min(target.timeout, 15.0)
        )
    except httpx.HTTPError as exc:
        raise transport_error(exc, target.provider_name)
    if response.status_code >= 400:
        raise on_error(response.status_code, response.content, response.headers)
    data = loads_or_none(response.content)
    if not isinstance(data, dict):
        raise invalid_json(target.provider_name)
    return data


async def get_pages(
    target: Target,
    url: str,
    headers: dict[str, str],
    on_error: ErrorMapper,
    params: dict[str, Any],
    names: Callable[[dict[str, Any]], Iterable[str]],
    next_params: Callable[[dict[str, Any]], dict[str, Any] | None],
    max_pages: int = 10,
) -> list[str]:
    """GET a paged listing: ``names`` picks one page's entries, ``next_params`` asks for the
    next page (``None`` on the last). Stops after ``max_pages`` so a looping cursor cannot hang
    a health check."""
    found: list[str] = []
    for _page in range(max_pages):
        page = await get_json(target, url, headers, on_error, params=params)
        found.extend(names(page))
        following = next_params(page)
        if following is None:
            break
        params = following
    return found


@asynccontextmanager
async def open_stream(
    target: Target,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    on_error: ErrorMapper,
) -> AsyncIterator[httpx.Response]:
    """POST and hand over the streaming response; transport failures while reading map too."""
    try:
        async with get_client().stream(
            "POST", url, content=orjson.dumps(payload), headers=headers, timeout=target.timeout
        ) as response:
            if response.status_code >= 400:
                content = await response.aread()
                raise on_error(response.status_code, content, response.headers)
            yield response
    except httpx.HTTPError as exc:
        raise transport_error(exc, target.provider_name)


def stream_ended_early(provider: str) -> ProviderError:
    return ProviderError(
        f"provider {provider} ended the stream before the answer was complete",
        status=502,
        retryable=True,
        code="upstream_stream_incomplete",
    )


# --- the OpenAI side ----------------------------------------------------------------


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex[:24]


def usage_object(
    prompt: int,
    completion: int,
    *,
    cached: int | None = None,
    reasoning: int | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if total is not None else prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def assistant_message(text: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if (text or not tool_calls) else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def completion_object(
    *,
    id: str,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    created: int | None = None,
) -> dict[str, Any]:
    """``choices``: dicts with ``message`` and ``finish_reason`` (``index`` defaults to order)."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": choice.get("index", i),
                "message": choice["message"],
                "logprobs": None,
                "finish_reason": choice["finish_reason"],
            }
            for i, choice in enumerate(choices)
        ],
        "usage": usage,
    }


def tool_call(id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ChunkWriter:
    """Builds the ``chat.completion.chunk`` objects of one streamed answer."""

    def __init__(self, model: str, id: str | None = None) -> None:
        self.id = id or new_id()
        self.model = model
        self.created = int(time.time())

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def role(self, index: int = 0) -> dict[str, Any]:
        return self.chunk({"role": "assistant", "content": ""}, index=index)

    def text(self, text: str, index: int = 0) -> dict[str, Any]:
        return self.chunk({"content": text}, index=index)

    def tool_start(
        self, tool_index: int, id: str, name: str, arguments: str = "", index: int = 0
    ) -> dict[str, Any]:
        return self.chunk(
            {
                "tool_calls": [
                    {
                        "index": tool_index,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ]
            },
            index=index,
        )

    def tool_arguments(self, tool_index: int, arguments: str, index: int = 0) -> dict[str, Any]:
        return self.chunk(
            {"tool_calls": [{"index": tool_index, "function": {"arguments": arguments}}]},
            index=index,
        )

    def finish(self, finish_reason: str, index: int = 0) -> dict[str, Any]:
        return self.chunk({}, finish_reason, index=index)

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }


# --- reading OpenAI requests --------------------------------------------------------


def content_parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as a list of OpenAI content parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [part for part in content if isinstance(part, dict)]
    return [{"type": "text", "text": str(content)}]


def text_of(content: Any, sep: str = "\n") -> str:
    """The text of a content value; refusal parts count as text (they were the answer)."""
    if isinstance(content, str):
        return content
    texts = []
    for part in content_parts(content):
        if part.get("type") == "text":
            texts.append(str(part.get("text") or ""))
        elif part.get("type") == "refusal":
            texts.append(str(part.get("refusal") or ""))
    return sep.join(texts)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<media type>;base64,<data>`` → (media type, base64 data); None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise unsupported("Only base64 data URLs are supported for images.", "image_url")
    return header[: -len(";base64")] or "application/octet-stream", data


def image_url_of(part: dict[str, Any]) -> str:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise unsupported("An image_url content part needs a 'url'.", "image_url")
    return url


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string) as the object providers want."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    value = loads_or_none(arguments) if isinstance(arguments, str | bytes) else None
    if not isinstance(value, dict):
        raise ProviderError(
            "tool_calls[].function.arguments must be a JSON object encoded as a string.",
            status=400,
            code="invalid_value",
            type="invalid_request_error",
            param="messages",
        )
    return value


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``function`` objects of the request's tools; other tool types cannot be translated."""
    functions = []
    for tool in body.get("tools") or []:
        if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise unsupported(
                f"Tools of type {tool.get('type')!r} are not supported by this provider.", "tools"
            )
        functions.append(tool["function"])
    return functions


def tool_names_by_id(messages: list[dict[str, Any]]) -> dict[str, str]:
    """tool_call_id → function name, from the assistant turns (providers want the name back)."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[str(call.get("id"))] = str(call["function"].get("name") or "")
    return names


def max_tokens_of(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(value) if value else None


def stop_list(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop or [] if isinstance(s, str)]


def single_choice(body: dict[str, Any], label: str) -> None:
    if int(body.get("n") or 1) > 1:
        raise unsupported(f"{label} returns one choice per request; 'n' must be 1.", "n")


def json_schema_of(body: dict[str, Any]) -> tuple[str, dict[str, Any] | None] | None:
    """``response_format`` as (kind, schema): ("json_object", None), ("json_schema", {...}) or None."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "json_object", None
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return "json_schema", schema if isinstance(schema, dict) else {"type": "object"}
    return None
