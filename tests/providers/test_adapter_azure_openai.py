"""The `azure_openai` adapter through a live gateway, called with the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from apps.providers.models import Provider
from apps.providers.services import (
    provider_create,
    provider_test_connection,
)
from tests.fakes.azure_openai_server import FakeAzureOpenAI
from tests.providers.conftest import add_models, chat_error

pytestmark = pytest.mark.live

FAKE = FakeAzureOpenAI

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def azure(gw, fake) -> Provider:
    provider = provider_create(
        name="fake-azure", kind="azure_openai", base_url=fake.base_url, credential=fake.api_key
    )
    add_models(
        provider,
        "az-chat-deployment",
        "az-slow-deployment",
        "az-tool-deployment",
        "az-filtered-prompt",
        "az-filtered-output",
        "az-missing-deployment",
        *(f"az-status-{s}" for s in (400, 401, 429, 500, 503)),
        upstream_prefix="az-",
    )
    add_models(provider, "az-embedding-deployment", mode="embedding", upstream_prefix="az-")
    return provider


def test_plain_answer_uses_deployment_url_and_api_key(sdk, azure, fake):
    completion = sdk.chat.completions.create(
        model="az-chat-deployment", messages=[{"role": "user", "content": "hello azure"}]
    )
    assert completion.choices[0].message.content == "hello azure"
    assert completion.model == "az-chat-deployment"
    assert completion.usage.prompt_tokens == 9 and completion.usage.completion_tokens == 2
    sent = fake.last
    assert sent.path == "/openai/deployments/chat-deployment/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == fake.api_key
    assert "authorization" not in sent.headers


def test_api_version_and_entra_token_options(sdk, gw, fake):
    provider = provider_create(
        name="fake-azure-entra",
        kind="azure_openai",
        base_url=fake.base_url + "/openai/",  # tolerated: the endpoint with /openai
        credential=fake.entra_token,
        options={"api_version": "2025-01-01-preview", "auth": "bearer"},
    )
    add_models(provider, "az-entra", upstream_prefix="az-")
    completion = sdk.chat.completions.create(
        model="az-entra", messages=[{"role": "user", "content": "token auth"}]
    )
    assert completion.choices[0].message.content == "token auth"
    assert fake.last.path == "/openai/deployments/entra/chat/completions"
    assert fake.last.query == {"api-version": "2025-01-01-preview"}
    assert fake.last.headers["authorization"] == f"Bearer {fake.entra_token}"
    assert "api-key" not in fake.last.headers


def test_streamed_answer_drops_the_prompt_annotation_chunk(sdk, azure, fake):
    chunks = list(
        sdk.chat.completions.create(
            model="az-slow-deployment",
            messages=[{"role": "user", "content": "go"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    # Azure's first event has no choices and no usage; clients never see it.
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert fake.last.body["stream_options"] == {"include_usage": True}


def test_tool_call_round_trip(sdk, azure, fake):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="az-tool-deployment", messages=messages, tools=[WEATHER_TOOL]
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = sdk.chat.completions.create(
        model="az-tool-deployment", messages=messages, tools=[WEATHER_TOOL]
    )
    assert final.choices[0].message.content == "The tool said: sunny"
    assert fake.last.body["messages"][1]["tool_calls"][0]["id"] == call.id
    assert fake.last.body["messages"][2] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": "sunny",
    }


def test_image_parts_pass_through(sdk, azure, fake):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    sdk.chat.completions.create(
        model="az-chat-deployment",
        messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, image]}],
    )
    assert fake.last.body["messages"][0]["content"][1] == image


def test_filtered_prompt_is_a_content_policy_error(sdk, azure):
    for model, text in (("az-filtered-prompt", "hi"), ("az-chat-deployment", "FORBIDDEN words")):
        error = chat_error(sdk, model, openai.BadRequestError, content=text)
        assert error.status_code == 400
        assert error.code == "content_policy_violation"
        assert error.param == "prompt"
        assert "content management policy" in error.message
    error = chat_error(sdk, "az-filtered-prompt", openai.BadRequestError, stream=True)
    assert error.code == "content_policy_violation"


def test_filtered_output_is_finish_reason_content_filter(sdk, azure):
    completion = sdk.chat.completions.create(
        model="az-filtered-output", messages=[{"role": "user", "content": "tell me more"}]
    )
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content == "tell"
    chunks = list(
        sdk.chat.completions.create(
            model="az-filtered-output",
            messages=[{"role": "user", "content": "tell me more"}],
            stream=True,
        )
    )
    assert chunks[-1].choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize(
    ("deployment", "exc_class", "status"),
    [
        ("az-status-400", openai.BadRequestError, 400),
        ("az-status-401", openai.InternalServerError, 502),
        ("az-missing-deployment", openai.NotFoundError, 404),
        ("az-status-429", openai.RateLimitError, 429),
        ("az-status-500", openai.InternalServerError, 502),
        ("az-status-503", openai.InternalServerError, 503),
    ],
)
def test_error_statuses(sdk, azure, deployment, exc_class, status):
    error = chat_error(sdk, deployment, exc_class)
    assert error.status_code == status
    if status == 429:
        assert error.response.headers["retry-after"] == "2"
    if deployment == "az-status-401":
        assert error.code == "upstream_auth_error"


def test_embeddings(sdk, azure, fake):
    result = sdk.embeddings.create(model="az-embedding-deployment", input=["a", "b"], dimensions=4)
    assert [d.embedding for d in result.data] == [[0.5] * 4, [0.5] * 4]
    assert result.usage.prompt_tokens == 4
    assert fake.last.path == "/openai/deployments/embedding-deployment/embeddings"
    assert fake.last.query == {"api-version": "2024-10-21"}
    assert fake.last.body["input"] == ["a", "b"]


def test_list_models_checks_the_connection(azure, fake):
    ok, message = provider_test_connection(provider=azure)
    assert ok, message
    assert message == "ok: 2 model(s) available"
    assert fake.last.path == "/openai/models"
