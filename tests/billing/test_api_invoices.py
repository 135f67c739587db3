"""/api/v1/invoices/: read-only, with lines, a CSV per invoice, tenant isolation."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.billing.services import invoice_close, invoice_refresh
from tests.api_clients import key_client
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/invoices/"
JAN = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def world():
    a = TenantFactory(name="alpha", markup_pct=Decimal("20"))
    b = TenantFactory(name="bravo")
    records(
        record(a, created_at=JAN + timedelta(days=1), model="m1", cost_usd="1.0000000005"),
        record(a, created_at=JAN + timedelta(days=2), model="m2", cost_usd="2.5"),
        record(b, created_at=JAN + timedelta(days=1), model="m1", cost_usd="4"),
        record(a, created_at=JAN + timedelta(days=40), model="m1", cost_usd="1"),
    )
    closed = invoice_close(tenant=a, period_start=JAN)
    draft = invoice_refresh(tenant=a, period_start=JAN + timedelta(days=40))
    theirs = invoice_close(tenant=b, period_start=JAN)
    reader = make_key(a, name="reader", scopes=["management:read"])
    return {"closed": closed, "draft": draft, "theirs": theirs, "reader": reader, "b": b}


def test_list_and_detail_with_lines(world):
    client = key_client(world["reader"].secret)
    body = client.get(LIST).json()
    assert body["count"] == 2
    assert [i["id"] for i in body["results"]] == [world["draft"].pk, world["closed"].pk]
    invoice = client.get(f"{LIST}{world['closed'].pk}/").json()
    assert invoice["status"] == "closed" and invoice["markup_pct"] == "20.000"
    assert invoice["subtotal_usd"] == "3.5000000005"
    assert invoice["total_usd"] == "4.20"  # 3.5000000005 * 1.2 = 4.2000000006
    assert [(line["model_name"], line["cost_usd"]) for line in invoice["lines"]] == [
        ("m1", "1.0000000005"),
        ("m2", "2.5000000000"),
    ]
    assert client.get(LIST, {"status": "open"}).json()["count"] == 1


def test_read_only(world):
    client = key_client(
        make_key(world["closed"].tenant, name="w", scopes=["management:write"]).secret
    )
    assert client.post(LIST, {}, format="json").status_code == 405
    assert client.delete(f"{LIST}{world['closed'].pk}/").status_code == 405


def test_csv(world):
    client = key_client(world["reader"].secret)
    response = client.get(f"{LIST}{world['closed'].pk}/csv/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="invoice-alpha-2025-01.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["item"] for r in rows] == ["line", "line", "subtotal", "markup (+20%)", "total"]
    assert rows[-1]["amount_usd"] == "4.20"
    # Asking for CSV explicitly works as well.
    explicit = client.get(f"{LIST}{world['closed'].pk}/csv/", HTTP_ACCEPT="text/csv")
    assert explicit.status_code == 200 and explicit.content == response.content


def test_tenants_never_see_each_others_invoices(world):
    client = key_client(world["reader"].secret)
    theirs = world["theirs"].pk
    assert theirs not in {i["id"] for i in client.get(LIST).json()["results"]}
    assert client.get(f"{LIST}{theirs}/").status_code == 404
    response = client.get(f"{LIST}{theirs}/csv/")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert client.get(LIST, {"tenant": world["b"].pk}).json()["count"] == 0
