"""The `gemini` adapter through a live gateway, called with the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from apps.providers.models import Provider
from apps.providers.services import (
    provider_create,
    provider_test_connection,
)
from tests.fakes.gemini_server import SIGNATURE, FakeGemini
from tests.providers.conftest import add_models, chat_error

pytestmark = pytest.mark.live

FAKE = FakeGemini

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "city": {"type": "string", "format": "city-name"},
                "unit": {"type": ["string", "null"], "enum": ["C", "F"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
NO_ARGS_TOOL = {
    "type": "function",
    "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def gemini(gw, fake) -> Provider:
    provider = provider_create(
        name="fake-gemini", kind="gemini", base_url=fake.base_url, credential=fake.api_key
    )
    add_models(
        provider,
        "gemini-test",
        "slow-gemini",
        "tool-gemini",
        "blocked-prompt",
        "safety-gemini",
        "thinking-gemini",
        "cached-gemini",
        *(f"status-{s}" for s in (400, 403, 404, 429, 500, 503, 504)),
    )
    add_models(provider, "text-embedding-004", mode="embedding")
    return provider


def test_plain_answer_translates_request_and_response(sdk, gemini, fake):
    completion = sdk.chat.completions.create(
        model="gemini-test",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi!"},
            {"role": "user", "content": "how are you"},
        ],
        temperature=0.3,
        top_p=0.8,
        max_tokens=100,
        stop=["END"],
        seed=7,
    )
    assert completion.choices[0].message.content == "how are you"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 15
    sent = fake.last
    assert sent.path == "/v1beta/models/gemini-test:generateContent"
    assert sent.headers["x-goog-api-key"] == fake.api_key
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.body["contents"] == [
        {"role": "user", "parts": [{"text": "hello"}]},
        {"role": "model", "parts": [{"text": "hi!"}]},
        {"role": "user", "parts": [{"text": "how are you"}]},
    ]
    assert sent.body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.8,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "seed": 7,
    }


def test_max_tokens_is_length(sdk, gemini):
    completion = sdk.chat.completions.create(
        model="gemini-test",
        messages=[{"role": "user", "content": "one two three"}],
        max_completion_tokens=2,
    )
    assert completion.choices[0].message.content == "one two"
    assert completion.choices[0].finish_reason == "length"


def test_streamed_answer(sdk, gemini, fake):
    chunks = list(
        sdk.chat.completions.create(
            model="slow-gemini",
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
    assert fake.last.path == "/v1beta/models/slow-gemini:streamGenerateContent"
    assert fake.last.query == {"alt": "sse"}
    assert fake.completed_streams == 1


def test_tool_call_round_trip_keeps_the_thought_signature(sdk, gemini, fake):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="tool-gemini", messages=messages, tools=[WEATHER_TOOL, NO_ARGS_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "Paris"}
    assert call.id.endswith("__thought__" + SIGNATURE)
    declarations = fake.last.body["tools"][0]["functionDeclarations"]
    assert declarations == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "nullable": True, "enum": ["C", "F"]},
                },
                "required": ["city"],
            },
        },
        {"name": "now", "description": ""},
    ]

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": "18C"}'},
    ]
    final = sdk.chat.completions.create(
        model="tool-gemini", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    assert final.choices[0].message.content == 'The tool said: {"temp": "18C"}'
    assert final.choices[0].finish_reason == "stop"
    assert fake.last.body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "name": "get_weather",
                        "args": {"city": "Paris", "unit": "Paris"},
                    },
                    "thoughtSignature": SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": "18C"}}}],
        },
    ]
    assert fake.last.body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


def test_plain_text_tool_result_is_wrapped(sdk, gemini, fake):
    messages = [
        {"role": "user", "content": "time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]
    completion = sdk.chat.completions.create(model="gemini-test", messages=messages)
    assert completion.choices[0].message.content == 'The tool said: {"content": "noon"}'


def test_streamed_tool_call_with_a_named_tool_choice(sdk, gemini, fake):
    chunks = list(
        sdk.chat.completions.create(
            model="gemini-test",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert len(deltas) == 1
    assert deltas[0].index == 0 and deltas[0].type == "function"
    assert deltas[0].function.name == "get_weather"
    assert json.loads(deltas[0].function.arguments)["city"] == "Paris"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert fake.last.body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


def test_image_parts(sdk, gemini, fake):
    completion = sdk.chat.completions.create(
        model="gemini-test",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what are these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "I see 2 image(s)"
    assert fake.last.body["contents"][0]["parts"] == [
        {"text": "what are these?"},
        {"inlineData": {"mimeType": "image/png", "data": PIXEL}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
    ]


def test_json_schema_response_format(sdk, gemini, fake):
    schema = {
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/City"}},
        "required": ["city"],
        "additionalProperties": False,
        "$defs": {"City": {"type": "string", "title": "City"}},
    }
    completion = sdk.chat.completions.create(
        model="gemini-test",
        messages=[{"role": "user", "content": "capital of France"}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content) == {"city": "Paris"}
    config = fake.last.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "object",
        "properties": {"city": {"type": "string", "title": "City"}},
        "required": ["city"],
    }


def test_blocked_prompt_is_content_filter(sdk, gemini):
    completion = sdk.chat.completions.create(
        model="blocked-prompt", messages=[{"role": "user", "content": "bad"}]
    )
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content is None
    chunks = list(
        sdk.chat.completions.create(
            model="blocked-prompt", messages=[{"role": "user", "content": "bad"}], stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_safety_finish_is_content_filter(sdk, gemini):
    completion = sdk.chat.completions.create(
        model="safety-gemini", messages=[{"role": "user", "content": "risky words here"}]
    )
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content == "risky"


def test_thoughts_are_hidden_but_counted(sdk, gemini):
    completion = sdk.chat.completions.create(
        model="thinking-gemini", messages=[{"role": "user", "content": "think hard"}]
    )
    assert completion.choices[0].message.content == "think hard"
    assert completion.usage.completion_tokens == 2 + 7
    assert completion.usage.completion_tokens_details.reasoning_tokens == 7
    chunks = list(
        sdk.chat.completions.create(
            model="thinking-gemini",
            messages=[{"role": "user", "content": "think hard"}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "think hard"


def test_cached_tokens(sdk, gemini):
    completion = sdk.chat.completions.create(
        model="cached-gemini", messages=[{"role": "user", "content": "again"}]
    )
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.prompt_tokens_details.cached_tokens == 4


def test_n_becomes_candidate_count(sdk, gemini, fake):
    completion = sdk.chat.completions.create(
        model="gemini-test", messages=[{"role": "user", "content": "twice"}], n=2
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert fake.last.body["generationConfig"]["candidateCount"] == 2


@pytest.mark.parametrize(
    ("upstream", "exc_class", "status"),
    [
        (400, openai.BadRequestError, 400),
        (403, openai.InternalServerError, 502),
        (404, openai.NotFoundError, 404),
        (429, openai.RateLimitError, 429),
        (500, openai.InternalServerError, 502),
        (503, openai.InternalServerError, 503),
        (504, openai.InternalServerError, 504),
    ],
)
def test_error_statuses(sdk, gemini, upstream, exc_class, status):
    error = chat_error(sdk, f"status-{upstream}", exc_class)
    assert error.status_code == status
    if upstream == 429:
        # Gemini says when to retry in a RetryInfo detail, not a header.
        assert error.response.headers["retry-after"] == "7"
    if upstream in (400, 404, 429, 500, 503):
        assert "simulated" in error.message


def test_invalid_key_is_a_gateway_auth_error(sdk, gw, fake):
    provider = provider_create(
        name="fake-gemini-badkey", kind="gemini", base_url=fake.base_url, credential="wrong"
    )
    add_models(provider, "gemini-badkey")
    error = chat_error(sdk, "gemini-badkey", openai.InternalServerError)
    assert error.status_code == 502
    assert error.code == "upstream_auth_error"


def test_embeddings(sdk, gemini, fake):
    result = sdk.embeddings.create(
        model="text-embedding-004", input=["short", "a bit longer"], dimensions=2
    )
    assert [d.embedding for d in result.data] == [[0.5, 0.5], [pytest.approx(1.2)] * 2]
    assert result.usage.prompt_tokens > 0
    assert fake.last.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert fake.last.body["requests"][1] == {
        "model": "models/text-embedding-004",
        "outputDimensionality": 2,
        "content": {"parts": [{"text": "a bit longer"}]},
    }


def test_list_models_follows_pages(gemini, fake):
    ok, message = provider_test_connection(provider=gemini)
    assert ok, message
    assert message == "ok: 3 model(s) available"
    assert [r.query.get("pageToken") for r in fake.requests] == [None, "2"]
