from __future__ import annotations

import re

import httpx
import pytest

from apps.keys.services import key_update
from tests.conftest import settle

pytestmark = pytest.mark.live


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_tokens_cost_and_limits(gw):
    key_update(key=gw.key.key, rpm=2)
    settle()
    before = httpx.get(gw.url + "/metrics").text
    for _ in range(2):
        assert (
            httpx.post(
                gw.base_url + "/chat/completions",
                headers=gw.headers,
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a b c"}]},
            ).status_code
            == 200
        )
    limited = httpx.post(
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert limited.status_code == 429
    after = httpx.get(gw.url + "/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ok = dict(provider="fake-openai", model="gpt-4o-mini", status="200")
    assert (
        metric(text, "llm_requests_total", **ok) - metric(before, "llm_requests_total", **ok) == 2
    )
    assert metric(text, "llm_tokens_total", model="gpt-4o-mini", kind="completion") >= 6
    assert metric(text, "llm_cost_usd_total", model="gpt-4o-mini") > 0
    assert metric(text, "llm_request_duration_seconds_count", model="gpt-4o-mini") >= 2
    assert metric(text, "llm_rate_limited_total", model="gpt-4o-mini") >= 1
    assert re.search(r"^# TYPE llm_time_to_first_token_seconds histogram", text, re.M)
    assert re.search(r"^# TYPE llm_provider_up gauge", text, re.M)
