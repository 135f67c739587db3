"""Exactly one usage record per request that reached routing, whatever its outcome."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest

from apps.billing.models import UsageRecord
from apps.providers.models import Model
from apps.providers.services import deployment_create, model_create, model_update, provider_create
from tests.conftest import free_port, settle

pytestmark = pytest.mark.live


def wait_records(count: int, timeout: float = 10.0) -> list[UsageRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = list(UsageRecord.objects.order_by("created_at"))
        if len(records) >= count:
            return records
        time.sleep(0.1)
    return list(UsageRecord.objects.order_by("created_at"))


def chat(gw, model: str, content: str = "a b c", **extra) -> httpx.Response:
    return httpx.post(
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        timeout=30,
        json={"model": model, "messages": [{"role": "user", "content": content}], **extra},
    )


def test_non_streaming_record(gw):
    response = chat(gw, "gpt-4o-mini", "one two three", user="u1")
    assert response.status_code == 200
    [record] = wait_records(1)
    assert record.request_id == response.headers["x-request-id"]
    assert record.tenant_id == gw.tenant.pk and record.key_id == gw.key.key.pk
    assert record.key_prefix == gw.key.key.prefix
    assert (record.requested_model, record.served_model, record.provider) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        "fake-openai",
    )
    usage = response.json()["usage"]
    assert (record.prompt_tokens, record.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert record.cost_usd == Decimal(response.headers["x-gateway-cost-usd"])
    assert record.status == 200 and not record.streamed and not record.usage_estimated
    assert record.latency_ms > 0 and record.attempts[0]["outcome"] == "ok"


def test_streaming_record_uses_upstream_usage_even_when_client_did_not_ask(gw):
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "x y"}],
            "stream": True,
        },
    ) as r:
        body = r.read().decode()
    assert '"usage"' not in body
    [record] = wait_records(1)
    assert record.streamed and record.completion_tokens == 2 and not record.usage_estimated
    assert record.ttft_ms is not None and record.ttft_ms <= record.latency_ms


def test_abandoned_stream_is_recorded_as_estimated(gw, fake_openai):
    gw.add_model("pausing", "pause-3")
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        timeout=30,
        json={"model": "pausing", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content":"p' in line:
                seen += 1
            if seen == 3:
                break
    [record] = wait_records(1)
    assert record.status == 499 and record.error_code == "client_disconnected"
    assert record.usage_estimated and record.completion_tokens == 3
    assert record.prompt_tokens == fake_openai.prompt_total
    assert record.cost_usd > 0


def test_upstream_failure_is_recorded_without_tokens(gw):
    gw.add_model("broken", "status-500")
    assert chat(gw, "broken").status_code == 502
    [record] = wait_records(1)
    assert record.status == 502 and record.error_code == "upstream_error"
    assert record.prompt_tokens == record.completion_tokens == 0 and record.cost_usd == 0
    assert record.attempts[0]["outcome"] == "upstream_error"


def test_fall_through_records_every_attempt(gw):
    dead = provider_create(
        name="dead", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    model = model_create(
        name="resilient", input_price_per_million="1", output_price_per_million="1", retries=0
    )
    deployment_create(model=model, provider=dead, upstream_model="gpt-4o-mini", priority=0)
    deployment_create(model=model, provider=gw.provider, upstream_model="gpt-4o-mini", priority=1)
    settle()
    assert chat(gw, "resilient").status_code == 200
    [record] = wait_records(1)
    assert [a["outcome"] for a in record.attempts] == ["upstream_unavailable", "ok"]
    assert record.provider == "fake-openai"


def test_unknown_model_and_bad_key_are_not_recorded_but_routing_errors_are(gw):
    assert chat(gw, "does-not-exist").status_code == 404
    bad = httpx.post(
        gw.base_url + "/chat/completions",
        headers={"Authorization": "Bearer gw-nope"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert bad.status_code == 401
    [record] = wait_records(1, timeout=2)
    assert record.status == 404 and record.requested_model == "does-not-exist"


def test_price_change_applies_to_later_requests_only(gw):
    assert chat(gw, "gpt-4o-mini", "a").status_code == 200
    model_update(
        model=Model.objects.get(name="gpt-4o-mini"),
        input_price_per_million="10",
        output_price_per_million="20",
    )
    settle()
    assert chat(gw, "gpt-4o-mini", "a").status_code == 200
    first, second = wait_records(2)
    assert first.price_id != second.price_id
    assert second.cost_usd == first.cost_usd * 10


def test_embeddings_are_recorded(gw):
    response = httpx.post(
        gw.base_url + "/embeddings",
        headers=gw.headers,
        json={"model": "text-embedding-3-small", "input": ["a", "b"]},
    )
    assert response.status_code == 200
    [record] = wait_records(1)
    assert (
        record.endpoint == "embeddings"
        and record.prompt_tokens == 2
        and record.completion_tokens == 0
    )


def test_cached_and_reasoning_tokens_are_priced_at_their_own_rates(gw):
    from apps.providers.models import Price

    model = gw.add_model("detailed", "detailed")
    Price.objects.filter(model=model).update(
        input_per_million=Decimal("2"),
        output_per_million=Decimal("4"),
        cached_input_per_million=Decimal("0.5"),
        reasoning_per_million=Decimal("10"),
    )
    settle()
    response = chat(gw, "detailed", "alpha beta gamma delta")
    assert response.status_code == 200
    usage = response.json()["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached, reasoning = prompt - 2, 1
    expected = (
        2 * Decimal("2")
        + cached * Decimal("0.5")
        + (completion - reasoning) * Decimal("4")
        + reasoning * Decimal("10")
    ) / 1_000_000
    assert Decimal(response.headers["x-gateway-cost-usd"]) == expected.quantize(
        Decimal("0.00000001")
    )
    [record] = wait_records(1)
    assert (record.cached_tokens, record.reasoning_tokens) == (cached, reasoning)
    assert record.cost_usd == expected
