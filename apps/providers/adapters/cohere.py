"""Cohere's v2 API (``POST {base_url}/v2/chat``, ``/v2/embed``), translated to and from OpenAI.

Bearer auth. Options: ``embedding_input_type`` (default ``search_document``),
``headers``.

Translation notes:
- the message list keeps its shape (Cohere v2 has system/user/assistant/tool roles);
  an assistant turn's text travels as ``tool_plan`` when it makes tool calls, and
  tool results are ``document`` content, which Cohere can cite;
- ``tool_choice`` "required"/"none" map to ``REQUIRED``/``NONE``; naming one function
  sends only that tool, with ``REQUIRED``;
- a response's ``tool_plan`` (the model's reasoning before calling tools) is the
  message content when it calls tools without other text, streamed likewise;
- usage is ``billed_units`` (what Cohere charges), falling back to ``tokens``;
- ``finish_reason`` ``ERROR``/``TIMEOUT`` are upstream failures: a retryable 502.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx

from apps.core.errors import ProviderError
from apps.providers.adapters import _common as common
from apps.providers.adapters.base import ProviderAdapter, Target, register
from apps.providers.http import iter_sse_data

FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR_TOXIC": "content_filter",
    "ERROR_LIMIT": "length",
}
FAILED = frozenset({"ERROR", "TIMEOUT"})


def error_from_body(
    provider: str, status: int, content: bytes, headers: httpx.Headers
) -> ProviderError:
    """``{"id": ..., "message": ...}`` → :class:`ProviderError`."""
    payload = common.loads_or_none(content)
    if isinstance(payload, dict):
        message = str(payload.get("message") or payload.get("error") or "")
    else:
        message = content[:300].decode(errors="replace").strip()
    return common.upstream_error(
        provider, status, message, retry_after=common.retry_after_seconds(headers)
    )


def finish_reason(provider: str, reason: str | None) -> str:
    if reason in FAILED:
        raise ProviderError(
            f"provider {provider} could not finish the answer ({reason})",
            status=502,
            retryable=True,
            code="upstream_error",
        )
    return FINISH_REASONS.get(reason or "", "stop")


def usage_from(usage: dict[str, Any]) -> dict[str, Any]:
    billed = usage.get("billed_units") or {}
    tokens = usage.get("tokens") or {}

    def pick(name: str) -> int:
        value = billed.get(name)
        return int(value if value is not None else tokens.get(name) or 0)

    cached = usage.get("cached_tokens")
    return common.usage_object(
        pick("input_tokens"), pick("output_tokens"), cached=int(cached) if cached else None
    )


# --- request ------------------------------------------------------------------------


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in common.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            image: dict[str, Any] = {"url": common.image_url_of(part)}
            detail = (part.get("image_url") or {}).get("detail")
            if detail:
                image["detail"] = detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise common.unsupported(f"Content parts of type {kind!r} are not supported.")
    return parts


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": common.text_of(message.get("content"))}
    if role == "user":
        return {"role": "user", "content": _user_content(message.get("content"))}
    if role == "assistant":
        text = common.text_of(message.get("content"), "")
        calls = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": (call.get("function") or {}).get("name"),
                    "arguments": common.dumps(
                        common.parse_arguments((call.get("function") or {}).get("arguments"))
                    ),
                },
            }
            for call in message.get("tool_calls") or []
        ]
        out: dict[str, Any] = {"role": "assistant"}
        if calls:
            out["tool_calls"] = calls
            if text:
                out["tool_plan"] = text
        else:
            out["content"] = text
        return out
    if role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.get("tool_call_id"),
            "content": [
                {"type": "document", "document": {"data": common.text_of(message.get("content"))}}
            ],
        }
    raise common.unsupported("Legacy 'function' messages are not supported; use tools.", "messages")


def to_cohere(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    common.single_choice(body, "Cohere")
    payload: dict[str, Any] = {
        "model": target.upstream_model,
        "messages": [_message(m) for m in body.get("messages") or []],
    }
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "p"),
        ("top_k", "k"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ):
        if body.get(ours) is not None:
            payload[theirs] = body[ours]
    if common.max_tokens_of(body):
        payload["max_tokens"] = common.max_tokens_of(body)
    if common.stop_list(body):
        payload["stop_sequences"] = common.stop_list(body)
    json_format = common.json_schema_of(body)
    if json_format is not None:
        payload["response_format"] = {"type": "json_object"}
        if json_format[1]:
            payload["response_format"]["json_schema"] = json_format[1]
    tools = [
        {
            "type": "function",
            "function": {
                "name": fn.get("name"),
                "description": fn.get("description") or "",
                "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for fn in common.function_tools(body)
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t["function"]["name"] == name]
        if not tools:
            raise common.unsupported(
                f"tool_choice names {name!r}, which is not in tools.", "tool_choice"
            )
        choice = "required"
    if tools:
        payload["tools"] = tools
        if choice in ("required", "none"):
            payload["tool_choice"] = choice.upper()
    return payload


# --- response -----------------------------------------------------------------------


def from_cohere(response: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    message = response.get("message") or {}
    text = "".join(
        part.get("text") or ""
        for part in message.get("content") or []
        if isinstance(part, dict) and part.get("type") == "text"
    )
    calls = [
        common.tool_call(
            call.get("id") or common.new_id("call_"),
            (call.get("function") or {}).get("name") or "",
            (call.get("function") or {}).get("arguments") or "{}",
        )
        for call in message.get("tool_calls") or []
    ]
    if calls and not text:
        text = message.get("tool_plan") or ""
    return common.completion_object(
        id=response.get("id") or common.new_id(),
        model=model,
        choices=[
            {
                "message": common.assistant_message(text, calls),
                "finish_reason": finish_reason(provider, response.get("finish_reason")),
            }
        ],
        usage=usage_from(response.get("usage") or {}),
    )


class _StreamState:
    def __init__(self, model: str, provider: str) -> None:
        self.out = common.ChunkWriter(model)
        self.provider = provider
        self.tools: dict[int, int] = {}  # Cohere's tool call index → ours
        self.started = False
        self.done = False

    def handle(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = self._handle(event)
        if chunks and not self.started:
            # The role chunk waits for real output, so a failure before any lets the
            # pipeline still fail over.
            self.started = True
            chunks.insert(0, self.out.role())
        return chunks

    def _handle(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        message = (event.get("delta") or {}).get("message") or {}
        if kind == "message-start":
            if event.get("id"):
                self.out.id = event["id"]
            return []
        if kind in ("content-start", "content-delta"):
            content = message.get("content") or {}
            text = content.get("text") if isinstance(content, dict) else None
            return [self.out.text(text)] if text else []
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return [self.out.text(plan)] if plan else []
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            function = call.get("function") or {}
            index = len(self.tools)
            self.tools[int(event.get("index", index))] = index
            return [
                self.out.tool_start(
                    index,
                    call.get("id") or common.new_id("call_"),
                    function.get("name") or "",
                    function.get("arguments") or "",
                )
            ]
        if kind == "tool-call-delta":
            arguments = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
            index = self.tools.get(int(event.get("index", 0)), 0)
            return [self.out.tool_arguments(index, arguments)] if arguments else []
        if kind == "message-end":
            self.done = True
            delta = event.get("delta") or {}
            reason = finish_reason(self.provider, delta.get("finish_reason"))
            return [self.out.finish(reason), self.out.usage(usage_from(delta.get("usage") or {}))]
        return []  # content-end, tool-call-end, citation-start/end, debug


@register
class CohereAdapter(ProviderAdapter):
    kind = "cohere"
    label = "Cohere"
    default_base_url = "https://api.cohere.com"
    base_url_suffixes = ("/v2", "/v1")
    supports_embeddings = True

    def _headers(self, target: Target) -> dict[str, str]:
        return common.request_headers(target, {"authorization": f"Bearer {target.credential}"})

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        response = await common.post_json(
            target,
            self.url(target, "/v2/chat"),
            {**to_cohere(target, body), "stream": False},
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        return from_cohere(response, target.upstream_model, target.provider_name)

    async def stream_chat(
        self, target: Target, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        state = _StreamState(target.upstream_model, target.provider_name)
        async with common.open_stream(
            target,
            self.url(target, "/v2/chat"),
            {**to_cohere(target, body), "stream": True},
            {**self._headers(target), "accept": "text/event-stream"},
            partial(error_from_body, target.provider_name),
        ) as response:
            async for data in iter_sse_data(response):
                if state.done or data == "[DONE]":
                    continue  # read to the end, so the connection goes back to the pool
                event = common.loads_or_none(data)
                if not isinstance(event, dict):
                    raise ProviderError(
                        f"provider {target.provider_name} sent an invalid stream event", status=502
                    )
                for chunk in state.handle(event):
                    yield chunk
        if not state.done:
            raise common.stream_ended_early(target.provider_name)

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not all(isinstance(text, str) for text in inputs):
            raise common.unsupported("Cohere embeds text only, not token arrays.", "input")
        payload: dict[str, Any] = {
            "model": target.upstream_model,
            "texts": inputs,
            "input_type": target.options.get("embedding_input_type") or "search_document",
            "embedding_types": ["float"],
        }
        if body.get("dimensions"):
            payload["output_dimension"] = body["dimensions"]
        response = await common.post_json(
            target,
            self.url(target, "/v2/embed"),
            payload,
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        vectors = (response.get("embeddings") or {}).get("float") or []
        tokens = int(
            ((response.get("meta") or {}).get("billed_units") or {}).get("input_tokens") or 0
        )
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(vectors)
            ],
            "model": target.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def list_models(self, target: Target) -> list[str]:
        return await common.get_pages(
            target,
            self.url(target, "/v1/models"),
            self._headers(target),
            partial(error_from_body, target.provider_name),
            {"page_size": 1000},
            lambda page: (
                str(m["name"])
                for m in page.get("models") or []
                if isinstance(m, dict) and m.get("name")
            ),
            lambda page: (
                {"page_size": 1000, "page_token": page["next_page_token"]}
                if page.get("next_page_token")
                else None
            ),
        )
