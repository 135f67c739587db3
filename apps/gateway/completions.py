"""Legacy ``POST /v1/completions``, served through the chat pipeline.

The prompt becomes one user message, so every provider kind can answer it; the result is
rendered as ``text_completion`` objects (streamed too). Token-array prompts and batches
of several prompts are refused with a clear 400: send one prompt per request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apps.core.errors import GatewayError, InvalidRequest
from apps.gateway import pipeline
from apps.gateway.auth import authenticate_request
from apps.gateway.http import Request, Response, StreamingResponse, json_response
from apps.gateway.pipeline import CallContext
from apps.gateway.validation import parse_json_object, validate_chat
from apps.gateway.views import _call, _failed, _finisher, _sse, router, served_headers

CHAT_FIELDS = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "logit_bias",
    "stream",
    "stream_options",
)


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequest(
                "Send one text prompt per request (token arrays and batches are not supported).",
                param="prompt",
                code="unsupported_value",
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string.", param="prompt", code="invalid_type")
    chat = {k: body[k] for k in CHAT_FIELDS if k in body}
    chat["messages"] = [{"role": "user", "content": prompt}]
    return validate_chat(chat)


def text_completion(result: dict[str, Any], echo: str | None) -> dict[str, Any]:
    return {
        "id": "cmpl-" + str(result.get("id", "")).removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": result.get("created", int(time.time())),
        "model": result.get("model"),
        "choices": [
            {
                "index": c.get("index", i),
                "text": (echo or "") + ((c.get("message") or {}).get("content") or ""),
                "logprobs": None,
                "finish_reason": c.get("finish_reason"),
            }
            for i, c in enumerate(result.get("choices") or [])
        ],
        "usage": result.get("usage"),
    }


@router.route("/v1/completions", "POST")
async def completions(request: Request) -> Response | StreamingResponse:
    key = await authenticate_request(request)
    body = parse_json_object(request.body)
    chat = to_chat(body)
    echo = chat["messages"][0]["content"] if body.get("echo") else None
    ctx = CallContext(
        request_id=request.request_id,
        key=key,
        endpoint="completions",
        requested_model=chat["model"],
        stream=bool(chat.get("stream")),
    )
    try:
        if not ctx.stream:
            result = await _call(ctx, pipeline.chat(ctx, chat))
            response = json_response(text_completion(result, echo), headers=served_headers(ctx))
            response.after = _finisher(ctx, 200)
            return response
        opened = await _call(ctx, pipeline.open_stream(ctx, chat))
    except GatewayError as exc:
        return _failed(ctx, exc)
    include_usage = bool((chat.get("stream_options") or {}).get("include_usage"))
    outcome: dict[str, Any] = {"status": 200, "code": None}

    async def after() -> None:
        from apps.gateway.accounting import request_finished

        await request_finished(ctx, status=outcome["status"], error_code=outcome["code"])

    return StreamingResponse(
        body=_as_text_chunks(_sse(ctx, opened, outcome, include_usage=include_usage), echo),
        headers=served_headers(ctx, cost=False),
        after=after,
    )


async def _as_text_chunks(events: AsyncIterator[bytes], echo: str | None) -> AsyncIterator[bytes]:
    """Re-shape the chat SSE events as text_completion events (errors and [DONE] pass)."""
    if echo:
        yield b"data: " + orjson.dumps(_text_chunk({"id": "", "model": None}, echo, None)) + b"\n\n"
    async for event in events:
        payload = event[6:].strip()
        if payload == b"[DONE]" or b'"error"' in payload[:12]:
            yield event
            continue
        chunk = orjson.loads(payload)
        if not chunk.get("choices"):
            out = _text_chunk(chunk, None, None)
            out["choices"] = []
            out["usage"] = chunk.get("usage")
            yield b"data: " + orjson.dumps(out) + b"\n\n"
            continue
        for choice in chunk["choices"]:
            text = (choice.get("delta") or {}).get("content") or ""
            if text or choice.get("finish_reason"):
                yield (
                    b"data: "
                    + orjson.dumps(_text_chunk(chunk, text, choice.get("finish_reason")))
                    + b"\n\n"
                )


def _text_chunk(chunk: dict[str, Any], text: str | None, finish: str | None) -> dict[str, Any]:
    return {
        "id": "cmpl-" + str(chunk.get("id", "")).removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chunk.get("created", int(time.time())),
        "model": chunk.get("model"),
        "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}],
    }
