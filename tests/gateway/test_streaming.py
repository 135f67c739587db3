"""Streams end cleanly, fail visibly, and stop upstream when the client leaves."""

from __future__ import annotations

import httpx
import orjson
import pytest

pytestmark = pytest.mark.live


def events(lines):
    return [line[6:] for line in lines if line.startswith("data: ")]


def test_client_disconnect_cancels_upstream(gw, fake_openai):
    fake_openai.stream_delay, fake_openai.stream_chunks = 0.1, 100  # a 10 s answer
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        timeout=30,
        json={
            "model": "slow-model",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
        },
    ) as r:
        received = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                received += 1
            if received == 3:
                break
    # leaving the block closed the connection mid-stream
    assert fake_openai.wait_for(lambda: fake_openai.disconnects == 1, timeout=5)
    assert fake_openai.completed_streams == 0
    fake_openai.stream_delay, fake_openai.stream_chunks = 0.05, 20


def test_upstream_drop_mid_stream_ends_with_error_event(gw):
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        timeout=10,
        json={
            "model": "drop-model",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
        },
    ) as r:
        assert r.status_code == 200
        data = events(list(r.iter_lines()))
    last = orjson.loads(data[-1])
    assert last["error"]["type"] == "api_error"
    assert last["error"]["code"]
    assert "[DONE]" not in data


def test_upstream_error_before_first_chunk_keeps_http_status(gw):
    gw.add_model("stream-500", "status-500")
    response = httpx.post(
        gw.base_url + "/chat/completions",
        headers=gw.headers,
        json={
            "model": "stream-500",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
        },
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
