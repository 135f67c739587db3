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
    ContentBlocked,
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderError,
    upstream_timeout,
    upstream_unavailable,
)
from apps.gateway.circuit import breaker
from apps.gateway.state import state
from apps.guardrails.engine import CompiledPolicy
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
    policy: CompiledPolicy | None = None
    guardrail_flags: list[str] = field(default_factory=list)
    inflight_deployment: int | None = None  # released when the request is accounted for

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
    # A fallback may serve: reserve what the dearest model of the chain would cost.
    reserve = max(
        max_cost_usd(
            price_at(model.prices, ctx.started_at),
            prompt_tokens=prompt,
            max_output_tokens=max_output,
        )
        for model in fallback_chain(ctx.key, route)
    )
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
    """Deployments in the order to try them: by priority (lower first), then by the
    model's routing strategy within one priority."""
    ordered: list[DeploymentRoute] = []
    for priority in sorted({d.priority for d in route.deployments}):
        group = [d for d in route.deployments if d.priority == priority and d.weight > 0]
        ordered.extend(_order_group(route.routing, group))
    return ordered


def _order_group(strategy: str, group: list[DeploymentRoute]) -> list[DeploymentRoute]:
    if len(group) < 2:
        return group
    if strategy == "least_inflight":
        return sorted(
            group, key=lambda d: (breaker.stat(d.target.deployment_id).inflight, random.random())
        )
    if strategy == "lowest_latency":
        # Unmeasured deployments first, so every one gets measured.
        def latency(d: DeploymentRoute) -> tuple[float, float]:
            value = breaker.stat(d.target.deployment_id).latency_ms
            return (-1.0 if value is None else value, random.random())

        return sorted(group, key=latency)
    if strategy == "lowest_cost":
        return sorted(
            group, key=lambda d: (float(d.target.options.get("cost", 0)), random.random())
        )
    ordered, pool = [], list(group)
    while pool:
        pick = random.choices(pool, weights=[d.weight for d in pool])[0]
        ordered.append(pick)
        pool.remove(pick)
    return ordered


def _check_credential(dep: DeploymentRoute) -> None:
    if dep.credential_error:
        raise ProviderError(
            f"provider {dep.target.provider_name} has no usable credential",
            status=502,
            code="upstream_auth_error",
        )


def _attempt(dep: DeploymentRoute, outcome: str, started: float, model: str) -> dict[str, Any]:
    return {
        "model": model,
        "provider": dep.target.provider_name,
        "deployment": dep.target.deployment_id,
        "outcome": outcome,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }


def backoff_seconds(attempt: int, retry_after: float | None) -> float | None:
    """Full-jitter exponential backoff; a provider's Retry-After wins when it is longer.

    ``None``: the provider asks for a wait longer than the cap, so try elsewhere.
    """
    if retry_after is not None and retry_after > settings.GATEWAY_RETRY_AFTER_CAP_SECONDS:
        return None
    ceiling = min(
        settings.GATEWAY_RETRY_MAX_BACKOFF_SECONDS, settings.GATEWAY_RETRY_BASE_SECONDS * 2**attempt
    )
    return max(random.uniform(0, ceiling), retry_after or 0.0)


CONTEXT_ERRORS = frozenset({"context_length_exceeded", "string_above_max_length"})
FILTER_ERRORS = frozenset({"content_filter", "content_policy_violation"})


def _fallback_allowed(
    exc: GatewayError, origin: ModelRoute, current: ModelRoute, nxt: ModelRoute
) -> bool:
    """Which failures move on to the next model of the fallback list."""
    code = exc.code or ""
    if code in CONTEXT_ERRORS:
        return (nxt.context_window or 0) > (current.context_window or 0)
    if code in FILTER_ERRORS:
        return origin.fallback_on_content_filter
    return bool(getattr(exc, "retryable", False))


def fallback_chain(key: KeyInfo, route: ModelRoute) -> list[ModelRoute]:
    table = state.table
    chain = [route]
    for name in route.fallbacks:
        fallback = table.resolve(key.tenant_id, name) if table else None
        if fallback is None or fallback.mode != route.mode or any(f.name == name for f in chain):
            continue
        if key.allowed_models and name not in key.allowed_models:
            continue
        chain.append(fallback)
    return chain


async def _serve(ctx: CallContext, route: ModelRoute, call) -> Any:
    """Serve from the model, then from its fallbacks: each deployment with its retries,
    within one overall deadline."""
    deadline = time.monotonic() + float(route.timeout_s or settings.GATEWAY_UPSTREAM_TIMEOUT)
    chain = fallback_chain(ctx.key, route)
    last: GatewayError | None = None
    for i, model in enumerate(chain):
        if i > 0:
            if last is None or not _fallback_allowed(last, route, chain[i - 1], model):
                break
            ctx.route = model
            ctx.price = price_at(model.prices, ctx.started_at)
        try:
            return await _serve_model(ctx, model, call, deadline)
        except GatewayError as exc:
            last = exc
    assert last is not None
    raise last


async def _serve_model(ctx: CallContext, route: ModelRoute, call, deadline: float) -> Any:
    await breaker.sync()
    retries = route.retries if route.retries is not None else settings.GATEWAY_DEFAULT_RETRIES
    last: GatewayError | None = None
    tried = 0
    for dep in candidates(route):
        dep_id = dep.target.deployment_id
        if not await breaker.allow(dep_id):
            continue
        tried += 1
        for attempt in range(retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise (
                    last
                    if last is not None and last.status == 504
                    else upstream_timeout(
                        f"The model '{route.name}' did not answer before the deadline."
                    )
                )
            started = time.perf_counter()
            stats = breaker.stat(dep_id)
            stats.inflight += 1
            try:
                _check_credential(dep)
                async with asyncio.timeout(min(remaining, dep.target.timeout)):
                    result = await call(dep, route)
            except TimeoutError:
                last = upstream_timeout(
                    f"provider {dep.target.provider_name} did not answer in time"
                )
            except ProviderError as exc:
                last = exc
            except BaseException:
                stats.inflight -= 1
                raise
            else:
                # Still in flight until the answer (a whole stream) is delivered.
                ctx.deployment, ctx.inflight_deployment = dep, dep_id
                ctx.attempts.append(_attempt(dep, "ok", started, route.name))
                stats.observe(ok=True, latency_ms=(time.perf_counter() - started) * 1000)
                await breaker.success(dep_id)
                return result
            stats.inflight -= 1
            ctx.attempts.append(_attempt(dep, last.code or "error", started, route.name))
            ctx.deployment = dep
            retryable = getattr(last, "retryable", False)
            stats.observe(ok=not retryable, latency_ms=(time.perf_counter() - started) * 1000)
            if not retryable:
                raise last
            await breaker.failure(dep_id)
            if attempt == retries or not await breaker.allow(dep_id):
                break
            wait = backoff_seconds(attempt, getattr(last, "retry_after", None))
            if wait is None or time.monotonic() + wait >= deadline:
                break
            await asyncio.sleep(wait)
    if last is None:
        raise upstream_unavailable(
            f"Every deployment of '{route.name}' is unavailable (circuit open)."
            if not tried
            else f"The model '{route.name}' could not be served."
        )
    raise last


def guard_input(ctx: CallContext, body: dict[str, Any]) -> dict[str, Any]:
    """The tenant's (or key's) content policy on the request: block, or redact a copy."""
    policy = ctx.policy = state.policies.policy_for(ctx.key.tenant_id, ctx.key.id or None)
    if policy is None or not policy.filters_input:
        return body
    if "messages" in body:
        verdict = policy.check_input(body["messages"])
        ctx.guardrail_flags.extend(verdict.flags)
        if verdict.blocked:
            raise verdict.error()
        return {**body, "messages": verdict.messages} if verdict.redacted else body
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    checked = []
    for text in texts:
        if not isinstance(text, str):
            checked.append(text)
            continue
        result = policy.check_input_text(text)
        ctx.guardrail_flags.extend(result.flags)
        if result.blocked:
            raise ContentBlocked(
                result.reason or "The input violates the content policy.", param="input"
            )
        checked.append(result.emit)
    return {**body, "input": checked if isinstance(body["input"], list) else checked[0]}


def guard_output(ctx: CallContext, result: dict[str, Any]) -> dict[str, Any]:
    """The content policy on a whole answer: redactions, or finish_reason content_filter."""
    policy = ctx.policy
    if policy is None or not policy.filters_output:
        return result
    for choice in result.get("choices") or ():
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            checked = policy.filter_output_text(message["content"])
            ctx.guardrail_flags.extend(checked.flags)
            message["content"] = checked.emit
            if checked.blocked:
                choice["finish_reason"] = "content_filter"
    return result


async def chat(ctx: CallContext, body: dict[str, Any]) -> dict[str, Any]:
    route = ctx.route = await resolve_model(ctx.key, body["model"], mode="chat")
    await admit(ctx, body, route)
    body = guard_input(ctx, body)
    last_model = fallback_chain(ctx.key, route)[-1].name

    async def call(dep: DeploymentRoute, model: ModelRoute) -> dict[str, Any]:
        result = await registry.get(dep.target.kind).chat(dep.target, body)
        if (
            route.fallback_on_content_filter
            and model.name != last_model
            and any(c.get("finish_reason") == "content_filter" for c in result.get("choices") or ())
        ):
            ctx.usage = result.get("usage")
            raise ProviderError(
                f"provider {dep.target.provider_name} filtered the answer",
                status=400,
                code="content_filter",
                type="invalid_request_error",
            )
        return result

    result = await _serve(ctx, route, call)
    result["model"] = ctx.route.name
    ctx.usage = result.get("usage")
    return guard_output(ctx, result)


@dataclass(slots=True)
class OpenStream:
    """A started stream. ``chunks()`` applies the output content policy, so the SSE and
    the WebSocket paths stream the same filtered text."""

    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]
    ctx: CallContext | None = None

    async def _raw(self) -> AsyncIterator[dict[str, Any]]:
        yield self.first
        async for chunk in self.rest:
            yield chunk

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        policy = self.ctx.policy if self.ctx is not None else None
        if policy is None or not policy.filters_output:
            async for chunk in self._raw():
                yield chunk
            return
        async for chunk in filtered_chunks(self.ctx, policy, self._raw()):
            yield chunk

    async def aclose(self) -> None:
        await self.rest.aclose()  # type: ignore[attr-defined]


async def filtered_chunks(
    ctx: CallContext, policy: CompiledPolicy, chunks: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """Stream-safe output filtering: one filter per choice holds back only what could
    still turn into a match; a block ends the stream with finish_reason content_filter."""
    filters: dict[int, Any] = {}

    def shaped(
        chunk: dict[str, Any], index: int, delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        return {
            **chunk,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }

    async for chunk in chunks:
        choices = chunk.get("choices") or []
        if not choices:
            yield chunk
            continue
        for choice in choices:
            index = choice.get("index", 0)
            flt = filters.get(index)
            if flt is None:
                flt = filters[index] = policy.output_filter()
            delta = dict(choice.get("delta") or {})
            finish = choice.get("finish_reason")
            text = delta.get("content")
            if text:
                result = flt.feed(text)
                ctx.guardrail_flags.extend(result.flags)
                delta["content"] = result.emit
                if result.blocked:
                    yield shaped(chunk, index, delta, None)
                    yield shaped(chunk, index, {}, "content_filter")
                    return  # the caller closes the upstream stream
            if finish:
                tail = flt.finish()
                ctx.guardrail_flags.extend(tail.flags)
                if tail.emit:
                    yield shaped(chunk, index, {"content": tail.emit}, None)
                if tail.blocked:
                    yield shaped(chunk, index, {}, "content_filter")
                    return
            if delta.get("content") or finish or set(delta) - {"content"}:
                yield shaped(chunk, index, delta, finish)


async def open_stream(ctx: CallContext, body: dict[str, Any]) -> OpenStream:
    """Start a streamed answer: returns once the first chunk is in hand.

    Failing over is possible only up to here; after the first chunk reaches the client
    an upstream failure ends the stream with an error event.
    """
    route = ctx.route = await resolve_model(ctx.key, body["model"], mode="chat")
    await admit(ctx, body, route)
    body = guard_input(ctx, body)

    async def call(dep: DeploymentRoute, model: ModelRoute) -> OpenStream:
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
        return OpenStream(first=first, rest=stream, ctx=ctx)

    opened = await _serve(ctx, route, call)
    ctx.first_token_at = time.perf_counter()
    return opened


async def embeddings(ctx: CallContext, body: dict[str, Any]) -> dict[str, Any]:
    route = ctx.route = await resolve_model(ctx.key, body["model"], mode="embedding")
    await admit(ctx, body, route)
    body = guard_input(ctx, body)
    want_base64 = body.get("encoding_format") == "base64"

    async def call(dep: DeploymentRoute, model: ModelRoute) -> dict[str, Any]:
        return await registry.get(dep.target.kind).embed(dep.target, body)

    result = await _serve(ctx, route, call)
    result["model"] = ctx.route.name
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
