"""Request signing, key rotation, IP allowlists, last-used time and hostile input."""

from __future__ import annotations

import os
import secrets
import time

import httpx
import orjson
import pytest

from apps.gateway.signing import sign
from apps.keys.models import ApiKey
from apps.keys.services import key_rotate, key_update
from tests.conftest import settle, start_server
from tests.keys.factories import make_key

pytestmark = pytest.mark.live

SIGNING_SECRET = "whsec-test-signing-secret-0123456789"
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "signed"}]})


def signed_headers(
    key_secret: str,
    *,
    body: bytes = BODY,
    path: str = "/v1/chat/completions",
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    nonce = nonce or secrets.token_hex(16)
    return {
        "Authorization": f"Bearer {key_secret}",
        "Content-Type": "application/json",
        "X-Gateway-Timestamp": ts,
        "X-Gateway-Nonce": nonce,
        "X-Gateway-Signature": sign(secret, ts, nonce, "POST", path, body),
    }


@pytest.fixture
def signed_key(gw):
    return make_key(gw.tenant, signing_secret=SIGNING_SECRET, require_signature=True)


def post(
    url: str, headers: dict, body: bytes = BODY, path: str = "/v1/chat/completions"
) -> httpx.Response:
    return httpx.post(url + path, headers=headers, content=body)


def test_valid_signature_passes(gw, signed_key):
    assert post(gw.url, signed_headers(signed_key.secret)).status_code == 200


def test_query_string_is_part_of_the_signed_path(gw, signed_key):
    path = "/v1/chat/completions?trace=1"
    assert post(gw.url, signed_headers(signed_key.secret, path=path), path=path).status_code == 200
    response = post(gw.url, signed_headers(signed_key.secret), path=path)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "signature_required"),
        ("stale", "signature_expired"),
        ("future", "signature_expired"),
        ("tampered_body", "signature_invalid"),
        ("tampered_path", "signature_invalid"),
        ("wrong_secret", "signature_invalid"),
    ],
)
def test_bad_signatures_are_refused(gw, signed_key, case, code):
    headers = signed_headers(signed_key.secret)
    body, path = BODY, "/v1/chat/completions"
    if case == "missing":
        headers = {
            "Authorization": f"Bearer {signed_key.secret}",
            "Content-Type": "application/json",
        }
    elif case == "stale":
        headers = signed_headers(signed_key.secret, timestamp=int(time.time()) - 301)
    elif case == "future":
        headers = signed_headers(signed_key.secret, timestamp=int(time.time()) + 301)
    elif case == "tampered_body":
        body = BODY.replace(b"signed", b"forged")
    elif case == "tampered_path":
        path = "/v1/embeddings"
    elif case == "wrong_secret":
        headers = signed_headers(signed_key.secret, secret="not-the-secret-at-all-0123")
    response = post(gw.url, headers, body=body, path=path)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == code


def test_replayed_nonce_is_refused(gw, signed_key):
    headers = signed_headers(signed_key.secret)
    assert post(gw.url, headers).status_code == 200
    replay = post(gw.url, headers)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "signature_replayed"


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="nonces are shared across processes through Redis"
)
def test_replayed_nonce_is_refused_by_another_process(gw, signed_key, tmp_path):
    other = start_server(tmp_path, name="replay")
    try:
        headers = signed_headers(signed_key.secret)
        assert post(gw.url, headers).status_code == 200
        replay = post(other.url, headers)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "signature_replayed"
    finally:
        other.stop()


def test_optional_signing_checks_signatures_that_are_sent(gw):
    key = make_key(gw.tenant, signing_secret=SIGNING_SECRET)
    assert post(gw.url, {"Authorization": f"Bearer {key.secret}"}).status_code == 200
    assert post(gw.url, signed_headers(key.secret)).status_code == 200
    assert (
        post(gw.url, signed_headers(key.secret, secret="wrong-secret-0123456789")).status_code
        == 401
    )


def test_rotation_grace_period(gw):
    created = make_key(gw.tenant)
    old = {"Authorization": f"Bearer {created.secret}"}
    rotated = key_rotate(key=created.key, grace_seconds=2)
    new = {"Authorization": f"Bearer {rotated.secret}"}
    settle()
    assert post(gw.url, old).status_code == 200  # still valid during the grace period
    assert post(gw.url, new).status_code == 200
    time.sleep(2.2)
    expired = post(gw.url, old)
    assert expired.status_code == 401 and expired.json()["error"]["code"] in (
        "key_expired",
        "invalid_api_key",
    )
    assert post(gw.url, new).status_code == 200


def test_rotation_without_grace_stops_the_old_secret_at_once(gw):
    created = make_key(gw.tenant)
    rotated = key_rotate(key=created.key, grace_seconds=0)
    settle()
    assert post(gw.url, {"Authorization": f"Bearer {created.secret}"}).status_code == 401
    assert post(gw.url, {"Authorization": f"Bearer {rotated.secret}"}).status_code == 200


def test_ip_allowlist(gw):
    key = make_key(gw.tenant, ip_allowlist=["10.0.0.0/8"])
    denied = post(gw.url, {"Authorization": f"Bearer {key.secret}"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "ip_not_allowed"
    # a spoofed X-Forwarded-For from an untrusted peer changes nothing
    spoofed = post(gw.url, {"Authorization": f"Bearer {key.secret}", "X-Forwarded-For": "10.1.2.3"})
    assert spoofed.status_code == 403
    key_update(key=key.key, ip_allowlist=["127.0.0.0/8", "::1/128"])
    settle()
    assert post(gw.url, {"Authorization": f"Bearer {key.secret}"}).status_code == 200


def test_last_used_is_recorded_without_a_write_per_request(gw):
    key = make_key(gw.tenant)
    assert ApiKey.objects.get(pk=key.key.pk).last_used_at is None
    for _ in range(3):
        assert post(gw.url, {"Authorization": f"Bearer {key.secret}"}).status_code == 200
    deadline = time.monotonic() + 5
    while ApiKey.objects.get(pk=key.key.pk).last_used_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ApiKey.objects.get(pk=key.key.pk).last_used_at is not None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a\\u0000b"}]}',
            "invalid_value",
        ),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a"}], "x": '
            + b"[" * 100
            + b"]" * 100
            + b"}",
            "invalid_json",
        ),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            "invalid_json",
        ),
    ],
)
def test_hostile_bodies(gw, body, code):
    response = post(gw.url, {**gw.headers, "Content-Type": "application/json"}, body=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_request_id_cannot_inject_headers(gw):
    response = httpx.post(
        gw.base_url + "/chat/completions",
        headers={**gw.headers, "X-Request-ID": "abc def<script>"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")


def test_text_length_limit(gw, tmp_path):
    server = start_server(tmp_path, name="textlimit", GATEWAY_MAX_TEXT_CHARS="1000")
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 600}] * 2}
        response = httpx.post(server.url + "/v1/chat/completions", headers=gw.headers, json=body)
        assert (
            response.status_code == 400 and response.json()["error"]["code"] == "content_too_long"
        )
        body["messages"] = body["messages"][:1]
        assert (
            httpx.post(
                server.url + "/v1/chat/completions", headers=gw.headers, json=body
            ).status_code
            == 200
        )
    finally:
        server.stop()
