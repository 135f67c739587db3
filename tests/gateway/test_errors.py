"""Every failure gets its documented status and the OpenAI error body: never a 500 or HTML."""

from __future__ import annotations

import socket
from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from apps.keys.services import key_revoke
from apps.providers.services import deployment_create, model_create, provider_create
from tests.conftest import settle
from tests.keys.factories import make_key

pytestmark = pytest.mark.live

HELLO = [{"role": "user", "content": "hi"}]


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    assert response.headers["x-request-id"]
    return error


def post(gw, body, *, headers=None, path="/chat/completions", **kwargs) -> httpx.Response:
    return httpx.post(
        gw.base_url + path,
        headers=headers if headers is not None else gw.headers,
        json=body,
        timeout=30,
        **kwargs,
    )


def test_malformed_json(gw):
    response = httpx.post(
        gw.base_url + "/chat/completions",
        headers={**gw.headers, "content-type": "application/json"},
        content=b'{"model": "gpt-4o-mini", "messages": [',
    )
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"messages": HELLO}, "missing_required_parameter", "model"),
        ({"model": 42, "messages": HELLO}, "invalid_type", "model"),
        ({"model": "gpt-4o-mini"}, "missing_required_parameter", "messages"),
        ({"model": "gpt-4o-mini", "messages": "hello"}, "invalid_type", "messages"),
        ({"model": "gpt-4o-mini", "messages": ["hello"]}, "invalid_type", "messages[0]"),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]},
            "invalid_value",
            "messages[0].role",
        ),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 5}]},
            "invalid_type",
            "messages[0].content",
        ),
        (
            {"model": "gpt-4o-mini", "messages": HELLO, "temperature": "hot"},
            "invalid_type",
            "temperature",
        ),
        (
            {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 0},
            "invalid_value",
            "max_tokens",
        ),
        ({"model": "gpt-4o-mini", "messages": HELLO, "stream": "yes"}, "invalid_type", "stream"),
    ],
)
def test_invalid_bodies(gw, body, code, param):
    assert_error(post(gw, body), 400, code, param)


def test_body_must_be_an_object(gw):
    assert_error(post(gw, [1, 2]), 400, "invalid_json")


def test_unknown_model(gw):
    assert_error(
        post(gw, {"model": "no-such-model", "messages": HELLO}), 404, "model_not_found", "model"
    )


def test_embeddings_on_chat_model_is_rejected(gw):
    assert_error(
        post(gw, {"model": "gpt-4o-mini", "input": "x"}, path="/embeddings"),
        400,
        "model_not_supported",
    )


def test_missing_key(gw):
    response = post(gw, {"model": "gpt-4o-mini", "messages": HELLO}, headers={})
    assert_error(response, 401, "missing_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_invalid_key(gw):
    assert_error(
        post(
            gw,
            {"model": "gpt-4o-mini", "messages": HELLO},
            headers={"Authorization": "Bearer gw-not-a-real-key"},
        ),
        401,
        "invalid_api_key",
    )


def test_azure_style_api_key_header(gw):
    response = post(
        gw, {"model": "gpt-4o-mini", "messages": HELLO}, headers={"api-key": gw.key.secret}
    )
    assert response.status_code == 200


def test_revoked_key(gw):
    assert post(gw, {"model": "gpt-4o-mini", "messages": HELLO}).status_code == 200
    key_revoke(key=gw.key.key)
    settle()
    assert_error(post(gw, {"model": "gpt-4o-mini", "messages": HELLO}), 401, "key_revoked")


def test_expired_key(gw):
    expired = make_key(gw.tenant, expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(
        post(
            gw,
            {"model": "gpt-4o-mini", "messages": HELLO},
            headers={"Authorization": f"Bearer {expired.secret}"},
        ),
        401,
        "key_expired",
    )


def test_key_without_inference_scope(gw):
    mgmt = make_key(gw.tenant, scopes=["management:read"])
    assert_error(
        post(
            gw,
            {"model": "gpt-4o-mini", "messages": HELLO},
            headers={"Authorization": f"Bearer {mgmt.secret}"},
        ),
        403,
        "insufficient_scope",
    )


def test_model_outside_allowlist(gw):
    limited = make_key(gw.tenant, allowed_models=["slow-model"])
    headers = {"Authorization": f"Bearer {limited.secret}"}
    assert_error(
        post(gw, {"model": "gpt-4o-mini", "messages": HELLO}, headers=headers),
        403,
        "model_not_allowed",
    )
    listed = httpx.get(gw.base_url + "/models", headers=headers).json()
    assert [m["id"] for m in listed["data"]] == ["slow-model"]
    assert_error(
        httpx.get(gw.base_url + "/models/gpt-4o-mini", headers=headers), 404, "model_not_found"
    )


def test_oversized_body(gw):
    big = "x" * (9 * 1024 * 1024)
    assert_error(
        post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]}),
        413,
        "request_too_large",
    )


def test_unknown_endpoint_and_wrong_method(gw):
    assert_error(httpx.get(gw.base_url + "/nope", headers=gw.headers), 404, "unknown_url")
    response = httpx.get(gw.base_url + "/chat/completions", headers=gw.headers)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("upstream_status", "status", "code"),
    [
        (400, 400, "upstream_invalid_request"),
        (404, 404, "upstream_invalid_request"),
        (422, 422, "upstream_invalid_request"),
        (429, 429, "upstream_rate_limited"),
        (500, 502, "upstream_error"),
        (503, 503, "upstream_unavailable"),
    ],
)
def test_upstream_error_statuses(gw, upstream_status, status, code):
    gw.add_model(f"m{upstream_status}", f"status-{upstream_status}")
    response = post(gw, {"model": f"m{upstream_status}", "messages": HELLO})
    error = assert_error(response, status, code)
    assert f"simulated {upstream_status}" in error["message"]
    if upstream_status == 429:
        assert response.headers["retry-after"] == "1"
    assert response.headers["x-gateway-provider"] == "fake-openai"


def test_upstream_rejects_gateway_credential(gw):
    bad = provider_create(
        name="bad-cred", kind="openai", base_url=gw.provider.base_url, credential="sk-wrong"
    )
    gw.add_model("bad-cred-model", "gpt-4o-mini", provider=bad)
    assert_error(
        post(gw, {"model": "bad-cred-model", "messages": HELLO}), 502, "upstream_auth_error"
    )


def test_upstream_timeout(gw):
    response = post(gw, {"model": "hang", "messages": HELLO})  # model deadline: 2 s
    assert_error(response, 504, "upstream_timeout")
    assert response.elapsed.total_seconds() < 4


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused(gw):
    dead = provider_create(
        name="dead", kind="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1", credential="x"
    )
    gw.add_model("dead-model", "gpt-4o-mini", provider=dead)
    assert_error(post(gw, {"model": "dead-model", "messages": HELLO}), 503, "upstream_unavailable")
    assert_error(
        post(gw, {"model": "dead-model", "messages": HELLO, "stream": True}),
        503,
        "upstream_unavailable",
    )


def test_connection_refused_falls_through_to_next_deployment(gw, fake_openai):
    dead = provider_create(
        name="dead2", kind="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1", credential="x"
    )
    model = model_create(name="two-deployments")
    deployment_create(model=model, provider=dead, upstream_model="gpt-4o-mini", priority=0)
    deployment_create(model=model, provider=gw.provider, upstream_model="gpt-4o-mini", priority=1)
    settle()
    response = post(
        gw, {"model": "two-deployments", "messages": [{"role": "user", "content": "served"}]}
    )
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "fake-openai"


def test_errors_through_the_sdk(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key.secret, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.base_url, api_key="gw-wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages="nope")  # type: ignore[arg-type]
