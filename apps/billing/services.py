from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import datetime
from decimal import Decimal

import httpx
from django.db import IntegrityError, transaction

from apps.billing.models import Budget, BudgetAlert
from apps.core import crypto
from apps.core.services import config_changed
from apps.keys.models import ApiKey
from apps.tenants.models import Tenant

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
