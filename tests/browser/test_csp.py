"""Every page we serve works under its Content-Security-Policy, in a real browser.

Chromium reports a blocked script, style, image, font, worker or connection both on the
console ("Refused to … because it violates the following Content Security Policy
directive") and as a ``securitypolicyviolation`` event; either one fails the test. A
control first proves that the policy is enforced and that a violation would be seen.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from apps.audit.models import AuditEvent
from apps.providers.services import deployment_create, model_create, provider_create
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "a-long-admin-password-for-csp-tests"

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} on ${e.documentURI}`);
});
"""


class Watch:
    """Collects CSP reports of every page the browser shows."""

    def __init__(self, page) -> None:
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.console.append(message.text)

    def visit(self, url: str, *, ready: str | None = None, allowed: str = "") -> None:
        response = self.page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        assert "content-security-policy" in response.headers, url
        if ready:
            self.page.locator(ready).first.wait_for(timeout=20_000)
        self.page.wait_for_load_state("load")
        self.page.wait_for_timeout(300)  # late scripts, styles and sockets
        self.check(url, allowed=allowed)

    def check(self, where: str, *, allowed: str = "") -> None:
        """No violation, except reports that mention ``allowed`` (a block we want)."""
        events = [
            e for e in self.page.evaluate("window.__csp || []") if not allowed or allowed not in e
        ]
        console = [m for m in self.console if not allowed or allowed not in m]
        assert events == [], (where, events)
        assert console == [], (where, console)
        assert self.errors == [], (where, self.errors)
        self.console.clear()


@pytest.fixture
def admin_page(page, live_url):
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    watch = Watch(page)
    watch.visit(f"{live_url}/admin/login/", ready="#id_username")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_url}/admin/")
    watch.check("after login")
    return watch


def test_the_policy_is_enforced_and_a_violation_would_be_seen(admin_page, live_url):
    admin_page.visit(f"{live_url}/admin/")
    ran = admin_page.page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation", () => resolve(window.__ran === 1));
            const s = document.createElement("script");
            s.textContent = "window.__ran = 1";
            document.body.appendChild(s);
        })"""
    )
    assert ran is False
    admin_page.page.wait_for_timeout(200)
    assert admin_page.page.evaluate("window.__csp.length") == 1
    assert any("script-src" in line for line in admin_page.console)


def test_admin_pages_run_under_the_policy(admin_page, live_url):
    tenant = TenantFactory(name="acme")
    key = make_key(tenant, name="ci").key
    provider = provider_create(name="mock", kind="mock")
    model = model_create(name="mock-small", input_price_per_million=Decimal("1"))
    deployment_create(model=model, provider=provider, upstream_model="mock-small")
    event = AuditEvent.objects.filter(object_type="keys.apikey").first()
    admin = f"{live_url}/admin"

    for path in (
        "/",
        "/tenants/tenant/",
        "/tenants/tenant/add/",
        f"/tenants/tenant/{tenant.pk}/change/",
        "/keys/apikey/",
        f"/keys/apikey/{key.pk}/change/",
        "/providers/provider/add/",
        f"/providers/provider/{provider.pk}/change/",
        f"/providers/model/{model.pk}/change/",
        "/audit/auditevent/",
        f"/audit/auditevent/{event.pk}/change/",
        "/live-traffic/",
        "/billing/dashboard/",
    ):
        admin_page.visit(admin + path, ready="#content, #billing-dashboard, main")

    # The date-time widgets and the one-time secret page (copy button script).
    admin_page.visit(f"{admin}/keys/apikey/add/", ready="#id_name")
    admin_page.page.fill("#id_name", "from-the-browser")
    admin_page.page.select_option("#id_tenant", str(tenant.pk))
    admin_page.page.click(".datetimeshortcuts a")  # "Today": DateTimeShortcuts.js ran
    admin_page.page.fill("#id_expires_at_0", "2099-01-01")
    admin_page.page.fill("#id_expires_at_1", "00:00:00")
    admin_page.page.click("input[name=_save]")
    admin_page.page.locator("#gw-secret").wait_for()
    admin_page.page.wait_for_timeout(300)
    admin_page.check("one-time secret page")
    # Under ASGI too, the change is the logged-in admin's.
    created = AuditEvent.objects.get(object_type="keys.apikey", action="create", actor="root")
    assert created.source == "admin" and created.object_repr.startswith("from-the-browser")


def test_api_docs_run_under_the_policy(admin_page, live_url):
    admin_page.visit(f"{live_url}/api/docs/", ready=".opblock")
    # Redoc's bundle shows a "by Redocly" logo from its CDN: the policy keeps it out, as
    # the offline docs want (tests/browser/test_api_docs.py); nothing else may be blocked.
    admin_page.visit(f"{live_url}/api/redoc/", ready="h1", allowed="https://cdn.redoc.ly/")


def test_chat_pages_run_under_their_policy(page, live_url):
    watch = Watch(page)
    watch.visit(f"{live_url}/chat/login/", ready="form")
    watch.visit(f"{live_url}/chat/", ready="body")
