"""Hostile input at the login and on our pages: brute force, CSRF, HTTPS-only cookies,
HSTS and the Content-Security-Policy header."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from tests.conftest import ROOT, server_env

LOGIN = "/admin/login/"
PASSWORD = "correct-horse-battery-staple-9"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admins(db):
    User = get_user_model()
    return (
        User.objects.create_superuser("root", "root@example.com", PASSWORD),
        User.objects.create_superuser("alice", "alice@example.com", PASSWORD),
    )


def login(client: Client, username: str, password: str, ip: str = "198.51.100.1"):
    return client.post(
        LOGIN,
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=ip,
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- brute force ------------------------------------------------------------------------


def test_five_wrong_passwords_lock_that_user_from_that_address(admins):
    attacker = Client()
    for _ in range(4):
        response = login(attacker, "root", "wrong-guess")
        assert response.status_code == 200 and not logged_in(attacker)
    fifth = login(attacker, "root", "wrong-guess")
    assert fifth.status_code == 429

    # The right password no longer helps, from that address.
    locked = login(attacker, "root", PASSWORD)
    assert locked.status_code == 429 and not logged_in(attacker)
    assert "too many login attempts" in locked.content.decode().lower()

    # Another user from the same address, and the same user elsewhere, are not locked.
    colleague = Client()
    assert login(colleague, "alice", PASSWORD).status_code == 302 and logged_in(colleague)
    owner = Client()
    assert login(owner, "root", PASSWORD, ip="192.0.2.44").status_code == 302
    assert logged_in(owner)


def test_the_lock_lifts_after_the_cool_off(admins):
    client = Client()
    for _ in range(5):
        login(client, "root", "wrong-guess")
    assert login(client, "root", PASSWORD).status_code == 429
    # Fifteen minutes later (moved back in time rather than waited for).
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert login(client, "root", PASSWORD).status_code == 302 and logged_in(client)


def test_a_successful_login_resets_the_count(admins):
    client = Client()
    for _ in range(4):
        login(client, "root", "typo")
    assert login(client, "root", PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        assert login(client, "root", "typo").status_code == 200
    assert login(client, "root", PASSWORD).status_code == 302


def test_force_login_is_unaffected(admin_client):
    """Tests (and sessions) that never present a password do not go through axes."""
    assert admin_client.get("/admin/").status_code == 200


# --- CSRF ------------------------------------------------------------------------------------


def test_login_without_the_csrf_token_is_refused(admins):
    client = Client(enforce_csrf_checks=True)
    response = login(client, "root", PASSWORD)
    assert response.status_code == 403 and not logged_in(client)
    page = client.get(LOGIN)
    token = page.cookies["csrftoken"].value
    response = client.post(
        LOGIN, {"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and logged_in(client)


# --- Content-Security-Policy -------------------------------------------------------------------


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.mark.django_db
def test_our_pages_carry_a_strict_policy(client):
    csp = policy(client.get(LOGIN))
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"] and csp["form-action"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]


@pytest.mark.django_db
def test_the_api_docs_get_what_their_bundles_need_and_no_more(client):
    swagger = policy(client.get("/api/docs/"))
    assert swagger["script-src"] == ["'self'", "'unsafe-inline'"]
    assert swagger["object-src"] == ["'none'"] and swagger["default-src"] == ["'self'"]
    redoc = policy(client.get("/api/redoc/"))
    assert redoc["worker-src"] == ["'self'", "blob:"]
    # Nothing else is relaxed.
    assert policy(client.get("/admin/login/?next=/api/docs/"))["script-src"] == ["'self'"]


@pytest.mark.django_db
def test_a_page_with_its_own_policy_keeps_it(client):
    csp = policy(client.get("/chat/"))
    assert csp["base-uri"] == ["'none'"]  # the chat page's, not the default 'self'


# --- production: HTTPS only ---------------------------------------------------------------------

PROBE = """
import json, os
import django
django.setup()
from django.test import Client

def cookie(response, name):
    morsel = response.cookies[name]
    return {"secure": bool(morsel["secure"]), "httponly": bool(morsel["httponly"])}

client = Client()
plain = client.get("/admin/login/")
page = client.get("/admin/login/", secure=True)
proxied = Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
login = client.post(
    "/admin/login/", {"username": "root", "password": os.environ["PROBE_PASSWORD"]}, secure=True
)
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location", "")],
    "hsts": page.get("Strict-Transport-Security"),
    "proxied_hsts": proxied.get("Strict-Transport-Security"),
    "csrf_cookie": cookie(page, "csrftoken"),
    "login": login.status_code,
    "session_cookie": cookie(login, "sessionid"),
    "csp": page.get("Content-Security-Policy", ""),
    "frame": page.get("X-Frame-Options"),
    "nosniff": page.get("X-Content-Type-Options"),
}))
"""


@pytest.mark.django_db(transaction=True)
def test_production_settings_send_hsts_and_https_only_cookies(settings):
    # The probe runs with the real settings: store the password the way they can check it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    env = server_env(
        DEBUG="false",
        GATEWAY_HTTPS="true",
        ALLOWED_HOSTS="testserver",
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        PROBE_PASSWORD=PASSWORD,
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["plain"] == [301, "https://testserver/admin/login/"]
    assert seen["hsts"] == "max-age=31536000; includeSubDomains"
    assert seen["proxied_hsts"] == seen["hsts"]  # TLS ended at a proxy that says so
    assert seen["csrf_cookie"]["secure"] is True
    assert seen["login"] == 302
    assert seen["session_cookie"] == {"secure": True, "httponly": True}
    assert "default-src 'self'" in seen["csp"]
    assert seen["frame"] == "DENY" and seen["nosniff"] == "nosniff"
