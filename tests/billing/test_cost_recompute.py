"""cost_recompute and `manage.py recompute_costs`: a price correction reaches records,
rollups and open invoices, and is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from apps.billing.models import CostRecomputation, Invoice, UsageRecord, UsageRollup
from apps.billing.pricing import Usage, cost_usd, price_at
from apps.billing.services import (
    cost_recompute,
    invoice_close,
    invoice_refresh,
    rollup_update,
)
from apps.core.errors import InvalidRequest
from apps.providers.models import Price
from apps.providers.selectors import price_info
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.providers.factories import ModelFactory
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

DEC = datetime(2024, 12, 1, tzinfo=UTC)
JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
CORRECTION = datetime(2025, 1, 10, tzinfo=UTC)


def priced(model, at: datetime, prompt: int, completion: int) -> Decimal:
    prices = tuple(price_info(p) for p in model.prices.order_by("-effective_from"))
    value = cost_usd(price_at(prices, at.timestamp()), Usage(prompt, completion))
    return value.quantize(Decimal("1e-10"))


@pytest.fixture
def world():
    acme = TenantFactory(name="acme", markup_pct=Decimal("10"))
    key = make_key(acme).key
    mini = ModelFactory(name="gpt-4o-mini")
    other = ModelFactory(name="other-model")
    for model in (mini, other):
        Price.objects.create(
            model=model,
            effective_from=DEC - timedelta(days=365),
            input_per_million=Decimal("1.00"),
            output_per_million=Decimal("2.00"),
        )
    rows = []
    for i in range(40):
        for model, day_offset in ((mini, 0), (other, 0), (mini, -25)):
            at = JAN + timedelta(days=day_offset, hours=18 * i)  # December to mid February
            rows.append(
                record(
                    acme,
                    key=key,
                    created_at=at,
                    model=model.name,
                    prompt_tokens=1000 + i,
                    completion_tokens=300 + 7 * i,
                    cost_usd=priced(model, at, 1000 + i, 300 + 7 * i),
                )
            )
    # February, after the window.
    rows.append(
        record(
            acme,
            key=key,
            created_at=FEB + timedelta(days=2),
            model="gpt-4o-mini",
            cost_usd=priced(mini, FEB + timedelta(days=2), 100, 50),
        )
    )
    # Routing failed: no served model, no cost, nothing to reprice.
    rows.append(
        record(
            acme,
            key=key,
            created_at=JAN + timedelta(days=12),
            model="gpt-4o-mini",
            served_model="",
            status=404,
            prompt_tokens=0,
            completion_tokens=0,
        )
    )
    records(*rows)
    rollup_update()
    december = invoice_close(tenant=acme, period_start=DEC)  # closed: final
    january = invoice_refresh(tenant=acme, period_start=JAN)  # a draft
    return acme, mini, other, december, january


def add_correction(mini) -> Price:
    """From January 10th gpt-4o-mini really cost 3.00 / 8.00 per million."""
    return Price.objects.create(
        model=mini,
        effective_from=CORRECTION,
        input_per_million=Decimal("3.00"),
        output_per_million=Decimal("8.00"),
    )


def rollup_cost(**filters) -> Decimal:
    return UsageRollup.objects.filter(**filters).aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)


def exact_cost(**filters) -> Decimal:
    return sum(UsageRecord.objects.filter(**filters).values_list("cost_usd", flat=True), Decimal(0))


def test_a_corrected_price_reprices_records_rollups_and_open_invoices(world):
    acme, mini, _, december, january = world
    dec_before = (december.subtotal_usd, december.total_usd)
    other_before = exact_cost(served_model="other-model")
    window = dict(created_at__gte=JAN, created_at__lt=FEB)
    old_total = exact_cost(served_model__in=["gpt-4o-mini", "other-model"], **window)
    correction = add_correction(mini)

    result = cost_recompute(
        window_start=JAN, window_end=FEB, actor="alice", note="vendor fixed the price"
    )

    # Records: after the correction at the new price, before it unchanged.
    for r in UsageRecord.objects.filter(served_model="gpt-4o-mini", **window):
        assert r.cost_usd == priced(mini, r.created_at, r.prompt_tokens, r.completion_tokens)
        if r.created_at >= CORRECTION:
            assert r.price_id == correction.pk
            assert r.cost_usd == (
                Decimal(r.prompt_tokens) * 3 + Decimal(r.completion_tokens) * 8
            ) / Decimal(10**6)
    # Outside the window (February, December) and other models: untouched.
    assert (
        UsageRecord.objects.filter(
            served_model="gpt-4o-mini", created_at__gte=FEB, price_id=correction.pk
        ).count()
        == 0
    )
    assert exact_cost(served_model="other-model") == other_before

    # Rollups agree with the records again, hour by hour.
    for rollup in UsageRollup.objects.all():
        assert rollup.cost_usd == exact_cost(
            tenant=rollup.tenant_id,
            created_at__gte=rollup.bucket,
            created_at__lt=rollup.bucket + timedelta(hours=1),
            served_model=rollup.model_name,
        ), rollup

    # The open January invoice follows; the closed December one does not move.
    january.refresh_from_db()
    assert january.subtotal_usd == exact_cost(tenant=acme, **window)
    assert january.lines.get(model_name="gpt-4o-mini").cost_usd == exact_cost(
        served_model="gpt-4o-mini", **window
    )
    december.refresh_from_db()
    assert (december.subtotal_usd, december.total_usd) == dec_before

    # And it is on record.
    assert result.pk == CostRecomputation.objects.get().pk
    # Every served record of January, both models (the failed request is not repriced).
    served = UsageRecord.objects.filter(**window).exclude(served_model="")
    assert result.records == served.count() == 86
    assert result.old_total_usd == old_total
    assert result.new_total_usd == exact_cost(
        served_model__in=["gpt-4o-mini", "other-model"], **window
    )
    assert result.new_total_usd > result.old_total_usd
    assert (result.actor, result.model_name) == ("alice", "")
    assert result.note == "vendor fixed the price"


def test_only_the_named_model_and_closed_invoices_are_reported(world):
    acme, mini, _, december, january = world
    add_correction(mini)
    # The window reaches into December (closed) and January (open).
    Price.objects.create(
        model=mini,
        effective_from=DEC + timedelta(days=20),
        input_per_million=Decimal("1.50"),
        output_per_million=Decimal("2.50"),
    )
    other_before = list(
        UsageRecord.objects.filter(served_model="other-model").values_list("cost_usd")
    )
    result = cost_recompute(window_start=DEC, window_end=FEB, model_name="gpt-4o-mini", note="fix")
    assert result.model_name == "gpt-4o-mini"
    assert (
        list(UsageRecord.objects.filter(served_model="other-model").values_list("cost_usd"))
        == other_before
    )
    assert "Closed invoices left unchanged: acme 2024-12" in result.note
    assert result.note.startswith("fix\n")
    december_before = december.total_usd
    december.refresh_from_db()
    assert december.total_usd == december_before
    january.refresh_from_db()
    assert january.subtotal_usd == exact_cost(tenant=acme, created_at__gte=JAN, created_at__lt=FEB)


def test_nothing_to_change_still_records_a_run(world):
    result = cost_recompute(window_start=JAN, window_end=FEB)
    assert result.old_total_usd == result.new_total_usd
    assert CostRecomputation.objects.count() == 1


def test_records_not_yet_rolled_up_are_counted_at_the_new_price(world):
    acme, mini, *_ = world
    late = records(
        record(
            acme,
            created_at=CORRECTION + timedelta(hours=3),
            model="gpt-4o-mini",
            prompt_tokens=1_000_000,
            completion_tokens=0,
            cost_usd="1",
        )
    )[0]
    add_correction(mini)
    cost_recompute(window_start=JAN, window_end=FEB)
    late.refresh_from_db()
    assert late.cost_usd == Decimal(3)
    rollup_update()  # picks the record up with its corrected cost, once
    bucket = CORRECTION + timedelta(hours=3)
    assert rollup_cost(bucket=bucket, key_id=0) == Decimal(3)


def test_the_window_must_end_after_it_starts():
    with pytest.raises(InvalidRequest):
        cost_recompute(window_start=FEB, window_end=JAN)


def test_the_management_command(world):
    _, mini, *_ = world
    add_correction(mini)
    out = StringIO()
    call_command(
        "recompute_costs",
        "--from",
        "2025-01-01",
        "--to",
        "2025-02-01",
        "--model",
        "gpt-4o-mini",
        "--note",
        "price fix",
        "--actor",
        "ops",
        stdout=out,
    )
    run = CostRecomputation.objects.get()
    assert (run.window_start, run.window_end) == (JAN, FEB)
    assert (run.model_name, run.note, run.actor) == ("gpt-4o-mini", "price fix", "ops")
    text = out.getvalue()
    assert "46 record(s)" in text and f"#{run.pk}" in text
    assert f"{run.new_total_usd:f}" in text


def test_the_management_command_dry_run_changes_nothing(world):
    _, mini, *_ = world
    add_correction(mini)
    before = list(UsageRecord.objects.order_by("pk").values_list("cost_usd", flat=True))
    out = StringIO()
    call_command(
        "recompute_costs",
        "--from",
        "2025-01-01T00:00:00Z",
        "--to",
        "2025-02-01",
        "--dry-run",
        stdout=out,
    )
    assert "Dry run" in out.getvalue()
    assert list(UsageRecord.objects.order_by("pk").values_list("cost_usd", flat=True)) == before
    assert not CostRecomputation.objects.exists()
    assert Invoice.objects.filter(status=Invoice.Status.OPEN).count() == 1


@pytest.mark.parametrize(
    "args",
    [["--from", "yesterday", "--to", "2025-02-01"], ["--from", "2025-02-01", "--to", "2025-01-01"]],
)
def test_the_management_command_rejects_bad_windows(args):
    with pytest.raises(CommandError):
        call_command("recompute_costs", *args, stdout=StringIO())
