"""The API key admin: secrets are shown once and live nowhere, writes go through services."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.models import Session
from django.db import connection
from django.http import HttpRequest
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.core import crypto
from apps.keys import services
from apps.keys.models import ApiKey, Scope
from apps.keys.secrets import hash_secret
from apps.keys.selectors import key_get_by_secret
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory

pytestmark = pytest.mark.django_db

ADD = "admin:keys_apikey_add"
CHANGELIST = "admin:keys_apikey_changelist"


def change_url(key: ApiKey) -> str:
    return reverse("admin:keys_apikey_change", args=[key.pk])


def add_data(tenant, **overrides) -> dict:
    data = {
        "tenant": tenant.pk,
        "name": "ci",
        "scopes": [Scope.INFERENCE],
        "allowed_models": "",
        "rpm": "",
        "tpm": "",
        "expires_at_0": "",
        "expires_at_1": "",
        "metadata": "{}",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def change_data(key: ApiKey, **overrides) -> dict:
    data = {
        "name": key.name,
        "scopes": list(key.scopes),
        "allowed_models": ", ".join(key.allowed_models),
        "rpm": key.rpm or "",
        "tpm": key.tpm or "",
        "expires_at_0": "",
        "expires_at_1": "",
        "metadata": "{}",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def everything_stored(client) -> str:
    """Every row of every table, decoded sessions and the messages cookie, as text."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(repr(row) for row in cursor.fetchall())
    chunks.extend(repr(session.get_decoded()) for session in Session.objects.all())
    cookie = client.cookies.get(CookieStorage.cookie_name)
    if cookie is not None and cookie.value:
        chunks.extend(str(m) for m in CookieStorage(HttpRequest())._decode(cookie.value) or [])
    return "\n".join(chunks)


@pytest.fixture
def logs(caplog):
    """Capture every log record, including the loggers that do not propagate to root."""
    caplog.set_level(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("django", "gateway")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def tenant():
    return TenantFactory(name="acme")


# --- the secret is shown once ----------------------------------------------------


def test_add_form_has_no_secret_field(admin_client, tenant):
    response = admin_client.get(reverse(ADD))
    assert response.status_code == 200
    fields = set(response.context["adminform"].form.fields)
    assert fields == {
        "tenant",
        "name",
        "scopes",
        "allowed_models",
        "rpm",
        "tpm",
        "expires_at",
        "require_signature",
        "metadata",
    }
    assert 'name="secret"' not in response.content.decode()


def test_secret_is_shown_exactly_once_and_only_its_hash_is_stored(
    admin_client, admin_user, tenant, logs
):
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(reverse(ADD), add_data(tenant, name="ci"))

    assert response.status_code == 200
    assert response.templates[0].name == "admin/keys/apikey/secret_once.html"
    key = ApiKey.objects.get(tenant=tenant, name="ci")
    html = response.content.decode()
    match = re.search(r'<code id="gw-secret"[^>]*>([^<]+)</code>', html)
    assert match, "the one-time page shows the secret"
    secret = match.group(1)
    assert secret.startswith("gw-") and len(secret) > 40
    assert "will not be shown again" in html
    assert "no-store" in response["Cache-Control"]
    assert change_url(key) in html
    # It is the key's real secret, made by the service, and the key works.
    assert key.secret_hash == hash_secret(secret)
    assert key.prefix == secret[:11]
    assert key.created_by == admin_user
    assert key_get_by_secret(secret=secret) == key
    # The flash message that came with the page names the key by its prefix only.
    flashed = [str(m) for m in response.context["messages"]]
    assert flashed and all(secret not in m for m in flashed)
    # The plaintext never reached the database, not even in a query.
    assert all(secret not in q["sql"] for q in queries.captured_queries)

    later_pages = [
        change_url(key),
        reverse(CHANGELIST),
        reverse("admin:keys_apikey_history", args=[key.pk]),
        reverse("admin:index"),
        reverse("admin:keys_apikey_delete", args=[key.pk]),
    ]
    for url in later_pages:
        page = admin_client.get(url)
        assert page.status_code == 200, url
        assert secret not in page.content.decode(), url
    assert key.prefix in admin_client.get(change_url(key)).content.decode()

    stored = everything_stored(admin_client)
    assert key.secret_hash in stored  # the scan does see the keys table
    assert secret not in stored
    assert secret[11:] not in stored  # not even the part after the display prefix
    assert all(secret not in (entry.change_message or "") for entry in LogEntry.objects.all())
    assert secret not in logs.text


def test_posted_secret_is_ignored(admin_client, tenant):
    chosen = "gw-attacker-chosen-secret-0123456789"
    response = admin_client.post(reverse(ADD), add_data(tenant, secret=chosen))
    assert response.status_code == 200
    key = ApiKey.objects.get(tenant=tenant, name="ci")
    assert key.secret_hash != hash_secret(chosen)
    assert key_get_by_secret(secret=chosen) is None


def test_add_goes_through_key_create(admin_client, tenant):
    with mock.patch("apps.keys.admin.key_create", wraps=services.key_create) as create:
        admin_client.post(
            reverse(ADD),
            add_data(
                tenant,
                scopes=[Scope.INFERENCE, Scope.MANAGEMENT_READ],
                allowed_models="gpt-4o-mini, claude-haiku, gpt-4o-mini",
                rpm="60",
                tpm="1000",
            ),
        )
    create.assert_called_once()
    key = ApiKey.objects.get(tenant=tenant, name="ci")
    assert key.scopes == [Scope.INFERENCE, Scope.MANAGEMENT_READ]
    assert key.allowed_models == ["gpt-4o-mini", "claude-haiku"]
    assert (key.rpm, key.tpm) == (60, 1000)


def test_add_requires_a_scope_and_a_future_expiry(admin_client, tenant):
    response = admin_client.post(reverse(ADD), add_data(tenant, scopes=[]))
    assert response.status_code == 200
    assert "scopes" in response.context["adminform"].form.errors
    past = timezone.now() - timedelta(days=1)
    response = admin_client.post(
        reverse(ADD),
        add_data(
            tenant,
            expires_at_0=past.strftime("%Y-%m-%d"),
            expires_at_1=past.strftime("%H:%M:%S"),
        ),
    )
    assert "expires_at" in response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


def test_require_signature_shows_the_signing_secret_once_and_stores_it_encrypted(
    admin_client, tenant
):
    response = admin_client.post(reverse(ADD), add_data(tenant, require_signature="on"))
    html = response.content.decode()
    signing = re.search(r'<code id="gw-signing-secret"[^>]*>([^<]+)</code>', html).group(1)
    key = ApiKey.objects.get(tenant=tenant, name="ci")
    assert key.require_signature
    assert key.signing_secret_encrypted and signing not in key.signing_secret_encrypted
    assert crypto.decrypt(key.signing_secret_encrypted) == signing
    page = admin_client.get(change_url(key)).content.decode()
    assert signing not in page and key.signing_secret_encrypted not in page
    assert "set (encrypted)" in page


# --- changing, revoking, deleting ------------------------------------------------------


def test_change_updates_settings_through_key_update_and_never_the_secret(admin_client, tenant):
    created = make_key(tenant, name="ci")
    key = created.key
    page = admin_client.get(change_url(key))
    form = page.context["adminform"].form
    assert "tenant" not in form.fields  # read-only: keys never move between tenants
    assert set(page.context["adminform"].readonly_fields) >= {
        "prefix_display",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert 'type="checkbox" name="scopes" value="management:write"' in page.content.decode()

    with mock.patch("apps.keys.admin.key_update", wraps=services.key_update) as update:
        response = admin_client.post(
            change_url(key),
            change_data(
                key,
                name="ci-renamed",
                scopes=[Scope.INFERENCE, Scope.MANAGEMENT_WRITE],
                allowed_models="a, b",
                rpm="10",
            ),
        )
    assert response.status_code == 302
    update.assert_called_once()
    key.refresh_from_db()
    assert key.name == "ci-renamed"
    assert key.scopes == [Scope.INFERENCE, Scope.MANAGEMENT_WRITE]
    assert key.allowed_models == ["a", "b"] and key.rpm == 10
    assert key.secret_hash == hash_secret(created.secret)


def test_require_signature_cannot_be_switched_on_without_a_signing_secret(admin_client, tenant):
    key = make_key(tenant, name="ci").key
    response = admin_client.post(change_url(key), change_data(key, require_signature="on"))
    assert response.status_code == 200
    assert "require_signature" in response.context["adminform"].form.errors
    key.refresh_from_db()
    assert not key.require_signature


def test_revoke_action(admin_client, tenant):
    first, second, untouched = (make_key(tenant).key for _ in range(3))
    data = {"action": "revoke_selected", "_selected_action": [first.pk, second.pk]}
    with mock.patch("apps.keys.admin.key_revoke", wraps=services.key_revoke) as revoke:
        response = admin_client.post(reverse(CHANGELIST), data, follow=True)
    assert revoke.call_count == 2
    for key in (first, second, untouched):
        key.refresh_from_db()
    assert first.is_revoked and second.is_revoked and not untouched.is_revoked
    flashed = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert flashed[0][0] == "success" and "Revoked 2 key(s)" in flashed[0][1]

    response = admin_client.post(reverse(CHANGELIST), data, follow=True)
    assert [m.level_tag for m in response.context["messages"]] == ["warning"]

    revoked_list = admin_client.get(reverse(CHANGELIST), {"status": "revoked"})
    shown = {k.pk for k in revoked_list.context["cl"].result_list}
    assert shown == {first.pk, second.pk}
    assert "gw-badge--bad" in revoked_list.content.decode()


def test_status_badges_in_the_list(admin_client, tenant):
    make_key(tenant, name="live")
    make_key(tenant, name="old", expires_at=timezone.now() + timedelta(seconds=1))
    ApiKey.objects.filter(name="old").update(expires_at=timezone.now() - timedelta(days=1))
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert '<span class="gw-badge gw-badge--ok">active</span>' in html
    assert '<span class="gw-badge gw-badge--warn">expired</span>' in html


def test_delete_goes_through_key_delete(admin_client, tenant):
    key = make_key(tenant).key
    with mock.patch("apps.keys.admin.key_delete", wraps=services.key_delete) as delete:
        response = admin_client.post(
            reverse("admin:keys_apikey_delete", args=[key.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    delete.assert_called_once()
    assert not ApiKey.objects.filter(pk=key.pk).exists()


def test_changelist_queries_do_not_grow_with_keys(admin_client, tenant):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(reverse(CHANGELIST)).status_code == 200
        return len(queries)

    make_key(TenantFactory())
    few = count()
    for _ in range(8):
        make_key(TenantFactory())
    assert count() == few


# --- tenant scoping ---------------------------------------------------------------


@pytest.fixture
def two_tenants(client):
    """Staff user ``b_admin`` (admin of tenant B, no Django permissions) logged in."""
    a, b = TenantFactory(name="tenant-a"), TenantFactory(name="tenant-b")
    membership = MembershipFactory(tenant=b, user__username="b_admin")
    assert not membership.user.user_permissions.exists() and not membership.user.is_superuser
    client.force_login(membership.user)
    return a, b


def test_tenant_staff_lists_only_their_keys(client, two_tenants):
    a, b = two_tenants
    key_a, key_b = make_key(a, name="a-key").key, make_key(b, name="b-key").key
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert [k.pk for k in response.context["cl"].result_list] == [key_b.pk]
    assert key_a.prefix not in response.content.decode()
    # The tenant filter only offers tenants they can see.
    assert "tenant-a" not in response.content.decode()


def test_tenant_staff_cannot_view_change_revoke_or_delete_other_tenants_keys(client, two_tenants):
    a, _b = two_tenants
    key = make_key(a, name="a-key").key
    before = ApiKey.objects.values().get(pk=key.pk)

    assert client.get(change_url(key)).status_code == 302  # "does not exist"
    response = client.post(change_url(key), change_data(key, name="stolen", rpm="1"))
    assert response.status_code == 302
    response = client.post(reverse("admin:keys_apikey_delete", args=[key.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert client.get(reverse("admin:keys_apikey_history", args=[key.pk])).status_code == 302
    client.post(reverse(CHANGELIST), {"action": "revoke_selected", "_selected_action": [key.pk]})
    client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [key.pk], "post": "yes"},
    )
    assert ApiKey.objects.values().get(pk=key.pk) == before


def test_tenant_staff_can_only_create_keys_for_their_tenant(client, two_tenants):
    a, b = two_tenants
    response = client.get(reverse(ADD))
    assert response.status_code == 200
    choices = response.context["adminform"].form.fields["tenant"].queryset
    assert list(choices) == [b]

    response = client.post(reverse(ADD), add_data(a, name="sneaky"))
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors
    assert not ApiKey.objects.filter(name="sneaky").exists()

    response = client.post(reverse(ADD), add_data(b, name="mine"))
    assert response.status_code == 200
    assert ApiKey.objects.get(name="mine").tenant == b


def test_tenant_staff_manage_their_own_keys(client, two_tenants):
    _a, b = two_tenants
    key = make_key(b, name="b-key").key
    assert client.get(change_url(key)).status_code == 200
    response = client.post(change_url(key), change_data(key, rpm="5"))
    assert response.status_code == 302
    client.post(reverse(CHANGELIST), {"action": "revoke_selected", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.rpm == 5 and key.is_revoked


def test_viewer_role_sees_keys_read_only(client):
    tenant = TenantFactory(name="acme")
    viewer = MembershipFactory(tenant=tenant, role="viewer").user
    client.force_login(viewer)
    key = make_key(tenant, name="ci").key
    page = client.get(change_url(key))
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    assert client.post(change_url(key), change_data(key, rpm="1")).status_code == 403
    assert client.get(reverse(ADD)).status_code == 403
    response = client.get(reverse(CHANGELIST))
    assert "revoke_selected" not in response.content.decode()
    client.post(reverse(CHANGELIST), {"action": "revoke_selected", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.rpm is None and not key.is_revoked


def test_mixed_roles_write_only_where_they_may(client):
    """Admin of B and viewer of A: A's keys are listed, but stay untouched."""
    a, b = TenantFactory(name="tenant-a"), TenantFactory(name="tenant-b")
    user = MembershipFactory(tenant=b, role="admin").user
    MembershipFactory(tenant=a, user=user, role="viewer")
    client.force_login(user)
    key_a, key_b = make_key(a, name="a-key").key, make_key(b, name="b-key").key
    listed = client.get(reverse(CHANGELIST)).context["cl"].result_list
    assert {k.pk for k in listed} == {key_a.pk, key_b.pk}

    response = client.post(
        reverse(CHANGELIST),
        {"action": "revoke_selected", "_selected_action": [key_a.pk, key_b.pk]},
        follow=True,
    )
    levels = {m.level_tag: str(m) for m in response.context["messages"]}
    assert "a-key" in levels["error"] and "b-key" in levels["success"]
    assert client.post(change_url(key_a), change_data(key_a, rpm="1")).status_code == 403
    client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [key_a.pk], "post": "yes"},
    )
    key_a.refresh_from_db()
    key_b.refresh_from_db()
    assert not key_a.is_revoked and key_a.rpm is None
    assert key_b.is_revoked


def test_saving_for_a_tenant_without_write_access_is_refused(rf):
    """The last guard before any service runs, whatever the form let through."""
    from django.contrib import admin as django_admin
    from django.core.exceptions import PermissionDenied

    a, b = TenantFactory(name="tenant-a"), TenantFactory(name="tenant-b")
    user = MembershipFactory(tenant=b, role="admin").user
    request = rf.post("/")
    request.user = user
    model_admin = django_admin.site.get_model_admin(ApiKey)
    form = model_admin.get_form(request)(add_data(a))
    form.fields["tenant"].queryset = type(a).objects.all()  # as if the form were fooled
    assert form.is_valid(), form.errors
    with pytest.raises(PermissionDenied):
        model_admin.save_form(request, form, change=False)
    form = model_admin.get_form(request)(add_data(b))
    assert form.is_valid()
    assert model_admin.save_form(request, form, change=False).tenant == b


@pytest.mark.django_db
def test_rotate_action_shows_the_new_secret_once(admin_client):
    from apps.keys.selectors import key_get_by_secret
    from apps.keys.services import key_create
    from tests.tenants.factories import TenantFactory

    created = key_create(tenant=TenantFactory(), name="to-rotate")
    response = admin_client.post(
        "/admin/keys/apikey/", {"action": "rotate_selected", "_selected_action": [created.key.pk]}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "The key&#x27;s new secret" in html or "new secret" in html
    import re

    new_secret = re.search(r'data-testid="api-key-secret">(gw-[^<]+)<', html).group(1)
    assert key_get_by_secret(secret=new_secret).pk == created.key.pk
    assert key_get_by_secret(secret=created.secret).pk == created.key.pk  # 24 h grace
    assert (
        new_secret
        not in admin_client.get(f"/admin/keys/apikey/{created.key.pk}/change/").content.decode()
    )
