"""Swagger UI and Redoc in a real browser against a live server, with the network off.

Product decision: /api/schema/, /api/docs/ and /api/redoc/ are public (the API is open
source; the schema holds no tenant data and every operation still needs a key or a
session). The docs must render from the gateway's own static files: any request to
another host is aborted and fails the test.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from django.contrib.auth import get_user_model

from apps.tenants.models import Tenant
from tests.tenants.factories import TenantFactory

pytestmark = [pytest.mark.browser, pytest.mark.live]

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# A made-up public name for the gateway. Swagger UI sends the schema URL to an online
# validator unless it sees "localhost" or "127.0.0.1" in it, so docs checked on
# 127.0.0.1 only could hide requests a real deployment makes.
PUBLIC_HOST = "gateway.example.com"


class NetworkOff:
    """Routes every request of a page: local ones pass, anything else is aborted and kept.

    With ``public_origin`` the page is browsed as ``http://gateway.example.com`` and
    those requests are answered by the live server, as if behind a reverse proxy.
    """

    def __init__(self, page, live_url: str, *, public: bool = False) -> None:
        self.live = urlsplit(live_url)
        self.public = public
        self.blocked: list[str] = []
        self.served: list[str] = []
        page.route("**/*", self.handle)

    @property
    def origin(self) -> str:
        return f"http://{PUBLIC_HOST}" if self.public else urlunsplit(self.live[:2] + ("",) * 3)

    def handle(self, route) -> None:
        url = urlsplit(route.request.url)
        if url.hostname in LOCAL_HOSTS:
            self.served.append(route.request.url)
            route.continue_()
        elif self.public and url.hostname == PUBLIC_HOST:
            self.served.append(route.request.url)
            local = urlunsplit((self.live.scheme, self.live.netloc, *url[2:]))
            route.fulfill(response=route.fetch(url=local))
        else:
            self.blocked.append(route.request.url)
            route.abort()


@pytest.mark.parametrize("public", [False, True], ids=["loopback", "public-hostname"])
def test_swagger_ui_renders_offline(page, live_url, public):
    network = NetworkOff(page, live_url, public=public)
    page.goto(network.origin + "/api/docs/")

    page.get_by_text("LLM Gateway management API").first.wait_for(timeout=20_000)
    for path in ("/api/v1/keys/", "/api/v1/keys/{id}/revoke/", "/api/v1/models/{id}/"):
        page.locator(f".opblock-summary-path[data-path='{path}']").first.wait_for()
    assert page.locator(".opblock").count() >= 26
    page.wait_for_load_state("networkidle")

    assert network.blocked == []
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/" in u for u in network.served)
    assert any("/api/schema/" in u for u in network.served)


@pytest.mark.parametrize("public", [False, True], ids=["loopback", "public-hostname"])
def test_redoc_renders_offline(page, live_url, public):
    network = NetworkOff(page, live_url, public=public)
    page.goto(network.origin + "/api/redoc/")

    page.locator("h1", has_text="LLM Gateway management API").wait_for(timeout=20_000)
    # The menu groups operations by tag; the body shows each operation's path.
    for tag in ("keys", "models", "providers", "tenants"):
        page.get_by_role("menuitem", name=tag).first.wait_for()
    page.get_by_text("/api/v1/keys/{id}/revoke/").first.wait_for()
    page.wait_for_load_state("networkidle")

    assert network.blocked == []
    assert any("/static/drf_spectacular_sidecar/redoc/" in u for u in network.served)


def test_logged_in_admin_can_call_the_api_from_the_docs(page, live_url):
    """The docs' "Try it out" rides the session; writes need the CSRF token it sends."""
    get_user_model().objects.create_superuser("root", "root@example.com", "correct-horse-9")
    TenantFactory(name="alpha")
    network = NetworkOff(page, live_url)

    page.goto(live_url + "/admin/login/?next=/api/docs/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "correct-horse-9")
    page.click("input[type=submit]")
    page.wait_for_url("**/api/docs/")
    page.locator(".opblock-summary-path[data-path='/api/v1/tenants/']").first.wait_for()

    listed = page.evaluate(
        """async () => {
            const r = await fetch('/api/v1/tenants/');
            return {status: r.status, body: await r.json()};
        }"""
    )
    assert listed["status"] == 200
    assert [t["name"] for t in listed["body"]["results"]] == ["alpha"]

    # "Try it out" on POST /api/v1/tenants/: Swagger UI sends the session's CSRF token.
    operation = page.locator("#operations-tenants-tenants_create")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("textarea.body-param__text").fill('{"name": "bravo"}')
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "201"
    assert Tenant.objects.filter(name="bravo").exists()

    # The same write without the CSRF token is refused.
    forged = page.evaluate(
        """async () => {
            const r = await fetch('/api/v1/tenants/', {
                method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({name: 'charlie'}),
            });
            return {status: r.status, body: await r.json()};
        }"""
    )
    assert forged["status"] == 403 and forged["body"]["error"]["type"] == "permission_error"
    assert not Tenant.objects.filter(name="charlie").exists()
    assert network.blocked == []
