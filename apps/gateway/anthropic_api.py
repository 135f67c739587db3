"""Anthropic's Messages API inbound: ``POST /v1/messages`` (and ``/v1/messages/count_tokens``).

The official ``anthropic`` SDKs can use any model behind the gateway: the request is
translated to the OpenAI chat body the pipeline takes, served by the same pipeline
(limits, budgets, fallbacks, one usage record with endpoint ``messages``), and the
answer translated back — a Message, or Anthropic's SSE event sequence.

Translation notes:
- ``system`` (a string or text blocks) becomes one system message; ``tool_result``
  blocks become OpenAI ``tool`` messages placed before the rest of their user turn
  (images inside a tool result travel in that user turn, as tool messages carry text
  only); ``is_error`` results are prefixed with ``Error:``;
- ``tool_use`` blocks of assistant turns become ``tool_calls``; ``thinking`` blocks are
  dropped (the models behind the gateway cannot take them back), as are ``top_k``,
  ``thinking`` and ``cache_control`` (not every provider accepts them);
- usage: Anthropic's ``input_tokens`` excludes cached tokens, OpenAI's
  ``prompt_tokens`` includes them, so ``input_tokens`` = prompt - cache reads - cache writes;
- ``stop_sequence`` is reported only when the upstream says which sequence matched
  (vLLM's ``stop_reason``); OpenAI does not, so a matched stop reads as ``end_turn``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apps.billing.pricing import Usage
from apps.core.errors import GatewayError, InvalidRequest
from apps.gateway import pipeline
from apps.gateway.auth import authenticate
from apps.gateway.http import Request, Response, StreamingResponse, json_response
from apps.gateway.pipeline import CallContext
from apps.gateway.validation import parse_json_object, validate_chat
from apps.gateway.views import _call, _finisher, router, served_headers
from apps.providers.tokens import estimate_prompt_tokens, estimate_tokens

logger = logging.getLogger("gateway.anthropic")

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's error types by HTTP status; 503 is how the gateway says "overloaded".
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
RATE_HEADERS = {
    "x-ratelimit-limit-requests": "anthropic-ratelimit-requests-limit",
    "x-ratelimit-remaining-requests": "anthropic-ratelimit-requests-remaining",
    "x-ratelimit-limit-tokens": "anthropic-ratelimit-tokens-limit",
    "x-ratelimit-remaining-tokens": "anthropic-ratelimit-tokens-remaining",
}


# --- errors -------------------------------------------------------------------------


def error_type(exc: GatewayError) -> str:
    if exc.status in ERROR_TYPES:
        return ERROR_TYPES[exc.status]
    return "api_error" if exc.status >= 500 else "invalid_request_error"


def error_body(exc: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type(exc), "message": exc.message},
    }
    if request_id:
        body["request_id"] = request_id
    return body


def error_response(
    exc: GatewayError, request_id: str, headers: dict[str, str] | None = None, *, after=None
) -> Response:
    """The gateway's error in Anthropic's shape, keeping its status and headers."""
    merged = {**(headers or {}), **exc.headers, "x-request-id": request_id}
    merged["request-id"] = request_id
    if exc.status == 401:
        merged.setdefault("www-authenticate", 'Bearer realm="gateway"')
    response = json_response(error_body(exc, request_id), exc.status, merged)
    response.after = after
    return response


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


# --- request: Anthropic → OpenAI ----------------------------------------------------


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _invalid(f"{param}: expected a string or an array of content blocks.", param)
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{param}.{i}: expected a content block with a 'type'.", param)
    return content


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "base64" and source.get("data"):
        media_type = source.get("media_type") or "image/png"
        url = f"data:{media_type};base64,{source['data']}"
    elif source.get("type") == "url" and source.get("url"):
        url = source["url"]
    else:
        raise _invalid(f"{param}.source: images need a base64 or url source.", param)
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data") or "")}
    if source.get("type") == "base64" and source.get("data"):
        media_type = source.get("media_type") or "application/pdf"
        file: dict[str, Any] = {"file_data": f"data:{media_type};base64,{source['data']}"}
        if block.get("title"):
            file["filename"] = str(block["title"])
        return {"type": "file", "file": file}
    raise _invalid(f"{param}.source: documents need a base64 or text source.", param)


def _user_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _invalid(f"{param}.text: expected a string.", param)
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        return _image_part(block, param)
    if kind == "document":
        return _document_part(block, param)
    raise _invalid(f"{param}: content blocks of type '{kind}' are not supported here.", param)


def _tool_result(block: dict[str, Any], param: str) -> tuple[dict[str, Any], list[dict]]:
    """An OpenAI ``tool`` message, and the images the result carried (for the user turn)."""
    if not isinstance(block.get("tool_use_id"), str):
        raise _invalid(f"{param}.tool_use_id: expected a string.", param)
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if content is not None:
        for i, part in enumerate(_blocks(content, f"{param}.content")):
            translated = _user_part(part, f"{param}.content.{i}")
            if translated["type"] == "text":
                texts.append(translated["text"])
            else:
                images.append(translated)
    text = "\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}, images


def _user_messages(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks(content, param)):
        if block["type"] == "tool_result":
            message, images = _tool_result(block, f"{param}.{i}")
            tools.append(message)
            parts.extend(images)
        else:
            parts.append(_user_part(block, f"{param}.{i}"))
    # OpenAI wants tool results right after the assistant turn that called the tools.
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_message(content: Any, param: str) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks(content, param)):
        kind = block["type"]
        if kind == "text":
            texts.append({"type": "text", "text": str(block.get("text") or "")})
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _invalid(f"{param}.{i}: tool_use blocks need an 'id' and a 'name'.", param)
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):
            raise _invalid(f"{param}.{i}: content blocks of type '{kind}' are not supported here.")
    if not texts and not calls:
        return None
    message: dict[str, Any] = {
        "role": "assistant",
        "content": texts[0]["text"] if len(texts) == 1 else (texts or None),
    }
    if calls:
        message["tool_calls"] = calls
    return message


def _system(system: Any) -> str | None:
    if system is None:
        return None
    texts = [b.get("text") for b in _blocks(system, "system") if b["type"] == "text"]
    if not all(isinstance(t, str) for t in texts):
        raise _invalid("system: text blocks need a string 'text'.", "system")
    return "\n\n".join(texts) or None


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools: expected an array.", "tools")
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{i}: expected a tool with a 'name'.", "tools")
        if tool.get("type") not in (None, "custom"):
            raise _invalid(
                f"tools.{i}: tools of type '{tool['type']}' are not supported by this gateway.",
                "tools",
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"tools.{i}.input_schema: expected an object.", "tools")
        function: dict[str, Any] = {"name": tool["name"], "parameters": schema}
        if tool.get("description"):
            function["description"] = str(tool["description"])
        functions.append({"type": "function", "function": function})
    return functions


def _tool_choice(choice: Any, body: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise _invalid("tool_choice: expected an object.", "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _invalid("tool_choice: expected type auto, any, none, or tool with a name.")
    if choice.get("disable_parallel_tool_use") and body.get("tools"):
        body["parallel_tool_calls"] = False


def _number(raw: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(f"{name}: expected a number between {low} and {high}.", name)
    return value


def to_openai(raw: dict[str, Any], *, require_max_tokens: bool = True) -> dict[str, Any]:
    """The OpenAI chat body for an Anthropic Messages request (validated on the way)."""
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest(
            "model: Field required", param="model", code="missing_required_parameter"
        )
    max_tokens = raw.get("max_tokens")
    if max_tokens is None and require_max_tokens:
        raise InvalidRequest(
            "max_tokens: Field required", param="max_tokens", code="missing_required_parameter"
        )
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _invalid("max_tokens: expected an integer of at least 1.", "max_tokens")
    turns = raw.get("messages")
    if not isinstance(turns, list) or not turns:
        raise InvalidRequest(
            "messages: expected a non-empty array.", param="messages", code="invalid_value"
        )
    messages: list[dict[str, Any]] = []
    system = _system(raw.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        param = f"messages.{i}"
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise _invalid(f"{param}.role: expected 'user' or 'assistant'.", param)
        if turn["role"] == "user":
            messages.extend(_user_messages(turn.get("content"), f"{param}.content"))
        else:
            message = _assistant_message(turn.get("content"), f"{param}.content")
            if message is not None:
                messages.append(message)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        value = _number(raw, name, 0, 1)
        if value is not None:
            body[name] = value
    stops = raw.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop_sequences: expected an array of strings.", "stop_sequences")
        if stops:
            body["stop"] = stops
    if raw.get("tools"):
        body["tools"] = _tools(raw["tools"])
    if raw.get("tool_choice") is not None:
        _tool_choice(raw["tool_choice"], body)
        if not body.get("tools"):
            body.pop("tool_choice")  # OpenAI rejects a tool_choice without tools
    config = raw.get("output_config")
    fmt = (config.get("format") if isinstance(config, dict) else None) or raw.get("output_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise _invalid("output_config.format: expected a json_schema format.", "output_config")
        schema = fmt.get("schema") or {"type": "object"}
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema},
        }
    metadata = raw.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        body["user"] = user
    if raw.get("stream") is not None:
        if not isinstance(raw["stream"], bool):
            raise _invalid("stream: expected a boolean.", "stream")
        if raw["stream"]:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
    return body


# --- response: OpenAI → Anthropic ---------------------------------------------------


def usage_object(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": max(
            0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
        ),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def stop_reason(
    finish: str | None, matched: Any, stops: list[str], *, tools: bool
) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for an OpenAI ``finish_reason``."""
    if isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    if finish is None:
        return ("tool_use" if tools else "end_turn"), None
    return STOP_REASONS.get(finish, "end_turn"), None


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def to_message(result: dict[str, Any], ctx: CallContext, stops: list[str]) -> dict[str, Any]:
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
    text = text or message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    for call in calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                "name": function.get("name") or "",
                "input": _tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("stop_reason"), stops, tools=bool(calls)
    )
    return {
        "id": "msg_" + ctx.record_id,
        "type": "message",
        "role": "assistant",
        "model": result.get("model") or ctx.requested_model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_object(ctx.final_usage()),
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class EventWriter:
    """Turns OpenAI chunks into Anthropic's event sequence, one content block at a time."""

    def __init__(self, ctx: CallContext, stops: list[str]) -> None:
        self.ctx = ctx
        self.stops = stops
        self.blocks = 0  # blocks started so far
        self.open: str | None = None  # kind of the block being written
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool-call index → block index
        self.finish: str | None = None
        self.matched: Any = None

    def start(self) -> list[bytes]:
        message = {
            "id": "msg_" + self.ctx.record_id,
            "type": "message",
            "role": "assistant",
            "model": self.ctx.route.name if self.ctx.route else self.ctx.requested_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The real count arrives with the upstream's usage, in message_delta.
            "usage": {"input_tokens": self.ctx.prompt_estimate, "output_tokens": 0},
        }
        return [
            _event("message_start", {"type": "message_start", "message": message}),
            _event("ping", {"type": "ping"}),
        ]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        index = self.blocks - 1
        return [_event("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _begin(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        events = self._close()
        self.open = kind
        self.blocks += 1
        payload = {"type": "content_block_start", "index": self.blocks - 1, "content_block": block}
        return [*events, _event("content_block_start", payload)]

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self.open != "text":
                    events += self._begin("text", {"type": "text", "text": ""})
                events.append(self._delta(self.blocks - 1, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                position = int(call.get("index") or 0)
                function = call.get("function") or {}
                if position not in self.tool_blocks:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    events += self._begin("tool_use", block)
                    self.tool_blocks[position] = self.blocks - 1
                if function.get("arguments"):
                    partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    events.append(self._delta(self.tool_blocks[position], partial))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason")
        return events

    def end(self) -> list[bytes]:
        reason, sequence = stop_reason(
            self.finish, self.matched, self.stops, tools=bool(self.tool_blocks)
        )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage_object(self.ctx.final_usage()),
        }
        return [
            *self._close(),
            _event("message_delta", delta),
            _event("message_stop", {"type": "message_stop"}),
        ]


async def _events(
    ctx: CallContext, opened: pipeline.OpenStream, writer: EventWriter, outcome: dict[str, Any]
) -> AsyncIterator[bytes]:
    try:
        for event in writer.start():
            yield event
        async for chunk in opened.chunks():
            if chunk.get("usage"):
                ctx.usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                    ctx.streamed_chunks += 1
            for event in writer.chunk(chunk):
                yield event
        for event in writer.end():
            yield event
    except GatewayError as exc:
        # Headers are gone: the error travels as an `error` event, which the SDKs raise.
        outcome["status"], outcome["code"] = exc.status, exc.code
        yield _event("error", error_body(exc))
    except asyncio.CancelledError:
        outcome["status"], outcome["code"] = 499, "client_disconnected"
        raise
    except Exception:
        logger.exception("stream translation failed", extra={"request_id": ctx.request_id})
        outcome["status"], outcome["code"] = 500, "internal_error"
        yield _event("error", error_body(GatewayError("The gateway hit an internal error.")))
    finally:
        await opened.aclose()


# --- handlers -----------------------------------------------------------------------


def _headers(ctx: CallContext, *, cost: bool = True) -> dict[str, str]:
    headers = served_headers(ctx, cost=cost)
    headers["request-id"] = ctx.request_id
    for name, anthropic_name in RATE_HEADERS.items():
        if name in headers:
            headers[anthropic_name] = headers[name]
    return headers


def _failed(ctx: CallContext, exc: GatewayError) -> Response:
    return error_response(
        exc, ctx.request_id, _headers(ctx, cost=False), after=_finisher(ctx, exc.status, exc.code)
    )


async def _create(request: Request) -> Response | StreamingResponse:
    key = await authenticate(request.headers)
    raw = parse_json_object(request.body)
    body = validate_chat(to_openai(raw))
    stops = list(body.get("stop") or [])
    ctx = CallContext(
        request_id=request.request_id,
        key=key,
        endpoint="messages",
        requested_model=body["model"],
        stream=bool(body.get("stream")),
    )
    if not ctx.stream:
        try:
            result = await _call(ctx, pipeline.chat(ctx, body))
        except GatewayError as exc:
            return _failed(ctx, exc)
        response = json_response(to_message(result, ctx, stops), headers=_headers(ctx))
        response.after = _finisher(ctx, 200)
        return response
    try:
        opened = await _call(ctx, pipeline.open_stream(ctx, body))
    except GatewayError as exc:
        return _failed(ctx, exc)
    outcome: dict[str, Any] = {"status": 200, "code": None}

    async def after() -> None:
        await _finisher(ctx, outcome["status"], outcome["code"])()

    return StreamingResponse(
        body=_events(ctx, opened, EventWriter(ctx, stops), outcome),
        headers=_headers(ctx, cost=False),
        after=after,
    )


async def _guarded(request: Request, handler) -> Response | StreamingResponse:
    """Every failure in Anthropic's error shape (the router's own fallback speaks OpenAI's)."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc, request.request_id)
    except Exception:
        logger.exception("unhandled error", extra={"request_id": request.request_id})
        internal = GatewayError(
            "The gateway hit an internal error; it has been logged.", code="internal_error"
        )
        return error_response(internal, request.request_id)


@router.route("/v1/messages", "POST")
async def messages_create(request: Request) -> Response | StreamingResponse:
    return await _guarded(request, _create)


async def _count(request: Request) -> Response:
    key = await authenticate(request.headers)
    raw = parse_json_object(request.body)
    body = to_openai(raw, require_max_tokens=False)
    await pipeline.resolve_model(key, body["model"], mode="chat")
    tokens = estimate_prompt_tokens(body["messages"])
    if body.get("tools"):
        tokens += estimate_tokens(orjson.dumps(body["tools"]).decode())
    headers = {"x-request-id": request.request_id, "request-id": request.request_id}
    return json_response({"input_tokens": tokens}, headers=headers)


@router.route("/v1/messages/count_tokens", "POST")
async def messages_count_tokens(request: Request) -> Response:
    """An estimate (the gateway has no tokenizer for every model); not billed."""
    return await _guarded(request, _count)
