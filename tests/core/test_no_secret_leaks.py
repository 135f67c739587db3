"""No secret (key, signing secret, provider credential) appears in any log line, in the
server's output or in ours, whatever the request does."""

from __future__ import annotations

import logging
import secrets
import time

import httpx
import orjson
import pytest

from apps.gateway.signing import sign
from apps.keys.services import key_create, key_rotate
from apps.providers.services import (
    deployment_create,
    model_create,
    provider_create,
    provider_test_connection,
)
from tests.conftest import settle, start_server
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.live


def test_no_secret_in_any_log_line(
    live_server_process, transactional_db, fake_openai, tmp_path, caplog, admin_client
):
    caplog.set_level(logging.DEBUG)
    server = start_server(tmp_path, name="leaks", GATEWAY_LOG_LEVEL="DEBUG")
    try:
        tenant = TenantFactory(name="leaky")
        provider = provider_create(
            name="p", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
        )
        bad_provider = provider_create(
            name="bad",
            kind="openai",
            base_url=fake_openai.base_url,
            credential="sk-wrong-credential-DO-NOT-LOG",
        )
        for name, prov in (("m", provider), ("m-bad", bad_provider)):
            model = model_create(name=name)
            deployment_create(model=model, provider=prov, upstream_model="gpt-4o-mini")
        signing_secret = "sig-" + secrets.token_hex(16)
        key = key_create(tenant=tenant, name="k", signing_secret=signing_secret)
        rotated = key_rotate(key=key.key, grace_seconds=60)
        provider_test_connection(provider=bad_provider)
        settle()
        headers = {"Authorization": f"Bearer {rotated.secret}"}
        body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        ts, nonce = str(int(time.time())), secrets.token_hex(8)
        signed = {
            **headers,
            "X-Gateway-Timestamp": ts,
            "X-Gateway-Nonce": nonce,
            "X-Gateway-Signature": sign(
                signing_secret, ts, nonce, "POST", "/v1/chat/completions", body
            ),
        }
        url = server.url + "/v1/chat/completions"
        assert httpx.post(url, headers=signed, content=body).status_code == 200
        assert (
            httpx.post(
                url, headers={"Authorization": f"Bearer {key.secret}"}, content=body
            ).status_code
            == 200
        )
        assert (
            httpx.post(
                url, headers={"Authorization": "Bearer gw-guessed-but-wrong-key-123"}, content=body
            ).status_code
            == 401
        )
        bad_body = orjson.dumps({"model": "m-bad", "messages": [{"role": "user", "content": "hi"}]})
        assert httpx.post(url, headers=headers, content=bad_body).status_code == 502
        assert admin_client.get(f"/api/v1/keys/{key.key.pk}/").status_code == 200
        assert admin_client.get(f"/api/v1/providers/{provider.pk}/").status_code == 200
        time.sleep(1.0)  # usage flush and its log lines
    finally:
        server.stop()
    output = server.output() + caplog.text
    assert (
        '"logger": "gateway.request"' in output or "gateway.request" in output
    )  # logging really was on
    for secret in (
        key.secret,
        rotated.secret,
        signing_secret,
        fake_openai.api_key,
        "sk-wrong-credential-DO-NOT-LOG",
        "gw-guessed-but-wrong-key-123",
    ):
        assert secret not in output, f"a secret leaked into the logs: {secret[:6]}…"
