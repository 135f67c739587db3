"""Usage records as the recorder writes them: straight rows, in bulk."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from apps.billing.models import UsageRecord
from apps.keys.models import ApiKey
from apps.tenants.models import Tenant

_requests = itertools.count()


def record(
    tenant: Tenant,
    *,
    key: ApiKey | None = None,
    created_at: datetime | None = None,
    model: str = "gpt-4o-mini",
    provider: str = "fake-openai",
    status: int = 200,
    cost_usd: Decimal | str = "0",
    **fields: Any,
) -> UsageRecord:
    """An unsaved usage record; ``model`` is both requested and served unless told."""
    values: dict[str, Any] = {
        "record_id": uuid.uuid4(),
        "created_at": created_at or datetime(2025, 1, 15, 12, 30, tzinfo=UTC),
        "request_id": f"req-{next(_requests)}",
        "tenant": tenant,
        "key": key,
        "key_prefix": key.prefix if key is not None else "",
        "requested_model": model,
        "served_model": model if status < 500 else "",
        "provider": provider,
        "upstream_model": model,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "cost_usd": Decimal(str(cost_usd)),
        "latency_ms": 120.0,
        "ttft_ms": None,
        "status": status,
    }
    values.update(fields)
    return UsageRecord(**values)


def records(*items: UsageRecord) -> list[UsageRecord]:
    """Save in one bulk insert, as the recorder does; returns the rows with ids."""
    UsageRecord.objects.bulk_create(list(items))
    ids = [item.record_id for item in items]
    return list(UsageRecord.objects.filter(record_id__in=ids).order_by("id"))
