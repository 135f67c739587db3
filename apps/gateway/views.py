"""Handlers of the OpenAI-compatible API: parse, call the pipeline, render."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import unquote

import orjson

from apps.core.errors import GatewayError
from apps.gateway import pipeline
from apps.gateway.accounting import request_finished
from apps.gateway.auth import authenticate
from apps.gateway.http import Request, Response, Router, StreamingResponse, json_response
from apps.gateway.pipeline import CallContext
from apps.gateway.validation import parse_json_object, validate_chat, validate_embeddings

router = Router()


def served_headers(ctx: CallContext, *, cost: bool = True) -> dict[str, str]:
    headers = {"x-request-id": ctx.request_id, "x-gateway-cache": "miss"}
    if ctx.route is not None:
        headers["x-gateway-model"] = ctx.route.name
    if ctx.deployment is not None:
        headers["x-gateway-provider"] = ctx.deployment.target.provider_name
        headers["x-gateway-upstream-model"] = ctx.deployment.target.upstream_model
    if cost and ctx.cost is not None:
        headers["x-gateway-cost-usd"] = f"{ctx.cost:.8f}"
    return headers


async def _run(ctx: CallContext, endpoint: str, call) -> Response:
    """Run a non-streaming call and account for it whatever happens."""
    try:
        payload = await call
    except GatewayError as exc:
        request_finished(ctx, endpoint=endpoint, status=exc.status, error_code=exc.code)
        exc.headers.update(served_headers(ctx, cost=False))
        raise
    except asyncio.CancelledError:
        request_finished(ctx, endpoint=endpoint, status=499, error_code="client_disconnected")
        raise
    request_finished(ctx, endpoint=endpoint, status=200)
    return json_response(payload, headers=served_headers(ctx))


@router.route("/v1/chat/completions", "POST")
async def chat_completions(request: Request) -> Response | StreamingResponse:
    key = await authenticate(request.headers)
    body = validate_chat(parse_json_object(request.body))
    ctx = CallContext(request_id=request.request_id, key=key, stream=bool(body.get("stream")))
    if not ctx.stream:
        return await _run(ctx, "chat", pipeline.chat(ctx, body))
    try:
        opened = await pipeline.open_stream(ctx, body)
    except GatewayError as exc:
        request_finished(ctx, endpoint="chat", status=exc.status, error_code=exc.code)
        exc.headers.update(served_headers(ctx, cost=False))
        raise
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return StreamingResponse(
        body=_sse(ctx, opened, include_usage=include_usage), headers=served_headers(ctx, cost=False)
    )


async def _sse(
    ctx: CallContext, opened: pipeline.OpenStream, *, include_usage: bool
) -> AsyncIterator[bytes]:
    status, error_code = 200, None
    name = ctx.route.name if ctx.route else None
    try:
        async for chunk in opened.chunks():
            usage = chunk.get("usage")
            if usage:
                ctx.usage = usage
            if not include_usage:
                if usage and not chunk.get("choices"):
                    continue
                chunk.pop("usage", None)
            chunk["model"] = name
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except GatewayError as exc:
        # Headers are gone: the error travels as a final event, which SDKs raise.
        status, error_code = exc.status, exc.code
        yield b"data: " + orjson.dumps(exc.to_dict()) + b"\n\n"
    except asyncio.CancelledError:
        status, error_code = 499, "client_disconnected"
        raise
    finally:
        await opened.aclose()
        request_finished(ctx, endpoint="chat", status=status, error_code=error_code)


@router.route("/v1/embeddings", "POST")
async def embeddings(request: Request) -> Response:
    key = await authenticate(request.headers)
    body = validate_embeddings(parse_json_object(request.body))
    ctx = CallContext(request_id=request.request_id, key=key)
    return await _run(ctx, "embeddings", pipeline.embeddings(ctx, body))


@router.route("/v1/models", "GET")
async def models_list(request: Request) -> Response:
    key = await authenticate(request.headers)
    routes = await pipeline.models_visible(key)
    return json_response({"object": "list", "data": [pipeline.model_object(r) for r in routes]})


@router.route("/v1/models/", "GET", param="model")
async def models_retrieve(request: Request) -> Response:
    key = await authenticate(request.headers)
    route = await pipeline.model_get(key, unquote(request.params["model"]))
    return json_response(pipeline.model_object(route))
