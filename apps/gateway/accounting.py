"""What happens after every request that reached routing, exactly once:

settle the admission (rate-limit tokens, concurrency slot, budget reservation → actual
cost), queue the usage record (written in bulk, off the request path), emit one JSON
log line, and raise budget alerts when a threshold was crossed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from asgiref.sync import sync_to_async

from apps.billing.limits import NANO, Crossing, admitter
from apps.billing.pricing import cost_usd, price_at
from apps.billing.recorder import recorder
from apps.gateway import metrics
from apps.gateway.circuit import breaker
from apps.gateway.live import publish_request
from apps.gateway.pipeline import CallContext

logger = logging.getLogger("gateway.request")
_background: set[asyncio.Task] = set()


def spawn(coro) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def usage_row(ctx: CallContext, *, status: int, error_code: str | None, cost: Decimal) -> dict:
    usage = ctx.final_usage()
    dep = ctx.deployment
    return {
        "record_id": uuid.UUID(ctx.record_id),
        "created_at": datetime.fromtimestamp(ctx.started_at, UTC),
        "request_id": ctx.request_id,
        "tenant_id": ctx.key.tenant_id,
        "key_id": ctx.key.id or None,  # 0: a signed-in user (principals.py), no key row
        "key_prefix": ctx.key.prefix,
        "endpoint": ctx.endpoint,
        "requested_model": ctx.requested_model,
        "served_model": ctx.route.name if ctx.route else "",
        "deployment_id": dep.target.deployment_id if dep else None,
        "provider": dep.target.provider_name if dep else "",
        "upstream_model": dep.target.upstream_model if dep else "",
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "usage_estimated": usage.estimated,
        "cost_usd": cost,
        "price_id": ctx.price.id if ctx.price else None,
        "latency_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
        "ttft_ms": round((ctx.first_token_at - ctx.started) * 1000, 3)
        if ctx.first_token_at
        else None,
        "status": status,
        "error_code": error_code or "",
        "cache_hit": False,
        "streamed": ctx.stream,
        "attempts": ctx.attempts,
    }


async def request_finished(ctx: CallContext, *, status: int, error_code: str | None = None) -> None:
    if ctx.inflight_deployment is not None:
        breaker.stat(ctx.inflight_deployment).inflight -= 1
        ctx.inflight_deployment = None
    usage = ctx.final_usage()
    price = ctx.price or (price_at(ctx.route.prices, ctx.started_at) if ctx.route else None)
    cost = cost_usd(price, usage) if usage.total_tokens else Decimal(0)
    row = usage_row(ctx, status=status, error_code=error_code, cost=cost)
    recorder.add(row)
    publish_request(ctx, row)
    crossings: list[Crossing] = []
    if ctx.admission is not None:
        try:
            crossings = await admitter.settle(
                ctx.admission, tokens=usage.total_tokens, cost_usd=cost
            )
        except Exception:
            # The record is queued already; a lost settlement only frees limits early.
            logger.exception("settling limits failed", extra={"request_id": ctx.request_id})
    logger.info(
        "request",
        extra={
            "request_id": ctx.request_id,
            "endpoint": ctx.endpoint,
            "tenant": ctx.key.tenant_name,
            "key_prefix": ctx.key.prefix,
            "model": row["served_model"] or ctx.requested_model,
            "provider": row["provider"] or None,
            "upstream_model": row["upstream_model"] or None,
            "stream": ctx.stream,
            "status": status,
            "error_code": error_code,
            "latency_ms": row["latency_ms"],
            "ttft_ms": row["ttft_ms"],
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "usage_estimated": usage.estimated,
            "cost_usd": format(cost, "f"),
            "attempts": len(ctx.attempts),
            "guardrail_flags": sorted(set(ctx.guardrail_flags)) or None,
        },
    )
    metrics.observe(
        provider=row["provider"],
        model=row["served_model"] or ctx.requested_model,
        status=status,
        error_code=error_code,
        seconds=row["latency_ms"] / 1000,
        ttft=row["ttft_ms"] / 1000 if row["ttft_ms"] is not None else None,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost=float(cost),
        cache_hit=row["cache_hit"],
    )
    for crossing in crossings:
        level = alert_level(crossing)
        if level:
            spawn(_enqueue_alert(crossing, level))


def alert_level(crossing: Crossing) -> str | None:
    limit = int(crossing.budget.limit_usd * NANO)
    soft = limit * crossing.budget.soft_limit_pct // 100
    if crossing.before < limit <= crossing.after:
        return "hard"
    if crossing.before < soft <= crossing.after:
        return "soft"
    return None


async def _enqueue_alert(crossing: Crossing, level: str) -> None:
    from apps.billing.tasks import budget_alert

    spent = str(Decimal(crossing.after) / NANO)
    try:
        await sync_to_async(budget_alert.delay, thread_sensitive=False)(
            crossing.budget.id, crossing.period_start.isoformat(), level, spent
        )
    except Exception:
        logger.exception("could not queue a budget alert", extra={"budget": crossing.budget.id})
