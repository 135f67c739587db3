"""Prometheus metrics: recorded when a request finishes, exposed at /metrics.

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory
shared by the workers): prometheus-client then aggregates every process's metrics.
"""

from __future__ import annotations

import os

from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "llm_requests_total", "Requests that reached routing.", ["provider", "model", "status"]
)
DURATION = Histogram(
    "llm_request_duration_seconds",
    "Request duration.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "llm_time_to_first_token_seconds",
    "Time to the first streamed token.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("llm_tokens_total", "Tokens processed.", ["provider", "model", "kind"])
COST = Counter("llm_cost_usd_total", "Cost in US dollars.", ["provider", "model"])
CACHE_HITS = Counter("llm_cache_hits_total", "Answers served from the cache.", ["model"])
RATE_LIMITED = Counter(
    "llm_rate_limited_total", "Requests refused by a rate limit or a budget.", ["model", "reason"]
)
PROVIDER_UP = Gauge(
    "llm_provider_up",
    "1 when the provider's last probe succeeded.",
    ["provider"],
    multiprocess_mode="max",
)


def observe(
    *,
    provider: str,
    model: str,
    status: int,
    error_code: str | None,
    seconds: float,
    ttft: float | None,
    prompt_tokens: int,
    completion_tokens: int,
    cost: float,
    cache_hit: bool,
) -> None:
    provider = provider or "none"
    REQUESTS.labels(provider, model, str(status)).inc()
    DURATION.labels(provider, model).observe(seconds)
    if ttft is not None:
        TTFT.labels(provider, model).observe(ttft)
    if prompt_tokens:
        TOKENS.labels(provider, model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(provider, model, "completion").inc(completion_tokens)
    if cost:
        COST.labels(provider, model).inc(cost)
    if cache_hit:
        CACHE_HITS.labels(model).inc()
    if status == 429:
        RATE_LIMITED.labels(model, error_code or "rate_limit_exceeded").inc()


def _provider_states() -> None:
    from apps.providers.models import Provider

    for name, ok in Provider.objects.filter(enabled=True).values_list("name", "last_check_ok"):
        PROVIDER_UP.labels(name).set(1 if ok else 0)


@require_GET
def metrics_view(request):
    _provider_states()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    return HttpResponse(payload, content_type=CONTENT_TYPE_LATEST)
