from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from celery import shared_task
from django.db import OperationalError

from apps.billing.services import (
    budget_alert_raise,
    invoices_close_due,
    invoices_draft_current,
    rollup_update,
)


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


@shared_task(name="billing.rollups_update", ignore_result=True)
def rollups_update() -> int:
    """Fold new usage records into the hourly rollups (beat: every minute).

    Idempotent and safe to overlap: a second run waits on the cursor and finds less to do.
    """
    return rollup_update()


@shared_task(
    name="billing.invoices_close",
    ignore_result=True,
    autoretry_for=(OperationalError, OSError),
    retry_backoff=True,
    max_retries=5,
)
def invoices_close() -> int:
    """Close the invoices of the month that ended (beat: daily); closing twice is a no-op."""
    return len(invoices_close_due())


@shared_task(
    name="billing.invoices_draft",
    ignore_result=True,
    autoretry_for=(OperationalError, OSError),
    retry_backoff=True,
    max_retries=5,
)
def invoices_draft() -> int:
    """Rebuild the current month's draft invoices (beat: daily)."""
    return len(invoices_draft_current())
