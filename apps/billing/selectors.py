from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Sum

from apps.billing.models import Budget, ModelRateLimit, UsageRecord


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
