"""The official openai SDK against a live gateway process, the way users call it."""

from __future__ import annotations

import time

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

pytestmark = pytest.mark.live


def test_sync_chat_completion(gw, fake_openai):
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there gateway"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello there gateway"
    assert completion.model == "gpt-4o-mini"
    assert completion.usage.prompt_tokens == 13 and completion.usage.completion_tokens == 3
    assert raw.headers["x-gateway-provider"] == "fake-openai"
    assert raw.headers["x-gateway-model"] == "gpt-4o-mini"
    assert raw.headers["x-gateway-cache"] == "miss"
    # 13 prompt tokens at $1/M + 3 completion tokens at $2/M
    assert raw.headers["x-gateway-cost-usd"] == "0.00001900"
    assert raw.headers["x-request-id"].startswith("req_")
    upstream = fake_openai.requests[-1]
    assert upstream.headers["Authorization"] == f"Bearer {fake_openai.api_key}"
    assert upstream.body["model"] == "gpt-4o-mini"


def test_request_id_is_echoed(gw):
    response = httpx.post(
        gw.base_url + "/chat/completions",
        headers={**gw.headers, "X-Request-ID": "trace-123"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-123"


async def test_async_chat_completion(gw):
    client = AsyncOpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "async works"}]
    )
    assert completion.choices[0].message.content == "async works"
    await client.close()


def test_streaming_with_usage(gw):
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "onetwothree"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert all(c.model == "gpt-4o-mini" for c in chunks)


def test_streaming_without_usage_hides_usage_chunk(gw, fake_openai):
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a b"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    # The gateway still asked upstream for usage, for its own accounting.
    assert fake_openai.requests[-1].body["stream_options"] == {"include_usage": True}


def test_streaming_is_not_buffered(gw, fake_openai):
    fake_openai.stream_delay, fake_openai.stream_chunks = 0.1, 20  # ~2 s upstream
    started = time.perf_counter()
    arrivals = []
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        json={
            "model": "slow-model",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter() - started)
                lines.append(line)
    total = arrivals[-1]
    assert total > 1.5
    # the first content chunk arrives long before upstream produced the last one
    assert arrivals[1] < total / 3
    assert lines[-1] == "data: [DONE]"
    fake_openai.stream_delay, fake_openai.stream_chunks = 0.05, 20


def test_embeddings_float_and_base64(gw):
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    # the SDK asks for base64 by default and decodes it
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2
    assert result.data[0].embedding == pytest.approx([0.1, 0.2, 0.3], rel=1e-6)
    result = client.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="float"
    )
    assert result.data[0].embedding == [0.1, 0.2, 0.3]


def test_models_list_and_retrieve(gw):
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "text-embedding-3-small"} <= ids
    model = client.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini" and model.object == "model"


def test_mock_provider_streams_through_sdk(gw):
    gw.add_model("demo-mock", "mock-small", provider=gw.mock)
    client = OpenAI(base_url=gw.base_url, api_key=gw.key.secret)
    chunks = list(
        client.chat.completions.create(
            model="demo-mock",
            messages=[{"role": "user", "content": "echo: hello mock"}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello mock"
