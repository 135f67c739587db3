"""Usage is exact and durable: one record per request, token sums equal the upstream's own
totals, and a graceful shutdown under load loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from django.db.models import Sum

from apps.billing.models import UsageRecord
from apps.providers.services import deployment_create, model_create, provider_create
from tests.conftest import free_port, settle, start_server

pytestmark = pytest.mark.live


def wait_count(expected: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    count = UsageRecord.objects.count()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = UsageRecord.objects.count()
    time.sleep(1.0)  # and nothing more arrives afterwards
    return UsageRecord.objects.count()


@pytest.fixture
def gateways(gw, tmp_path):
    """Two processes when Redis makes them one system; the session server alone otherwise."""
    if not os.environ.get("REDIS_URL"):
        yield [gw.url]
        return
    servers = [start_server(tmp_path, name=f"exact{i}") for i in range(2)]
    yield [s.url for s in servers]
    for server in servers:
        server.stop()


async def one(client: httpx.AsyncClient, url: str, headers: dict, kind: str, i: int) -> str:
    messages = [{"role": "user", "content": f"request number {i} " + "word " * (i % 7)}]
    if kind == "plain":
        r = await client.post(
            url, headers=headers, json={"model": "gpt-4o-mini", "messages": messages}
        )
        return str(r.status_code)
    if kind == "fallback":
        r = await client.post(
            url, headers=headers, json={"model": "with-fallback", "messages": messages}
        )
        return str(r.status_code)
    if kind == "failing":
        r = await client.post(url, headers=headers, json={"model": "failing", "messages": messages})
        return str(r.status_code)
    payload = {
        "model": "pausing" if kind == "abandoned" else "gpt-4o-mini",
        "messages": messages,
        "stream": True,
    }
    if kind == "stream-usage":
        payload["stream_options"] = {"include_usage": True}
    async with client.stream("POST", url, headers=headers, json=payload) as r:
        seen = 0
        async for line in r.aiter_lines():
            if kind == "abandoned" and '"content":"p' in line:
                seen += 1
                if seen == 3:
                    return "abandoned"
        return str(r.status_code)


async def mixed(urls: list[str], headers: dict, kinds: list[str]) -> list[str]:
    semaphore = asyncio.Semaphore(20)
    async with httpx.AsyncClient(timeout=60) as client:

        async def run(i: int, kind: str) -> str:
            async with semaphore:
                return await one(
                    client, urls[i % len(urls)] + "/v1/chat/completions", headers, kind, i
                )

        return await asyncio.gather(*(run(i, k) for i, k in enumerate(kinds)))


def test_500_mixed_requests_give_500_exact_records(gw, fake_openai, gateways):
    dead = provider_create(
        name="dead", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    fallback = model_create(
        name="with-fallback", input_price_per_million="1", output_price_per_million="2"
    )
    deployment_create(model=fallback, provider=dead, upstream_model="gpt-4o-mini", priority=0)
    deployment_create(
        model=fallback, provider=gw.provider, upstream_model="gpt-4o-mini", priority=1
    )
    gw.add_model("failing", "status-500")
    gw.add_model("pausing", "pause-3")
    settle()
    kinds = (
        ["plain"] * 200
        + ["stream"] * 75
        + ["stream-usage"] * 75
        + ["abandoned"] * 50
        + ["failing"] * 50
        + ["fallback"] * 50
    )
    outcomes = asyncio.run(mixed(gateways, gw.headers, kinds))
    assert outcomes.count("200") == 400 and outcomes.count("abandoned") == 50
    # failing upstream: 502 until the deployment's circuit opens, 503 after
    assert outcomes.count("502") + outcomes.count("503") == 50 and outcomes.count("502") >= 5

    assert wait_count(500) == 500
    sums = UsageRecord.objects.aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    assert sums["prompt"] == fake_openai.prompt_total
    assert sums["completion"] == fake_openai.completion_total
    assert UsageRecord.objects.filter(status=499, usage_estimated=True).count() == 50
    assert (
        UsageRecord.objects.filter(
            status__in=[502, 503], prompt_tokens=0, completion_tokens=0
        ).count()
        == 50
    )
    assert (
        UsageRecord.objects.filter(
            served_model="with-fallback", status=200, provider="fake-openai"
        ).count()
        == 50
    )
    assert UsageRecord.objects.values("record_id").distinct().count() == 500


def test_sigterm_under_load_loses_no_usage_record(gw, tmp_path):
    # Nothing is flushed on the timer: every record must come from the shutdown drain.
    server = start_server(
        tmp_path, name="drain", GATEWAY_USAGE_FLUSH_SECONDS="3600", GATEWAY_USAGE_BATCH="100000"
    )
    answered: list[int] = []

    async def load() -> None:
        async with httpx.AsyncClient(timeout=30) as client:

            async def worker() -> None:
                while True:
                    try:
                        r = await client.post(
                            server.url + "/v1/chat/completions",
                            headers=gw.headers,
                            json={
                                "model": "slow-model",
                                "messages": [{"role": "user", "content": "x"}],
                            },
                        )
                    except httpx.HTTPError:
                        return
                    answered.append(r.status_code)
                    if r.status_code != 200:
                        return

            async def stop_later() -> None:
                await asyncio.sleep(1.5)
                before = len(answered)
                assert before > 0
                server.proc.send_signal(signal.SIGTERM)

            await asyncio.gather(*(worker() for _ in range(10)), stop_later())

    asyncio.run(load())
    # uvicorn drains in-flight requests, runs the lifespan shutdown, then re-raises SIGTERM.
    assert server.proc.wait(30) in (0, -signal.SIGTERM), server.output()
    assert len(answered) > 10
    assert UsageRecord.objects.filter(status=200).count() == answered.count(200)
    assert UsageRecord.objects.count() == len(answered)
