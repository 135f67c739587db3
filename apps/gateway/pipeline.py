"""The request pipeline shared by HTTP (plain and SSE) and WebSocket.

resolve the model → choose deployments → call the adapter (per-attempt timeout,
overall deadline, next deployment on a retryable failure) → usage and cost.
Views and consumers stay thin: they parse, call one function here, and render.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from apps.billing.limits import Admission, admitter, counters_for
from apps.billing.pricing import (
    PriceInfo,
    Usage,
    cost_usd,
    max_cost_usd,
    price_at,
    usage_from_openai,
)
from apps.core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderError,
    upstream_timeout,
    upstream_unavailable,
)
from apps.gateway.state import state
from apps.keys.selectors import KeyInfo
from apps.providers.adapters import registry
from apps.providers.selectors import DeploymentRoute, ModelRoute
from apps.providers.tokens import estimate_prompt_tokens, estimate_tokens


@dataclass(slots=True)
class CallContext:
    """One request's facts, filled in as the pipeline goes."""

    request_id: str
    key: KeyInfo
    endpoint: str = "chat"
    requested_model: str = ""
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    stream: bool = False
    route: ModelRoute | None = None
    deployment: DeploymentRoute | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    first_token_at: float | None = None
    price: PriceInfo | None = None
    admission: Admission | None = None
    prompt_estimate: int = 0
    streamed_chunks: int = 0

    def final_usage(self) -> Usage:
        """The provider's usage; an estimate (marked) when a started stream ended without one."""
        if self.usage:
            return usage_from_openai(self.usage)
        if self.streamed_chunks:
            return Usage(
                prompt_tokens=self.prompt_estimate,
                completion_tokens=self.streamed_chunks,
                estimated=True,
            )
        return Usage()

    @property
    def cost(self) -> Decimal | None:
        if self.route is None or (self.usage is None and not self.streamed_chunks):
            return None
        price = self.price or price_at(self.route.prices, self.started_at)
        return cost_usd(price, self.final_usage())

    @property
    def rate_headers(self) -> dict[str, str]:
        return self.admission.headers if self.admission is not None else {}


def _input_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return estimate_prompt_tokens(body["messages"])
    value = body.get("input")
    items = value if isinstance(value, list) else [value]
    return sum(
        len(i) if isinstance(i, list) else 1 if isinstance(i, int) else estimate_tokens(str(i))
        for i in items
    )


async def admit(ctx: CallContext, body: dict[str, Any], route: ModelRoute) -> None:
    """Rate limits and the budget reservation, before any upstream call."""
    ctx.price = price_at(route.prices, ctx.started_at)
    ctx.prompt_estimate = _input_tokens(body)
    if ctx.key.limits_bypass:
        return
    if ctx.endpoint == "embeddings":
        max_output = 0
    else:
        max_output = (
            body.get("max_completion_tokens")
            or body.get("max_tokens")
            or route.max_output_tokens
            or settings.GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS
        ) * int(body.get("n") or 1)
    # Prompt estimates run a little low for some tokenizers: reserve with a margin.
    prompt = int(ctx.prompt_estimate * 1.2) + 16
    reserve = max_cost_usd(ctx.price, prompt_tokens=prompt, max_output_tokens=max_output)
    limits = state.limits
    model_limits = limits.model_limits.get((ctx.key.tenant_id, route.name))
    ctx.admission = await admitter.admit(
        member=ctx.record_id,
        counters=counters_for(ctx.key, route.name, model_limits),
        budgets=limits.budgets_for(ctx.key.tenant_id, ctx.key.id),
        reserve_usd=reserve,
    )


async def resolve_model(key: KeyInfo, name: str, *, mode: str) -> ModelRoute:
    table = await state.routing()
    route = table.resolve(key.tenant_id, name)
    if route is None:
        raise NotFound(
            f"The model '{name}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    if key.allowed_models and name not in key.allowed_models:
        raise PermissionDenied(
            f"This key is not allowed to use the model '{name}'.",
            param="model",
            code="model_not_allowed",
        )
    if route.mode != mode:
        raise InvalidRequest(
            f"The model '{name}' is a {route.mode} model and cannot serve this endpoint.",
            param="model",
            code="model_not_supported",
        )
    if not route.deployments:
        raise upstream_unavailable(f"The model '{name}' has no enabled deployment.")
    return route


def candidates(route: ModelRoute) -> list[DeploymentRoute]:
    """Deployments in the order to try them: by priority, weighted-random within one."""
    ordered: list[DeploymentRoute] = []
    for priority in sorted({d.priority for d in route.deployments}):
        group = [d for d in route.deployments if d.priority == priority and d.weight > 0]
        while group:
            pick = (
                random.choices(group, weights=[d.weight for d in group])[0]
                if len(group) > 1
                else group[0]
            )
            ordered.append(pick)
            group.remove(pick)
    return ordered


def _deadline(route: ModelRoute) -> float:
    return time.monotonic() + float(route.timeout_s or settings.GATEWAY_UPSTREAM_TIMEOUT)


def _check_credential(dep: DeploymentRoute) -> None:
    if dep.credential_error:
        raise ProviderError(
            f"provider {dep.target.provider_name} has no usable credential",
            status=502,
            code="upstream_auth_error",
        )


async def _attempts(ctx: CallContext, route: ModelRoute, call) -> Any:
    """Try deployments in order until one answers; only retryable failures move on."""
    deadline = _deadline(route)
    last: GatewayError | None = None
    for dep in candidates(route):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        started = time.perf_counter()
        try:
            _check_credential(dep)
            async with asyncio.timeout(min(remaining, dep.target.timeout)):
                result = await call(dep)
        except TimeoutError:
            last = upstream_timeout(f"provider {dep.target.provider_name} did not answer in time")
        except ProviderError as exc:
            last = exc
        else:
            ctx.deployment = dep
            ctx.attempts.append(_attempt(dep, "ok", started))
            return result
        ctx.attempts.append(_attempt(dep, last.code or "error", started))
        ctx.deployment = dep
        if not getattr(last, "retryable", False):
            raise last
    raise last or upstream_timeout(f"The model '{route.name}' did not answer before the deadline.")


def _attempt(dep: DeploymentRoute, outcome: str, started: float) -> dict[str, Any]:
    return {
        "provider": dep.target.provider_name,
        "deployment": dep.target.deployment_id,
        "outcome": outcome,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def chat(ctx: CallContext, body: dict[str, Any]) -> dict[str, Any]:
    route = ctx.route = await resolve_model(ctx.key, body["model"], mode="chat")
    await admit(ctx, body, route)

    async def call(dep: DeploymentRoute) -> dict[str, Any]:
        return await registry.get(dep.target.kind).chat(dep.target, body)

    result = await _attempts(ctx, route, call)
    result["model"] = route.name
    ctx.usage = result.get("usage")
    return result


@dataclass(slots=True)
class OpenStream:
    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        yield self.first
        async for chunk in self.rest:
            yield chunk

    async def aclose(self) -> None:
        await self.rest.aclose()  # type: ignore[attr-defined]


async def open_stream(ctx: CallContext, body: dict[str, Any]) -> OpenStream:
    """Start a streamed answer: returns once the first chunk is in hand.

    Failing over is possible only up to here; after the first chunk reaches the client
    an upstream failure ends the stream with an error event.
    """
    route = ctx.route = await resolve_model(ctx.key, body["model"], mode="chat")
    await admit(ctx, body, route)

    async def call(dep: DeploymentRoute) -> OpenStream:
        stream = registry.get(dep.target.kind).stream_chat(dep.target, body)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            raise ProviderError(
                f"provider {dep.target.provider_name} sent an empty stream",
                status=502,
                retryable=True,
            )
        except BaseException:
            await stream.aclose()
            raise
        return OpenStream(first=first, rest=stream)

    opened = await _attempts(ctx, route, call)
    ctx.first_token_at = time.perf_counter()
    return opened


async def embeddings(ctx: CallContext, body: dict[str, Any]) -> dict[str, Any]:
    route = ctx.route = await resolve_model(ctx.key, body["model"], mode="embedding")
    await admit(ctx, body, route)
    want_base64 = body.get("encoding_format") == "base64"

    async def call(dep: DeploymentRoute) -> dict[str, Any]:
        return await registry.get(dep.target.kind).embed(dep.target, body)

    result = await _attempts(ctx, route, call)
    result["model"] = route.name
    if want_base64:
        for item in result.get("data", []):
            if isinstance(item.get("embedding"), list):
                vector = item["embedding"]
                item["embedding"] = base64.b64encode(
                    struct.pack(f"<{len(vector)}f", *vector)
                ).decode()
    ctx.usage = result.get("usage")
    return result


async def models_visible(key: KeyInfo) -> list[ModelRoute]:
    table = await state.routing()
    routes = table.visible(key.tenant_id)
    if key.allowed_models:
        routes = [r for r in routes if r.name in key.allowed_models]
    return routes


async def model_get(key: KeyInfo, name: str) -> ModelRoute:
    for route in await models_visible(key):
        if route.name == name:
            return route
    raise NotFound(
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def model_object(route: ModelRoute) -> dict[str, Any]:
    return {
        "id": route.name,
        "object": "model",
        "created": route.created,
        "owned_by": route.owned_by,
    }
