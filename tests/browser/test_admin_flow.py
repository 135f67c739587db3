"""A platform admin sets the gateway up in the browser, then a client calls it with the new key."""

from __future__ import annotations

import re

import httpx
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Error as PlaywrightError

from apps.keys.models import ApiKey
from apps.keys.secrets import hash_secret
from apps.providers.models import Provider
from tests.conftest import settle

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "a-long-admin-password-for-tests"


def save(page) -> None:
    page.click("input[name=_save]")
    page.wait_for_load_state()


def settled_content(page) -> str:
    """The page's HTML once a navigation in progress (say, to an error page) is over."""
    for _ in range(50):
        try:
            return page.content()
        except PlaywrightError as exc:
            if "navigating" not in str(exc):
                raise
            page.wait_for_timeout(100)
    return page.content()


def success_message(page) -> str:
    return page.locator("ul.messagelist li.success").first.text_content().strip()


def test_admin_sets_up_a_provider_model_tenant_and_key_that_works(page, live_url, fake_openai):
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    admin = f"{live_url}/admin"

    # Log in.
    page.goto(f"{admin}/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#site-name").inner_text() == "LLM Gateway"

    # A provider on the fake upstream; its credential goes in a password field.
    page.goto(f"{admin}/providers/provider/add/")
    assert page.get_attribute("#id_credential", "type") == "password"
    page.fill("#id_name", "fake-openai")
    page.select_option("#id_kind", "openai")
    page.fill("#id_base_url", fake_openai.base_url)
    page.fill("#id_credential", fake_openai.api_key)
    save(page)
    assert "was added successfully" in success_message(page)
    provider = Provider.objects.get(name="fake-openai")
    assert provider.get_credential() == fake_openai.api_key
    assert fake_openai.api_key not in provider.credential_encrypted

    # Test the connection from the list.
    page.goto(f"{admin}/providers/provider/")
    page.check(f"input[name=_selected_action][value='{provider.pk}']")
    page.select_option("select[name=action]", "test_connection")
    page.click("button[name=index]")
    page.wait_for_load_state()
    assert success_message(page) == "Connection to fake-openai: ok: 1 model(s) available"
    assert page.locator(".field-health .gw-badge--ok").count() == 1

    # Its change page never shows the credential.
    page.goto(f"{admin}/providers/provider/{provider.pk}/change/")
    html = page.content()
    assert fake_openai.api_key not in html and provider.credential_encrypted not in html
    assert page.input_value("#id_credential") == ""
    assert "set (encrypted)" in page.locator(".field-credential_status").inner_text()

    # A model served by that provider, with its deployment inline.
    page.goto(f"{admin}/providers/model/add/")
    page.fill("#id_name", "gpt-4o-mini")
    page.fill("#id_input_price_per_million", "0.15")
    page.fill("#id_output_price_per_million", "0.60")
    page.select_option("#id_deployments-0-provider", label="fake-openai (platform, openai)")
    page.fill("#id_deployments-0-upstream_model", "gpt-4o-mini")
    save(page)
    assert "was added successfully" in success_message(page)

    # A tenant.
    page.goto(f"{admin}/tenants/tenant/add/")
    page.fill("#id_name", "acme-browser")
    page.fill("#id_display_name", "Acme Browser")
    save(page)
    assert "was added successfully" in success_message(page)

    # A key: its secret appears once, on the page the save returns.
    page.goto(f"{admin}/keys/apikey/add/")
    assert page.locator("input[name=secret]").count() == 0
    page.select_option("#id_tenant", label="Acme Browser")
    page.fill("#id_name", "browser-key")
    assert page.is_checked("input[name=scopes][value=inference]")
    save(page)
    secret = page.locator("#gw-secret").inner_text().strip()
    assert re.fullmatch(r"gw-[A-Za-z0-9_-]{40,}", secret)
    assert "will not be shown again" in page.locator(".gw-secret-warning").inner_text()
    key = ApiKey.objects.get(name="browser-key")
    assert key.secret_hash == hash_secret(secret) and key.tenant.name == "acme-browser"

    # The copy button puts it on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_url)
    page.click("button[data-copy-target=gw-secret]")
    page.wait_for_selector("#gw-secret-status:has-text('Copied.')")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # Away and back: the secret is gone for good.
    page.click("#gw-continue")
    page.wait_for_load_state()
    assert page.url.endswith(f"/admin/keys/apikey/{key.pk}/change/")
    assert secret not in page.content()
    assert key.prefix in page.locator(".field-prefix_display").inner_text()
    try:
        page.go_back()
    except PlaywrightError as exc:
        # The page came from a POST and was never cached (no-store): Chromium will not
        # show it again without resubmitting, which would only create another key.
        assert "ERR_CACHE_MISS" in str(exc)
    assert secret not in settled_content(page)
    page.goto(f"{admin}/keys/apikey/")
    assert secret not in page.content()
    assert page.locator(".field-status .gw-badge--ok").inner_text() == "active"

    # The key works against the gateway, through the provider configured above.
    settle()
    response = httpx.post(
        f"{live_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hello from the admin"}],
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello from the admin"
    assert response.headers["x-gateway-provider"] == "fake-openai"
    upstream = fake_openai.requests[-1]
    assert upstream.headers["Authorization"] == f"Bearer {fake_openai.api_key}"
