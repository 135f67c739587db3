from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from celery import shared_task

from apps.billing.services import budget_alert_raise


@shared_task(
    name="billing.budget_alert",
    ignore_result=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def budget_alert(budget_id: int, period_start: str, level: str, spent_usd: str) -> None:
    budget_alert_raise(
        budget_id=budget_id,
        period_start=datetime.fromisoformat(period_start),
        level=level,
        spent_usd=Decimal(spent_usd),
    )
