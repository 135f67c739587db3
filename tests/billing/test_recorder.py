"""The usage recorder never blocks on a bad row and never drops one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from apps.billing.models import UsageRecord
from apps.billing.recorder import UsageRecorder
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)


def row(tenant_id: int, **extra) -> dict:
    return {
        "record_id": uuid.uuid4(),
        "created_at": datetime.now(UTC),
        "request_id": "r",
        "tenant_id": tenant_id,
        "key_id": None,
        "requested_model": "m",
        "status": 200,
        "cost_usd": Decimal("0.000001"),
        **extra,
    }


def test_rows_are_written_in_bulk_and_idempotently(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    tenant = TenantFactory()
    recorder = UsageRecorder()
    rows = [row(tenant.pk) for _ in range(3)]
    recorder._pending = list(rows)
    assert recorder.flush_sync() == 3
    recorder._pending = list(rows)  # the same batch again (a retry after an unclear failure)
    recorder.flush_sync()
    assert UsageRecord.objects.count() == 3


def test_a_rejected_row_goes_to_the_dead_letter_file_and_the_rest_are_written(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    tenant = TenantFactory()
    recorder = UsageRecorder()
    orphan = row(tenant.pk + 1000, request_id="orphan")  # its tenant is gone
    recorder._pending = [row(tenant.pk), orphan, row(tenant.pk)]
    recorder.flush_sync()
    assert UsageRecord.objects.count() == 2
    rejected = [
        orjson.loads(line) for line in (tmp_path / "usage-rejected.jsonl").read_bytes().splitlines()
    ]
    assert [r["request_id"] for r in rejected] == ["orphan"]
    assert recorder.pending() == []


def test_spilled_rows_are_imported_by_the_next_flush(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.GATEWAY_USAGE_MAX_BUFFER = 1
    tenant = TenantFactory()
    recorder = UsageRecorder()
    recorder._pending = [row(tenant.pk)]
    recorder._spill(
        [row(tenant.pk, request_id="spilled")]
    )  # what add() does when the buffer is full
    assert (tmp_path / "usage-spill.jsonl").exists()
    recorder.flush_sync()
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {"r", "spilled"}
    assert not (tmp_path / "usage-spill.jsonl").exists()
