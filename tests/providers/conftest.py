"""Fixtures for the adapter tests: a fake upstream per module, models on it, and the
official openai SDK against the live gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from apps.providers.models import Provider
from apps.providers.services import deployment_create, model_create
from tests.conftest import settle


@pytest.fixture(scope="module")
def fake_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The module's fake upstream (the class its ``FAKE`` names), started once per module."""
    server = request.module.FAKE().start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server: Any) -> Any:
    fake_server.reset()
    return fake_server


@pytest.fixture
def sdk(gw) -> OpenAI:
    """The official openai SDK against the live gateway, without retries of its own."""
    return OpenAI(base_url=gw.base_url, api_key=gw.key.secret, max_retries=0)


def add_models(
    provider: Provider, *names: str, mode: str = "chat", upstream_prefix: str = ""
) -> None:
    """A model and a deployment on ``provider`` per name; the upstream model is the name
    without ``upstream_prefix``."""
    for name in names:
        model = model_create(
            name=name, mode=mode, input_price_per_million="1.00", output_price_per_million="2.00"
        )
        deployment_create(
            model=model, provider=provider, upstream_model=name.removeprefix(upstream_prefix)
        )
    settle()


def chat_error(
    sdk: OpenAI,
    model: str,
    exc_class: type[openai.APIError],
    *,
    content: str = "hi",
    **kwargs: Any,
) -> openai.APIError:
    """The error the SDK raises for a one-message chat request (``kwargs`` go to ``create``)."""
    with pytest.raises(exc_class) as info:
        sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], **kwargs
        )
    return info.value
