"""The audit trail: every change to configuration, with who, where, which tenant and what.

Changes go through the admin (a logged-in user), the management API (a session or a
management key), config as code and plain service calls; each must leave one event with
the right actor, source, tenant and diff, and no secret may reach the audit table.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.billing.services import budget_set, model_rate_limit_set
from apps.keys.models import ApiKey
from apps.keys.services import key_update
from apps.providers.models import Provider
from apps.providers.services import (
    deployment_create,
    model_create,
    model_update,
    provider_create,
)
from apps.tenants.models import Tenant
from apps.tenants.services import membership_set, tenant_create, tenant_delete
from tests.api_clients import key_client
from tests.keys.factories import make_key
from tests.keys.test_admin import add_data, change_data
from tests.providers.test_admin import provider_data
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

LITERAL = "sk-live-XYZ-0123456789-audit-me"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters).order_by("id"))


def only_event(**filters) -> AuditEvent:
    found = events(**filters)
    assert len(found) == 1, [(e.action, e.object_type, e.changes) for e in found]
    return found[0]


def audit_table_dump() -> str:
    """The audit table as the database holds it: every column of every row."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        return "\n".join(repr(row) for row in cursor.fetchall())


# --- through the admin ---------------------------------------------------------------


def test_admin_create_update_delete_of_a_provider(admin_client, admin_user):
    tenant = TenantFactory(name="acme")
    response = admin_client.post(
        reverse("admin:providers_provider_add"),
        provider_data(name="acme-openai", tenant=tenant.pk, credential=LITERAL),
        REMOTE_ADDR="203.0.113.7",
        HTTP_X_REQUEST_ID="req-admin-1",
    )
    assert response.status_code == 302, response.content
    provider = Provider.objects.get(name="acme-openai")

    created = only_event(object_type="providers.provider", action="create")
    assert (created.actor, created.actor_user, created.source) == ("admin", admin_user, "admin")
    assert (created.tenant, created.tenant_name) == (tenant, "acme")
    assert created.object_id == str(provider.pk) and created.object_repr == "acme-openai"
    assert created.changes["name"] == [None, "acme-openai"]
    assert created.changes["kind"] == [None, "openai"]
    assert created.changes["credential_encrypted"] == [None, "***"]
    assert (created.ip, created.request_id) == ("203.0.113.7", "req-admin-1")

    response = admin_client.post(
        reverse("admin:providers_provider_change", args=[provider.pk]),
        provider_data(name="acme-openai", tenant=tenant.pk, base_url="http://127.0.0.1:8/v1"),
    )
    assert response.status_code == 302, response.content
    updated = only_event(object_type="providers.provider", action="update")
    # Only what changed: the blank credential field kept the stored credential.
    assert updated.changes == {"base_url": ["http://127.0.0.1:9/v1", "http://127.0.0.1:8/v1"]}
    assert (updated.actor, updated.source, updated.tenant) == ("admin", "admin", tenant)

    response = admin_client.post(
        reverse("admin:providers_provider_delete", args=[provider.pk]), {"post": "yes"}
    )
    assert response.status_code == 302, response.content
    deleted = only_event(object_type="providers.provider", action="delete")
    assert (deleted.actor, deleted.source, deleted.tenant_name) == ("admin", "admin", "acme")
    assert deleted.changes["name"] == ["acme-openai", None]
    assert deleted.changes["credential_encrypted"] == ["***", None]

    assert LITERAL not in audit_table_dump()


def test_admin_key_events_and_tenant_staff_attribution(client):
    tenant = TenantFactory(name="acme")
    staff = UserFactory(username="acme-admin")
    MembershipFactory(user=staff, tenant=tenant, role="admin")
    client.force_login(staff)

    response = client.post(reverse("admin:keys_apikey_add"), add_data(tenant, name="ci"))
    assert response.status_code == 200, response.content  # the one-time secret page
    key = ApiKey.objects.get(tenant=tenant, name="ci")
    created = only_event(object_type="keys.apikey", action="create")
    assert (created.actor, created.actor_user_id, created.source) == (
        "acme-admin",
        staff.pk,
        "admin",
    )
    assert created.tenant == tenant
    assert created.changes["secret_hash"] == [None, "***"]
    assert created.changes["prefix"] == [None, key.prefix]

    response = client.post(
        reverse("admin:keys_apikey_change", args=[key.pk]), change_data(key, rpm="60")
    )
    assert response.status_code == 302, response.content
    updated = only_event(object_type="keys.apikey", action="update")
    assert updated.changes == {"rpm": [None, 60]}
    assert updated.actor == "acme-admin"


def test_admin_tenant_with_memberships(admin_client):
    member = UserFactory(username="bob")
    data = {
        "name": "globex",
        "display_name": "Globex",
        "is_active": "on",
        "budget_limit_usd": "",
        "budget_period": "monthly",
        "metadata": "{}",
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-user": member.pk,
        "memberships-0-role": "viewer",
        "_save": "Save",
    }
    response = admin_client.post(reverse("admin:tenants_tenant_add"), data)
    assert response.status_code == 302, response.content
    tenant = Tenant.objects.get(name="globex")
    assert only_event(object_type="tenants.tenant", action="create").tenant == tenant
    membership = only_event(object_type="tenants.membership", action="create")
    assert membership.changes["role"] == [None, "viewer"]
    assert membership.changes["user"] == [None, member.pk]
    assert (membership.tenant, membership.source) == (tenant, "admin")


# --- through the API -------------------------------------------------------------------


def test_api_key_changes_are_attributed_to_the_management_key():
    tenant = TenantFactory(name="acme")
    manager = make_key(tenant, name="automation", scopes=["management:write"])
    client = key_client(manager.secret)

    created = client.post(
        "/api/v1/keys/", {"name": "ci", "tenant": tenant.pk, "rpm": 10}, format="json"
    )
    assert created.status_code == 201, created.content
    secret, pk = created.json()["secret"], created.json()["id"]
    event = only_event(object_type="keys.apikey", action="create", object_id=str(pk))
    assert (event.actor, event.actor_user, event.source) == (
        f"key:{manager.key.prefix}",
        None,
        "api",
    )
    assert event.tenant == tenant and event.changes["rpm"] == [None, 10]

    assert client.patch(f"/api/v1/keys/{pk}/", {"rpm": 20}, format="json").status_code == 200
    updated = only_event(object_type="keys.apikey", action="update", object_id=str(pk))
    assert updated.changes == {"rpm": [10, 20]}
    assert updated.actor == f"key:{manager.key.prefix}"

    assert client.delete(f"/api/v1/keys/{pk}/").status_code == 204
    deleted = only_event(object_type="keys.apikey", action="delete", object_id=str(pk))
    assert (deleted.actor, deleted.source, deleted.tenant) == (
        f"key:{manager.key.prefix}",
        "api",
        tenant,
    )

    dump = audit_table_dump()
    for leaked in (secret, manager.secret):
        assert leaked not in dump


def test_api_provider_changes_by_a_session_user_never_record_the_credential():
    tenant = TenantFactory(name="acme")
    user = UserFactory(username="acme-owner")
    MembershipFactory(user=user, tenant=tenant, role="owner")
    client = APIClient()
    client.force_login(user)

    created = client.post(
        "/api/v1/providers/",
        {"name": "own-openai", "kind": "openai", "credential": LITERAL},
        format="json",
    )
    assert created.status_code == 201, created.content
    provider = Provider.objects.get(pk=created.json()["id"])
    event = only_event(object_type="providers.provider", action="create")
    assert (event.actor, event.actor_user, event.source, event.tenant) == (
        "acme-owner",
        user,
        "api",
        tenant,
    )
    assert event.changes["credential_encrypted"] == [None, "***"]

    rotated = client.patch(
        f"/api/v1/providers/{provider.pk}/",
        {"credential": LITERAL + "-2", "enabled": False},
        format="json",
    )
    assert rotated.status_code == 200, rotated.content
    update = only_event(object_type="providers.provider", action="update")
    # The auditor sees that the credential changed, not what it is.
    assert update.changes == {"credential_encrypted": ["***", "***"], "enabled": [True, False]}

    provider.refresh_from_db()
    dump = audit_table_dump()
    for leaked in (LITERAL, LITERAL + "-2", provider.credential_encrypted):
        assert leaked not in dump


def test_no_secret_of_any_kind_reaches_the_audit_table():
    """A provider with a literal credential, a key with a signing secret, a budget with a
    webhook secret: neither plaintext, ciphertext, key secret nor its hash is recorded."""
    tenant = TenantFactory(name="acme")
    provider = provider_create(name="p", kind="openai", tenant=tenant, credential=LITERAL)
    created = make_key(tenant, name="signed", signing_secret="sign-me-0123456789abcdef")
    budget = budget_set(
        tenant=tenant, period="monthly", limit_usd="10", webhook_secret="hook-secret-987654321"
    )
    key = created.key
    dump = audit_table_dump()
    for leaked in (
        LITERAL,
        provider.credential_encrypted,
        created.secret,
        key.secret_hash,
        "sign-me-0123456789abcdef",
        key.signing_secret_encrypted,
        "hook-secret-987654321",
        budget.webhook_secret_encrypted,
    ):
        assert leaked and leaked not in dump
    key_event = only_event(object_type="keys.apikey", action="create")
    assert key_event.changes["signing_secret_encrypted"] == [None, "***"]
    assert key_event.changes["secret_hash"] == [None, "***"]
    # budget_set creates the row, then saves the rest: "set" is visible, the value is not.
    assert only_event(object_type="billing.budget", action="create").changes["limit_usd"] == [
        None,
        "10",
    ]
    budget_event = only_event(object_type="billing.budget", action="update")
    assert budget_event.changes["webhook_secret_encrypted"] == ["", "***"]


def test_a_credential_reference_is_shown_because_it_is_not_the_secret():
    provider = provider_create(name="p", kind="openai", credential="env:OPENAI_API_KEY")
    event = only_event(object_type="providers.provider", action="create")
    assert event.changes["credential_ref"] == [None, "env:OPENAI_API_KEY"]
    assert "credential_encrypted" not in event.changes
    assert (event.tenant, event.tenant_name) == (None, "")  # a platform provider
    assert event.object_id == str(provider.pk)


def test_secrets_inside_json_options_are_masked():
    provider_create(
        name="p",
        kind="openai",
        options={"headers": {"api-key": "hdr-secret-1", "X-Trace": "on"}, "timeout_s": 5},
    )
    event = only_event(object_type="providers.provider", action="create")
    assert event.changes["options"] == [
        None,
        {"headers": {"api-key": "***", "X-Trace": "on"}, "timeout_s": 5},
    ]
    assert "hdr-secret-1" not in audit_table_dump()


# --- other sources and models ------------------------------------------------------------


def test_limits_bypass_change_is_in_the_diff():
    tenant = TenantFactory(name="acme")
    key = make_key(tenant, name="ops").key
    key_update(key=key, limits_bypass=True)
    event = only_event(object_type="keys.apikey", action="update")
    assert event.changes == {"limits_bypass": [False, True]}
    assert (event.actor, event.source) == ("system", "system")


def test_a_save_that_changes_nothing_is_not_an_event():
    tenant = tenant_create(name="acme")
    before = AuditEvent.objects.count()
    tenant.save()
    Tenant.objects.get(pk=tenant.pk).save()
    assert AuditEvent.objects.count() == before


def test_models_deployments_prices_budgets_limits_and_memberships_are_audited():
    tenant = TenantFactory(name="acme")
    provider = provider_create(name="p", kind="mock", tenant=tenant)
    model = model_create(name="m", tenant=tenant, input_price_per_million="1.5")
    deployment_create(model=model, provider=provider, upstream_model="echo")
    model_update(model=model, output_price_per_million=Decimal("2"))
    budget_set(tenant=tenant, period="monthly", limit_usd="5")
    model_rate_limit_set(tenant=tenant, model_name="m", rpm=10)
    membership_set(user=UserFactory(), tenant=tenant, role="viewer")

    seen = {(e.object_type, e.action) for e in events(tenant=tenant)}
    assert {
        ("providers.model", "create"),
        ("providers.model", "update"),
        ("providers.deployment", "create"),
        ("providers.price", "create"),
        ("billing.budget", "create"),
        ("billing.modelratelimit", "create"),
        ("tenants.membership", "create"),
    } <= seen
    update = only_event(object_type="providers.model", action="update")
    assert update.changes["output_price_per_million"] == ["0.000000", "2"]
    deployment = only_event(object_type="providers.deployment")
    assert deployment.tenant == tenant  # reached through its model


def test_gateway_config_apply_is_recorded_as_config(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_TEST_KEY", "sk-config-0123456789abcdef")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers:\n"
        "  - {name: cfg-openai, kind: openai, api_key: env:AUDIT_TEST_KEY}\n"
        "  - {name: cfg-literal, kind: openai, api_key: literal-config-secret-42}\n"
        "tenants:\n"
        "  - name: acme\n"
    )
    call_command("gateway_config", "apply", str(config), stdout=io.StringIO())
    recorded = events(source="config")
    assert {(e.object_type, e.object_repr) for e in recorded} >= {
        ("providers.provider", "cfg-openai"),
        ("providers.provider", "cfg-literal"),
        ("tenants.tenant", "acme"),
    }
    assert all(e.actor == "config" for e in recorded)
    assert "literal-config-secret-42" not in audit_table_dump()
    assert "sk-config-0123456789abcdef" not in audit_table_dump()


def test_deleting_a_tenant_keeps_the_trail_with_its_name():
    tenant = TenantFactory(name="doomed")
    make_key(tenant, name="k")
    MembershipFactory(tenant=tenant)
    provider = provider_create(name="own", kind="mock", tenant=tenant)
    model = model_create(name="own-model", tenant=tenant)
    deployment_create(model=model, provider=provider, upstream_model="x")
    budget_set(tenant=tenant, period="monthly", limit_usd="5")
    tenant_delete(tenant=tenant)

    trail = events(tenant_name="doomed")
    # The cascade deletes rows in an order of Django's choosing, some after the tenant's
    # own row: each is recorded, with the tenant's name.
    assert {(e.object_type, e.action) for e in trail} >= {
        ("tenants.tenant", "create"),
        ("keys.apikey", "create"),
        ("keys.apikey", "delete"),
        ("tenants.membership", "delete"),
        ("providers.provider", "delete"),
        ("providers.model", "delete"),
        ("providers.price", "delete"),
        ("providers.deployment", "delete"),
        ("billing.budget", "delete"),
        ("tenants.tenant", "delete"),
    }
    # The tenant row is gone: every event lost the link, none lost the name.
    assert all(e.tenant_id is None for e in trail)


def test_changes_are_plain_json():
    tenant = TenantFactory(name="acme")
    model_create(name="m", tenant=tenant, input_price_per_million="0.15", fallbacks=["x"])
    event = only_event(object_type="providers.model", action="create")
    assert json.loads(json.dumps(event.changes)) == event.changes
    assert event.changes["input_price_per_million"] == [None, "0.15"]
    assert event.changes["fallbacks"] == [None, ["x"]]
