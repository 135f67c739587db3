"""Handlers of the OpenAI-compatible API: parse, call the pipeline, render.

Accounting runs after the response is sent (``after``), for every request that passed
authentication and validation, whatever its outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import unquote

import orjson

from apps.core.errors import GatewayError
from apps.gateway import pipeline
from apps.gateway.accounting import request_finished, spawn
from apps.gateway.auth import authenticate_request
from apps.gateway.http import (
    Request,
    Response,
    Router,
    StreamingResponse,
    error_response,
    json_response,
)
from apps.gateway.pipeline import CallContext
from apps.gateway.validation import parse_json_object, validate_chat, validate_embeddings

router = Router()


def served_headers(ctx: CallContext, *, cost: bool = True) -> dict[str, str]:
    headers = {"x-request-id": ctx.request_id, "x-gateway-cache": "miss", **ctx.rate_headers}
    if ctx.route is not None:
        headers["x-gateway-model"] = ctx.route.name
    if ctx.deployment is not None:
        headers["x-gateway-provider"] = ctx.deployment.target.provider_name
        headers["x-gateway-upstream-model"] = ctx.deployment.target.upstream_model
    if cost and ctx.cost is not None:
        headers["x-gateway-cost-usd"] = f"{ctx.cost:.8f}"
    return headers


def _finisher(ctx: CallContext, status: int, code: str | None = None):
    async def after() -> None:
        await request_finished(ctx, status=status, error_code=code)

    return after


def _failed(ctx: CallContext, exc: GatewayError) -> Response:
    exc.headers.update({**served_headers(ctx, cost=False), **exc.headers})
    return error_response(exc, ctx.request_id, after=_finisher(ctx, exc.status, exc.code))


async def _call(ctx: CallContext, call: Awaitable[Any]) -> Any:
    """Await a pipeline call; a client leaving mid-call is still accounted for."""
    try:
        return await call
    except asyncio.CancelledError:
        spawn(request_finished(ctx, status=499, error_code="client_disconnected"))
        raise


async def _run(ctx: CallContext, call: Awaitable[dict[str, Any]]) -> Response:
    try:
        payload = await _call(ctx, call)
    except GatewayError as exc:
        return _failed(ctx, exc)
    response = json_response(payload, headers=served_headers(ctx))
    response.after = _finisher(ctx, 200)
    return response


@router.route("/v1/chat/completions", "POST")
async def chat_completions(request: Request) -> Response | StreamingResponse:
    key = await authenticate_request(request)
    body = validate_chat(parse_json_object(request.body))
    ctx = CallContext(
        request_id=request.request_id,
        key=key,
        requested_model=body["model"],
        stream=bool(body.get("stream")),
    )
    if not ctx.stream:
        return await _run(ctx, pipeline.chat(ctx, body))
    try:
        opened = await _call(ctx, pipeline.open_stream(ctx, body))
    except GatewayError as exc:
        return _failed(ctx, exc)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    outcome: dict[str, Any] = {"status": 200, "code": None}

    async def after() -> None:
        await request_finished(ctx, status=outcome["status"], error_code=outcome["code"])

    return StreamingResponse(
        body=_sse(ctx, opened, outcome, include_usage=include_usage),
        headers=served_headers(ctx, cost=False),
        after=after,
    )


async def _sse(
    ctx: CallContext, opened: pipeline.OpenStream, outcome: dict[str, Any], *, include_usage: bool
) -> AsyncIterator[bytes]:
    name = ctx.route.name if ctx.route else None
    try:
        async for chunk in opened.chunks():
            usage = chunk.get("usage")
            if usage:
                ctx.usage = usage
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                    ctx.streamed_chunks += 1
            if not include_usage:
                if usage and not chunk.get("choices"):
                    continue
                chunk.pop("usage", None)
            chunk["model"] = name
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except GatewayError as exc:
        # Headers are gone: the error travels as a final event, which SDKs raise.
        outcome["status"], outcome["code"] = exc.status, exc.code
        yield b"data: " + orjson.dumps(exc.to_dict()) + b"\n\n"
    except asyncio.CancelledError:
        outcome["status"], outcome["code"] = 499, "client_disconnected"
        raise
    finally:
        await opened.aclose()


@router.route("/v1/embeddings", "POST")
async def embeddings(request: Request) -> Response:
    key = await authenticate_request(request)
    body = validate_embeddings(parse_json_object(request.body))
    ctx = CallContext(
        request_id=request.request_id, key=key, endpoint="embeddings", requested_model=body["model"]
    )
    return await _run(ctx, pipeline.embeddings(ctx, body))


@router.route("/v1/models", "GET")
async def models_list(request: Request) -> Response:
    key = await authenticate_request(request)
    routes = await pipeline.models_visible(key)
    return json_response({"object": "list", "data": [pipeline.model_object(r) for r in routes]})


@router.route("/v1/models/", "GET", param="model")
async def models_retrieve(request: Request) -> Response:
    key = await authenticate_request(request)
    route = await pipeline.model_get(key, unquote(request.params["model"]))
    return json_response(pipeline.model_object(route))
