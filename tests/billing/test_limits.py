"""Rate limits and budgets on the live gateway: one process, and two sharing Redis."""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from apps.billing.models import ModelRateLimit, UsageRecord
from apps.billing.services import budget_set
from apps.keys.services import key_update
from apps.providers.services import deployment_create, model_create
from tests.conftest import settle, start_server
from tests.keys.factories import make_key

pytestmark = pytest.mark.live

needs_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (shared counters)"
)


def body(model: str = "mock-fast", content: str = "echo: a b", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
def mock_model(gw):
    """A mock model priced so that max_tokens=10 costs exactly $0.00001 (reservation = actual)."""
    model = model_create(
        name="mock-fast", input_price_per_million="0", output_price_per_million="1"
    )
    deployment_create(model=model, provider=gw.mock, upstream_model="mock-fast")
    settle()
    return model


@pytest.fixture
def two_servers(live_server_process, transactional_db, tmp_path):
    servers = [start_server(tmp_path, name=f"gw{i}") for i in range(2)]
    yield [s.url for s in servers]
    for server in servers:
        server.stop()


async def fire(
    urls: list[str], headers: dict, payload: dict, count: int, concurrency: int
) -> list[httpx.Response]:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> httpx.Response:
            async with semaphore:
                return await client.post(
                    urls[i % len(urls)] + "/v1/chat/completions", headers=headers, json=payload
                )

        return await asyncio.gather(*(one(i) for i in range(count)))


def check_rpm(urls: list[str], secret: str) -> None:
    responses = asyncio.run(fire(urls, {"Authorization": f"Bearer {secret}"}, body(), 100, 10))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60, statuses
    assert statuses.count(429) == 40
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["x-ratelimit-limit-requests"] == "60"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    ok = [r for r in responses if r.status_code == 200]
    assert all(r.headers["x-ratelimit-limit-requests"] == "60" for r in ok)
    assert min(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == 0


def test_rpm_in_one_process(gw, mock_model):
    check_rpm([gw.url], make_key(gw.tenant, rpm=60).secret)


@needs_redis
def test_rpm_shared_by_two_processes(gw, mock_model, two_servers):
    check_rpm(two_servers, make_key(gw.tenant, rpm=60).secret)


def test_tpm_counts_actual_tokens(gw, mock_model):
    key = make_key(gw.tenant, tpm=100)
    headers = {"Authorization": f"Bearer {key.secret}"}
    statuses, tokens = [], 0
    for _ in range(10):
        response = httpx.post(
            gw.base_url + "/chat/completions",
            headers=headers,
            json=body(content="echo: " + "word " * 10),
        )
        statuses.append(response.status_code)
        if response.status_code == 200:
            tokens += response.json()["usage"]["total_tokens"]
            assert response.headers["x-ratelimit-limit-tokens"] == "100"
    # admitted while the tokens used so far were under the limit; the last one went over
    assert statuses.index(429) == len([s for s in statuses if s == 200])
    assert tokens >= 100 and tokens - 100 < 40
    limited = httpx.post(gw.base_url + "/chat/completions", headers=headers, json=body())
    assert limited.status_code == 429 and limited.headers["x-ratelimit-remaining-tokens"] == "0"


def test_concurrency_limit(gw, mock_model):
    key = make_key(gw.tenant, max_concurrent=2)
    slow = model_create(name="mock-slow")
    deployment_create(
        model=slow, provider=gw.mock, upstream_model="mock-slow", options={"latency_ms": 1500}
    )
    settle()
    responses = asyncio.run(
        fire([gw.url], {"Authorization": f"Bearer {key.secret}"}, body("mock-slow"), 4, 4)
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
    # slots come back when requests finish
    assert (
        httpx.post(
            gw.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {key.secret}"},
            json=body("mock-slow"),
            timeout=10,
        ).status_code
        == 200
    )


def test_tenant_and_model_limits_cover_all_keys(gw, mock_model):
    ModelRateLimit.objects.create(tenant=gw.tenant, model_name="mock-fast", rpm=3)
    settle()
    keys = [make_key(gw.tenant) for _ in range(2)]
    statuses = [
        httpx.post(
            gw.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {k.secret}"},
            json=body(),
        ).status_code
        for k in keys * 3
    ]
    assert statuses.count(200) == 3 and statuses.count(429) == 3
    # another model of the same tenant is not limited
    assert (
        httpx.post(
            gw.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {keys[0].secret}"},
            json=body("gpt-4o-mini"),
        ).status_code
        == 200
    )


def test_bypass_skips_limits_but_is_still_recorded(gw, mock_model):
    key = make_key(gw.tenant, rpm=1)
    key_update(key=key.key, limits_bypass=True, metadata={"why": "load test"})
    settle()
    headers = {"Authorization": f"Bearer {key.secret}"}
    assert [
        httpx.post(gw.base_url + "/chat/completions", headers=headers, json=body()).status_code
        for _ in range(3)
    ] == [200, 200, 200]
    deadline = time.monotonic() + 5
    while UsageRecord.objects.filter(key=key.key).count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert UsageRecord.objects.filter(key=key.key).count() == 3


def check_budget(urls: list[str], gw) -> None:
    budget_set(tenant=gw.tenant, period="monthly", limit_usd=Decimal("0.0001"))
    settle()
    payload = body(content="tell me a long story", max_tokens=10)
    responses = asyncio.run(fire(urls, gw.headers, payload, 50, 50))
    statuses = [r.status_code for r in responses]
    assert 1 <= statuses.count(200) <= 10, statuses
    assert statuses.count(200) + statuses.count(429) == 50
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    deadline = time.monotonic() + 10
    while UsageRecord.objects.count() < 50 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert UsageRecord.objects.count() == 50
    spent = UsageRecord.objects.aggregate(s=Sum("cost_usd"))["s"]
    assert spent <= Decimal("0.0001")
    assert UsageRecord.objects.filter(status=200).count() == statuses.count(200)
    # once spent, nothing more passes
    assert asyncio.run(fire(urls, gw.headers, payload, 1, 1))[0].status_code == (
        429 if spent == Decimal("0.0001") else 200
    )


def test_budget_cannot_be_overrun_by_concurrency(gw, mock_model):
    check_budget([gw.url], gw)


@needs_redis
def test_budget_cannot_be_overrun_by_two_processes(gw, mock_model, two_servers):
    check_budget(two_servers, gw)
