"""/api/v1/budgets/: CRUD through budget_set/budget_delete, write-only webhook secret,
tenant isolation."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.billing.models import Budget
from apps.billing.services import budget_set, rollup_update
from apps.core import crypto
from tests.api_clients import key_client
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/budgets/"


def detail(pk: int) -> str:
    return f"{LIST}{pk}/"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world():
    a, b = TenantFactory(name="alpha"), TenantFactory(name="bravo")
    writer = make_key(a, name="writer", scopes=["management:write"])
    reader = make_key(a, name="reader", scopes=["management:read"])
    b_writer = make_key(b, name="b-writer", scopes=["management:write"])
    b_budget = budget_set(tenant=b, period="monthly", limit_usd="50", webhook_secret="b-secret")
    return {
        "a": a,
        "b": b,
        "writer": writer,
        "reader": reader,
        "b_writer": b_writer,
        "b_budget": b_budget,
    }


def test_create_tenant_budget_with_a_write_only_secret(world):
    client = key_client(world["writer"].secret)
    response = client.post(
        LIST,
        {
            "limit_usd": "100.5",
            "period": "monthly",
            "soft_limit_pct": 75,
            "webhook_url": "https://hooks.example.test/budget",
            "webhook_secret": "s3cret",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["tenant"] == world["a"].pk and body["key"] is None
    assert body["limit_usd"] == "100.5000" and body["soft_limit_pct"] == 75
    assert body["has_webhook_secret"] is True
    assert "webhook_secret" not in body and "s3cret" not in response.content.decode()
    assert body["spent_usd"] == "0.0000000000"
    budget = Budget.objects.get(pk=body["id"])
    assert crypto.decrypt(budget.webhook_secret_encrypted) == "s3cret"
    assert "s3cret" not in budget.webhook_secret_encrypted


def test_key_budget_and_its_checks(world):
    client = key_client(world["writer"].secret)
    own_key = world["reader"].key
    response = client.post(
        LIST, {"limit_usd": "5", "key": own_key.pk, "period": "daily"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["key"] == own_key.pk
    # Another tenant's key reads as nonexistent.
    response = client.post(LIST, {"limit_usd": "5", "key": world["b_writer"].key.pk}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "key"
    # One budget per owner and period.
    response = client.post(
        LIST, {"limit_usd": "7", "key": own_key.pk, "period": "daily"}, format="json"
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "period"
    response = client.post(LIST, {"limit_usd": "-1"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "limit_usd"


def test_update_keeps_the_secret_unless_told(world):
    client = key_client(world["writer"].secret)
    budget = budget_set(tenant=world["a"], period="weekly", limit_usd="10", webhook_secret="keep")
    response = client.patch(detail(budget.pk), {"limit_usd": "20"}, format="json")
    assert response.status_code == 200, response.content
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("20") and budget.period == "weekly"
    assert crypto.decrypt(budget.webhook_secret_encrypted) == "keep"
    response = client.patch(detail(budget.pk), {"webhook_secret": ""}, format="json")
    assert response.json()["has_webhook_secret"] is False
    # The period and owner are fixed: a PUT cannot move the budget.
    response = client.put(
        detail(budget.pk), {"limit_usd": "30", "period": "daily", "enabled": False}, format="json"
    )
    assert response.status_code == 200
    budget.refresh_from_db()
    assert (budget.period, budget.limit_usd, budget.enabled) == ("weekly", Decimal(30), False)


def test_delete(world):
    client = key_client(world["writer"].secret)
    budget = budget_set(tenant=world["a"], period="daily", limit_usd="1")
    assert client.delete(detail(budget.pk)).status_code == 204
    assert not Budget.objects.filter(pk=budget.pk).exists()


def test_tenants_never_see_or_touch_each_others_budgets(world):
    theirs = world["b_budget"]
    for client in (key_client(world["writer"].secret), key_client(world["reader"].secret)):
        listed = client.get(LIST).json()["results"]
        assert theirs.pk not in {b["id"] for b in listed}
        assert client.get(detail(theirs.pk)).status_code == 404
        assert client.delete(detail(theirs.pk)).status_code in (403, 404)
        assert client.patch(detail(theirs.pk), {"limit_usd": "1"}, format="json").status_code in (
            403,
            404,
        )
    theirs.refresh_from_db()
    assert theirs.limit_usd == Decimal(50)
    # Naming the other tenant on create is refused too.
    response = key_client(world["writer"].secret).post(
        LIST, {"limit_usd": "1", "tenant": world["b"].pk}, format="json"
    )
    assert response.status_code == 400
    assert Budget.objects.filter(tenant=world["b"]).count() == 1


def test_readers_cannot_write(world):
    client = key_client(world["reader"].secret)
    assert client.post(LIST, {"limit_usd": "1"}, format="json").status_code == 403
    viewer = UserFactory(username="alpha-viewer")
    MembershipFactory(user=viewer, tenant=world["a"], role="viewer")
    session = APIClient()
    session.force_login(viewer)
    assert session.get(LIST).status_code == 200
    assert session.post(LIST, {"limit_usd": "1"}, format="json").status_code == 403


def test_spent_comes_from_the_rollups_of_the_current_period(world):
    a = world["a"]
    budget = budget_set(tenant=a, period="monthly", limit_usd="10")
    key_budget = budget_set(tenant=a, key=world["reader"].key, period="total", limit_usd="10")
    now = timezone.now()
    records(
        record(a, key=world["reader"].key, created_at=now - timedelta(minutes=1), cost_usd="1.25"),
        record(a, key=world["writer"].key, created_at=now - timedelta(minutes=1), cost_usd="2"),
        record(a, key=world["reader"].key, created_at=now - timedelta(days=40), cost_usd="4"),
    )
    rollup_update()
    body = {b["id"]: b for b in key_client(world["reader"].secret).get(LIST).json()["results"]}
    assert Decimal(body[budget.pk]["spent_usd"]) == Decimal("3.25")
    assert Decimal(body[key_budget.pk]["spent_usd"]) == Decimal("5.25")
