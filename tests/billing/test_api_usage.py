"""/api/v1/usage/ and /api/v1/usage/summary/: filters, aggregation, tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.billing.services import rollup_update
from tests.api_clients import key_client
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/usage/"
SUMMARY = "/api/v1/usage/summary/"
D1 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
D2 = D1 + timedelta(days=1)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world():
    a, b = TenantFactory(name="alpha"), TenantFactory(name="bravo")
    a1 = make_key(a, name="a1", scopes=["inference", "management:read"])
    a2 = make_key(a, name="a2")
    b1 = make_key(b, name="b1", scopes=["management:read"])
    rows = [
        record(
            a,
            key=a1.key,
            created_at=D1,
            model="m1",
            cost_usd="0.1000000001",
            prompt_tokens=10,
            completion_tokens=1,
        ),
        record(
            a,
            key=a1.key,
            created_at=D1 + timedelta(minutes=5),
            model="m2",
            cost_usd="0.2",
            prompt_tokens=20,
            completion_tokens=2,
        ),
        record(
            a,
            key=a2.key,
            created_at=D2,
            model="m1",
            cost_usd="0.3",
            prompt_tokens=30,
            completion_tokens=3,
        ),
        record(
            a,
            key=a2.key,
            created_at=D2 + timedelta(hours=1),
            model="m1",
            status=429,
            served_model="",
            cost_usd="0",
            prompt_tokens=0,
            completion_tokens=0,
        ),
        record(
            b,
            key=b1.key,
            created_at=D1,
            model="m1",
            cost_usd="9",
            prompt_tokens=900,
            completion_tokens=90,
        ),
    ]
    records(*rows)
    rollup_update()
    return {"a": a, "b": b, "a1": a1, "a2": a2, "b1": b1}


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_key_sees_its_tenant_only_newest_first(world):
    rows = results(key_client(world["a1"].secret).get(LIST))
    assert len(rows) == 4
    assert {r["tenant"] for r in rows} == {world["a"].pk}
    stamps = [r["created_at"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    first = rows[-1]
    assert first["cost_usd"] == "0.1000000001"  # a string, exact
    assert first["model"] == "m1" and first["total_tokens"] == 11
    assert "attempts" not in first

    rows = results(key_client(world["b1"].secret).get(LIST))
    assert [r["cost_usd"] for r in rows] == ["9.0000000000"]


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({"from": "2025-06-02"}, 2),
        ({"to": "2025-06-01"}, 2),  # a date includes the whole day
        ({"from": "2025-06-01T09:01:00Z", "to": "2025-06-02T09:30:00+00:00"}, 2),
        ({"model": "m1"}, 3),  # served or (when not served) requested
        ({"model": "m2"}, 1),
        ({"status": "429"}, 1),
        ({"status": "error"}, 1),
        ({"status": "success"}, 3),
    ],
)
def test_filters(world, params, count):
    client = key_client(world["a1"].secret)
    assert len(results(client.get(LIST, params))) == count


def test_filter_by_key_and_tenant(world):
    client = key_client(world["a1"].secret)
    assert len(results(client.get(LIST, {"key": world["a2"].key.pk}))) == 2
    assert results(client.get(LIST, {"key": world["b1"].key.pk})) == []
    assert results(client.get(LIST, {"tenant": world["b"].pk})) == []


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"status": "bad"},
        {"key": "x"},
        {"from": "2025-06-02", "to": "2025-06-01T00:00:00Z"},
    ],
)
def test_bad_filters_are_400_in_the_error_shape(world, params):
    response = key_client(world["a1"].secret).get(LIST, params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"]


def test_cursor_pagination_walks_everything_once(world):
    a, a1 = world["a"], world["a1"]
    records(*[record(a, key=a1.key, created_at=D1 + timedelta(seconds=i)) for i in range(7)])
    client = key_client(a1.secret)
    seen, url = [], LIST + "?limit=3"
    while url:
        body = client.get(url).json()
        assert len(body["results"]) <= 3
        seen += [r["id"] for r in body["results"]]
        url = body["next"]
    assert len(seen) == len(set(seen)) == 11


def test_sessions_follow_memberships(world):
    user = UserFactory(username="bravo-viewer")
    MembershipFactory(user=user, tenant=world["b"], role="viewer")
    client = APIClient()
    client.force_login(user)
    assert {r["tenant"] for r in results(client.get(LIST))} == {world["b"].pk}
    admin = UserFactory(username="root", is_superuser=True)
    client.force_login(admin)
    assert len(results(client.get(LIST))) == 5


def test_no_credentials_or_no_management_scope(world):
    assert APIClient().get(LIST).status_code == 401
    inference_only = make_key(world["a"], name="inf")
    assert key_client(inference_only.secret).get(LIST).status_code == 403


def summary(client, **params) -> dict:
    response = client.get(SUMMARY, params)
    assert response.status_code == 200, response.content
    return response.json()


def test_summary_by_day(world):
    body = summary(key_client(world["a1"].secret), group_by="day")
    assert body["group_by"] == "day" and body["from"] is None
    assert [(r["day"], r["requests"], r["errors"]) for r in body["results"]] == [
        ("2025-06-01", 2, 0),
        ("2025-06-02", 2, 1),
    ]
    day1 = body["results"][0]
    assert Decimal(day1["cost_usd"]) == Decimal("0.3000000001")
    assert (day1["prompt_tokens"], day1["completion_tokens"], day1["total_tokens"]) == (30, 3, 33)


def test_summary_by_model_and_key_with_filters(world):
    client = key_client(world["a1"].secret)
    by_model = summary(client, group_by="model")["results"]
    assert [(r["model"], r["requests"]) for r in by_model] == [("m1", 3), ("m2", 1)]
    by_key = summary(client, group_by="key")["results"]
    assert {r["key"]: r["requests"] for r in by_key} == {
        world["a1"].key.pk: 2,
        world["a2"].key.pk: 2,
    }
    assert {r["key_prefix"] for r in by_key} == {world["a1"].key.prefix, world["a2"].key.prefix}
    narrowed = summary(client, group_by="model", **{"from": "2025-06-02"}, model="m1")
    assert narrowed["from"].startswith("2025-06-02T00:00:00")
    assert [(r["model"], r["requests"], r["cost_usd"]) for r in narrowed["results"]] == [
        ("m1", 2, "0.3000000000")
    ]
    key_only = summary(client, group_by="day", key=world["a2"].key.pk)["results"]
    assert [r["day"] for r in key_only] == ["2025-06-02"]


def test_summary_is_tenant_scoped(world):
    body = summary(key_client(world["b1"].secret), group_by="model")
    assert [(r["model"], r["cost_usd"]) for r in body["results"]] == [("m1", "9.0000000000")]
    assert (
        summary(key_client(world["b1"].secret), group_by="day", tenant=world["a"].pk)["results"]
        == []
    )


def test_summary_needs_a_valid_group(world):
    client = key_client(world["a1"].secret)
    for params in ({}, {"group_by": "hour"}):
        response = client.get(SUMMARY, params)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "group_by"
