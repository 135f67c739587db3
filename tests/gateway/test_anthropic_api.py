"""Inbound Anthropic compatibility: the official ``anthropic`` SDK against a live gateway,
served by an OpenAI-kind provider (the fake OpenAI upstream) through the same pipeline."""

from __future__ import annotations

import time

import anthropic
import httpx
import orjson
import pytest

from apps.billing.models import UsageRecord
from apps.providers.tokens import estimate_prompt_tokens

pytestmark = pytest.mark.live

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
    },
}
TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}


def client(gw, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key.secret, max_retries=0, **kwargs)


def wait_for_records(request_id: str, timeout: float = 10.0) -> list[UsageRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = list(UsageRecord.objects.filter(request_id=request_id))
        if records:
            time.sleep(0.6)  # a second record would be flushed by now
            return list(UsageRecord.objects.filter(request_id=request_id))
        time.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, data) pairs; each event must have both lines."""
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            assert name is not None, f"data without an event line: {line}"
            events.append((name, orjson.loads(line[len("data: ") :])))
            name = None
    return events


def post_raw(gw, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/messages",
        json=body,
        headers={"anthropic-version": "2023-06-01", **headers},
        timeout=10,
    )


# --- plain messages ------------------------------------------------------------------


def test_plain_message_with_the_sdk(gw, fake_openai):
    raw = client(gw).messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello there gateway"}],
    )
    # This SDK version authenticates with a bearer token (x-api-key: see the raw test).
    assert raw.http_request.headers["authorization"] == f"Bearer {gw.key.secret}"
    assert "x-api-key" not in raw.http_request.headers
    message = raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "gpt-4o-mini"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "hello there gateway"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == 13 and message.usage.output_tokens == 3
    assert message.usage.cache_read_input_tokens == 0
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert raw.headers["x-gateway-provider"] == "fake-openai"
    assert raw.headers["x-gateway-model"] == "gpt-4o-mini"
    assert raw.headers["x-gateway-cost-usd"] == "0.00001900"
    upstream = fake_openai.requests[-1]
    assert upstream.path == "/v1/chat/completions"
    assert upstream.body["max_tokens"] == 100
    assert upstream.body["messages"] == [{"role": "user", "content": "hello there gateway"}]

    (record,) = wait_for_records(raw.headers["request-id"])
    assert record.endpoint == "messages" and record.status == 200 and not record.streamed
    assert (record.prompt_tokens, record.completion_tokens) == (13, 3)
    assert record.provider == "fake-openai" and record.requested_model == "gpt-4o-mini"
    # The message id names the usage record.
    assert message.id == "msg_" + record.record_id.hex


def test_x_api_key_header_and_raw_shape(gw):
    response = post_raw(
        gw,
        {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
        **{"x-api-key": gw.key.secret, "x-request-id": "trace-anthropic-1"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-anthropic-1"
    assert response.headers["request-id"] == "trace-anthropic-1"
    body = response.json()
    assert set(body) == {
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    }
    assert body["content"] == [{"type": "text", "text": "hi"}]
    (record,) = wait_for_records("trace-anthropic-1")
    assert record.endpoint == "messages"


def test_system_prompt_multi_turn_and_parameters_are_translated(gw, fake_openai):
    client(gw).messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
        stop_sequences=["END", "STOP"],
        metadata={"user_id": "user-42"},
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        # This SDK version no longer offers the sampling parameters; older ones and raw
        # clients still send them.
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 40},
    )
    body = fake_openai.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["stop"] == ["END", "STOP"]
    assert body["user"] == "user-42"
    assert body["max_tokens"] == 64
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }
    assert "top_k" not in body and "metadata" not in body and "system" not in body


def test_image_blocks_arrive_as_image_url_parts(gw, fake_openai):
    message = client(gw).messages.create(
        model="gpt-4o-mini",
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                    },
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )
    assert message.content[0].text == "parts"  # the fake's answer to content parts
    assert fake_openai.requests[-1].body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]


# --- streaming -----------------------------------------------------------------------


def test_streaming_with_the_sdk(gw):
    with client(gw).messages.stream(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[{"role": "user", "content": "one two three"}],
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    assert deltas == ["one", "two", "three"]  # the fake streams words without spaces
    assert final.content[0].text == "onetwothree"
    assert final.stop_reason == "end_turn"
    prompt = estimate_prompt_tokens([{"content": "one two three"}])
    assert final.usage.input_tokens == prompt and final.usage.output_tokens == 3
    (record,) = wait_for_records(request_id)
    assert record.endpoint == "messages" and record.streamed and record.status == 200
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, 3)


def test_stream_event_sequence_is_anthropics(gw):
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        headers={"x-api-key": gw.key.secret},
        json={
            "model": "gpt-4o-mini",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "a b"}],
        },
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gateway-provider"] == "fake-openai"
        events = sse_events(response)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["role"] == "assistant"
    assert start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "a"}
    assert events[5][1] == {"type": "content_block_stop", "index": 0}
    delta = events[6][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 2


def test_error_mid_stream_is_an_error_event(gw):
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        headers={"authorization": f"Bearer {gw.key.secret}"},
        json={
            "model": "drop-model",  # the upstream drops the connection after two chunks
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
        timeout=10,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["request-id"]
        events = sse_events(response)
    name, data = events[-1]
    assert name == "error"
    assert data["type"] == "error" and data["error"]["type"] == "api_error"
    assert data["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]
    (record,) = wait_for_records(request_id)
    assert record.status >= 500 and record.endpoint == "messages"

    sdk = client(gw)
    with pytest.raises(anthropic.APIStatusError) as raised:  # noqa: SIM117
        with sdk.messages.stream(
            model="drop-model", max_tokens=50, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            stream.get_final_message()
    assert raised.value.body["error"]["type"] == "api_error"


def test_client_leaving_mid_stream_stops_upstream_and_is_accounted(gw, fake_openai):
    fake_openai.stream_delay, fake_openai.stream_chunks = 0.1, 100  # a 10 s answer
    try:
        with httpx.stream(
            "POST",
            gw.url + "/v1/messages",
            headers={"x-api-key": gw.key.secret},
            json={
                "model": "slow-model",
                "max_tokens": 500,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
            timeout=30,
        ) as response:
            request_id = response.headers["request-id"]
            deltas = 0
            for line in response.iter_lines():
                deltas += line == "event: content_block_delta"
                if deltas == 3:
                    break
        assert fake_openai.wait_for(lambda: fake_openai.disconnects == 1, timeout=5)
        assert fake_openai.completed_streams == 0
        (record,) = wait_for_records(request_id)
        assert record.status == 499 and record.error_code == "client_disconnected"
        assert record.endpoint == "messages" and record.completion_tokens >= 3
    finally:
        fake_openai.stream_delay, fake_openai.stream_chunks = 0.05, 20


def test_any_provider_behind_the_gateway(gw):
    """The built-in mock provider (not OpenAI-kind) answers through /v1/messages too."""
    gw.add_model("mock-chat", "mock-1", provider=gw.mock)
    sdk = client(gw)
    message = sdk.messages.create(
        model="mock-chat", max_tokens=50, messages=[{"role": "user", "content": "hello mock"}]
    )
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.output_tokens > 0
    with sdk.messages.stream(
        model="mock-chat", max_tokens=50, messages=[{"role": "user", "content": "hello mock"}]
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].text == message.content[0].text
    assert streamed.stop_reason == "end_turn"


# --- tools ---------------------------------------------------------------------------


def test_tool_use_round_trip(gw, fake_openai):
    gw.add_model("tool-call")
    sdk = client(gw)
    question = {"role": "user", "content": "weather in Paris"}
    first = sdk.messages.create(
        model="tool-call",
        max_tokens=200,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[question],
    )
    upstream = fake_openai.requests[-1].body
    assert upstream["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert upstream["tool_choice"] == "required"
    assert upstream["parallel_tool_calls"] is False
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.id == "call_fake_0" and call.name == "get_weather"
    assert call.input == {"query": "weather in Paris"}  # parsed JSON, not a string
    assert first.usage.cache_read_input_tokens == 2  # the fake reports 2 cached tokens
    prompt = estimate_prompt_tokens(upstream["messages"])
    assert first.usage.input_tokens == prompt - 2

    final = sdk.messages.create(
        model="tool-call",
        max_tokens=200,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,
                        "content": [{"type": "text", "text": "18 degrees"}],
                    },
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ],
    )
    upstream = fake_openai.requests[-1].body
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert upstream["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_fake_0",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"query":"weather in Paris"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake_0", "content": "18 degrees"},
        {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}]},
    ]
    # The fake answers from tool results only when they come last; here the user spoke after.
    assert final.stop_reason == "tool_use"

    answer = sdk.messages.create(
        model="tool-call",
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,
                        "content": "18 degrees",
                        "is_error": False,
                    }
                ],
            },
        ],
    )
    assert fake_openai.requests[-1].body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_fake_0",
        "content": "18 degrees",
    }
    assert answer.stop_reason == "end_turn"
    assert [b.type for b in answer.content] == ["text"]
    assert answer.content[0].text == "tool said: 18 degrees"


def test_tool_use_streaming(gw):
    gw.add_model("tool-call")
    with client(gw).messages.stream(
        model="tool-call",
        max_tokens=200,
        tools=[WEATHER, TIME],
        messages=[{"role": "user", "content": "Paris"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert [(e.index, e.content_block.type) for e in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    assert [e.content_block.name for e in starts[1:]] == ["get_weather", "get_time"]
    json_deltas = [
        e for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert {e.index for e in json_deltas} == {1, 2} and len(json_deltas) == 4
    stops = [e.index for e in events if e.type == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert final.stop_reason == "tool_use"
    assert final.content[0].text == "Checking."
    assert [(b.name, b.input) for b in final.content[1:]] == [
        ("get_weather", {"query": "Paris"}),
        ("get_time", {"query": "Paris"}),
    ]
    assert final.usage.cache_read_input_tokens == 2


# --- errors --------------------------------------------------------------------------


def test_unknown_model_is_not_found_error(gw):
    with pytest.raises(anthropic.NotFoundError) as raised:
        client(gw).messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    error = raised.value
    assert error.status_code == 404
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in error.body["error"]["message"]
    assert error.response.headers["request-id"] == error.request_id


def test_bad_key_is_authentication_error(gw):
    with pytest.raises(anthropic.AuthenticationError) as raised:
        anthropic.Anthropic(base_url=gw.url, api_key="gw-wrong", max_retries=0).messages.create(
            model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.body["error"]["type"] == "authentication_error"
    response = post_raw(
        gw,
        {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
        **{"x-api-key": "gw-wrong"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_missing_max_tokens_is_invalid_request_error(gw, fake_openai):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    response = post_raw(gw, body, **{"x-api-key": gw.key.secret})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        "request_id": response.headers["request-id"],
    }
    with pytest.raises(anthropic.BadRequestError) as raised:
        client(gw).post("/v1/messages", body=body, cast_to=httpx.Response)
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert fake_openai.requests == []


def test_upstream_unavailable_is_overloaded_error(gw):
    gw.add_model("down", "status-503", retries=0)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client(gw).messages.create(
            model="down", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.status_code == 503
    assert raised.value.body["error"]["type"] == "overloaded_error"
    (record,) = wait_for_records(raised.value.response.headers["request-id"])
    assert record.status == 503 and record.endpoint == "messages"


def test_count_tokens(gw, fake_openai):
    result = client(gw).messages.count_tokens(
        model="gpt-4o-mini",
        system="Be brief.",
        messages=[{"role": "user", "content": "hello there gateway"}],
    )
    expected = estimate_prompt_tokens(
        [{"content": "Be brief."}, {"content": "hello there gateway"}]
    )
    assert result.input_tokens == expected
    assert fake_openai.requests == []
    with pytest.raises(anthropic.NotFoundError):
        client(gw).messages.count_tokens(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
