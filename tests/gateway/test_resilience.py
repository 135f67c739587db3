"""Retries, fallbacks, load balancing and circuit breakers against a misbehaving upstream."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import httpx
import pytest

from apps.providers.services import deployment_create, model_create, provider_create
from tests.conftest import free_port, settle, start_server

pytestmark = pytest.mark.live


def chat(url: str, headers: dict, model: str, **extra) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers=headers,
        timeout=60,
        json={"model": model, "messages": [{"role": "user", "content": "hello"}], **extra},
    )


def test_retry_after_is_honoured(gw, fake_openai):
    gw.add_model("flaky", "flaky-1-a", retries=2)
    started = time.monotonic()
    response = chat(gw.url, gw.headers, "flaky")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 0.9 <= elapsed < 3.0
    assert fake_openai.calls["flaky-1-a"] == 2


def test_no_retries_when_the_model_says_so(gw, fake_openai):
    gw.add_model("no-retry", "flaky-1-b", retries=0)
    response = chat(gw.url, gw.headers, "no-retry")
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert fake_openai.calls["flaky-1-b"] == 1


def test_repeated_500_falls_back_to_the_next_model(gw, fake_openai):
    fake_openai.broken.add("x")
    gw.add_model("backup", "gpt-4o-mini")
    gw.add_model("primary", "toggle-x", retries=1, fallbacks=["backup"])
    response = chat(gw.url, gw.headers, "primary")
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "backup"
    assert response.json()["model"] == "backup"
    assert fake_openai.calls["toggle-x"] == 2  # first try and one retry, then the fallback


def test_fallback_respects_the_key_allowlist(gw):
    from tests.keys.factories import make_key

    gw.add_model("backup2", "gpt-4o-mini")
    gw.add_model("primary2", "status-500", retries=0, fallbacks=["backup2"])
    limited = make_key(gw.tenant, allowed_models=["primary2"])
    response = chat(gw.url, {"Authorization": f"Bearer {limited.secret}"}, "primary2")
    assert response.status_code == 502


def test_context_length_error_falls_back_only_to_a_larger_window(gw):
    gw.add_model("big", "gpt-4o-mini", context_window=128_000)
    gw.add_model("small", "context-limit", context_window=8_000, fallbacks=["big"])
    gw.add_model("tiny", "context-limit", context_window=8_000, fallbacks=["small"])
    response = chat(gw.url, gw.headers, "small")
    assert response.status_code == 200 and response.headers["x-gateway-model"] == "big"
    # same window: no point trying, the client gets the real error
    response = chat(gw.url, gw.headers, "tiny")
    assert (
        response.status_code == 400
        and response.json()["error"]["code"] == "context_length_exceeded"
    )


def test_content_filter_fallback_is_opt_in(gw):
    gw.add_model("lenient", "gpt-4o-mini")
    gw.add_model("strict", "filtered", fallbacks=["lenient"])
    gw.add_model(
        "strict-opt-in", "filtered", fallbacks=["lenient"], fallback_on_content_filter=True
    )
    plain = chat(gw.url, gw.headers, "strict")
    assert (
        plain.status_code == 200 and plain.json()["choices"][0]["finish_reason"] == "content_filter"
    )
    opted = chat(gw.url, gw.headers, "strict-opt-in")
    assert opted.status_code == 200 and opted.headers["x-gateway-model"] == "lenient"
    assert opted.json()["choices"][0]["finish_reason"] == "stop"


def test_weights_and_priorities(gw, fake_openai):
    second = provider_create(
        name="second", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    standby = provider_create(
        name="standby", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    model = model_create(name="balanced")
    deployment_create(model=model, provider=gw.provider, upstream_model="gpt-4o-mini", weight=3)
    deployment_create(model=model, provider=second, upstream_model="gpt-4o-mini", weight=1)
    deployment_create(model=model, provider=standby, upstream_model="gpt-4o-mini", priority=5)
    settle()
    served = Counter(
        chat(gw.url, gw.headers, "balanced").headers["x-gateway-provider"] for _ in range(400)
    )
    assert served["standby"] == 0
    # 3:1 over 400 requests: 300 expected, binomial sd = sqrt(400 * 0.75 * 0.25) ~ 8.7;
    # +-4 sd keeps a false failure below 1 in 10,000 runs.
    assert 265 <= served["fake-openai"] <= 335, served
    assert served["fake-openai"] + served["second"] == 400


def test_lowest_cost_routing(gw, fake_openai):
    cheap = provider_create(
        name="cheap", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    model = model_create(name="thrifty", routing="lowest_cost")
    deployment_create(
        model=model, provider=gw.provider, upstream_model="gpt-4o-mini", options={"cost": 5}
    )
    deployment_create(
        model=model, provider=cheap, upstream_model="gpt-4o-mini", options={"cost": 1}
    )
    settle()
    assert {
        chat(gw.url, gw.headers, "thrifty").headers["x-gateway-provider"] for _ in range(10)
    } == {"cheap"}


def test_least_inflight_spreads_concurrent_requests(gw, fake_openai):
    other = provider_create(
        name="other", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    model = model_create(name="spread", routing="least_inflight")
    deployment_create(model=model, provider=gw.provider, upstream_model="slow-model")
    deployment_create(model=model, provider=other, upstream_model="slow-model")
    settle()

    async def burst() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        gw.base_url + "/chat/completions",
                        headers=gw.headers,
                        json={"model": "spread", "messages": [{"role": "user", "content": "x"}]},
                    )
                    for _ in range(6)
                )
            )
        return [r.headers["x-gateway-provider"] for r in responses]

    served = Counter(asyncio.run(burst()))
    assert served["fake-openai"] == 3 and served["other"] == 3


@pytest.fixture
def breaker_servers(live_server_process, transactional_db, tmp_path):
    """Gateway processes with a quick circuit breaker: two sharing Redis when available."""
    env = {
        "GATEWAY_CIRCUIT_FAILURES": "3",
        "GATEWAY_CIRCUIT_COOLDOWN_SECONDS": "2",
        "GATEWAY_CIRCUIT_SYNC_SECONDS": "0.1",
        "GATEWAY_DEFAULT_RETRIES": "0",
    }
    count = 2 if os.environ.get("REDIS_URL") else 1
    servers = [start_server(tmp_path, name=f"cb{i}", **env) for i in range(count)]
    yield [s.url for s in servers]
    for server in servers:
        server.stop()


def test_circuit_opens_and_recovers_after_a_probe(gw, fake_openai, breaker_servers):
    fake_openai.broken.add("cb")
    healthy = provider_create(
        name="healthy", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    model = model_create(name="guarded")
    deployment_create(model=model, provider=gw.provider, upstream_model="toggle-cb", priority=0)
    deployment_create(model=model, provider=healthy, upstream_model="gpt-4o-mini", priority=1)
    settle()
    first = breaker_servers[0]
    # three failures (falling through to the healthy deployment each time) open the circuit
    for _ in range(3):
        response = chat(first, gw.headers, "guarded")
        assert response.status_code == 200 and response.headers["x-gateway-provider"] == "healthy"
    assert fake_openai.calls["toggle-cb"] == 3
    time.sleep(0.3)
    # open: the broken deployment gets no traffic, from any process
    for url in breaker_servers * 3:
        assert chat(url, gw.headers, "guarded").headers["x-gateway-provider"] == "healthy"
    assert fake_openai.calls["toggle-cb"] == 3
    # after the cool-down one probe goes through; it fails, so the circuit opens again
    time.sleep(2.2)
    for url in breaker_servers * 2:
        chat(url, gw.headers, "guarded")
    assert fake_openai.calls["toggle-cb"] == 4
    # repaired: the next probe succeeds and traffic returns
    fake_openai.broken.clear()
    time.sleep(2.2)
    assert chat(first, gw.headers, "guarded").headers["x-gateway-provider"] == "fake-openai"
    time.sleep(0.3)
    providers = {
        chat(url, gw.headers, "guarded").headers["x-gateway-provider"]
        for url in breaker_servers * 2
    }
    assert providers == {"fake-openai"}


def test_every_deployment_open_gives_503(gw, fake_openai, breaker_servers):
    fake_openai.broken.add("solo")
    gw.add_model("solo", "toggle-solo")
    for _ in range(3):
        assert chat(breaker_servers[0], gw.headers, "solo").status_code == 502
    response = chat(breaker_servers[0], gw.headers, "solo")
    assert response.status_code == 503
    assert "circuit" in response.json()["error"]["message"]
    assert fake_openai.calls["toggle-solo"] == 3


def test_streams_are_not_retried_after_the_first_byte(gw, fake_openai):
    gw.add_model("dropper", "drop-model", retries=2)
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        timeout=10,
        json={"model": "dropper", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert '"error"' in lines[-1]
    assert fake_openai.calls["drop-model"] == 1


def test_deadline_covers_retries(gw, fake_openai):
    dead = provider_create(
        name="dead", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    model = model_create(name="doomed", timeout_s=1.5, retries=10)
    deployment_create(model=model, provider=dead, upstream_model="gpt-4o-mini")
    settle()
    started = time.monotonic()
    response = chat(gw.url, gw.headers, "doomed")
    assert response.status_code in (503, 504)
    assert time.monotonic() - started < 3.0
