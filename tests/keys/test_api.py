"""/api/v1/keys/: roles and scopes, the secret shown once, validation, tenant isolation."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from apps.keys.models import ApiKey
from apps.tenants.models import Role
from tests.api_clients import assert_error, ids, key_client, session_client
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/keys/"

READERS = ["owner", "admin", "member", "viewer", "key-read", "key-write", "superuser"]
WRITERS = ["owner", "admin", "key-write", "superuser"]
READ_ONLY = ["member", "viewer", "key-read"]
KEY_SCOPES = {
    "key-read": ["management:read"],
    "key-write": ["management:write"],
    "key-inference": ["inference"],
}


def detail(pk: int) -> str:
    return f"{LIST}{pk}/"


def snapshot(tenant) -> list[dict]:
    return list(ApiKey.objects.filter(tenant=tenant).order_by("pk").values())


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
    for label, scopes in KEY_SCOPES.items():
        clients[label] = key_client(make_key(a, name=label, scopes=scopes).secret)
    return SimpleNamespace(
        a=a,
        b=b,
        clients=clients,
        a_key=make_key(a, name="alpha-app").key,
        b_key=make_key(b, name="bravo-app").key,
    )


# --- who may do what ---------------------------------------------------------------


@pytest.mark.parametrize("caller", READERS)
def test_readers_list_their_tenants_keys(world, caller):
    seen = ids(world.clients[caller].get(LIST))
    assert world.a_key.pk in seen
    assert (world.b_key.pk in seen) is (caller == "superuser")


@pytest.mark.parametrize("caller", READERS)
def test_readers_retrieve(world, caller):
    response = world.clients[caller].get(detail(world.a_key.pk))
    assert response.status_code == 200
    assert response.json()["name"] == "alpha-app"
    assert response.json()["prefix"] == world.a_key.prefix


def test_inference_only_key_is_forbidden(world):
    client = world.clients["key-inference"]
    assert_error(client.get(LIST), 403, type="permission_error")
    assert_error(client.get(detail(world.a_key.pk)), 403)
    assert_error(client.post(LIST, {"name": "x"}, format="json"), 403)
    assert not ApiKey.objects.filter(name="x").exists()


def test_anonymous_is_unauthenticated(world):
    client = world.clients["anonymous"]
    response = client.get(LIST)
    assert_error(response, 401, type="authentication_error")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_error(client.post(LIST, {"name": "x"}, format="json"), 401)
    assert_error(client.delete(detail(world.a_key.pk)), 401)
    assert ApiKey.objects.filter(pk=world.a_key.pk).exists()


def test_unknown_key_is_unauthenticated(world):
    assert_error(key_client("gw-not-a-real-key-at-all").get(LIST), 401, code="invalid_api_key")


@pytest.mark.parametrize("caller", WRITERS)
def test_writers_create_update_revoke_delete(world, caller):
    client = world.clients[caller]
    body = {"name": "ci", "scopes": ["inference", "management:read"], "rpm": 60}
    if caller == "superuser":
        body["tenant"] = world.a.pk  # a platform admin has no default tenant
    created = client.post(LIST, body, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["tenant"] == world.a.pk
    assert data["scopes"] == ["inference", "management:read"]
    assert data["rpm"] == 60 and data["is_active"] is True
    key = ApiKey.objects.get(pk=data["id"])

    changed = client.patch(
        detail(key.pk), {"name": "ci-2", "tpm": 1000, "allowed_models": ["m1"]}, format="json"
    )
    assert changed.status_code == 200, changed.content
    key.refresh_from_db()
    assert (key.name, key.tpm, key.allowed_models, key.rpm) == ("ci-2", 1000, ["m1"], 60)

    replaced = client.put(detail(key.pk), {"name": "ci-3", "rpm": None}, format="json")
    assert replaced.status_code == 200, replaced.content
    key.refresh_from_db()
    assert (key.name, key.rpm) == ("ci-3", None)

    revoked = client.post(f"{detail(key.pk)}revoke/")
    assert revoked.status_code == 200, revoked.content
    assert revoked.json()["is_active"] is False and revoked.json()["revoked_at"]
    key.refresh_from_db()
    assert key.revoked_at is not None

    assert client.delete(detail(key.pk)).status_code == 204
    assert not ApiKey.objects.filter(pk=key.pk).exists()


@pytest.mark.parametrize("caller", READ_ONLY)
def test_read_only_callers_cannot_write(world, caller):
    client = world.clients[caller]
    before = snapshot(world.a)
    assert_error(client.post(LIST, {"name": "nope"}, format="json"), 403, type="permission_error")
    assert_error(client.patch(detail(world.a_key.pk), {"name": "x"}, format="json"), 403)
    assert_error(client.put(detail(world.a_key.pk), {"name": "x"}, format="json"), 403)
    assert_error(client.post(f"{detail(world.a_key.pk)}revoke/"), 403)
    assert_error(client.delete(detail(world.a_key.pk)), 403)
    assert snapshot(world.a) == before


def test_key_created_by_key_records_no_user_and_session_records_user(world):
    by_key = world.clients["key-write"].post(LIST, {"name": "k1"}, format="json")
    by_user = world.clients["admin"].post(LIST, {"name": "k2"}, format="json")
    assert ApiKey.objects.get(pk=by_key.json()["id"]).created_by is None
    assert ApiKey.objects.get(pk=by_user.json()["id"]).created_by.username == "alpha-admin"


# --- the secret, once ------------------------------------------------------------------


def test_secret_is_shown_once_and_only_its_hash_is_stored(world):
    client = world.clients["admin"]
    created = client.post(LIST, {"name": "once", "scopes": ["management:read"]}, format="json")
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("gw-") and len(secret) > 30
    key_id = created.json()["id"]
    assert created.json()["prefix"] == secret[: len(created.json()["prefix"])]

    later = [
        client.get(LIST),
        client.get(detail(key_id)),
        client.get(f"{LIST}?search=once"),
        client.patch(detail(key_id), {"rpm": 5}, format="json"),
    ]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    for response in [created, *later]:
        assert digest.encode() not in response.content
    for response in later:
        assert response.status_code == 200
        assert secret.encode() not in response.content
        assert b'"secret"' not in response.content

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM keys_apikey WHERE id = %s", [key_id])
        columns = [col[0] for col in cursor.description]
        row = dict(zip(columns, cursor.fetchone(), strict=True))
    assert row["secret_hash"] == digest
    assert not any(secret in str(value) for value in row.values())

    # The secret works, with exactly the scopes it was given.
    assert key_client(secret).get(LIST).status_code == 200
    assert_error(key_client(secret).post(LIST, {"name": "x"}, format="json"), 403)

    revoke = client.post(f"{detail(key_id)}revoke/")
    assert secret.encode() not in revoke.content
    assert_error(key_client(secret).get(LIST), 401, code="key_revoked")


# --- validation and other errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "tpm": "many"}, "tpm"),
        ({"name": "x", "allowed_models": "gpt-4o"}, "allowed_models"),
        ({"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x" * 101}, "name"),
    ],
)
def test_validation_errors_use_the_error_shape(world, body, param):
    before = snapshot(world.a)
    response = world.clients["admin"].post(LIST, body, format="json")
    error = assert_error(response, 400, type="invalid_request_error", param=param)
    assert error["code"] == "invalid_value"
    assert param in error["details"]
    assert snapshot(world.a) == before


def test_duplicate_name_is_a_400(world):
    response = world.clients["admin"].post(LIST, {"name": "alpha-app"}, format="json")
    assert_error(response, 400, type="invalid_request_error")
    assert ApiKey.objects.filter(tenant=world.a, name="alpha-app").count() == 1


def test_malformed_and_non_json_bodies(world):
    client = world.clients["admin"]
    response = client.generic("POST", LIST, "{not json", content_type="application/json")
    assert_error(response, 400, type="invalid_request_error")
    response = client.post(LIST, {"name": "form"})  # multipart: the API speaks JSON only
    assert_error(response, 415)
    assert not ApiKey.objects.filter(name="form").exists()


def test_expiry_in_the_future_is_accepted(world):
    expires = (timezone.now() + timedelta(days=30)).isoformat()
    response = world.clients["admin"].post(
        LIST, {"name": "temp", "expires_at": expires}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["expires_at"] is not None


def test_method_not_allowed(world):
    client = world.clients["admin"]
    assert_error(client.get(f"{detail(world.a_key.pk)}revoke/"), 405, type="invalid_request_error")
    assert_error(client.put(LIST, {"name": "x"}, format="json"), 405)
    assert_error(client.delete(LIST), 405)


def test_not_found(world):
    client = world.clients["admin"]
    assert_error(client.get(detail(999999)), 404, type="not_found_error")
    assert_error(client.post(f"{detail(999999)}revoke/"), 404)
    assert_error(client.get(f"{LIST}abc/"), 404, type="not_found_error")
    assert_error(client.get("/api/v1/no-such-thing/"), 404, code="not_found")


def test_missing_trailing_slash_redirects_keeping_the_method(world):
    response = world.clients["admin"].post("/api/v1/keys?x=1", {"name": "y"}, format="json")
    assert response.status_code == 308
    assert response["Location"] == "/api/v1/keys/?x=1"


# --- which tenant a new key belongs to ------------------------------------------------------


def test_superuser_must_name_the_tenant(world):
    client = world.clients["superuser"]
    assert_error(client.post(LIST, {"name": "x"}, format="json"), 400, param="tenant")
    response = client.post(LIST, {"name": "x", "tenant": world.b.pk}, format="json")
    assert response.status_code == 201 and response.json()["tenant"] == world.b.pk


def test_user_of_several_tenants_must_choose_a_writable_one(world):
    user = UserFactory(username="multi")
    MembershipFactory(user=user, tenant=world.a, role=Role.ADMIN)
    MembershipFactory(user=user, tenant=world.b, role=Role.VIEWER)
    client = session_client(user)
    # Only one writable tenant: it is the default.
    assert client.post(LIST, {"name": "d"}, format="json").json()["tenant"] == world.a.pk
    # Reading b is not writing b.
    before = snapshot(world.b)
    response = client.post(LIST, {"name": "e", "tenant": world.b.pk}, format="json")
    assert_error(response, 400, param="tenant")
    assert snapshot(world.b) == before

    MembershipFactory(user=user, tenant=TenantFactory(name="charlie"), role=Role.OWNER)
    assert_error(client.post(LIST, {"name": "f"}, format="json"), 400, param="tenant")
    response = client.post(LIST, {"name": "f", "tenant": world.a.pk}, format="json")
    assert response.status_code == 201


def test_key_cannot_create_keys_for_another_tenant(world):
    before = snapshot(world.b)
    response = world.clients["key-write"].post(
        LIST, {"name": "evil", "tenant": world.b.pk}, format="json"
    )
    assert_error(response, 400, param="tenant")
    assert snapshot(world.b) == before


# --- isolation ----------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["key-write", "admin", "owner", "viewer", "key-read"])
def test_other_tenants_keys_are_invisible_and_untouchable(world, caller):
    client = world.clients[caller]
    target = world.b_key.pk
    before = snapshot(world.b)

    assert target not in ids(client.get(LIST))
    assert target not in ids(client.get(f"{LIST}?tenant={world.b.pk}"))
    assert target not in ids(client.get(f"{LIST}?search=bravo"))
    assert_error(client.get(detail(target)), 404)
    # Writers get 404; read-only callers are refused any write before a lookup (403).
    # Either way the answer is the one a nonexistent id gets: no existence oracle.
    status = 404 if caller in WRITERS else 403
    for pk in (target, 10**6):
        assert_error(client.patch(detail(pk), {"name": "pwned"}, format="json"), status)
        assert_error(client.put(detail(pk), {"name": "pwned"}, format="json"), status)
        assert_error(client.post(f"{detail(pk)}revoke/"), status)
        assert_error(client.delete(detail(pk)), status)

    assert snapshot(world.b) == before


def test_filters(world):
    client = world.clients["superuser"]
    assert ids(client.get(f"{LIST}?tenant={world.b.pk}")) == {world.b_key.pk}
    assert ids(client.get(f"{LIST}?search=bravo-")) == {world.b_key.pk}
    for bad in ("abc", "-1", "1.5", str(2**64)):
        assert_error(client.get(f"{LIST}?tenant={bad}"), 400, param="tenant")
    assert ids(client.get(f"{LIST}?tenant=null")) == set()  # keys always have a tenant


def test_pagination(world):
    client = world.clients["superuser"]
    page = client.get(f"{LIST}?limit=2&offset=1").json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"] and page["previous"]
    assert len(client.get(f"{LIST}?limit={2**70}").json()["results"]) == 5


@pytest.mark.django_db
def test_rotate_returns_the_new_secret_once_and_keeps_the_old_one_for_the_grace(admin_client):
    from apps.keys.selectors import key_get_by_secret
    from apps.keys.services import key_create
    from tests.tenants.factories import TenantFactory

    created = key_create(tenant=TenantFactory(), name="rotating")
    response = admin_client.post(
        f"/api/v1/keys/{created.key.pk}/rotate/",
        {"grace_seconds": 3600},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    new_secret = response.json()["secret"]
    assert new_secret != created.secret and response.json()["previous_secret_expires_at"]
    assert key_get_by_secret(secret=new_secret).pk == created.key.pk
    assert key_get_by_secret(secret=created.secret).pk == created.key.pk  # grace period
    detail = admin_client.get(f"/api/v1/keys/{created.key.pk}/").json()
    assert "secret" not in detail and new_secret not in str(detail)
    immediate = admin_client.post(
        f"/api/v1/keys/{created.key.pk}/rotate/",
        {"grace_seconds": 0},
        content_type="application/json",
    )
    assert key_get_by_secret(secret=new_secret) is None
    assert key_get_by_secret(secret=immediate.json()["secret"]).pk == created.key.pk
    bad = admin_client.post(
        f"/api/v1/keys/{created.key.pk}/rotate/",
        {"grace_seconds": -1},
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grace_seconds"


@pytest.mark.django_db
def test_ip_allowlist_is_validated(admin_client):
    from apps.keys.services import key_create
    from tests.tenants.factories import TenantFactory

    created = key_create(tenant=TenantFactory(), name="net")
    ok = admin_client.patch(
        f"/api/v1/keys/{created.key.pk}/",
        {"ip_allowlist": ["10.0.0.0/8"]},
        content_type="application/json",
    )
    assert ok.status_code == 200 and ok.json()["ip_allowlist"] == ["10.0.0.0/8"]
    bad = admin_client.patch(
        f"/api/v1/keys/{created.key.pk}/",
        {"ip_allowlist": ["not-an-ip"]},
        content_type="application/json",
    )
    assert bad.status_code == 400
