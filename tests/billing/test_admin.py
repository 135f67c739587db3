"""Billing in the admin: lists render, writes go through services, tenant staff are scoped."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.billing.models import (
    Budget,
    BudgetAlert,
    CostRecomputation,
    Invoice,
    ModelRateLimit,
)
from apps.billing.services import budget_set, cost_recompute, invoice_refresh, rollup_update
from apps.core import crypto
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

JAN = datetime(2025, 1, 1, tzinfo=UTC)


def url(model: str, action: str = "changelist", *args) -> str:
    return reverse(f"admin:billing_{model}_{action}", args=args)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world():
    acme, beta = TenantFactory(name="acme"), TenantFactory(name="beta")
    ka, kb = make_key(acme, name="acme-key").key, make_key(beta, name="beta-key").key
    records(
        *[
            record(
                acme,
                key=ka,
                created_at=JAN + timedelta(days=i, hours=3),
                model="acme-model",
                cost_usd="0.5",
                status=200 if i % 3 else 502,
                streamed=bool(i % 2),
            )
            for i in range(6)
        ],
        record(
            beta,
            key=kb,
            created_at=JAN + timedelta(days=1),
            model="beta-model",
            request_id="beta-request-1",
            cost_usd="3",
        ),
    )
    rollup_update()
    acme_budget = budget_set(tenant=acme, period="monthly", limit_usd="10")
    beta_budget = budget_set(tenant=beta, period="monthly", limit_usd="20")
    alerts = [
        BudgetAlert.objects.create(
            budget=acme_budget, period_start=JAN, level="soft", spent_usd=Decimal(8)
        ),
        BudgetAlert.objects.create(
            budget=beta_budget, period_start=JAN, level="hard", spent_usd=Decimal(21)
        ),
    ]
    invoices = [
        invoice_refresh(tenant=acme, period_start=JAN),
        invoice_refresh(tenant=beta, period_start=JAN),
    ]
    staff = UserFactory(username="acme-admin")
    MembershipFactory(user=staff, tenant=acme, role="admin")
    return {
        "acme": acme,
        "beta": beta,
        "ka": ka,
        "alerts": alerts,
        "invoices": invoices,
        "staff": staff,
        "budgets": (acme_budget, beta_budget),
    }


@pytest.fixture
def staff_client(client, world):
    client.force_login(world["staff"])
    return client


ALL = ["usagerecord", "budget", "budgetalert", "modelratelimit", "invoice", "costrecomputation"]


@pytest.mark.parametrize("model", ALL)
def test_changelists_render_for_superusers(world, admin_client, model):
    cost_recompute(window_start=JAN, window_end=JAN + timedelta(days=31), note="n")
    ModelRateLimit.objects.create(tenant=world["acme"], model_name="acme-model", rpm=5)
    response = admin_client.get(url(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


def test_usage_records_are_read_only_and_filterable(world, admin_client):
    response = admin_client.get(url("usagerecord"))
    html = response.content.decode()
    assert response.context["has_add_permission"] is False
    assert 'href="/admin/billing/dashboard/"' in html
    assert '<td class="field-model_display">acme-model<br><small>fake-openai</small></td>' in html
    assert '<td class="field-model_display">beta-model<br><small>fake-openai</small></td>' in html
    assert '<td class="field-cost">0.500000</td>' in html
    # Filters: tenant (scoped list), status class, model (from rollups), streamed, estimated.
    assert response.context["cl"].result_count == 7
    for params, count in [
        ({"tenant": world["beta"].pk}, 1),
        ({"status_class": "error"}, 2),
        ({"status_class": "5xx"}, 2),
        ({"model": "acme-model"}, 6),
        ({"streamed__exact": "1"}, 3),
        ({"usage_estimated__exact": "0"}, 7),
        ({"q": "beta-request-1"}, 1),
    ]:
        assert admin_client.get(url("usagerecord"), params).context["cl"].result_count == count
    record_pk = response.context["cl"].result_list[0].pk
    assert admin_client.get(url("usagerecord", "add")).status_code == 403
    view = admin_client.get(url("usagerecord", "change", record_pk))
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert admin_client.post(url("usagerecord", "delete", record_pk)).status_code == 403


def test_usage_date_drill_down_reads_rollups(world, admin_client):
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url("usagerecord"))
    html = response.content.decode()
    # Everything is in January 2025: Django starts at the month's days.
    assert "created_at__day=1" in html and "created_at__month=1" in html
    date_queries = [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]
    assert date_queries and all("billing_usagerecord" not in sql for sql in date_queries)
    day = admin_client.get(
        url("usagerecord"), {"created_at__year": 2025, "created_at__month": 1, "created_at__day": 2}
    )
    assert day.context["cl"].result_count == 2  # acme's and beta's on January 2nd


def test_tenant_staff_see_their_tenant_only(world, staff_client):
    response = staff_client.get(url("usagerecord"))
    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["cl"].result_count == 6
    assert "beta" not in html
    assert staff_client.get(url("budget")).context["cl"].result_count == 1
    assert staff_client.get(url("budgetalert")).context["cl"].result_count == 1
    assert staff_client.get(url("invoice")).context["cl"].result_count == 1
    beta_invoice = world["invoices"][1]
    assert staff_client.get(url("invoice", "change", beta_invoice.pk)).status_code == 302
    # Platform-only pages.
    assert staff_client.get(url("costrecomputation")).status_code == 403


def test_budget_secret_is_write_only_and_saved_through_the_service(world, admin_client):
    data = {
        "tenant": world["acme"].pk,
        "key": world["ka"].pk,
        "period": "daily",
        "limit_usd": "12.5",
        "soft_limit_pct": "70",
        "webhook_url": "https://hooks.example.test/b",
        "webhook_secret": "hush-hush",
        "enabled": "on",
        "_save": "Save",
    }
    response = admin_client.post(url("budget", "add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    budget = Budget.objects.get(key=world["ka"], period="daily")
    assert crypto.decrypt(budget.webhook_secret_encrypted) == "hush-hush"
    page = admin_client.get(url("budget", "change", budget.pk)).content.decode()
    assert "hush-hush" not in page and "set (encrypted)" in page
    # Saving without a secret keeps it; ticking "remove" clears it.
    change = {
        "limit_usd": "15",
        "soft_limit_pct": "70",
        "webhook_url": data["webhook_url"],
        "enabled": "on",
        "_save": "Save",
    }
    assert admin_client.post(url("budget", "change", budget.pk), change).status_code == 302
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal(15) and budget.webhook_secret_encrypted
    change["clear_webhook_secret"] = "on"
    admin_client.post(url("budget", "change", budget.pk), change)
    budget.refresh_from_db()
    assert budget.webhook_secret_encrypted == ""
    # The list shows the spend of the period from rollups.
    assert "Spent this period" in admin_client.get(url("budget")).content.decode()


def test_budget_key_must_belong_to_the_tenant(world, admin_client):
    other_key = make_key(world["beta"], name="other").key
    response = admin_client.post(
        url("budget", "add"),
        {
            "tenant": world["acme"].pk,
            "key": other_key.pk,
            "period": "weekly",
            "limit_usd": "1",
            "soft_limit_pct": "80",
            "_save": "Save",
        },
    )
    assert response.status_code == 200
    assert "belongs to another tenant" in response.content.decode()
    assert not Budget.objects.filter(period="weekly").exists()


def test_acknowledge_alerts(world, staff_client):
    mine, theirs = world["alerts"]
    response = staff_client.post(
        url("budgetalert"),
        {
            "action": "acknowledge",
            "_selected_action": [mine.pk, theirs.pk],
        },
    )
    assert response.status_code == 302
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.acknowledged and not theirs.acknowledged


def test_model_rate_limit_through_the_admin(world, admin_client):
    response = admin_client.post(
        url("modelratelimit", "add"),
        {
            "tenant": world["acme"].pk,
            "model_name": "acme-model",
            "rpm": "60",
            "tpm": "",
            "max_concurrent": "2",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    limit = ModelRateLimit.objects.get()
    assert (limit.rpm, limit.tpm, limit.max_concurrent) == (60, None, 2)


def test_invoice_actions_close_and_export(world, admin_client):
    acme_invoice, beta_invoice = world["invoices"]
    page = admin_client.get(url("invoice", "change", acme_invoice.pk)).content.decode()
    assert reverse("billing-invoice-print", args=[acme_invoice.pk]) in page
    assert "acme-model" in page  # the lines inline
    response = admin_client.post(
        url("invoice"),
        {
            "action": "close_selected",
            "_selected_action": [acme_invoice.pk],
        },
    )
    assert response.status_code == 302
    acme_invoice.refresh_from_db()
    assert acme_invoice.status == Invoice.Status.CLOSED
    assert acme_invoice.subtotal_usd == Decimal("3")

    response = admin_client.post(
        url("invoice"),
        {
            "action": "export_csv",
            "_selected_action": [acme_invoice.pk, beta_invoice.pk],
        },
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {r["tenant"] for r in rows} == {"acme", "beta"}
    assert [r["amount_usd"] for r in rows if r["item"] == "total"] == ["3.00", "3.00"]


def test_tenant_staff_cannot_close_invoices(world, staff_client):
    acme_invoice = world["invoices"][0]
    response = staff_client.get(url("invoice"))
    actions = [choice[0] for choice in response.context["action_form"].fields["action"].choices]
    assert "export_csv" in actions and "close_selected" not in actions
    staff_client.post(
        url("invoice"), {"action": "close_selected", "_selected_action": [acme_invoice.pk]}
    )
    acme_invoice.refresh_from_db()
    assert acme_invoice.status == Invoice.Status.OPEN


def test_cost_recomputations_are_read_only(world, admin_client):
    run = cost_recompute(window_start=JAN, window_end=JAN + timedelta(days=1), note="why")
    assert CostRecomputation.objects.count() == 1
    page = admin_client.get(url("costrecomputation", "change", run.pk)).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.get(url("costrecomputation", "add")).status_code == 403
