"""The admin's live-traffic feed: staff only, tenant-scoped, and across processes with Redis."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.conftest import start_server
from tests.gateway.wsclient import (
    LIVE_PATH,
    close_code,
    recv,
    recv_until,
    session_cookie,
    ws_connect,
)
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.live

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def events_until(ws, request_id: str, timeout: float = 10.0) -> dict:
    """Read the feed until the event for ``request_id`` arrives; return it."""
    found: list[dict] = []

    def has_it(frame: dict) -> bool:
        found.extend(e for e in frame.get("events", ()) if e["request_id"] == request_id)
        return bool(found)

    recv_until(ws, has_it, timeout=timeout)
    return found[0]


def chat(url: str, secret: str) -> str:
    response = httpx.post(
        url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json=CHAT,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def test_the_page_is_for_staff(gw, client):
    response = client.get("/admin/live-traffic/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    client.force_login(UserFactory(is_staff=True))
    response = client.get("/admin/live-traffic/")
    assert response.status_code == 200
    assert b'id="live-rows"' in response.content
    assert b"gateway/live.js" in response.content


@pytest.mark.parametrize("staff", [False, None])
def test_the_socket_refuses_non_staff_with_4403(gw, staff):
    cookie = None if staff is None else session_cookie(UserFactory(is_staff=staff))
    with ws_connect(gw.url, LIVE_PATH, cookie=cookie) as ws:
        frame = recv(ws)
        assert frame["type"] == "error"
        assert frame["error"]["code"] == "staff_only"
        assert close_code(ws) == 4403


def test_requests_appear_as_they_finish_scoped_to_the_users_tenants(gw):
    other_key = make_key(TenantFactory(name="other"))
    staff = MembershipFactory(tenant=gw.tenant, user=UserFactory(is_staff=True)).user
    with ws_connect(gw.url, LIVE_PATH, cookie=session_cookie(staff)) as feed:
        assert recv(feed)["type"] == "live.hello"
        hidden = chat(gw.url, other_key.secret)
        shown = chat(gw.url, gw.key.secret)
        seen: list[dict] = []

        def collect(frame: dict) -> bool:
            seen.extend(frame.get("events", ()))
            return any(e["request_id"] == shown for e in seen)

        recv_until(feed, collect)
    event = next(e for e in seen if e["request_id"] == shown)
    assert hidden not in {e["request_id"] for e in seen}
    assert event["tenant"] == "acme"
    assert event["model"] == "gpt-4o-mini"
    assert event["provider"] == "fake-openai"
    assert event["status"] == 200
    assert event["endpoint"] == "chat"
    assert event["completion_tokens"] == 1
    assert event["cost_usd"] is not None
    assert event["key_prefix"] == gw.key.key.prefix
    assert "messages" not in event and "content" not in event


@pytest.mark.redis
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")
def test_a_request_on_one_process_appears_on_the_live_socket_of_another(gw, tmp_path):
    redis_url = os.environ["REDIS_URL"]
    first = start_server(tmp_path, name="first", REDIS_URL=redis_url)
    second = start_server(tmp_path, name="second", REDIS_URL=redis_url)
    try:
        admin = UserFactory(is_superuser=True)
        with ws_connect(second.url, LIVE_PATH, cookie=session_cookie(admin)) as feed:
            hello = recv(feed)
            assert hello["server"].endswith(f":{second.proc.pid}")
            request_id = chat(first.url, gw.key.secret)
            event = events_until(feed, request_id)
        assert event["server"].endswith(f":{first.proc.pid}")
        assert event["status"] == 200
        assert event["tenant"] == "acme"
    finally:
        first.stop()
        second.stop()
