"""What happens after every request: one structured log line (usage records join here)."""

from __future__ import annotations

import logging
import time

from apps.gateway.pipeline import CallContext

logger = logging.getLogger("gateway.request")


def request_finished(
    ctx: CallContext, *, endpoint: str, status: int, error_code: str | None = None
) -> None:
    usage = ctx.usage or {}
    cost = ctx.cost
    now = time.perf_counter()
    logger.info(
        "request",
        extra={
            "request_id": ctx.request_id,
            "endpoint": endpoint,
            "tenant": ctx.key.tenant_name,
            "key_prefix": ctx.key.prefix,
            "model": ctx.route.name if ctx.route else None,
            "provider": ctx.deployment.target.provider_name if ctx.deployment else None,
            "upstream_model": ctx.deployment.target.upstream_model if ctx.deployment else None,
            "stream": ctx.stream,
            "status": status,
            "error_code": error_code,
            "latency_ms": round((now - ctx.started) * 1000, 2),
            "ttft_ms": round((ctx.first_token_at - ctx.started) * 1000, 2)
            if ctx.first_token_at
            else None,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "cost_usd": format(cost, "f") if cost is not None else None,
            "attempts": len(ctx.attempts),
        },
    )
