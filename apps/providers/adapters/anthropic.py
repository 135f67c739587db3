"""Anthropic's Messages API (``POST {base_url}/v1/messages``), translated to and from OpenAI chat.

``base_url`` is given without ``/v1``, as the Anthropic SDK takes it. Options (provider
or deployment): ``anthropic_version`` (default ``2023-06-01``), ``anthropic_beta``
(sent as the ``anthropic-beta`` header), ``default_max_tokens`` (Anthropic requires
``max_tokens``; default 4096), ``headers`` (extra headers).

Translation notes:
- system and developer messages, wherever they are, become the top-level ``system``;
- consecutive messages of one role are merged (Anthropic wants user/assistant turns
  to alternate); tool results become ``tool_result`` blocks of a user turn;
- ``temperature`` is clamped to Anthropic's range [0, 1];
- ``response_format`` (JSON object or schema) is emulated the way Anthropic documents
  for JSON output: a tool whose ``input_schema`` is the schema, forced with
  ``tool_choice``; its input comes back as the message's text content;
- usage: Anthropic's ``input_tokens`` excludes cached tokens, so ``prompt_tokens`` is
  input + cache reads + cache writes, and ``prompt_tokens_details.cached_tokens`` the
  cache reads.
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

API_VERSION = "2023-06-01"
JSON_TOOL = "json_response"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error types Anthropic sends inside a stream, and the status each one stands for.
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_from_body(
    provider: str, status: int, content: bytes, headers: httpx.Headers
) -> ProviderError:
    """``{"type": "error", "error": {"type": ..., "message": ...}}`` → :class:`ProviderError`."""
    payload = common.loads_or_none(content)
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("type") or "")
    else:
        message = content[:300].decode(errors="replace").strip()
    return common.upstream_error(
        provider, status, message, retry_after=common.retry_after_seconds(headers)
    )


def finish_reason(stop_reason: str | None, *, json_mode: bool = False) -> str:
    reason = FINISH_REASONS.get(stop_reason or "", "stop")
    if json_mode and reason == "tool_calls":
        return "stop"
    return reason


def usage_from(usage: dict[str, Any]) -> dict[str, Any]:
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cache_read + cache_write
    return common.usage_object(prompt, int(usage.get("output_tokens") or 0), cached=cache_read)


# --- request ------------------------------------------------------------------------


def _text_block(part: dict[str, Any], text: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in common.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append(_text_block(part, str(part["text"])))
        elif kind == "image_url":
            url = common.image_url_of(part)
            data_url = common.parse_data_url(url)
            source = (
                {"type": "base64", "media_type": data_url[0], "data": data_url[1]}
                if data_url
                else {"type": "url", "url": url}
            )
            blocks.append({"type": "image", "source": source})
        elif kind == "file":
            file = part.get("file") or {}
            data_url = common.parse_data_url(str(file.get("file_data") or ""))
            if not data_url:
                raise common.unsupported(
                    "File parts must carry base64 'file_data' for this provider.", "messages"
                )
            blocks.append(
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": data_url[0], "data": data_url[1]},
                }
            )
        else:
            raise common.unsupported(f"Content parts of type {kind!r} are not supported.")
    return blocks


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in common.content_parts(message.get("content")):
        text = common.text_of([part])
        if text:
            blocks.append(_text_block(part, text))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": common.parse_arguments(function.get("arguments")),
            }
        )
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    if isinstance(content, list):
        block["content"] = [
            _text_block(p, common.text_of([p])) for p in common.content_parts(content)
        ]
    else:
        block["content"] = "" if content is None else str(content)
    return block


def _system(messages: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    parts = [
        part
        for message in messages
        if message.get("role") in ("system", "developer")
        for part in common.content_parts(message.get("content"))
        if part.get("type") == "text" and part.get("text")
    ]
    if not parts:
        return None
    if any(part.get("cache_control") for part in parts):
        return [_text_block(part, str(part["text"])) for part in parts]
    return "\n\n".join(str(part["text"]) for part in parts)


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            anthropic_role, blocks = "user", _user_blocks(message.get("content"))
        elif role == "assistant":
            anthropic_role, blocks = "assistant", _assistant_blocks(message)
        elif role == "tool":
            anthropic_role, blocks = "user", [_tool_result(message)]
        else:
            raise common.unsupported(
                "Legacy 'function' messages are not supported; use tools.", "messages"
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    return turns


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    mapped: dict[str, Any] | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise common.unsupported("tool_choice needs function.name.", "tool_choice")
        mapped = {"type": "tool", "name": name}
    if body.get("parallel_tool_calls") is False and body.get("tools"):
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    return mapped


def to_anthropic(target: Target, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The Messages API request for an OpenAI chat body, and whether JSON mode is emulated."""
    common.single_choice(body, "Anthropic")
    messages = body.get("messages") or []
    payload: dict[str, Any] = {
        "model": target.upstream_model,
        "messages": _messages(messages),
        "max_tokens": common.max_tokens_of(body)
        or int(target.options.get("default_max_tokens") or common.DEFAULT_MAX_TOKENS),
    }
    system = _system(messages)
    if system:
        payload["system"] = system
    if body.get("temperature") is not None:
        payload["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        payload["top_p"] = body["top_p"]
    if body.get("top_k") is not None:
        payload["top_k"] = body["top_k"]
    stop = common.stop_list(body)
    if stop:
        payload["stop_sequences"] = stop
    if body.get("user"):
        payload["metadata"] = {"user_id": body["user"]}
    if isinstance(body.get("thinking"), dict):
        payload["thinking"] = body["thinking"]
    tools = [
        {
            "name": fn.get("name"),
            "description": fn.get("description") or "",
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        for fn in common.function_tools(body)
    ]
    choice = _tool_choice(body)
    json_format = common.json_schema_of(body)
    json_mode = json_format is not None
    if json_format is not None:
        kind, schema = json_format
        tools.append(
            {
                "name": JSON_TOOL,
                "description": "Answer with a JSON object"
                + (" matching this schema." if kind == "json_schema" else "."),
                "input_schema": schema or {"type": "object"},
            }
        )
        if not body.get("tools"):
            choice = {"type": "tool", "name": JSON_TOOL}
        elif choice is None or choice.get("type") == "auto":
            # The model answers either by calling a tool or with the JSON "tool".
            choice = {**(choice or {}), "type": "any"}
    if tools:
        payload["tools"] = tools
    if tools and choice:
        payload["tool_choice"] = choice
    return payload, json_mode


# --- response -----------------------------------------------------------------------


def from_anthropic(message: dict[str, Any], model: str, json_mode: bool) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            if json_mode and block.get("name") == JSON_TOOL:
                texts.append(common.dumps(block.get("input") or {}))
            else:
                calls.append(
                    common.tool_call(
                        block.get("id") or common.new_id("toolu_"),
                        block.get("name") or "",
                        common.dumps(block.get("input") or {}),
                    )
                )
    reason = finish_reason(message.get("stop_reason"), json_mode=json_mode and not calls)
    return common.completion_object(
        id=message.get("id") or common.new_id(),
        model=message.get("model") or model,
        choices=[
            {"message": common.assistant_message("".join(texts), calls), "finish_reason": reason}
        ],
        usage=usage_from(message.get("usage") or {}),
    )


class _StreamState:
    """Turns the Messages API event sequence into OpenAI chunks."""

    def __init__(self, model: str, json_mode: bool) -> None:
        self.out = common.ChunkWriter(model)
        self.json_mode = json_mode
        self.blocks: dict[int, tuple[str, int]] = {}  # block index → (kind, tool index)
        self.tools = 0
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.started = False
        self.done = False

    def handle(self, event: dict[str, Any], provider: str) -> list[dict[str, Any]]:
        chunks = self._handle(event, provider)
        if chunks and not self.started:
            # The role chunk waits for real output: Anthropic reports overload as an
            # `error` event right after `message_start`, and until the first chunk is
            # out the pipeline may still fail over to another deployment.
            self.started = True
            chunks.insert(0, self.out.role())
        return chunks

    def _handle(self, event: dict[str, Any], provider: str) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            if message.get("id"):
                self.out.id = message["id"]
            self.usage.update(message.get("usage") or {})
            return []
        if kind == "content_block_start":
            return self._block_start(int(event.get("index") or 0), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(event.get("index") or 0), event.get("delta") or {})
        if kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            # message_delta's usage is cumulative; newer API versions repeat the input counts.
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            return []
        if kind == "message_stop":
            self.done = True
            reason = finish_reason(self.stop_reason, json_mode=self.json_mode and not self.tools)
            return [self.out.finish(reason), self.out.usage(usage_from(self.usage))]
        if kind == "error":
            err = event.get("error") or {}
            status = ERROR_TYPE_STATUS.get(str(err.get("type")), 500)
            raise common.upstream_error(provider, status, str(err.get("message") or err))
        return []  # ping, content_block_stop, and event types added later

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "text":
            self.blocks[index] = ("text", -1)
            return [self.out.text(block["text"])] if block.get("text") else []
        if kind == "tool_use":
            if self.json_mode and block.get("name") == JSON_TOOL:
                self.blocks[index] = ("json", -1)
                return []
            tool_index = self.tools
            self.tools += 1
            self.blocks[index] = ("tool", tool_index)
            return [self.out.tool_start(tool_index, block.get("id") or "", block.get("name") or "")]
        self.blocks[index] = ("skip", -1)  # thinking, redacted_thinking, server tools
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind, tool_index = self.blocks.get(index, ("skip", -1))
        if delta.get("type") == "text_delta" and kind == "text" and delta.get("text"):
            return [self.out.text(delta["text"])]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            if kind == "tool":
                return [self.out.tool_arguments(tool_index, delta["partial_json"])]
            if kind == "json":
                return [self.out.text(delta["partial_json"])]
        return []


@register
class AnthropicAdapter(ProviderAdapter):
    kind = "anthropic"
    label = "Anthropic"
    default_base_url = "https://api.anthropic.com"
    base_url_suffixes = ("/v1",)  # tolerate the OpenAI habit of including the version
    supports_embeddings = False

    def _headers(self, target: Target) -> dict[str, str]:
        headers = {"anthropic-version": str(target.options.get("anthropic_version") or API_VERSION)}
        beta = target.options.get("anthropic_beta")
        if beta:
            headers["anthropic-beta"] = ",".join(beta) if isinstance(beta, list) else str(beta)
        return {
            **headers,
            **common.request_headers(target, {"x-api-key": target.credential}),
        }

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        payload, json_mode = to_anthropic(target, body)
        message = await common.post_json(
            target,
            self.url(target, "/v1/messages"),
            payload,
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        return from_anthropic(message, target.upstream_model, json_mode)

    async def stream_chat(
        self, target: Target, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        payload, json_mode = to_anthropic(target, body)
        payload["stream"] = True
        state = _StreamState(target.upstream_model, json_mode)
        async with common.open_stream(
            target,
            self.url(target, "/v1/messages"),
            payload,
            {**self._headers(target), "accept": "text/event-stream"},
            partial(error_from_body, target.provider_name),
        ) as response:
            async for data in iter_sse_data(response):
                if state.done:
                    continue  # read to the end, so the connection goes back to the pool
                event = common.loads_or_none(data)
                if not isinstance(event, dict):
                    raise ProviderError(
                        f"provider {target.provider_name} sent an invalid stream event",
                        status=502,
                    )
                for chunk in state.handle(event, target.provider_name):
                    yield chunk
        if not state.done:
            raise common.stream_ended_early(target.provider_name)

    async def list_models(self, target: Target) -> list[str]:
        return await common.get_pages(
            target,
            self.url(target, "/v1/models"),
            self._headers(target),
            partial(error_from_body, target.provider_name),
            {"limit": 1000},
            lambda page: (
                m["id"] for m in page.get("data") or [] if isinstance(m, dict) and "id" in m
            ),
            lambda page: (
                {"limit": 1000, "after_id": page["last_id"]}
                if page.get("has_more") and page.get("last_id")
                else None
            ),
        )
