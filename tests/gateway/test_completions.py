"""Legacy /v1/completions through the official SDK."""

from __future__ import annotations

import httpx
import pytest
from openai import BadRequestError, OpenAI

pytestmark = pytest.mark.live


def test_completion_plain_and_streamed(gw, fake_openai):
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    result = client.completions.create(model="gpt-4o-mini", prompt="say it back", max_tokens=20)
    assert result.object == "text_completion"
    assert result.choices[0].text == "say it back" and result.choices[0].finish_reason == "stop"
    assert result.usage.completion_tokens == 3
    assert fake_openai.requests[-1].body["messages"] == [{"role": "user", "content": "say it back"}]
    chunks = list(
        client.completions.create(
            model="gpt-4o-mini",
            prompt="one two",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "onetwo"
    assert chunks[-1].usage.completion_tokens == 2


def test_echo_and_unsupported_prompts(gw):
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret, max_retries=0)
    echoed = client.completions.create(model="gpt-4o-mini", prompt="abc", echo=True)
    assert echoed.choices[0].text == "abcabc"
    with pytest.raises(BadRequestError):
        client.completions.create(model="gpt-4o-mini", prompt=[1, 2, 3])
    with pytest.raises(BadRequestError):
        client.completions.create(model="gpt-4o-mini", prompt=["a", "b"])


def test_completions_are_recorded(gw):
    response = httpx.post(
        gw.base_url + "/completions",
        headers=gw.headers,
        json={"model": "gpt-4o-mini", "prompt": "x y"},
    )
    assert response.status_code == 200 and response.headers["x-gateway-cost-usd"]
    from tests.billing.test_usage_records import wait_records

    [record] = wait_records(1)
    assert record.endpoint == "completions" and record.completion_tokens == 2
