"""A key's last-used time, kept without a database write per request.

The usage recorder already writes every request in bulk; after each batch this listener
stamps the batch's keys in one UPDATE (so last-used is at most one flush interval late).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from apps.keys.models import ApiKey


def keys_touch(rows: list[dict[str, Any]]) -> None:
    key_ids = {row["key_id"] for row in rows if row.get("key_id")}
    if key_ids:
        ApiKey.objects.filter(pk__in=key_ids).update(last_used_at=timezone.now())
