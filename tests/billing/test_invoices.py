"""Invoices: exact sums of the usage records, markup or discount, closed for good."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.urls import reverse

from apps.billing import tasks
from apps.billing.models import Invoice, InvoiceLine, UsageRecord
from apps.billing.services import (
    invoice_close,
    invoice_refresh,
    invoice_total,
    invoices_close_due,
    invoices_draft_current,
)
from apps.billing.views import invoice_csv
from apps.core.errors import InvalidRequest
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
MODELS = ["gpt-4o-mini", "claude-haiku", "gemini-flash"]
CENT = Decimal("0.01")


def awkward_cost(rng: random.Random) -> Decimal:
    """Costs with ten decimals that do not add up nicely (as per-token prices give)."""
    return Decimal(rng.randrange(1, 10**9)) / Decimal(10**10) * rng.choice([1, 3, 7, 11])


@pytest.fixture
def january(settings):
    """Several hundred records in January, a few just outside it, and another tenant."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    rng = random.Random(2025)
    acme = TenantFactory(name="acme")
    other = TenantFactory(name="other")
    key = make_key(acme).key
    rows = []
    for i in range(600):
        rows.append(
            record(
                acme,
                key=key,
                created_at=JAN + timedelta(seconds=rng.randrange(0, 31 * 86400)),
                model=MODELS[i % 3],
                cost_usd=awkward_cost(rng),
                prompt_tokens=rng.randrange(1, 5000),
                completion_tokens=rng.randrange(0, 2000),
                status=200 if i % 17 else 429,
            )
        )
    # Fallback: requested one model, served by another; the line is the served one.
    rows.append(
        record(
            acme,
            key=key,
            created_at=JAN + timedelta(days=3),
            requested_model="gpt-4o",
            served_model="gpt-4o-mini",
            cost_usd="0.0000000001",
        )
    )
    # Failed before routing: no served model; counted under the requested name, free.
    rows.append(
        record(
            acme,
            key=key,
            created_at=JAN + timedelta(days=4),
            model="nope",
            status=404,
            served_model="",
            cost_usd="0",
        )
    )
    # The edges of the month: the last microsecond of December and the first of February.
    rows.append(record(acme, key=key, created_at=JAN - timedelta(microseconds=1), cost_usd="5"))
    rows.append(record(acme, key=key, created_at=FEB, cost_usd="7"))
    rows.append(record(other, created_at=JAN + timedelta(days=2), cost_usd="9"))
    records(*rows)
    return acme, other


def january_records(tenant) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(tenant=tenant, created_at__gte=JAN, created_at__lt=FEB))


@pytest.mark.parametrize("markup", ["0", "12.5", "-7.25", "33.333"])
def test_totals_equal_the_records_to_the_cent(january, markup):
    acme, _ = january
    acme.markup_pct = Decimal(markup)
    acme.save()
    invoice = invoice_close(tenant=acme, period_start=JAN + timedelta(days=10))

    rows = january_records(acme)
    exact = sum((r.cost_usd for r in rows), Decimal(0))
    expected_total = (exact * (1 + Decimal(markup) / 100)).quantize(CENT, rounding=ROUND_HALF_UP)
    assert invoice.period_start == JAN and invoice.period_end == FEB
    assert invoice.subtotal_usd == exact
    assert invoice.markup_pct == Decimal(markup)
    assert invoice.total_usd == expected_total
    assert invoice.total_usd == invoice_total(exact, Decimal(markup))

    # One line per model (as served, else as requested), each the exact sum of its rows.
    lines = {line.model_name: line for line in invoice.lines.all()}
    assert set(lines) == {*MODELS, "nope"}
    for name, line in lines.items():
        mine = [r for r in rows if (r.served_model or r.requested_model) == name]
        assert line.requests == len(mine)
        assert line.prompt_tokens == sum(r.prompt_tokens for r in mine)
        assert line.completion_tokens == sum(r.completion_tokens for r in mine)
        assert line.cost_usd == sum((r.cost_usd for r in mine), Decimal(0))
    assert sum((line.cost_usd for line in lines.values()), Decimal(0)) == invoice.subtotal_usd
    assert sum(line.requests for line in lines.values()) == len(rows) == 602


def test_rounding_is_half_up_to_the_cent():
    assert invoice_total(Decimal("0.005"), Decimal(0)) == Decimal("0.01")
    assert invoice_total(Decimal("0.0049999999"), Decimal(0)) == Decimal("0.00")
    assert invoice_total(Decimal("10"), Decimal("-10")) == Decimal("9.00")
    assert invoice_total(Decimal("1.00"), Decimal("0.5")) == Decimal("1.01")  # 1.005 → 1.01


def test_a_closed_invoice_never_changes(january):
    acme, _ = january
    invoice = invoice_close(tenant=acme, period_start=JAN)
    assert invoice.status == Invoice.Status.CLOSED and invoice.closed_at is not None
    before = (invoice.subtotal_usd, invoice.total_usd, invoice.markup_pct, invoice.closed_at)
    lines_before = list(InvoiceLine.objects.filter(invoice=invoice).values())

    # Late usage, a new markup, and every way to rebuild it.
    records(record(acme, created_at=JAN + timedelta(days=20), cost_usd="100"))
    acme.markup_pct = Decimal("50")
    acme.save()
    again = invoice_close(tenant=acme, period_start=JAN)
    refreshed = invoice_refresh(tenant=acme, period_start=JAN)
    invoices_close_due(now=FEB + timedelta(days=3))
    for inv in (again, refreshed, Invoice.objects.get(pk=invoice.pk)):
        assert inv.pk == invoice.pk
        assert (inv.subtotal_usd, inv.total_usd, inv.markup_pct, inv.closed_at) == before
    assert list(InvoiceLine.objects.filter(invoice=invoice).values()) == lines_before
    assert Invoice.objects.filter(tenant=acme).count() == 1


def test_an_open_invoice_is_rebuilt_from_usage(january):
    acme, _ = january
    draft = invoice_refresh(tenant=acme, period_start=JAN)
    assert draft.status == Invoice.Status.OPEN
    records(record(acme, created_at=JAN + timedelta(days=20), cost_usd="100", model="new-model"))
    draft = invoice_refresh(tenant=acme, period_start=JAN)
    assert draft.lines.filter(model_name="new-model").get().cost_usd == Decimal(100)
    assert draft.subtotal_usd == sum((r.cost_usd for r in january_records(acme)), Decimal(0))


def test_a_month_that_has_not_ended_cannot_be_closed(january):
    acme, _ = january
    with pytest.raises(InvalidRequest) as caught:
        invoice_close(tenant=acme, period_start=JAN, now=JAN + timedelta(days=30))
    assert caught.value.code == "period_not_ended"
    assert not Invoice.objects.exists()


def test_close_due_closes_every_tenants_previous_month(january):
    _, other = january
    quiet = TenantFactory(name="quiet")  # no usage: no invoice
    # Within the grace hour after January, the month before it is "previous": December
    # (acme's one record at its last microsecond), and January stays untouched.
    early = invoices_close_due(now=FEB + timedelta(minutes=30))
    assert [(i.tenant.name, i.period_start) for i in early] == [("acme", JAN - timedelta(days=31))]
    assert not Invoice.objects.filter(period_start=JAN).exists()
    closed = invoices_close_due(now=FEB + timedelta(hours=2))
    assert {(i.tenant.name, i.period_start) for i in closed} == {("acme", JAN), ("other", JAN)}
    assert all(i.status == Invoice.Status.CLOSED for i in closed)
    assert not Invoice.objects.filter(tenant=quiet).exists()
    assert Invoice.objects.get(tenant=other).total_usd == Decimal("9.00")
    # Running again (a retried task, the next day) changes nothing.
    assert len(invoices_close_due(now=FEB + timedelta(days=1))) == 2
    assert Invoice.objects.filter(period_start=JAN).count() == 2


def test_close_due_also_closes_forgotten_open_invoices(january):
    acme, _ = january
    december = JAN - timedelta(days=31)
    invoice_refresh(tenant=acme, period_start=december)  # a draft left open
    invoices_close_due(now=FEB + timedelta(days=2))
    dec = Invoice.objects.get(tenant=acme, period_start=december)
    assert dec.status == Invoice.Status.CLOSED
    assert dec.subtotal_usd == Decimal(5)  # the record at the last microsecond of December


def test_the_task_closes_due_invoices(january, monkeypatch):
    from apps.billing import services

    real = services.invoices_close_due
    monkeypatch.setattr(tasks, "invoices_close_due", lambda: real(now=FEB + timedelta(days=1)))
    tasks.invoices_close.apply()
    assert Invoice.objects.filter(status=Invoice.Status.CLOSED).count() == 2


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_a_line_per_model_then_subtotal_markup_and_total(january):
    acme, _ = january
    acme.markup_pct = Decimal("-5")
    acme.save()
    invoice = invoice_close(tenant=acme, period_start=JAN)
    rows = parse_csv(invoice_csv([invoice]))
    lines = [r for r in rows if r["item"] == "line"]
    assert [r["model"] for r in lines] == sorted([*MODELS, "nope"])
    assert all(r["invoice_id"] == str(invoice.pk) and r["tenant"] == "acme" for r in rows)
    assert all(r["period_start"] == "2025-01-01" and r["period_end"] == "2025-02-01" for r in rows)
    # Amounts are exact decimals: the lines add up to the subtotal digit for digit.
    assert sum(Decimal(r["amount_usd"]) for r in lines) == invoice.subtotal_usd
    by_item = {r["item"]: r for r in rows if r["item"] != "line"}
    assert Decimal(by_item["subtotal"]["amount_usd"]) == invoice.subtotal_usd
    assert "discount (-5%)" in by_item
    assert by_item["total"]["amount_usd"] == f"{invoice.total_usd:.2f}"
    line = next(r for r in lines if r["model"] == "gpt-4o-mini")
    db_line = invoice.lines.get(model_name="gpt-4o-mini")
    assert int(line["requests"]) == db_line.requests
    assert int(line["prompt_tokens"]) == db_line.prompt_tokens


def test_csv_and_printable_pages_for_staff(january, admin_client):
    acme, _ = january
    acme.markup_pct = Decimal("10")
    acme.save()
    invoice = invoice_close(tenant=acme, period_start=JAN)

    response = admin_client.get(reverse("billing-invoice-csv", args=[invoice.pk]))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="invoice-acme-2025-01.csv"' in response["Content-Disposition"]
    assert parse_csv(response.content.decode())[-1]["amount_usd"] == f"{invoice.total_usd:.2f}"

    response = admin_client.get(reverse("billing-invoice-print", args=[invoice.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<!DOCTYPE html>" in html and "Invoice" in html
    assert f'id="invoice-total">{invoice.total_usd:.2f}<' in html
    assert "Markup (+10%)" in html
    for name in MODELS:
        assert f"<td>{name}</td>" in html
    assert "2025-01-01 – 2025-01-31" in html
    assert "billing/invoice.css" in html
    assert "http://" not in html.replace("http://testserver", "") and "https://" not in html


def test_invoice_pages_are_tenant_scoped(january, client):
    acme, other = january
    theirs = invoice_close(tenant=other, period_start=JAN)
    mine = invoice_close(tenant=acme, period_start=JAN)
    user = UserFactory(username="acme-viewer")
    MembershipFactory(user=user, tenant=acme, role="viewer")
    client.force_login(user)
    assert client.get(reverse("billing-invoice-print", args=[mine.pk])).status_code == 200
    assert client.get(reverse("billing-invoice-csv", args=[mine.pk])).status_code == 200
    assert client.get(reverse("billing-invoice-print", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("billing-invoice-csv", args=[theirs.pk])).status_code == 404
    # Not staff: the admin's login, not the invoice.
    user.is_staff = False
    user.save()
    response = client.get(reverse("billing-invoice-print", args=[mine.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_drafts_of_the_current_month(january):
    acme, _ = january
    drafts = invoices_draft_current(now=JAN + timedelta(days=15))
    assert {d.tenant.name for d in drafts} == {"acme", "other"}
    assert all(d.status == Invoice.Status.OPEN and d.period_start == JAN for d in drafts)
    # Mid-month, the draft holds what has been recorded so far: the whole fixture month,
    # since the records are already there.
    acme_draft = next(d for d in drafts if d.tenant == acme)
    assert acme_draft.subtotal_usd == sum((r.cost_usd for r in january_records(acme)), Decimal(0))
    # A later run rebuilds the same drafts; closing the month makes them final.
    assert len(invoices_draft_current(now=JAN + timedelta(days=16))) == 2
    invoices_close_due(now=FEB + timedelta(hours=2))
    assert not Invoice.objects.filter(period_start=JAN, status=Invoice.Status.OPEN).exists()
    tasks.invoices_draft.apply()  # today's month: no usage, nothing to draft
    assert Invoice.objects.filter(period_start=JAN).count() == 2
