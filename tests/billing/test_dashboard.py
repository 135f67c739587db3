"""The usage dashboard: drawn from rollups only, scoped to the user's tenants."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.billing.histograms import histogram_merge, percentile
from apps.billing.models import UsageRollup
from apps.billing.selectors import dashboard_build, histograms_by_hour, rollup_list
from apps.billing.services import rollup_update
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

DAY = datetime(2025, 5, 6, tzinfo=UTC)
URL = reverse("billing-dashboard")


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world():
    acme, beta = TenantFactory(name="acme"), TenantFactory(name="beta")
    ka = make_key(acme, name="acme-prod").key
    kb = make_key(beta, name="beta-secret-key").key
    rows = []
    for i in range(48):
        rows.append(
            record(
                acme,
                key=ka,
                created_at=DAY + timedelta(minutes=30 * i),
                model="acme-model",
                provider="acme-provider",
                cost_usd="0.25",
                status=500 if i % 8 == 0 else 200,
                latency_ms=100.0 + 10 * i,
                ttft_ms=50.0 + i,
            )
        )
        rows.append(
            record(
                beta,
                key=kb,
                created_at=DAY + timedelta(minutes=30 * i),
                model="beta-model",
                provider="beta-provider",
                cost_usd="1.5",
                latency_ms=2000.0,
                ttft_ms=900.0,
            )
        )
    # Long before the default range.
    rows.append(
        record(
            acme,
            key=ka,
            created_at=DAY - timedelta(days=60),
            cost_usd="1000",
            model="ancient-model",
        )
    )
    records(*rows)
    rollup_update()
    return acme, beta, ka, kb


def chart_data(response) -> dict:
    match = re.search(
        r'<script id="dashboard-data" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, "the chart data is embedded"
    return json.loads(match.group(1))


def get(client, **params):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(URL, params)
    assert response.status_code == 200, response.content[:500]
    touched = [q["sql"] for q in queries.captured_queries if "billing_usagerecord" in q["sql"]]
    assert touched == [], touched
    assert any("billing_usagerollup" in q["sql"] for q in queries.captured_queries)
    return response


def test_superuser_sees_every_tenant(world, admin_client):
    response = get(admin_client, date_from="2025-05-06", date_to="2025-05-07")
    html = response.content.decode()
    data = chart_data(response)
    # Two days: hourly points.
    assert len(data["labels"]) == 48 and data["labels"][0] == "2025-05-06 00:00"
    assert {s["label"] for s in data["spend_by_model"]} == {"acme-model", "beta-model"}
    assert {s["label"] for s in data["spend_by_provider"]} == {"acme-provider", "beta-provider"}
    assert {s["label"] for s in data["spend_by_tenant"]} == {"acme", "beta"}
    assert sum(data["requests"]) == 96
    assert sum(data["errors"]) == 6
    spend = sum(sum(s["data"]) for s in data["spend_by_model"])
    assert spend == pytest.approx(48 * 0.25 + 48 * 1.5)
    assert 'id="total-spend">$84.00<' in html
    assert 'id="total-requests">96<' in html
    assert "6.25%" in html  # 6 errors in 96 requests
    for canvas in (
        "chart-spend-model",
        "chart-spend-provider",
        "chart-spend-tenant",
        "chart-traffic",
        "chart-latency",
        "chart-ttft",
    ):
        assert f'id="{canvas}"' in html
    # Local assets only.
    assert "/static/vendor/chart.js/chart.umd.min.js" in html
    assert "/static/billing/dashboard.js" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    # Top keys, both tenants, the biggest spender first.
    table = html[html.index('id="top-keys"') :]
    assert table.index("beta-secret-key") < table.index("acme-prod")


def test_percentiles_come_from_the_histograms(world, admin_client):
    _, beta, *_ = world
    response = get(admin_client, date_from="2025-05-06", date_to="2025-05-07", tenant=beta.pk)
    data = chart_data(response)
    # Every beta request took 2000 ms (bucket (1500, 2000]) and 900 ms to the first token.
    points = [p for p in data["latency_p95"] if p is not None]
    assert points and all(1500 <= p <= 2000 for p in points)
    assert all(750 <= p <= 1000 for p in data["ttft_p50"] if p is not None)
    assert data["latency_p50"][47] is None  # the last hour had no traffic


def test_tenant_staff_see_only_their_tenant(world, client):
    acme, beta, ka, kb = world
    user = UserFactory(username="acme-staff")
    MembershipFactory(user=user, tenant=acme, role="viewer")
    client.force_login(user)
    response = get(client, date_from="2025-05-06", date_to="2025-05-07")
    html = response.content.decode()
    data = chart_data(response)
    assert {s["label"] for s in data["spend_by_model"]} == {"acme-model"}
    assert {s["label"] for s in data["spend_by_tenant"]} == {"acme"}
    assert sum(data["requests"]) == 48
    assert "beta" not in html and kb.prefix not in html
    assert ka.prefix in html
    # Asking for another tenant's data is not a way around the scope.
    response = get(client, date_from="2025-05-06", date_to="2025-05-07", tenant=beta.pk)
    assert "Select a valid choice" in response.content.decode()
    assert "beta-model" not in response.content.decode()
    assert sum(chart_data(response)["requests"]) == 0  # the default range, still acme only


def test_staff_without_a_tenant_are_refused(world, client):
    user = UserFactory(username="lonely-staff")
    client.force_login(user)
    assert client.get(URL).status_code == 403
    user.is_staff = False
    user.save()
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_date_range_filters_and_picks_daily_points(world, admin_client):
    response = get(admin_client, date_from="2025-03-01", date_to="2025-05-31")
    data = chart_data(response)
    assert len(data["labels"]) == 92 and data["labels"][0] == "2025-03-01"
    models = {s["label"] for s in data["spend_by_model"]}
    assert "ancient-model" in models  # 60 days before May 6th is in March
    only_march = get(admin_client, date_from="2025-03-01", date_to="2025-03-31")
    assert sum(chart_data(only_march)["requests"]) == 1
    nothing = get(admin_client, date_from="2024-01-01", date_to="2024-01-02")
    assert sum(chart_data(nothing)["requests"]) == 0
    assert "No usage in this range." in nothing.content.decode()


def test_a_bad_range_shows_an_error_and_the_default(world, admin_client):
    response = get(admin_client, date_from="2025-05-07", date_to="2025-05-01")
    assert "must not be after" in response.content.decode()
    assert len(chart_data(response)["labels"]) == 7


def test_top_keys_are_paginated(world, admin_client):
    acme, *_ = world
    extra = []
    for i in range(25):
        key = make_key(acme, name=f"bulk-{i:02d}").key
        extra.append(record(acme, key=key, created_at=DAY + timedelta(hours=1), cost_usd="0.01"))
    records(*extra)
    rollup_update()
    first = get(admin_client, date_from="2025-05-06", date_to="2025-05-06").content.decode()
    assert "page 1 of 2" in first and "keys_page=2" in first
    second = get(admin_client, date_from="2025-05-06", date_to="2025-05-06", keys_page=2)
    assert "page 2 of 2" in second.content.decode()


def test_the_billing_index_links_the_dashboard(admin_client):
    html = admin_client.get(reverse("admin:app_list", args=["billing"])).content.decode()
    assert f'href="{URL}"' in html


def test_histogram_sums_in_the_database_match_python(world, monkeypatch):
    rollups = rollup_list(tenant_ids=None, start=DAY, end=DAY + timedelta(days=2))
    in_db = histograms_by_hour(rollups, "latency_histogram")
    monkeypatch.setattr(connection, "vendor", "other")
    in_python = histograms_by_hour(rollups, "latency_histogram")
    assert in_db == in_python and len(in_db) == 24
    expected = histogram_merge(
        *UsageRollup.objects.filter(bucket=DAY).values_list("latency_histogram", flat=True)
    )
    assert in_db[DAY] == expected


def test_dashboard_build_totals(world):
    acme, *_ = world
    data = dashboard_build(tenant_ids=[acme.pk], start=DAY, end=DAY + timedelta(days=1))
    assert data.grain == "hour"
    assert data.totals["requests"] == 48 and data.totals["errors"] == 6
    assert data.totals["cost_usd"] == Decimal("12")
    latencies = sorted(100.0 + 10 * i for i in range(48))
    assert data.totals["latency_p50"] == pytest.approx(latencies[23], abs=60)
    assert percentile([], 0.5) is None
