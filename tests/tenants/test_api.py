"""/api/v1/tenants/: who may list, create, change and delete tenants; isolation; errors."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from apps.keys.models import ApiKey
from apps.providers.models import Provider
from apps.tenants.models import Role, Tenant
from tests.api_clients import assert_error, ids, key_client, session_client
from tests.keys.factories import make_key
from tests.providers.factories import DeploymentFactory, ModelFactory, ProviderFactory
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/tenants/"
READERS = ["owner", "admin", "member", "viewer", "key-read", "key-write"]
TENANT_WRITERS = ["owner", "admin", "key-write"]
READ_ONLY = ["member", "viewer", "key-read"]


def detail(pk: int) -> str:
    return f"{LIST}{pk}/"


def snapshot() -> list[dict]:
    return list(Tenant.objects.order_by("pk").values())


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world():
    a, b = TenantFactory(name="alpha"), TenantFactory(name="bravo")
    clients: dict[str, APIClient] = {"anonymous": APIClient()}
    for role in Role:
        user = UserFactory(username=f"alpha-{role.value}")
        MembershipFactory(user=user, tenant=a, role=role)
        clients[role.value] = session_client(user)
    clients["superuser"] = session_client(UserFactory(username="root", is_superuser=True))
    clients["key-read"] = key_client(make_key(a, scopes=["management:read"]).secret)
    clients["key-write"] = key_client(make_key(a, scopes=["management:write"]).secret)
    clients["key-inference"] = key_client(make_key(a, scopes=["inference"]).secret)
    clients["outsider"] = session_client(UserFactory(username="outsider"))
    return SimpleNamespace(a=a, b=b, clients=clients)


@pytest.mark.parametrize("caller", READERS)
def test_members_see_only_their_tenant(world, caller):
    client = world.clients[caller]
    assert ids(client.get(LIST)) == {world.a.pk}
    response = client.get(detail(world.a.pk))
    assert response.status_code == 200
    assert response.json()["name"] == "alpha"
    assert response.json()["budget_period"] == "monthly"


def test_superuser_sees_every_tenant(world):
    assert ids(world.clients["superuser"].get(LIST)) == {world.a.pk, world.b.pk}


def test_callers_without_access(world):
    assert_error(world.clients["anonymous"].get(LIST), 401)
    assert_error(world.clients["key-inference"].get(LIST), 403, type="permission_error")
    # A logged-in user without a membership has nothing to read.
    assert_error(world.clients["outsider"].get(LIST), 403)
    assert_error(world.clients["outsider"].get(detail(world.a.pk)), 403)


def test_inactive_tenant_is_invisible_to_its_members(world):
    Tenant.objects.filter(pk=world.a.pk).update(is_active=False)
    assert_error(world.clients["owner"].get(detail(world.a.pk)), 403)


def test_superuser_creates_and_deletes_tenants(world):
    client = world.clients["superuser"]
    response = client.post(
        LIST,
        {"name": "charlie", "display_name": "Charlie Inc", "budget_limit_usd": "100.5"},
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["name"] == "charlie" and data["budget_limit_usd"] == "100.5000"
    tenant = Tenant.objects.get(pk=data["id"])
    assert tenant.budget_limit_usd == Decimal("100.5")

    assert client.delete(detail(tenant.pk)).status_code == 204
    assert not Tenant.objects.filter(pk=tenant.pk).exists()


def test_deleting_a_tenant_removes_what_it_owns(world):
    provider = ProviderFactory(tenant=world.b)
    model = ModelFactory(tenant=world.b)
    DeploymentFactory(model=model, provider=provider)  # protects the provider on its own
    make_key(world.b)
    response = world.clients["superuser"].delete(detail(world.b.pk))
    assert response.status_code == 204, response.content
    assert not Tenant.objects.filter(pk=world.b.pk).exists()
    assert not Provider.objects.filter(pk=provider.pk).exists()
    assert not ApiKey.objects.filter(tenant_id=world.b.pk).exists()
    assert Tenant.objects.filter(pk=world.a.pk).exists()


@pytest.mark.parametrize("caller", [*READERS])
def test_only_superusers_create_or_delete_tenants(world, caller):
    client = world.clients[caller]
    before = snapshot()
    assert_error(client.post(LIST, {"name": "charlie"}, format="json"), 403)
    assert_error(client.delete(detail(world.a.pk)), 403)
    assert snapshot() == before


@pytest.mark.parametrize("caller", TENANT_WRITERS)
def test_owners_and_admins_update_their_tenant(world, caller):
    client = world.clients[caller]
    response = client.patch(
        detail(world.a.pk), {"display_name": "Alpha GmbH", "metadata": {"cc": "7"}}, format="json"
    )
    assert response.status_code == 200, response.content
    world.a.refresh_from_db()
    assert (world.a.display_name, world.a.metadata) == ("Alpha GmbH", {"cc": "7"})

    # PUT of what GET returned is fine, platform-only fields included, as long as unchanged.
    current = client.get(detail(world.a.pk)).json()
    assert client.put(detail(world.a.pk), current, format="json").status_code == 200


@pytest.mark.parametrize("caller", TENANT_WRITERS)
@pytest.mark.parametrize(
    "change",
    [{"budget_limit_usd": "1000000"}, {"is_active": False}, {"budget_period": "total"}],
)
def test_tenant_admins_cannot_change_platform_fields(world, caller, change):
    before = snapshot()
    response = world.clients[caller].patch(detail(world.a.pk), change, format="json")
    assert_error(response, 403, type="permission_error")
    assert snapshot() == before


def test_superuser_changes_platform_fields(world):
    response = world.clients["superuser"].patch(
        detail(world.b.pk), {"budget_limit_usd": "50", "is_active": False}, format="json"
    )
    assert response.status_code == 200
    world.b.refresh_from_db()
    assert world.b.budget_limit_usd == Decimal("50") and world.b.is_active is False


@pytest.mark.parametrize("caller", READ_ONLY)
def test_readers_cannot_update(world, caller):
    before = snapshot()
    response = world.clients[caller].patch(detail(world.a.pk), {"display_name": "x"}, format="json")
    assert_error(response, 403)
    assert snapshot() == before


@pytest.mark.parametrize("caller", ["owner", "admin", "key-write", "viewer", "key-read"])
def test_other_tenant_is_invisible_and_untouchable(world, caller):
    client = world.clients[caller]
    before = snapshot()
    assert world.b.pk not in ids(client.get(LIST))
    assert world.b.pk not in ids(client.get(f"{LIST}?search=bravo"))
    assert_error(client.get(detail(world.b.pk)), 404, type="not_found_error")
    # Writers get 404; read-only callers are refused any write before a lookup (403).
    # Either way the answer is the one a nonexistent id gets: no existence oracle.
    status = 404 if caller in TENANT_WRITERS else 403
    for target in (world.b.pk, 10**6):
        assert_error(client.patch(detail(target), {"display_name": "x"}, format="json"), status)
        assert_error(client.put(detail(target), {"display_name": "x"}, format="json"), status)
        assert_error(client.delete(detail(target)), status)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "not a slug!"}, "name"),
        ({"name": "alpha"}, "name"),  # taken
        ({"name": "charlie", "budget_limit_usd": "-1"}, "budget_limit_usd"),
        ({"name": "charlie", "budget_period": "hourly"}, "budget_period"),
        ({"name": "charlie", "metadata": [1, 2]}, "metadata"),
    ],
)
def test_validation_errors(world, body, param):
    before = snapshot()
    response = world.clients["superuser"].post(LIST, body, format="json")
    error = assert_error(response, 400, type="invalid_request_error", param=param)
    assert param in error["details"]
    assert snapshot() == before


def test_method_not_allowed_and_not_found(world):
    client = world.clients["superuser"]
    assert_error(client.post(detail(world.a.pk), {}, format="json"), 405)
    assert_error(client.get(detail(10**6)), 404, code="not_found")
