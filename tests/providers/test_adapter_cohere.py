"""The `cohere` adapter through a live gateway, called with the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from apps.providers.models import Provider
from apps.providers.services import (
    provider_create,
    provider_test_connection,
)
from tests.fakes.cohere_server import TOOL_PLAN, FakeCohere
from tests.providers.conftest import add_models, chat_error

pytestmark = pytest.mark.live

FAKE = FakeCohere

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
OTHER_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
def cohere(gw, fake) -> Provider:
    provider = provider_create(
        name="fake-cohere", kind="cohere", base_url=fake.base_url, credential=fake.api_key
    )
    add_models(
        provider,
        "command-test",
        "slow-command",
        "tool-command",
        "error-finish",
        *(f"status-{s}" for s in (400, 401, 404, 429, 500, 503)),
    )
    add_models(provider, "embed-v4.0", mode="embedding")
    return provider


def test_plain_answer_translates_request_and_response(sdk, cohere, fake):
    completion = sdk.chat.completions.create(
        model="command-test",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there cohere"},
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        stop=["END"],
        seed=3,
    )
    assert completion.choices[0].message.content == "hello there cohere"
    assert completion.choices[0].finish_reason == "stop"
    # billed units, not the raw token counts
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 3
    sent = fake.last
    assert sent.path == "/v2/chat"
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.body == {
        "model": "command-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there cohere"},
        ],
        "temperature": 0.2,
        "p": 0.9,
        "seed": 3,
        "max_tokens": 64,
        "stop_sequences": ["END"],
        "stream": False,
    }


def test_finish_reasons(sdk, cohere):
    cut = sdk.chat.completions.create(
        model="command-test", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2
    )
    assert cut.choices[0].finish_reason == "length"
    stopped = sdk.chat.completions.create(
        model="command-test", messages=[{"role": "user", "content": "a b STOP d"}], stop="STOP"
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == "a b"
    error = chat_error(sdk, "error-finish", openai.InternalServerError, content="x")
    assert error.status_code == 502


def test_streamed_answer(sdk, cohere, fake):
    chunks = list(
        sdk.chat.completions.create(
            model="slow-command",
            messages=[{"role": "user", "content": "go"}],
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
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 5
    assert fake.last.body["stream"] is True
    assert fake.completed_streams == 1


def test_tool_call_round_trip(sdk, cohere, fake):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="tool-command", messages=messages, tools=[WEATHER_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == TOOL_PLAN  # the tool plan is the visible reasoning
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake.last.body["tools"] == [WEATHER_TOOL]

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 18C"},
    ]
    final = sdk.chat.completions.create(
        model="tool-command", messages=messages, tools=[WEATHER_TOOL]
    )
    assert final.choices[0].message.content == "The tool said: sunny, 18C"
    assert fake.last.body["messages"][1:] == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
            "tool_plan": TOOL_PLAN,
        },
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": [{"type": "document", "document": {"data": "sunny, 18C"}}],
        },
    ]


def test_streamed_tool_call_with_a_named_tool_choice(sdk, cohere, fake):
    chunks = list(
        sdk.chat.completions.create(
            model="command-test",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[OTHER_TOOL, WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == TOOL_PLAN
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("get_weather_")
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # Naming one function sends only that tool, and requires a call.
    assert [t["function"]["name"] for t in fake.last.body["tools"]] == ["get_weather"]
    assert fake.last.body["tool_choice"] == "REQUIRED"


def test_image_parts(sdk, cohere, fake):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    completion = sdk.chat.completions.create(
        model="command-test",
        messages=[{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}],
    )
    assert completion.choices[0].message.content == "I see 1 image(s)"
    assert fake.last.body["messages"][0]["content"] == [{"type": "text", "text": "what?"}, image]


def test_json_response_format(sdk, cohere, fake):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    sdk.chat.completions.create(
        model="command-test",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert fake.last.body["response_format"] == {"type": "json_object", "json_schema": schema}


@pytest.mark.parametrize(
    ("upstream", "exc_class", "status"),
    [
        (400, openai.BadRequestError, 400),
        (401, openai.InternalServerError, 502),
        (404, openai.NotFoundError, 404),
        (429, openai.RateLimitError, 429),
        (500, openai.InternalServerError, 502),
        (503, openai.InternalServerError, 503),
    ],
)
def test_error_statuses(sdk, cohere, upstream, exc_class, status):
    error = chat_error(sdk, f"status-{upstream}", exc_class)
    assert error.status_code == status
    if upstream != 401:
        assert "simulated" in error.message
    else:
        assert error.code == "upstream_auth_error"


def test_wrong_key_is_a_gateway_auth_error(sdk, gw, fake):
    provider = provider_create(
        name="fake-cohere-badkey", kind="cohere", base_url=fake.base_url, credential="nope"
    )
    add_models(provider, "command-badkey")
    error = chat_error(sdk, "command-badkey", openai.InternalServerError)
    assert error.code == "upstream_auth_error"
    assert "invalid api token" in error.message


def test_embeddings(sdk, cohere, fake):
    result = sdk.embeddings.create(model="embed-v4.0", input=["a", "b"], dimensions=2)
    assert [d.embedding for d in result.data] == [[0.25, 0.25], [0.25, 0.25]]
    assert result.usage.prompt_tokens == 6
    assert fake.last.path == "/v2/embed"
    assert fake.last.body == {
        "model": "embed-v4.0",
        "texts": ["a", "b"],
        "input_type": "search_document",
        "embedding_types": ["float"],
        "output_dimension": 2,
    }


def test_list_models_checks_the_connection(cohere, fake):
    ok, message = provider_test_connection(provider=cohere)
    assert ok, message
    assert message == "ok: 2 model(s) available"
    assert fake.last.path == "/v1/models"
