"""Budget periods: when the current one started, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apps.tenants.models import BudgetPeriod

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(period: str, now: datetime) -> datetime:
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == BudgetPeriod.DAILY:
        return day
    if period == BudgetPeriod.WEEKLY:
        return day - timedelta(days=day.weekday())
    if period == BudgetPeriod.MONTHLY:
        return day.replace(day=1)
    return EPOCH


def period_end(period: str, start: datetime) -> datetime | None:
    if period == BudgetPeriod.DAILY:
        return start + timedelta(days=1)
    if period == BudgetPeriod.WEEKLY:
        return start + timedelta(days=7)
    if period == BudgetPeriod.MONTHLY:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return None
