from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import httpx
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Max, Prefetch, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from apps.billing import periods
from apps.billing.histograms import histogram_merge, histogram_observe
from apps.billing.models import (
    Budget,
    BudgetAlert,
    CostRecomputation,
    Invoice,
    InvoiceLine,
    ModelRateLimit,
    RollupCursor,
    UsageRecord,
    UsageRollup,
)
from apps.billing.pricing import PriceInfo, Usage, cost_usd, price_at
from apps.core import crypto
from apps.core.errors import InvalidRequest
from apps.core.services import config_changed
from apps.keys.models import ApiKey
from apps.providers.models import Price
from apps.providers.selectors import model_list, model_list_price, price_info
from apps.tenants.models import BudgetPeriod, Tenant

logger = logging.getLogger("gateway.billing")

BUDGET_FIELDS = {"period", "limit_usd", "soft_limit_pct", "webhook_url", "enabled"}


@transaction.atomic
def budget_set(
    *,
    tenant: Tenant,
    key: ApiKey | None = None,
    period: str,
    limit_usd: Decimal | str | float,
    soft_limit_pct: int = 80,
    webhook_url: str = "",
    webhook_secret: str | None = None,
    enabled: bool = True,
) -> Budget:
    """Create or update the budget of a tenant (or of one of its keys) for a period."""
    if key is not None and key.tenant_id != tenant.pk:
        raise ValueError("the key belongs to another tenant")
    budget, _ = Budget.objects.get_or_create(
        tenant=tenant, key=key, period=period, defaults={"limit_usd": Decimal(str(limit_usd))}
    )
    budget.limit_usd = Decimal(str(limit_usd))
    budget.soft_limit_pct = soft_limit_pct
    budget.webhook_url = webhook_url
    budget.enabled = enabled
    if webhook_secret is not None:
        budget.webhook_secret_encrypted = crypto.encrypt(webhook_secret) if webhook_secret else ""
    budget.full_clean()
    budget.save()
    config_changed()
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget) -> None:
    budget.delete()
    config_changed()


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` HMAC-SHA256 over ``timestamp + "." + body``, as receivers verify it."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def budget_alert_raise(
    *, budget_id: int, period_start: datetime, level: str, spent_usd: Decimal
) -> BudgetAlert | None:
    """Record a threshold crossing once per budget, period and level; notify its webhook.

    Idempotent: a repeated call (a retried task) finds the alert and sends nothing twice.
    """
    budget = Budget.objects.select_related("tenant", "key").filter(pk=budget_id).first()
    if budget is None:
        return None
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                budget=budget, period_start=period_start, level=level, spent_usd=spent_usd
            )
    except IntegrityError:
        return None
    logger.warning(
        "budget threshold crossed",
        extra={
            "budget": budget.pk,
            "tenant": budget.tenant.name,
            "level": level,
            "spent_usd": str(spent_usd),
        },
    )
    if budget.webhook_url:
        payload = {
            "type": f"budget.{level}_limit_reached",
            "tenant": budget.tenant.name,
            "key": budget.key.name if budget.key_id else None,
            "period": budget.period,
            "period_start": period_start.isoformat(),
            "limit_usd": str(budget.limit_usd),
            "soft_limit_pct": budget.soft_limit_pct,
            "spent_usd": str(spent_usd),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"content-type": "application/json", "x-gateway-timestamp": timestamp}
        if budget.webhook_secret_encrypted:
            secret = crypto.decrypt(budget.webhook_secret_encrypted)
            headers["x-gateway-signature"] = webhook_signature(secret, timestamp, body)
        try:
            response = httpx.post(budget.webhook_url, content=body, headers=headers, timeout=10)
            status = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            status = f"failed: {type(exc).__name__}"
        BudgetAlert.objects.filter(pk=alert.pk).update(webhook_status=status[:200])
        alert.webhook_status = status
    return alert


# --- budget alerts and per-model limits --------------------------------------------


def budget_alerts_acknowledge(*, alert_ids: list[int]) -> int:
    """Mark alerts as seen; returns how many changed."""
    return BudgetAlert.objects.filter(pk__in=alert_ids, acknowledged=False).update(
        acknowledged=True
    )


@transaction.atomic
def model_rate_limit_set(
    *,
    tenant: Tenant,
    model_name: str,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrent: int | None = None,
    limit: ModelRateLimit | None = None,
) -> ModelRateLimit:
    """Create or update the limits of one model within one tenant.

    ``limit`` updates that row (its tenant and model may change); without it the row
    for (tenant, model) is created or updated.
    """
    if limit is None:
        limit = ModelRateLimit.objects.filter(tenant=tenant, model_name=model_name).first()
    limit = limit or ModelRateLimit()
    limit.tenant = tenant
    limit.model_name = model_name
    limit.rpm, limit.tpm, limit.max_concurrent = rpm, tpm, max_concurrent
    limit.full_clean()
    limit.save()
    config_changed()
    return limit


@transaction.atomic
def model_rate_limit_delete(*, limit: ModelRateLimit) -> None:
    limit.delete()
    config_changed()


# --- rollups -----------------------------------------------------------------------

ROLLUP_CURSOR = "usage-rollups"
ROLLUP_BATCH = 5000
COST_PLACES = Decimal("1e-10")  # UsageRecord.cost_usd has 10 decimal places
CENT = Decimal("0.01")

# (hour, tenant id, key id (0: no key), model as served, provider)
RollupKey = tuple[datetime, int, int, str, str]


@dataclass
class _RollupDelta:
    key_prefix: str = ""
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    latency_ms_sum: float = 0.0
    latency_histogram: list[int] = field(default_factory=list)
    ttft_histogram: list[int] = field(default_factory=list)


_ROLLUP_FIELDS = (
    "id",
    "created_at",
    "tenant_id",
    "key_id",
    "key_prefix",
    "served_model",
    "requested_model",
    "provider",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
)


def hour_bucket(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def rollup_key(row: dict[str, Any]) -> RollupKey:
    """The rollup a usage record counts in: hour, tenant, key, model (as served), provider."""
    return (
        hour_bucket(row["created_at"]),
        row["tenant_id"],
        row["key_id"] or 0,
        row["served_model"] or row["requested_model"],
        row["provider"] or "",
    )


def _usage_high_water() -> int:
    """The largest usage record id below which every insert has committed.

    On PostgreSQL ids are handed out before commit, so a batch that is still being
    written can hold ids below ones already visible; reading past it would skip those
    rows for good. A SHARE lock waits for in-flight inserts to commit (and holds new
    ones back for the instant it takes to read the maximum). SQLite serialises writers.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"LOCK TABLE {connection.ops.quote_name(UsageRecord._meta.db_table)} "
                    "IN SHARE MODE"
                )
        return UsageRecord.objects.aggregate(top=Max("id"))["top"] or 0


def _rollup_cursor_lock() -> RollupCursor:
    """The rollup cursor, locked: every writer of rollups holds it, one at a time."""
    cursor, _ = RollupCursor.objects.select_for_update().get_or_create(name=ROLLUP_CURSOR)
    return cursor


def _rollups_apply(deltas: dict[RollupKey, _RollupDelta]) -> None:
    """Add deltas to the matching rollup rows, creating the missing ones."""
    if not deltas:
        return
    buckets = {key[0] for key in deltas}
    tenants = {key[1] for key in deltas}
    existing: dict[RollupKey, UsageRollup] = {}
    for rollup in UsageRollup.objects.select_for_update().filter(
        bucket__in=buckets, tenant_id__in=tenants
    ):
        key = (
            hour_bucket(rollup.bucket),
            rollup.tenant_id,
            rollup.key_id,
            rollup.model_name,
            rollup.provider,
        )
        if key in deltas:
            existing[key] = rollup
    to_create, to_update = [], []
    for key, delta in deltas.items():
        rollup = existing.get(key)
        if rollup is None:
            rollup = UsageRollup(
                bucket=key[0],
                tenant_id=key[1],
                key_id=key[2],
                model_name=key[3],
                provider=key[4],
                cost_usd=Decimal(0),
            )
            to_create.append(rollup)
        else:
            to_update.append(rollup)
        rollup.key_prefix = delta.key_prefix or rollup.key_prefix
        rollup.requests += delta.requests
        rollup.errors += delta.errors
        rollup.prompt_tokens += delta.prompt_tokens
        rollup.completion_tokens += delta.completion_tokens
        rollup.cost_usd = Decimal(rollup.cost_usd) + delta.cost_usd
        rollup.latency_ms_sum += delta.latency_ms_sum
        if delta.latency_histogram:
            rollup.latency_histogram = histogram_merge(
                rollup.latency_histogram, delta.latency_histogram
            )
        if delta.ttft_histogram:
            rollup.ttft_histogram = histogram_merge(rollup.ttft_histogram, delta.ttft_histogram)
    UsageRollup.objects.bulk_create(to_create, batch_size=500)
    UsageRollup.objects.bulk_update(
        to_update,
        [
            "key_prefix",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "latency_ms_sum",
            "latency_histogram",
            "ttft_histogram",
        ],
        batch_size=500,
    )


@transaction.atomic
def _rollup_batch(*, high_water: int, batch_size: int) -> int:
    cursor = _rollup_cursor_lock()
    rows = list(
        UsageRecord.objects.filter(id__gt=cursor.last_id, id__lte=high_water)
        .order_by("id")
        .values(*_ROLLUP_FIELDS)[:batch_size]
    )
    if not rows:
        return 0
    deltas: dict[RollupKey, _RollupDelta] = {}
    for row in rows:
        delta = deltas.setdefault(rollup_key(row), _RollupDelta())
        delta.key_prefix = row["key_prefix"] or delta.key_prefix
        delta.requests += 1
        delta.errors += row["status"] >= 400
        delta.prompt_tokens += row["prompt_tokens"]
        delta.completion_tokens += row["completion_tokens"]
        delta.cost_usd += row["cost_usd"]
        delta.latency_ms_sum += row["latency_ms"] or 0.0
        histogram_observe(delta.latency_histogram, row["latency_ms"] or 0.0)
        if row["ttft_ms"] is not None:
            histogram_observe(delta.ttft_histogram, row["ttft_ms"])
    _rollups_apply(deltas)
    cursor.last_id = rows[-1]["id"]
    cursor.save(update_fields=["last_id", "updated_at"])
    return len(rows)


def rollup_update(*, batch_size: int = ROLLUP_BATCH, max_batches: int | None = None) -> int:
    """Fold new usage records into the hourly rollups; returns how many were consumed.

    Records are consumed in id order past ``RollupCursor.last_id``, one transaction per
    batch that moves the cursor with the rollups it wrote, so a crash loses nothing and
    a rerun counts nothing twice. Concurrent runs queue on the locked cursor.
    """
    high_water = _usage_high_water()
    consumed = batches = 0
    while max_batches is None or batches < max_batches:
        count = _rollup_batch(high_water=high_water, batch_size=batch_size)
        consumed += count
        batches += 1
        if count < batch_size:
            break
    return consumed


# --- invoices ----------------------------------------------------------------------

# Records are flushed within seconds of a request; a month is closed this long after it
# ended so that the last ones (or a spill file imported after a restart) are in.
INVOICE_CLOSE_GRACE = timedelta(hours=1)


def month_start(moment: datetime) -> datetime:
    return periods.period_start(BudgetPeriod.MONTHLY, moment)


@dataclass
class LineSums:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)


def usage_sums_by_model(records: QuerySet[UsageRecord]) -> dict[str, LineSums]:
    """Requests, tokens and exact cost per model (as served, else as requested).

    Counts and tokens are summed by the database. Cost is summed as exact decimals:
    by the database where its numeric type is exact, in Python on SQLite, whose
    aggregates are floating point.
    """
    line_model = Coalesce(NullIf(F("served_model"), Value("")), F("requested_model"))
    records = records.order_by().annotate(line_model=line_model)
    exact_in_db = connection.vendor != "sqlite"
    aggregates: dict[str, Any] = {
        "requests": Count("id"),
        "prompt": Sum("prompt_tokens"),
        "completion": Sum("completion_tokens"),
    }
    if exact_in_db:
        aggregates["cost"] = Sum("cost_usd")
    sums: dict[str, LineSums] = {}
    for row in records.values("line_model").annotate(**aggregates):
        sums[row["line_model"]] = LineSums(
            requests=row["requests"],
            prompt_tokens=row["prompt"] or 0,
            completion_tokens=row["completion"] or 0,
            cost_usd=(row["cost"] or Decimal(0)) if exact_in_db else Decimal(0),
        )
    if not exact_in_db:
        for name, cost in records.values_list("line_model", "cost_usd").iterator(chunk_size=5000):
            sums[name].cost_usd += cost
    return sums


def invoice_total(subtotal: Decimal, markup_pct: Decimal) -> Decimal:
    """Subtotal plus markup (negative: discount), rounded half up to the cent."""
    with localcontext() as ctx:
        ctx.prec = 50
        return (subtotal * (1 + Decimal(markup_pct) / 100)).quantize(CENT, rounding=ROUND_HALF_UP)


def _invoice_fill(invoice: Invoice) -> Invoice:
    """Rebuild an open invoice's lines and totals from its period's usage records."""
    tenant = invoice.tenant
    records = UsageRecord.objects.filter(
        tenant=tenant, created_at__gte=invoice.period_start, created_at__lt=invoice.period_end
    )
    sums = usage_sums_by_model(records)
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(
                invoice=invoice,
                model_name=name,
                requests=line.requests,
                prompt_tokens=line.prompt_tokens,
                completion_tokens=line.completion_tokens,
                cost_usd=line.cost_usd,
            )
            for name, line in sorted(sums.items())
        ]
    )
    invoice.subtotal_usd = sum((line.cost_usd for line in sums.values()), Decimal(0))
    invoice.markup_pct = tenant.markup_pct
    invoice.total_usd = invoice_total(invoice.subtotal_usd, invoice.markup_pct)
    invoice.save()
    return invoice


def _invoice_locked(*, tenant: Tenant, period_start: datetime) -> Invoice:
    start = month_start(period_start)
    invoice, _ = Invoice.objects.select_for_update().get_or_create(
        tenant=tenant,
        period_start=start,
        defaults={"period_end": periods.period_end(BudgetPeriod.MONTHLY, start)},
    )
    invoice.tenant = tenant
    return invoice


@transaction.atomic
def invoice_refresh(*, tenant: Tenant, period_start: datetime) -> Invoice:
    """Create or rebuild the open invoice of the month that contains ``period_start``.

    A closed invoice is returned as it is: once closed, an invoice never changes.
    """
    invoice = _invoice_locked(tenant=tenant, period_start=period_start)
    if invoice.status == Invoice.Status.CLOSED:
        return invoice
    return _invoice_fill(invoice)


@transaction.atomic
def invoice_close(
    *, tenant: Tenant, period_start: datetime, now: datetime | None = None
) -> Invoice:
    """Build the month's invoice from its usage records and close it for good.

    Idempotent: closing a closed invoice returns it unchanged. A month that has not
    ended yet cannot be closed (its usage is still coming in).
    """
    now = now or timezone.now()
    start = month_start(period_start)
    if periods.period_end(BudgetPeriod.MONTHLY, start) > now:
        raise InvalidRequest(
            f"The period {start:%Y-%m} has not ended yet.", code="period_not_ended"
        )
    invoice = _invoice_locked(tenant=tenant, period_start=start)
    if invoice.status == Invoice.Status.CLOSED:
        return invoice
    invoice = _invoice_fill(invoice)
    invoice.status = Invoice.Status.CLOSED
    invoice.closed_at = now
    invoice.save(update_fields=["status", "closed_at", "updated_at"])
    logger.info(
        "invoice closed",
        extra={
            "tenant": tenant.name,
            "period": f"{start:%Y-%m}",
            "total_usd": str(invoice.total_usd),
        },
    )
    return invoice


def invoices_close_due(*, now: datetime | None = None) -> list[Invoice]:
    """Close every tenant's invoice for the previous month (and any open invoice whose
    month has ended, should the task have missed a run). One transaction per invoice.
    """
    now = now or timezone.now()
    settled = now - INVOICE_CLOSE_GRACE
    previous = month_start(month_start(settled) - timedelta(days=1))
    previous_end = periods.period_end(BudgetPeriod.MONTHLY, previous)
    due: set[tuple[int, datetime]] = set()
    for tenant_id in Tenant.objects.values_list("pk", flat=True):
        if UsageRecord.objects.filter(
            tenant_id=tenant_id, created_at__gte=previous, created_at__lt=previous_end
        ).exists():
            due.add((tenant_id, previous))
    for tenant_id, start in Invoice.objects.filter(
        status=Invoice.Status.OPEN, period_end__lte=settled
    ).values_list("tenant_id", "period_start"):
        due.add((tenant_id, start))
    tenants = Tenant.objects.in_bulk({tenant_id for tenant_id, _ in due})
    return [
        invoice_close(tenant=tenants[tenant_id], period_start=start, now=now)
        for tenant_id, start in sorted(due, key=lambda item: (item[1], item[0]))
    ]


def invoices_draft_current(*, now: datetime | None = None) -> list[Invoice]:
    """Create or rebuild the open (draft) invoice of the current month for every tenant
    with usage in it, so tenants can follow the month as it goes."""
    now = now or timezone.now()
    start = month_start(now)
    end = periods.period_end(BudgetPeriod.MONTHLY, start)
    drafts = []
    for tenant in Tenant.objects.all():
        if UsageRecord.objects.filter(
            tenant=tenant, created_at__gte=start, created_at__lt=end
        ).exists():
            drafts.append(invoice_refresh(tenant=tenant, period_start=start))
    return drafts


# --- cost recomputation ------------------------------------------------------------

_RECOMPUTE_FIELDS = (
    *_ROLLUP_FIELDS,
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "usage_estimated",
    "price_id",
)


def _price_history(tenant_id: int, model_name: str) -> tuple[PriceInfo, ...] | None:
    """The prices the gateway charged ``model_name`` at for this tenant, newest first:
    the tenant's own model of that name, else the platform's (as routing resolves it)."""
    for tenant_ids, include_global in (([tenant_id], False), ([], True)):
        model = (
            model_list(tenant_ids=tenant_ids, include_global=include_global)
            .filter(name=model_name)
            .prefetch_related(
                Prefetch(
                    "prices",
                    queryset=Price.objects.order_by("-effective_from"),
                    to_attr="price_history",
                )
            )
            .first()
        )
        if model is not None:
            return tuple(price_info(p) for p in model.price_history) or (model_list_price(model),)
    return None


def record_cost(row: dict[str, Any], prices: tuple[PriceInfo, ...]) -> tuple[Decimal, int | None]:
    """A usage record's cost at the price in effect when its request started."""
    price = price_at(prices, row["created_at"].timestamp())
    usage = Usage(
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cached_tokens=row["cached_tokens"],
        cache_write_tokens=row["cache_write_tokens"],
        reasoning_tokens=row["reasoning_tokens"],
        estimated=row["usage_estimated"],
    )
    cost = cost_usd(price, usage) if usage.total_tokens else Decimal(0)
    return cost.quantize(COST_PLACES, rounding=ROUND_HALF_EVEN), (price.id if price else None)


@transaction.atomic
def cost_recompute(
    *,
    window_start: datetime,
    window_end: datetime,
    model_name: str | None = None,
    actor: str = "",
    note: str = "",
    chunk_size: int = 2000,
) -> CostRecomputation:
    """Recompute the cost of past usage after a price correction, and record that it did.

    Every record that was served by a model (optionally only ``model_name``) and started
    in ``[window_start, window_end)`` is priced again from the model's price history at
    its ``created_at``. Changed costs are written to the records, added to the rollups
    that already counted them and carried into the open invoices of their months.
    Closed invoices are final and stay as they are; the recomputation's note says which
    ones the correction would have touched.
    """
    if window_end <= window_start:
        raise InvalidRequest("The window must end after it starts.", param="window_end")
    cursor = _rollup_cursor_lock()
    records = UsageRecord.objects.filter(
        created_at__gte=window_start, created_at__lt=window_end
    ).exclude(served_model="")
    if model_name:
        records = records.filter(served_model=model_name)
    histories: dict[tuple[int, str], tuple[PriceInfo, ...] | None] = {}
    deltas: dict[RollupKey, _RollupDelta] = {}
    months: set[tuple[int, datetime]] = set()
    examined = 0
    old_total = new_total = Decimal(0)
    last_id = 0
    while True:
        rows = list(
            records.filter(id__gt=last_id).order_by("id").values(*_RECOMPUTE_FIELDS)[:chunk_size]
        )
        if not rows:
            break
        last_id = rows[-1]["id"]
        changed: list[UsageRecord] = []
        for row in rows:
            lookup = (row["tenant_id"], row["served_model"])
            if lookup not in histories:
                histories[lookup] = _price_history(*lookup)
            prices = histories[lookup]
            if prices is None:  # the model is gone: nothing to price it with
                continue
            examined += 1
            old = row["cost_usd"]
            new, price_id = record_cost(row, prices)
            old_total += old
            new_total += new
            if new == old and price_id == row["price_id"]:
                continue
            changed.append(UsageRecord(pk=row["id"], cost_usd=new, price_id=price_id))
            if new != old:
                months.add((row["tenant_id"], month_start(row["created_at"])))
                if row["id"] <= cursor.last_id:
                    deltas.setdefault(rollup_key(row), _RollupDelta()).cost_usd += new - old
        UsageRecord.objects.bulk_update(changed, ["cost_usd", "price_id"], batch_size=500)
    _rollups_apply({key: delta for key, delta in deltas.items() if delta.cost_usd})
    closed = []
    for tenant_id, start in sorted(months, key=lambda item: (item[1], item[0])):
        invoice = (
            Invoice.objects.select_for_update()
            .select_related("tenant")
            .filter(tenant_id=tenant_id, period_start=start)
            .first()
        )
        if invoice is None:
            continue
        if invoice.status == Invoice.Status.CLOSED:
            closed.append(f"{invoice.tenant.name} {start:%Y-%m}")
        else:
            _invoice_fill(invoice)
    if closed:
        note = (
            (note + "\n" if note else "") + "Closed invoices left unchanged: " + ", ".join(closed)
        )
    recomputation = CostRecomputation.objects.create(
        window_start=window_start,
        window_end=window_end,
        model_name=model_name or "",
        records=examined,
        old_total_usd=old_total,
        new_total_usd=new_total,
        actor=actor[:150],
        note=note,
    )
    logger.warning(
        "usage costs recomputed",
        extra={
            "window_start": window_start.isoformat(),
            "window_end": window_end.isoformat(),
            "model": model_name or None,
            "records": examined,
            "old_total_usd": str(old_total),
            "new_total_usd": str(new_total),
            "actor": actor,
        },
    )
    return recomputation
