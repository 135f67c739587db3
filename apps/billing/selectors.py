from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    Case,
    DecimalField,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from apps.billing.histograms import BUCKETS, histogram_empty, histogram_merge, percentile
from apps.billing.models import Budget, Invoice, ModelRateLimit, UsageRecord, UsageRollup
from apps.billing.periods import period_start
from apps.tenants.models import BudgetPeriod, Tenant


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    id: int
    tenant_id: int
    key_id: int | None
    period: str
    limit_usd: Decimal
    soft_limit_pct: int


@dataclass
class LimitsTable:
    """Budgets and per-model limits, in memory beside the routing table."""

    tenant_budgets: dict[int, list[BudgetInfo]] = field(default_factory=dict)
    key_budgets: dict[int, list[BudgetInfo]] = field(default_factory=dict)
    model_limits: dict[tuple[int, str], tuple[int | None, int | None, int | None]] = field(
        default_factory=dict
    )

    def budgets_for(self, tenant_id: int, key_id: int) -> list[BudgetInfo]:
        return self.tenant_budgets.get(tenant_id, []) + self.key_budgets.get(key_id, [])


def limits_table_load() -> LimitsTable:
    table = LimitsTable()
    for budget in Budget.objects.filter(enabled=True, tenant__is_active=True):
        info = BudgetInfo(
            id=budget.pk,
            tenant_id=budget.tenant_id,
            key_id=budget.key_id,
            period=budget.period,
            limit_usd=budget.limit_usd,
            soft_limit_pct=budget.soft_limit_pct,
        )
        if budget.key_id is None:
            table.tenant_budgets.setdefault(budget.tenant_id, []).append(info)
        else:
            table.key_budgets.setdefault(budget.key_id, []).append(info)
    for limit in ModelRateLimit.objects.all():
        table.model_limits[(limit.tenant_id, limit.model_name)] = (
            limit.rpm,
            limit.tpm,
            limit.max_concurrent,
        )
    return table


def budget_spent(*, tenant_id: int, key_id: int | None, since: datetime) -> Decimal:
    """Recorded spend since ``since``: the truth a budget counter is rebuilt from."""
    qs = UsageRecord.objects.filter(tenant_id=tenant_id, created_at__gte=since)
    if key_id is not None:
        qs = qs.filter(key_id=key_id)
    return qs.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


# --- usage ---------------------------------------------------------------------------


def usage_list(
    *,
    tenant_ids: list[int] | None,
    start: datetime | None = None,
    end: datetime | None = None,
    model: str | None = None,
    key_id: int | None = None,
    status: int | str | None = None,
) -> QuerySet[UsageRecord]:
    """Usage records of the given tenants (``None``: all), newest first.

    ``model`` matches the model as served or as requested; ``status`` is an HTTP
    status, ``"error"`` (400 and above) or ``"success"``.
    """
    qs = UsageRecord.objects.all()
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    if start is not None:
        qs = qs.filter(created_at__gte=start)
    if end is not None:
        qs = qs.filter(created_at__lt=end)
    if model:
        qs = qs.filter(Q(served_model=model) | Q(served_model="", requested_model=model))
    if key_id is not None:
        qs = qs.filter(key_id=key_id)
    if status == "error":
        qs = qs.filter(status__gte=400)
    elif status == "success":
        qs = qs.filter(status__lt=400)
    elif status is not None:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-id")


def rollup_list(
    *,
    tenant_ids: list[int] | None,
    start: datetime | None = None,
    end: datetime | None = None,
    model: str | None = None,
    key_id: int | None = None,
) -> QuerySet[UsageRollup]:
    """Hourly rollups whose hour starts in ``[start, end)``; ``start`` is taken back to
    the start of its hour."""
    qs = UsageRollup.objects.all()
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    if start is not None:
        qs = qs.filter(bucket__gte=start.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
    if end is not None:
        qs = qs.filter(bucket__lt=end)
    if model:
        qs = qs.filter(model_name=model)
    if key_id is not None:
        qs = qs.filter(key_id=key_id)
    return qs


SUMMARY_GROUPS = ("day", "model", "key")


def usage_summary(*, rollups: QuerySet[UsageRollup], group_by: str) -> list[dict[str, Any]]:
    """Requests, errors, tokens and cost per day, model or key, from the rollups."""
    if group_by not in SUMMARY_GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(SUMMARY_GROUPS)}")
    totals = {
        "requests": Sum("requests"),
        "errors": Sum("errors"),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "cost_usd": Sum("cost_usd"),
    }
    rollups = rollups.order_by()
    if group_by == "day":
        rows = (
            rollups.annotate(day=TruncDate("bucket", tzinfo=UTC))
            .values("day")
            .annotate(**totals)
            .order_by("day")
        )
    elif group_by == "model":
        rows = rollups.values("model_name").annotate(**totals).order_by("-cost_usd", "model_name")
    else:
        rows = (
            rollups.values("key_id")
            .annotate(key_prefix=Max("key_prefix"), **totals)
            .order_by("-cost_usd", "key_id")
        )
    result = []
    for row in rows:
        row = dict(row)
        if "model_name" in row:
            row["model"] = row.pop("model_name")
        if "key_id" in row:
            row["key"] = row.pop("key_id") or None  # rollups say 0 for "no key"
        row["cost_usd"] = row["cost_usd"] or Decimal(0)
        row["total_tokens"] = (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0)
        result.append(row)
    return result


# --- dashboards ----------------------------------------------------------------------

TOP_SERIES = 8  # lines per chart; the rest add up as "other"


@dataclass
class Series:
    label: str
    values: list[float]


@dataclass
class Dashboard:
    """What the admin dashboards draw; built from rollups only."""

    start: datetime
    end: datetime
    grain: str
    points: list[datetime]
    spend_by_model: list[Series]
    spend_by_provider: list[Series]
    spend_by_tenant: list[Series]
    requests: list[int]
    errors: list[int]
    latency_p50: list[float | None]
    latency_p95: list[float | None]
    ttft_p50: list[float | None]
    ttft_p95: list[float | None]
    totals: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        fmt = "%Y-%m-%d %H:00" if self.grain == "hour" else "%Y-%m-%d"
        return [point.strftime(fmt) for point in self.points]

    def chart_data(self) -> dict[str, Any]:
        """JSON for the charts (floats are fine for drawing; totals stay decimal)."""

        def series(items: list[Series]) -> list[dict[str, Any]]:
            return [{"label": s.label, "data": s.values} for s in items]

        rates = [
            round(100 * e / r, 2) if r else None
            for r, e in zip(self.requests, self.errors, strict=True)
        ]
        return {
            "labels": self.labels,
            "spend_by_model": series(self.spend_by_model),
            "spend_by_provider": series(self.spend_by_provider),
            "spend_by_tenant": series(self.spend_by_tenant),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": rates,
            "latency_p50": self.latency_p50,
            "latency_p95": self.latency_p95,
            "ttft_p50": self.ttft_p50,
            "ttft_p95": self.ttft_p95,
        }


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):  # raw SQL on SQLite
        value = datetime.fromisoformat(value)
    if timezone.is_naive(value):
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _grain_point(moment: datetime, grain: str) -> datetime:
    moment = _as_utc(moment).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if grain == "day" else moment


def _grain_points(start: datetime, end: datetime, grain: str) -> list[datetime]:
    step = timedelta(days=1) if grain == "day" else timedelta(hours=1)
    point, points = _grain_point(start, grain), []
    while point < end:
        points.append(point)
        point += step
    return points


def histograms_by_hour(rollups: QuerySet[UsageRollup], field: str) -> dict[datetime, list[int]]:
    """The rollups' histograms (``latency_histogram`` or ``ttft_histogram``) summed per hour.

    The database adds them up bucket by bucket (``json_each`` on SQLite,
    ``jsonb_array_elements_text`` on PostgreSQL), so only hours x buckets numbers
    travel, however many rollup rows there are; other databases sum in Python.
    """
    if field not in ("latency_histogram", "ttft_histogram"):
        raise ValueError(field)
    inner, params = rollups.order_by().values("bucket", field).query.sql_with_params()
    if connection.vendor == "sqlite":
        sql = (
            f"SELECT sub.bucket, CAST(je.key AS INTEGER), SUM(je.value) FROM ({inner}) sub, "
            f"json_each(sub.{field}) je GROUP BY sub.bucket, je.key"
        )
    elif connection.vendor == "postgresql":
        sql = (
            f"SELECT sub.bucket, je.idx - 1, SUM(je.value::bigint) FROM ({inner}) sub "
            f"CROSS JOIN LATERAL jsonb_array_elements_text(sub.{field}) "
            "WITH ORDINALITY AS je(value, idx) GROUP BY sub.bucket, je.idx"
        )
    else:
        merged: dict[datetime, list[int]] = {}
        for bucket, histogram in rollups.values_list("bucket", field).iterator(chunk_size=2000):
            hour = _as_utc(bucket)
            merged[hour] = histogram_merge(merged.get(hour), histogram)
        return merged
    merged = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for bucket, index, count in cursor.fetchall():
            hour = _as_utc(bucket)
            histogram = merged.setdefault(hour, histogram_empty())
            if 0 <= int(index) < BUCKETS:
                histogram[int(index)] += int(count or 0)
    return merged


def _spend_series(
    rollups: QuerySet[UsageRollup],
    dimension: str,
    points: list[datetime],
    grain: str,
    label: Callable[[Any], str] = str,
) -> list[Series]:
    index = {point: i for i, point in enumerate(points)}
    by_name: dict[Any, list[float]] = {}
    for row in rollups.order_by().values("bucket", dimension).annotate(cost=Sum("cost_usd")):
        values = by_name.setdefault(row[dimension], [0.0] * len(points))
        i = index.get(_grain_point(row["bucket"], grain))
        if i is not None:
            values[i] += float(row["cost"] or 0)
    ranked = sorted(by_name.items(), key=lambda item: -sum(item[1]))
    series = [Series(label(name) or "(none)", values) for name, values in ranked[:TOP_SERIES]]
    rest = ranked[TOP_SERIES:]
    if rest:
        other = [sum(values[i] for _, values in rest) for i in range(len(points))]
        series.append(Series(f"other ({len(rest)})", other))
    for s in series:
        s.values = [round(v, 6) for v in s.values]
    return series


def _pct(histogram: list[int] | None, q: float) -> float | None:
    value = percentile(histogram, q)
    return None if value is None else round(value, 1)


def dashboard_build(*, tenant_ids: list[int] | None, start: datetime, end: datetime) -> Dashboard:
    """Spend, traffic and latency between ``start`` and ``end``, from rollups only (never
    usage records): hourly points for ranges up to three days, daily points beyond."""
    grain = "hour" if end - start <= timedelta(days=3) else "day"
    points = _grain_points(start, end, grain)
    rollups = rollup_list(tenant_ids=tenant_ids, start=start, end=end)
    index = {point: i for i, point in enumerate(points)}

    requests, errors = [0] * len(points), [0] * len(points)
    totals: dict[str, Any] = {
        "requests": 0,
        "errors": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": Decimal(0),
    }
    traffic = (
        rollups.order_by()
        .values("bucket")
        .annotate(
            r=Sum("requests"),
            e=Sum("errors"),
            p=Sum("prompt_tokens"),
            c=Sum("completion_tokens"),
            cost=Sum("cost_usd"),
        )
    )
    for row in traffic:
        i = index.get(_grain_point(row["bucket"], grain))
        if i is not None:
            requests[i] += row["r"] or 0
            errors[i] += row["e"] or 0
        totals["requests"] += row["r"] or 0
        totals["errors"] += row["e"] or 0
        totals["prompt_tokens"] += row["p"] or 0
        totals["completion_tokens"] += row["c"] or 0
        totals["cost_usd"] += row["cost"] or Decimal(0)
    totals["error_rate"] = (
        round(100 * totals["errors"] / totals["requests"], 2) if totals["requests"] else None
    )

    percentiles: dict[str, list[float | None]] = {}
    for column, name in (("latency_histogram", "latency"), ("ttft_histogram", "ttft")):
        per_point: dict[int, list[int]] = {}
        for hour, histogram in histograms_by_hour(rollups, column).items():
            i = index.get(_grain_point(hour, grain))
            if i is not None:
                per_point[i] = histogram_merge(per_point.get(i), histogram)
        overall = histogram_merge(*per_point.values())
        for q, suffix in ((0.5, "p50"), (0.95, "p95")):
            percentiles[f"{name}_{suffix}"] = [
                _pct(per_point.get(i), q) for i in range(len(points))
            ]
            totals[f"{name}_{suffix}"] = _pct(overall, q)

    tenants = (
        Tenant.objects.all() if tenant_ids is None else Tenant.objects.filter(pk__in=tenant_ids)
    )
    tenant_names = dict(tenants.values_list("pk", "name"))
    return Dashboard(
        start=start,
        end=end,
        grain=grain,
        points=points,
        spend_by_model=_spend_series(rollups, "model_name", points, grain),
        spend_by_provider=_spend_series(rollups, "provider", points, grain),
        spend_by_tenant=_spend_series(
            rollups,
            "tenant_id",
            points,
            grain,
            label=lambda pk: tenant_names.get(pk, f"tenant {pk}"),
        ),
        requests=requests,
        errors=errors,
        **percentiles,
        totals=totals,
    )


def top_keys(*, rollups: QuerySet[UsageRollup]) -> QuerySet[UsageRollup]:
    """Keys by spend (then requests) over the rollups given; rows are dicts."""
    return (
        rollups.order_by()
        .values("key_id", "tenant_id")
        .annotate(
            key_prefix=Max("key_prefix"),
            requests=Sum("requests"),
            errors=Sum("errors"),
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            cost=Sum("cost_usd"),
        )
        .order_by("-cost", "-requests", "key_id")
    )


# --- budgets and invoices -------------------------------------------------------------


def budget_list(*, tenant_ids: list[int] | None) -> QuerySet[Budget]:
    qs = Budget.objects.select_related("tenant", "key")
    return qs if tenant_ids is None else qs.filter(tenant_id__in=tenant_ids)


def invoice_list(*, tenant_ids: list[int] | None) -> QuerySet[Invoice]:
    qs = Invoice.objects.select_related("tenant").prefetch_related("lines")
    return qs if tenant_ids is None else qs.filter(tenant_id__in=tenant_ids)


def _rollup_spend_since(since: datetime, *, per_key: bool) -> Subquery:
    rollups = UsageRollup.objects.filter(tenant_id=OuterRef("tenant_id"), bucket__gte=since)
    if per_key:
        rollups = rollups.filter(key_id=OuterRef("key_id"))
    total = rollups.order_by().values("tenant_id").annotate(total=Sum("cost_usd")).values("total")
    return Subquery(total, output_field=DecimalField(max_digits=20, decimal_places=10))


def budgets_with_spend(budgets: QuerySet[Budget], *, now: datetime | None = None) -> QuerySet:
    """Annotate ``spent_usd``: the spend of each budget's current period, from rollups
    (budget periods start on the hour, so hourly rollups cover them exactly; the last
    minute may still be on its way)."""
    now = now or timezone.now()
    whens = []
    for period in BudgetPeriod.values:
        since = period_start(period, now)
        whens += [
            When(period=period, key__isnull=True, then=_rollup_spend_since(since, per_key=False)),
            When(period=period, key__isnull=False, then=_rollup_spend_since(since, per_key=True)),
        ]
    zero = Value(Decimal(0), output_field=DecimalField(max_digits=20, decimal_places=10))
    return budgets.annotate(
        spent_usd=Coalesce(
            Case(*whens, output_field=DecimalField(max_digits=20, decimal_places=10)), zero
        )
    )
