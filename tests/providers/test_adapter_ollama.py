"""The `ollama` adapter (native API) through a live gateway, called with the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from apps.providers.models import Provider
from apps.providers.services import (
    provider_create,
    provider_test_connection,
)
from tests.fakes.ollama_server import FakeOllama
from tests.providers.conftest import add_models, chat_error

pytestmark = pytest.mark.live

FAKE = FakeOllama

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def fake(fake) -> FakeOllama:
    fake.require_key = False
    return fake


@pytest.fixture
def ollama(gw, fake) -> Provider:
    provider = provider_create(
        name="fake-ollama",
        kind="ollama",
        base_url=fake.base_url,
        options={"ollama_options": {"num_ctx": 8192}, "keep_alive": "5m"},
    )
    add_models(
        provider,
        "llama3.2",
        "slow-llama",
        "tool-llama",
        "missing-model",
        "load-error",
        *(f"status-{s}" for s in (400, 429, 500, 503)),
    )
    add_models(provider, "nomic-embed-text", mode="embedding")
    return provider


def test_plain_answer_translates_request_and_response(sdk, ollama, fake):
    completion = sdk.chat.completions.create(
        model="llama3.2",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there llama"},
        ],
        temperature=0.4,
        top_p=0.9,
        max_tokens=50,
        stop=["END"],
        seed=1,
    )
    assert completion.choices[0].message.content == "hello there llama"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 11 and completion.usage.completion_tokens == 3
    sent = fake.last
    assert sent.path == "/api/chat"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there llama"},
        ],
        "stream": False,
        "options": {
            "temperature": 0.4,
            "top_p": 0.9,
            "seed": 1,
            "num_predict": 50,
            "stop": ["END"],
            "num_ctx": 8192,
        },
        "keep_alive": "5m",
    }


def test_num_predict_is_length(sdk, ollama):
    completion = sdk.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2
    )
    assert completion.choices[0].message.content == "a b"
    assert completion.choices[0].finish_reason == "length"


def test_streamed_answer(sdk, ollama, fake):
    chunks = list(
        sdk.chat.completions.create(
            model="slow-llama",
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
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert fake.last.body["stream"] is True
    assert fake.completed_streams == 1


def test_tool_call_round_trip(sdk, ollama, fake):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.chat.completions.create(model="tool-llama", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake.last.body["tools"] == [WEATHER_TOOL]

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = sdk.chat.completions.create(model="tool-llama", messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "The tool said: sunny"
    assert fake.last.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]


def test_streamed_tool_call(sdk, ollama):
    chunks = list(
        sdk.chat.completions.create(
            model="tool-llama",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert len(deltas) == 1 and deltas[0].index == 0
    assert deltas[0].function.name == "get_weather"
    assert json.loads(deltas[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_image_parts_become_base64_images(sdk, ollama, fake):
    completion = sdk.chat.completions.create(
        model="llama3.2",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "I see 1 image(s)"
    assert fake.last.body["messages"][0] == {
        "role": "user",
        "content": "what is this?",
        "images": [PIXEL],
    }
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="llama3.2",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
                    ],
                }
            ],
        )
    assert info.value.param == "image_url"


def test_response_format_becomes_format(sdk, ollama, fake):
    sdk.chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "json"}],
        response_format={"type": "json_object"},
    )
    assert fake.last.body["format"] == "json"
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    sdk.chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert fake.last.body["format"] == schema


@pytest.mark.parametrize(
    ("model", "exc_class", "status"),
    [
        ("status-400", openai.BadRequestError, 400),
        ("missing-model", openai.NotFoundError, 404),
        ("status-429", openai.RateLimitError, 429),
        ("status-500", openai.InternalServerError, 502),
        ("status-503", openai.InternalServerError, 503),
    ],
)
def test_error_statuses(sdk, ollama, model, exc_class, status):
    error = chat_error(sdk, model, exc_class)
    assert error.status_code == status
    assert "simulated" in error.message or "try pulling it first" in error.message


def test_error_line_before_output_fails_the_request(sdk, ollama):
    error = chat_error(sdk, "load-error", openai.InternalServerError, stream=True)
    assert error.status_code == 502
    assert "llama runner process has terminated" in error.message


def test_credential_is_sent_as_bearer_token(sdk, gw, fake):
    fake.require_key = True
    provider = provider_create(
        name="fake-ollama-key", kind="ollama", base_url=fake.base_url, credential=fake.api_key
    )
    add_models(provider, "llama-keyed")
    completion = sdk.chat.completions.create(
        model="llama-keyed", messages=[{"role": "user", "content": "secured"}]
    )
    assert completion.choices[0].message.content == "secured"
    assert fake.last.headers["authorization"] == f"Bearer {fake.api_key}"


def test_embeddings(sdk, ollama, fake):
    result = sdk.embeddings.create(model="nomic-embed-text", input="hello")
    assert [d.embedding for d in result.data] == [[0.125, 0.125, 0.125]]
    assert result.usage.prompt_tokens == 4
    assert fake.last.path == "/api/embed"
    assert fake.last.body == {"model": "nomic-embed-text", "input": ["hello"], "keep_alive": "5m"}


def test_list_models_checks_the_connection(ollama, fake):
    ok, message = provider_test_connection(provider=ollama)
    assert ok, message
    assert message == "ok: 2 model(s) available"
    assert fake.last.path == "/api/tags"
