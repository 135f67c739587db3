"""/api/v1/providers/ and /api/v1/models/: roles, write-only credentials, deployments,
platform objects, validation and tenant isolation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection
from rest_framework.test import APIClient

from apps.core import crypto
from apps.providers.models import Deployment, Model, Provider
from apps.tenants.models import Role
from tests.api_clients import assert_error, ids, key_client, session_client
from tests.keys.factories import make_key
from tests.providers.factories import DeploymentFactory, ModelFactory, ProviderFactory
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"
MODELS = "/api/v1/models/"
READERS = ["owner", "admin", "member", "viewer", "key-read", "key-write"]
WRITERS = ["owner", "admin", "key-write"]
READ_ONLY = ["member", "viewer", "key-read"]
LITERAL = "sk-live-0123456789abcdefSECRET"


def snapshot() -> dict[str, list[dict]]:
    return {
        "providers": list(Provider.objects.order_by("pk").values()),
        "models": list(Model.objects.order_by("pk").values()),
        "deployments": list(Deployment.objects.order_by("pk").values()),
    }


def raw_provider_row(pk: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_provider WHERE id = %s", [pk])
        columns = [col[0] for col in cursor.description]
        return dict(zip(columns, cursor.fetchone(), strict=True))


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

    platform = ProviderFactory(name="platform-openai", kind="openai", tenant=None)
    a_provider = ProviderFactory(name="alpha-mock", tenant=a)
    b_provider = ProviderFactory(name="bravo-mock", tenant=b)
    platform_model = ModelFactory(name="gpt-4o-mini", tenant=None)
    DeploymentFactory(model=platform_model, provider=platform, upstream_model="gpt-4o-mini")
    a_model = ModelFactory(name="alpha-model", tenant=a)
    DeploymentFactory(model=a_model, provider=a_provider, upstream_model="echo")
    b_model = ModelFactory(name="bravo-model", tenant=b)
    DeploymentFactory(model=b_model, provider=b_provider, upstream_model="echo")
    return SimpleNamespace(
        a=a,
        b=b,
        clients=clients,
        platform=platform,
        a_provider=a_provider,
        b_provider=b_provider,
        platform_model=platform_model,
        a_model=a_model,
        b_model=b_model,
    )


# --- providers: roles -------------------------------------------------------------------


@pytest.mark.parametrize("caller", READERS)
def test_tenants_see_their_own_providers_only(world, caller):
    client = world.clients[caller]
    assert ids(client.get(PROVIDERS)) == {world.a_provider.pk}
    # Platform providers are platform infrastructure.
    assert_error(client.get(f"{PROVIDERS}{world.platform.pk}/"), 404)
    assert client.get(f"{PROVIDERS}{world.a_provider.pk}/").json()["name"] == "alpha-mock"


def test_superuser_sees_every_provider(world):
    seen = ids(world.clients["superuser"].get(PROVIDERS))
    assert seen == {world.platform.pk, world.a_provider.pk, world.b_provider.pk}


def test_no_management_access(world):
    assert_error(world.clients["anonymous"].get(PROVIDERS), 401)
    assert_error(world.clients["anonymous"].get(MODELS), 401)
    assert_error(world.clients["key-inference"].get(PROVIDERS), 403)
    assert_error(world.clients["key-inference"].get(MODELS), 403)


@pytest.mark.parametrize("caller", WRITERS)
def test_writers_manage_their_providers(world, caller):
    client = world.clients[caller]
    created = client.post(
        PROVIDERS,
        {"name": "own-openai", "kind": "openai", "base_url": "https://llm.example/v1"},
        format="json",
    )
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["tenant"] == world.a.pk
    assert data["has_credential"] is False and data["credential_source"] is None
    pk = data["id"]

    changed = client.patch(f"{PROVIDERS}{pk}/", {"enabled": False}, format="json")
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    assert Provider.objects.get(pk=pk).enabled is False

    assert client.delete(f"{PROVIDERS}{pk}/").status_code == 204
    assert not Provider.objects.filter(pk=pk).exists()


@pytest.mark.parametrize("caller", READ_ONLY)
def test_read_only_callers_cannot_change_providers(world, caller):
    client = world.clients[caller]
    before = snapshot()
    url = f"{PROVIDERS}{world.a_provider.pk}/"
    assert_error(client.post(PROVIDERS, {"name": "x", "kind": "mock"}, format="json"), 403)
    assert_error(client.patch(url, {"enabled": False}, format="json"), 403)
    assert_error(client.put(url, {"name": "x", "kind": "mock"}, format="json"), 403)
    assert_error(client.delete(url), 403)
    assert_error(client.post(f"{url}test/"), 403)
    assert snapshot() == before


def test_superuser_creates_platform_provider(world):
    response = world.clients["superuser"].post(
        PROVIDERS, {"name": "platform-mock", "kind": "mock"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["tenant"] is None
    assert Provider.objects.get(name="platform-mock").tenant_id is None


def test_provider_in_use_cannot_be_deleted(world):
    response = world.clients["admin"].delete(f"{PROVIDERS}{world.a_provider.pk}/")
    assert_error(response, 400, code="provider_in_use")
    assert Provider.objects.filter(pk=world.a_provider.pk).exists()


def test_test_connection(world):
    response = world.clients["admin"].post(f"{PROVIDERS}{world.a_provider.pk}/test/")
    assert response.status_code == 200, response.content
    assert response.json()["ok"] is True and response.json()["message"]
    world.a_provider.refresh_from_db()
    assert world.a_provider.last_check_ok is True
    shown = world.clients["admin"].get(f"{PROVIDERS}{world.a_provider.pk}/").json()
    assert shown["last_check_ok"] is True and shown["last_check_at"]


def test_provider_filters(world):
    client = world.clients["superuser"]
    assert ids(client.get(f"{PROVIDERS}?kind=openai")) == {world.platform.pk}
    assert ids(client.get(f"{PROVIDERS}?tenant=null")) == {world.platform.pk}
    assert ids(client.get(f"{PROVIDERS}?tenant={world.b.pk}")) == {world.b_provider.pk}
    assert ids(client.get(f"{PROVIDERS}?search=alpha")) == {world.a_provider.pk}
    Provider.objects.filter(pk=world.b_provider.pk).update(enabled=False)
    assert ids(client.get(f"{PROVIDERS}?enabled=false")) == {world.b_provider.pk}
    assert_error(client.get(f"{PROVIDERS}?enabled=maybe"), 400, param="enabled")


# --- providers: the credential is write-only ------------------------------------------------


def test_credential_is_never_returned_and_stored_encrypted(world):
    client = world.clients["admin"]
    created = client.post(
        PROVIDERS, {"name": "byok", "kind": "openai", "credential": LITERAL}, format="json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["has_credential"] is True
    assert created.json()["credential_source"] == "encrypted"
    assert "credential" not in created.json()
    pk = created.json()["id"]

    for response in (
        created,
        client.get(PROVIDERS),
        client.get(f"{PROVIDERS}{pk}/"),
        client.patch(f"{PROVIDERS}{pk}/", {"enabled": True}, format="json"),
        world.clients["superuser"].get(PROVIDERS),
    ):
        assert LITERAL.encode() not in response.content

    row = raw_provider_row(pk)
    assert row["credential_encrypted"] and row["credential_ref"] == ""
    assert not any(LITERAL in str(value) for value in row.values())
    assert crypto.decrypt(row["credential_encrypted"]) == LITERAL

    # Omitted: kept. Empty: cleared.
    client.patch(f"{PROVIDERS}{pk}/", {"base_url": "https://x.example/v1"}, format="json")
    assert crypto.decrypt(raw_provider_row(pk)["credential_encrypted"]) == LITERAL
    cleared = client.patch(f"{PROVIDERS}{pk}/", {"credential": ""}, format="json")
    assert cleared.json()["has_credential"] is False
    assert raw_provider_row(pk)["credential_encrypted"] == ""


@pytest.mark.parametrize("reference", ["env:SECRET_KEY", "file:/etc/passwd"])
def test_tenants_cannot_point_credentials_at_server_secrets(world, reference):
    client = world.clients["admin"]
    before = snapshot()
    response = client.post(
        PROVIDERS, {"name": "sneaky", "kind": "openai", "credential": reference}, format="json"
    )
    assert_error(response, 400, param="credential")
    response = client.patch(
        f"{PROVIDERS}{world.a_provider.pk}/", {"credential": reference}, format="json"
    )
    assert_error(response, 400, param="credential")
    assert snapshot() == before


def test_platform_admin_may_use_references(world):
    response = world.clients["superuser"].post(
        PROVIDERS,
        {"name": "from-env", "kind": "openai", "credential": "env:OPENAI_KEY"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["credential_source"] == "env"
    assert "OPENAI_KEY" not in response.content.decode()
    assert raw_provider_row(response.json()["id"])["credential_ref"] == "env:OPENAI_KEY"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"kind": "mock"}, "name"),
        ({"name": "x"}, "kind"),
        ({"name": "x", "kind": "telepathy"}, "kind"),
        ({"name": "not a slug", "kind": "mock"}, "name"),
        ({"name": "x", "kind": "mock", "base_url": "not a url"}, "base_url"),
        ({"name": "x", "kind": "mock", "options": "fast"}, "options"),
        ({"name": "alpha-mock", "kind": "mock"}, None),  # taken in this tenant
    ],
)
def test_provider_validation_errors(world, body, param):
    before = snapshot()
    error = assert_error(
        world.clients["admin"].post(PROVIDERS, body, format="json"),
        400,
        type="invalid_request_error",
    )
    if param:
        assert error["param"] == param
    assert snapshot() == before


# --- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", READERS)
def test_tenants_read_own_and_platform_models(world, caller):
    client = world.clients[caller]
    assert ids(client.get(MODELS)) == {world.a_model.pk, world.platform_model.pk}
    own = client.get(f"{MODELS}{world.a_model.pk}/").json()
    assert own["input_price_per_million"] == "1.000000"
    assert [d["provider_name"] for d in own["deployments"]] == ["alpha-mock"]
    # How the platform serves its models is not the tenants' business.
    platform = client.get(f"{MODELS}{world.platform_model.pk}/").json()
    assert platform["tenant"] is None and platform["deployments"] == []


def test_superuser_sees_platform_deployments(world):
    data = world.clients["superuser"].get(f"{MODELS}{world.platform_model.pk}/").json()
    assert [d["provider_name"] for d in data["deployments"]] == ["platform-openai"]


@pytest.mark.parametrize("caller", WRITERS)
def test_writers_create_models_with_deployments(world, caller):
    client = world.clients[caller]
    body = {
        "name": "my-chat",
        "description": "house model",
        "context_window": 128000,
        "input_price_per_million": "0.15",
        "output_price_per_million": 0.6,
        "fallbacks": ["gpt-4o-mini"],
        "timeout_s": 30,
        "retries": 2,
        "deployments": [
            {"provider": world.a_provider.pk, "upstream_model": "m-1", "weight": 3},
            {"provider": world.a_provider.pk, "upstream_model": "m-2", "priority": 1},
        ],
    }
    response = client.post(MODELS, body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["tenant"] == world.a.pk
    assert data["input_price_per_million"] == "0.150000"
    assert data["output_price_per_million"] == "0.600000"
    assert data["fallbacks"] == ["gpt-4o-mini"] and data["retries"] == 2
    assert {(d["upstream_model"], d["weight"], d["priority"]) for d in data["deployments"]} == {
        ("m-1", 3, 0),
        ("m-2", 1, 1),
    }
    model = Model.objects.get(pk=data["id"])
    assert model.deployments.count() == 2

    patched = client.patch(f"{MODELS}{model.pk}/", {"enabled": False}, format="json")
    assert patched.status_code == 200 and model.deployments.count() == 2
    assert client.delete(f"{MODELS}{model.pk}/").status_code == 204
    assert not Model.objects.filter(pk=model.pk).exists()


def test_deployments_are_replaced_keeping_unchanged_ones(world):
    client = world.clients["admin"]
    url = f"{MODELS}{world.a_model.pk}/"
    kept = world.a_model.deployments.get()
    response = client.patch(
        url,
        {
            "deployments": [
                {"provider": world.a_provider.pk, "upstream_model": "echo", "weight": 5},
                {"provider": world.a_provider.pk, "upstream_model": "new"},
            ]
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    rows = {d["upstream_model"]: d for d in response.json()["deployments"]}
    assert rows["echo"]["id"] == kept.pk and rows["echo"]["weight"] == 5
    response = client.patch(
        url,
        {"deployments": [{"provider": world.a_provider.pk, "upstream_model": "new"}]},
        format="json",
    )
    assert [d["upstream_model"] for d in response.json()["deployments"]] == ["new"]
    assert not Deployment.objects.filter(pk=kept.pk).exists()


def test_tenant_edit_leaves_platform_deployments_of_its_model_alone(world):
    # A platform admin may serve a tenant's model from a platform provider (via the admin).
    hidden = DeploymentFactory(model=world.a_model, provider=world.platform, upstream_model="x")
    response = world.clients["admin"].patch(
        f"{MODELS}{world.a_model.pk}/",
        {"deployments": [{"provider": world.a_provider.pk, "upstream_model": "y"}]},
        format="json",
    )
    assert response.status_code == 200
    assert [d["upstream_model"] for d in response.json()["deployments"]] == ["y"]
    assert Deployment.objects.filter(pk=hidden.pk).exists()


@pytest.mark.parametrize("caller", [*WRITERS, *READ_ONLY])
def test_tenants_cannot_change_platform_models(world, caller):
    client = world.clients[caller]
    before = snapshot()
    url = f"{MODELS}{world.platform_model.pk}/"
    assert_error(client.patch(url, {"enabled": False}, format="json"), 403)
    assert_error(client.put(url, {"name": "hijack"}, format="json"), 403)
    assert_error(client.delete(url), 403)
    assert snapshot() == before


def test_tenants_cannot_create_platform_models(world):
    response = world.clients["admin"].post(MODELS, {"name": "p", "tenant": None}, format="json")
    assert_error(response, 400, param="tenant")
    assert not Model.objects.filter(name="p").exists()


@pytest.mark.parametrize("caller", READ_ONLY)
def test_read_only_callers_cannot_change_models(world, caller):
    client = world.clients[caller]
    before = snapshot()
    assert_error(client.post(MODELS, {"name": "x"}, format="json"), 403)
    assert_error(client.patch(f"{MODELS}{world.a_model.pk}/", {"retries": 1}, format="json"), 403)
    assert_error(client.delete(f"{MODELS}{world.a_model.pk}/"), 403)
    assert snapshot() == before


def test_deployment_providers_must_be_visible_and_of_the_same_tenant(world):
    client = world.clients["admin"]
    before = snapshot()
    for provider in (world.b_provider, world.platform):
        response = client.post(
            MODELS,
            {"name": "stolen", "deployments": [{"provider": provider.pk, "upstream_model": "m"}]},
            format="json",
        )
        error = assert_error(response, 400, type="invalid_request_error")
        assert error["param"].startswith("deployments")
        # The same answer as for a provider that does not exist at all.
        assert "does not exist" in error["message"]
    assert snapshot() == before


def test_platform_models_use_platform_providers(world):
    client = world.clients["superuser"]
    before = snapshot()
    response = client.post(
        MODELS,
        {"name": "p2", "deployments": [{"provider": world.a_provider.pk, "upstream_model": "m"}]},
        format="json",
    )
    assert_error(response, 400, param="deployments")
    assert snapshot() == before
    response = client.post(
        MODELS,
        {"name": "p2", "deployments": [{"provider": world.platform.pk, "upstream_model": "m"}]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["tenant"] is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input_price_per_million": "-1"}, "input_price_per_million"),
        ({"output_price_per_million": "cheap"}, "output_price_per_million"),
        ({"mode": "vision"}, "mode"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"fallbacks": "gpt-4o"}, "fallbacks"),
        ({"deployments": [{"upstream_model": "m"}]}, "deployments"),
        ({"name": "alpha-model"}, None),  # taken in this tenant
    ],
)
def test_model_validation_errors(world, body, param):
    before = snapshot()
    response = world.clients["admin"].post(MODELS, {"name": "new", **body}, format="json")
    error = assert_error(response, 400, type="invalid_request_error")
    if param:
        assert error["param"].split(".")[0] == param
    assert snapshot() == before


def test_model_filters(world):
    client = world.clients["superuser"]
    assert ids(client.get(f"{MODELS}?tenant=null")) == {world.platform_model.pk}
    assert ids(client.get(f"{MODELS}?tenant={world.a.pk}")) == {world.a_model.pk}
    assert ids(client.get(f"{MODELS}?search=bravo")) == {world.b_model.pk}
    assert ids(world.clients["admin"].get(f"{MODELS}?search=bravo")) == set()


# --- isolation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["key-write", "admin", "viewer", "key-read"])
def test_other_tenants_providers_and_models_are_invisible_and_untouchable(world, caller):
    client = world.clients[caller]
    before = snapshot()

    assert world.b_provider.pk not in ids(client.get(PROVIDERS))
    assert world.b_provider.pk not in ids(client.get(f"{PROVIDERS}?tenant={world.b.pk}"))
    assert world.b_model.pk not in ids(client.get(MODELS))
    assert world.b_model.pk not in ids(client.get(f"{MODELS}?tenant={world.b.pk}"))
    assert_error(client.get(f"{PROVIDERS}{world.b_provider.pk}/"), 404)
    assert_error(client.get(f"{MODELS}{world.b_model.pk}/"), 404)

    # Writers get 404; read-only callers are refused any write before a lookup (403).
    # Either way the answer is the one a nonexistent id gets: no existence oracle.
    status = 404 if caller in WRITERS else 403
    for url in (
        f"{PROVIDERS}{world.b_provider.pk}/",
        f"{MODELS}{world.b_model.pk}/",
        f"{PROVIDERS}{10**6}/",
        f"{MODELS}{10**6}/",
    ):
        assert_error(client.patch(url, {"enabled": False}, format="json"), status)
        assert_error(client.put(url, {"name": "pwned", "kind": "mock"}, format="json"), status)
        assert_error(client.delete(url), status)
    assert_error(client.post(f"{PROVIDERS}{world.b_provider.pk}/test/"), status)

    assert snapshot() == before
    assert Provider.objects.get(pk=world.b_provider.pk).last_check_at is None
