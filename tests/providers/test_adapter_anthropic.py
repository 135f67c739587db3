"""The `anthropic` adapter through a live gateway, called with the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from apps.providers.models import Provider
from apps.providers.services import (
    deployment_create,
    model_create,
    provider_create,
    provider_test_connection,
)
from tests.conftest import settle
from tests.fakes.anthropic_server import FakeAnthropic
from tests.providers.conftest import add_models, chat_error

pytestmark = pytest.mark.live

FAKE = FakeAnthropic

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def claude(gw, fake) -> Provider:
    provider = provider_create(
        name="fake-anthropic", kind="anthropic", base_url=fake.base_url, credential=fake.api_key
    )
    add_models(
        provider,
        "claude-test",
        "tool-claude",
        "slow-claude",
        "refuse-claude",
        "cached-claude",
        "midstream-error",
        "drop-claude",
        *(f"status-{s}" for s in (400, 401, 403, 404, 429, 500, 529)),
    )
    return provider


def test_plain_answer_translates_request_and_response(sdk, claude, fake):
    completion = sdk.chat.completions.create(
        model="claude-test",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Dev note."}]},
            {"role": "user", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "there claude"}]},
        ],
        temperature=1.5,
        top_p=0.9,
        stop="NEVER",
        user="user-7",
    )
    assert completion.choices[0].message.content == "hello there claude"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 10
    assert completion.usage.completion_tokens == 3
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    sent = fake.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == fake.api_key
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body["system"] == "Be brief.\n\nDev note."
    # Consecutive user messages are merged into one turn.
    assert sent.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "text", "text": "there claude"},
            ],
        }
    ]
    assert sent.body["max_tokens"] == 4096
    assert sent.body["temperature"] == 1.0
    assert sent.body["top_p"] == 0.9
    assert sent.body["stop_sequences"] == ["NEVER"]
    assert sent.body["metadata"] == {"user_id": "user-7"}
    assert "stream" not in sent.body


def test_max_tokens_and_stop_sequences_map_to_finish_reasons(sdk, claude, fake):
    cut = sdk.chat.completions.create(
        model="claude-test",
        messages=[{"role": "user", "content": "one two three four"}],
        max_tokens=2,
    )
    assert cut.choices[0].message.content == "one two"
    assert cut.choices[0].finish_reason == "length"
    assert fake.last.body["max_tokens"] == 2
    stopped = sdk.chat.completions.create(
        model="claude-test",
        messages=[{"role": "user", "content": "one two STOP four"}],
        stop=["STOP"],
        max_completion_tokens=50,
    )
    assert stopped.choices[0].message.content == "one two"
    assert stopped.choices[0].finish_reason == "stop"
    assert fake.last.body["max_tokens"] == 50


def test_options_set_version_and_default_max_tokens(sdk, gw, fake):
    provider = provider_create(
        name="fake-anthropic-opts",
        kind="anthropic",
        base_url=fake.base_url + "/v1",  # tolerated: the SDK habit of OpenAI users
        credential=fake.api_key,
        options={"anthropic_version": "2023-01-01", "default_max_tokens": 321},
    )
    add_models(provider, "claude-opts")
    completion = sdk.chat.completions.create(
        model="claude-opts", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "hi"
    assert fake.last.headers["anthropic-version"] == "2023-01-01"
    assert fake.last.body["max_tokens"] == 321


def test_cache_tokens_count_as_prompt_tokens(sdk, claude, fake):
    completion = sdk.chat.completions.create(
        model="cached-claude", messages=[{"role": "user", "content": "cache me"}]
    )
    # input 10 + cache reads 100 + cache writes 20
    assert completion.usage.prompt_tokens == 130
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    assert completion.usage.total_tokens == 132


def test_streamed_answer(sdk, claude, fake):
    chunks = list(
        sdk.chat.completions.create(
            model="slow-claude",
            messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 10 and chunks[-1].usage.completion_tokens == 10
    assert fake.last.body["stream"] is True
    assert fake.last.headers["accept"] == "text/event-stream"
    assert fake.completed_streams == 1


def test_tool_call_round_trip(sdk, claude, fake):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="tool-claude", messages=messages, tools=[WEATHER_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("toolu_")
    assert fake.last.body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert "tool_choice" not in fake.last.body

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
        {"role": "user", "content": "Thanks!"},
    ]
    final = sdk.chat.completions.create(
        model="tool-claude", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    assert final.choices[0].message.content == "The tool said: 18C and sunny"
    assert final.choices[0].finish_reason == "stop"
    sent = fake.last.body["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    # The tool result and the next user message form one user turn, result first.
    assert sent[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"},
            {"type": "text", "text": "Thanks!"},
        ],
    }
    assert fake.last.body["tool_choice"] == {"type": "auto"}


def test_streamed_tool_call(sdk, claude, fake):
    stream = sdk.chat.completions.create(
        model="claude-test",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta_call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta_call.id or ""
            entry["name"] += (delta_call.function.name or "") if delta_call.function else ""
            entry["arguments"] += (
                (delta_call.function.arguments or "") if delta_call.function else ""
            )
        finish = chunk.choices[0].finish_reason or finish
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("toolu_") and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert finish == "tool_calls"
    assert fake.last.body["tool_choice"] == {"type": "any"}


def test_specific_tool_choice_and_no_parallel_calls(sdk, claude, fake):
    completion = sdk.chat.completions.create(
        model="claude-test",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert fake.last.body["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }


def test_image_parts_become_image_blocks(sdk, claude, fake):
    completion = sdk.chat.completions.create(
        model="claude-test",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what are these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "I see 2 image(s)"
    assert fake.last.body["messages"][0]["content"] == [
        {"type": "text", "text": "what are these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_json_schema_response_format_is_a_forced_tool(sdk, claude, fake):
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}}
    completion = sdk.chat.completions.create(
        model="claude-test",
        messages=[{"role": "user", "content": "Capital of France as JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content) == {"capital": "Paris"}
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None
    assert fake.last.body["tools"][0]["input_schema"] == schema
    assert fake.last.body["tool_choice"] == {"type": "tool", "name": "json_response"}

    chunks = list(
        sdk.chat.completions.create(
            model="claude-test",
            messages=[{"role": "user", "content": "again, streamed"}],
            response_format={"type": "json_object"},
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"ok": True}
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_refusal_is_content_filter(sdk, claude):
    completion = sdk.chat.completions.create(
        model="refuse-claude", messages=[{"role": "user", "content": "something bad"}]
    )
    assert completion.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize(
    ("upstream", "exc_class", "status", "code"),
    [
        (400, openai.BadRequestError, 400, "upstream_invalid_request"),
        (401, openai.InternalServerError, 502, "upstream_auth_error"),
        (403, openai.InternalServerError, 502, "upstream_auth_error"),
        (404, openai.NotFoundError, 404, "upstream_invalid_request"),
        (429, openai.RateLimitError, 429, "upstream_rate_limited"),
        (500, openai.InternalServerError, 502, "upstream_error"),
        (529, openai.InternalServerError, 503, "upstream_unavailable"),
    ],
)
def test_error_statuses(sdk, claude, upstream, exc_class, status, code):
    error = chat_error(sdk, f"status-{upstream}", exc_class)
    assert error.status_code == status
    assert error.code == code
    assert "simulated" in error.message
    if upstream == 429:
        assert error.response.headers["retry-after"] == "2"
    if upstream == 400:
        assert error.type == "invalid_request_error"


def test_streamed_error_status_before_first_chunk(sdk, claude):
    error = chat_error(sdk, "status-529", openai.InternalServerError, stream=True)
    assert error.status_code == 503


def test_error_event_mid_stream(sdk, claude):
    stream = sdk.chat.completions.create(
        model="midstream-error", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received  # the first word arrived before the upstream failed
    assert "Overloaded" in info.value.message


def test_overload_event_before_any_output_fails_over(sdk, claude, fake):
    model = model_create(
        name="claude-ha", input_price_per_million="1.00", output_price_per_million="2.00", retries=0
    )
    deployment_create(
        model=model, provider=claude, upstream_model="overloaded-at-start", priority=0
    )
    deployment_create(model=model, provider=claude, upstream_model="claude-test", priority=1)
    settle()
    raw = sdk.chat.completions.with_raw_response.create(
        model="claude-ha", messages=[{"role": "user", "content": "still there"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "still there"
    assert raw.headers["x-gateway-upstream-model"] == "claude-test"
    assert [r.body["model"] for r in fake.requests] == ["overloaded-at-start", "claude-test"]


def test_dropped_connection_ends_the_stream_with_an_error(sdk, claude):
    stream = sdk.chat.completions.create(
        model="drop-claude", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "w0 w1"
    assert "provider fake-anthropic" in info.value.message


def test_wrong_credential_is_a_gateway_auth_error(sdk, gw, fake):
    provider = provider_create(
        name="fake-anthropic-badkey", kind="anthropic", base_url=fake.base_url, credential="nope"
    )
    add_models(provider, "claude-badkey")
    error = chat_error(sdk, "claude-badkey", openai.InternalServerError)
    assert error.status_code == 502
    assert error.code == "upstream_auth_error"


def test_list_models_checks_the_connection(claude, fake):
    ok, message = provider_test_connection(provider=claude)
    assert ok, message
    assert message == "ok: 2 model(s) available"
    assert fake.last.path == "/v1/models"
    assert fake.last.headers["anthropic-version"] == "2023-06-01"
