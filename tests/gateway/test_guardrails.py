"""Content policies on the live request path: input and output, streamed and not."""

from __future__ import annotations

import httpx
import orjson
import pytest

from apps.guardrails.services import policy_create
from tests.conftest import settle
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.live


def chat(
    gw, model: str, content: str, *, stream: bool = False, headers: dict | None = None
) -> httpx.Response:
    return httpx.post(
        gw.base_url + "/chat/completions",
        headers=headers or gw.headers,
        timeout=30,
        json={"model": model, "messages": [{"role": "user", "content": content}], "stream": stream},
    )


def stream_events(response: httpx.Response) -> list[dict]:
    return [
        orjson.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


@pytest.fixture
def pieces_model(gw):
    gw.add_model("pieces", "pieces")


def test_blocked_input_is_a_400(gw):
    policy_create(tenant=gw.tenant, name="no-secrets", blocked_terms=["project orion"])
    settle()
    response = chat(gw, "gpt-4o-mini", "tell me about Project  Orion please")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_policy_violation" and "orion" not in error["message"].lower()


def test_input_redaction_reaches_upstream_redacted(gw, fake_openai):
    policy_create(
        tenant=gw.tenant, name="pii", detectors={"email": "redact"}, applies_to_output=False
    )
    settle()
    response = chat(gw, "gpt-4o-mini", "mail jane.doe@example.com now")
    assert response.status_code == 200
    sent = fake_openai.requests[-1].body["messages"][0]["content"]
    assert "jane.doe@example.com" not in sent and "[REDACTED:EMAIL]" in sent


def test_email_split_across_three_stream_chunks_is_redacted(gw, pieces_model):
    policy_create(
        tenant=gw.tenant, name="pii-out", detectors={"email": "redact"}, applies_to_input=False
    )
    settle()
    response = chat(gw, "pieces", "write to jo|hn.smith@exam|ple.com today", stream=True)
    events = stream_events(response)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in events if c.get("choices")
    )
    assert "john.smith@example.com" not in text
    assert text == "write to [REDACTED:EMAIL] today"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_blocked_output_ends_the_stream_with_content_filter(gw, pieces_model, fake_openai):
    policy_create(
        tenant=gw.tenant, name="out", blocked_terms=["forbidden word"], applies_to_input=False
    )
    settle()
    response = chat(gw, "pieces", "all fine |then a forbid|den word| and more", stream=True)
    assert response.status_code == 200
    events = stream_events(response)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in events if c.get("choices")
    )
    assert "forbidden" not in text and text.startswith("all fine")
    assert events[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "data: [DONE]" in response.text


def test_blocked_output_without_streaming(gw):
    policy_create(
        tenant=gw.tenant, name="out2", blocked_terms=["forbidden"], applies_to_input=False
    )
    settle()
    response = chat(gw, "gpt-4o-mini", "this is forbidden text")
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert (
        choice["finish_reason"] == "content_filter"
        and "forbidden" not in choice["message"]["content"]
    )


def test_policies_are_scoped_per_tenant(gw):
    policy_create(tenant=gw.tenant, name="strict", blocked_terms=["orion"])
    other = TenantFactory(name="other-tenant")
    other_key = make_key(other)
    settle()
    assert chat(gw, "gpt-4o-mini", "orion").status_code == 400
    response = chat(
        gw, "gpt-4o-mini", "orion", headers={"Authorization": f"Bearer {other_key.secret}"}
    )
    assert response.status_code == 200


def test_key_override_replaces_the_tenant_policy(gw):
    policy_create(tenant=gw.tenant, name="tenant-default", blocked_terms=["orion"])
    relaxed = make_key(gw.tenant)
    policy_create(tenant=gw.tenant, key=relaxed.key, name="relaxed", detectors={"email": "redact"})
    settle()
    assert chat(gw, "gpt-4o-mini", "orion").status_code == 400
    assert (
        chat(
            gw, "gpt-4o-mini", "orion", headers={"Authorization": f"Bearer {relaxed.secret}"}
        ).status_code
        == 200
    )
