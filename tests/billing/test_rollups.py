"""rollup_update: hourly aggregates that match the records, once and only once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction

from apps.billing import tasks
from apps.billing.histograms import bucket_index, histogram_count, percentile
from apps.billing.models import RollupCursor, UsageRecord, UsageRollup
from apps.billing.services import ROLLUP_CURSOR, rollup_update
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def snapshot() -> list[tuple]:
    return list(
        UsageRollup.objects.order_by(
            "bucket", "tenant_id", "key_id", "model_name", "provider"
        ).values_list(
            "bucket",
            "tenant_id",
            "key_id",
            "key_prefix",
            "model_name",
            "provider",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "latency_ms_sum",
            "latency_histogram",
            "ttft_histogram",
        )
    )


def expected_from_records() -> dict[tuple, dict]:
    """What the rollups must say, computed independently from the raw rows."""
    expected: dict[tuple, dict] = {}
    for r in UsageRecord.objects.all():
        key = (
            r.created_at.replace(minute=0, second=0, microsecond=0),
            r.tenant_id,
            r.key_id or 0,
            r.served_model or r.requested_model,
            r.provider,
        )
        row = expected.setdefault(
            key,
            {
                "requests": 0,
                "errors": 0,
                "prompt": 0,
                "completion": 0,
                "cost": Decimal(0),
                "latency": [],
                "ttft": [],
            },
        )
        row["requests"] += 1
        row["errors"] += r.status >= 400
        row["prompt"] += r.prompt_tokens
        row["completion"] += r.completion_tokens
        row["cost"] += r.cost_usd
        row["latency"].append(r.latency_ms)
        if r.ttft_ms is not None:
            row["ttft"].append(r.ttft_ms)
    return expected


def assert_rollups_match_records() -> None:
    expected = expected_from_records()
    rollups = {
        (r.bucket, r.tenant_id, r.key_id, r.model_name, r.provider): r
        for r in UsageRollup.objects.all()
    }
    assert set(rollups) == set(expected)
    for key, want in expected.items():
        got = rollups[key]
        assert got.requests == want["requests"], key
        assert got.errors == want["errors"], key
        assert got.prompt_tokens == want["prompt"], key
        assert got.completion_tokens == want["completion"], key
        assert got.cost_usd == want["cost"], key
        assert got.latency_ms_sum == pytest.approx(sum(want["latency"]))
        assert histogram_count(got.latency_histogram) == len(want["latency"])
        assert histogram_count(got.ttft_histogram) == len(want["ttft"])
        for value in want["latency"]:
            assert got.latency_histogram[bucket_index(value)] >= 1


@pytest.fixture
def world():
    acme, beta = TenantFactory(name="acme"), TenantFactory(name="beta")
    k1, k2, kb = make_key(acme).key, make_key(acme).key, make_key(beta).key
    rows = []
    for i in range(60):
        rows.append(
            record(
                acme,
                key=k1 if i % 3 else k2,
                created_at=T0 + timedelta(minutes=3 * i),  # spans three hours
                model="gpt-4o-mini" if i % 4 else "claude-haiku",
                provider="fake-openai" if i % 4 else "fake-anthropic",
                status=200 if i % 10 else 502,
                cost_usd=Decimal("0.0000123457") * (i + 1),
                prompt_tokens=10 + i,
                completion_tokens=2 * i,
                latency_ms=40.0 + 37 * i,
                ttft_ms=None if i % 5 == 0 else 20.0 + 11 * i,
                streamed=bool(i % 2),
            )
        )
    # A request that failed before routing: no served model, no key prefix (key deleted).
    rows.append(record(beta, key=None, created_at=T0, model="unknown", status=404, served_model=""))
    rows.append(record(beta, key=kb, created_at=T0 + timedelta(minutes=5), cost_usd="0.5"))
    records(*rows)
    return acme, beta, k1, k2, kb


def test_rollups_equal_the_records(world):
    assert rollup_update() == 62
    assert_rollups_match_records()
    # Hour buckets, model as served else requested, provider kept apart.
    buckets = set(UsageRollup.objects.values_list("bucket", flat=True))
    assert buckets == {T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)}
    assert UsageRollup.objects.filter(model_name="unknown", key_id=0).exists()
    assert set(UsageRollup.objects.values_list("provider", flat=True)) == {
        "fake-openai",
        "fake-anthropic",
    }
    assert (
        RollupCursor.objects.get(name=ROLLUP_CURSOR).last_id == UsageRecord.objects.latest("id").id
    )


def test_errors_are_statuses_from_400(world):
    rollup_update()
    assert sum(UsageRollup.objects.values_list("errors", flat=True)) == 6 + 1  # 502s and a 404
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == 62


def test_running_again_changes_nothing(world):
    rollup_update()
    before = snapshot()
    assert rollup_update() == 0
    assert rollup_update(batch_size=7) == 0
    assert snapshot() == before


def test_new_records_are_added_incrementally(world):
    acme, _, k1, _, _ = world
    rollup_update()
    existing = UsageRollup.objects.get(
        bucket=T0, tenant=acme, key_id=k1.pk, model_name="gpt-4o-mini", provider="fake-openai"
    )
    records(
        record(
            acme,
            key=k1,
            created_at=T0 + timedelta(minutes=59),
            cost_usd="1.25",
            latency_ms=5000.0,
            ttft_ms=900.0,
        ),
        record(acme, key=k1, created_at=T0 + timedelta(days=1), cost_usd="0.75"),
    )
    assert rollup_update() == 2
    assert_rollups_match_records()
    existing.refresh_from_db()
    assert existing.cost_usd > Decimal("1.25")
    assert UsageRollup.objects.filter(bucket=T0 + timedelta(days=1)).count() == 1


def test_small_batches_give_the_same_rollups(world):
    assert rollup_update(batch_size=5) == 62
    small = snapshot()
    UsageRollup.objects.all().delete()
    RollupCursor.objects.all().delete()
    assert rollup_update(batch_size=1000) == 62
    assert snapshot() == small


def test_max_batches_stops_early_and_the_next_run_resumes(world):
    assert rollup_update(batch_size=10, max_batches=2) == 20
    assert RollupCursor.objects.get(name=ROLLUP_CURSOR).last_id > 0
    assert rollup_update(batch_size=10) == 42
    assert_rollups_match_records()


def test_histograms_give_percentiles_of_the_hour(world):
    acme, *_ = world
    rollup_update()
    rows = UsageRollup.objects.filter(tenant=acme, bucket=T0)
    from apps.billing.histograms import histogram_merge

    merged = histogram_merge(*(r.latency_histogram for r in rows))
    latencies = sorted(
        UsageRecord.objects.filter(
            tenant=acme, created_at__gte=T0, created_at__lt=T0 + timedelta(hours=1)
        ).values_list("latency_ms", flat=True)
    )
    p50 = percentile(merged, 0.5)
    true = latencies[len(latencies) // 2 - 1]
    index = bucket_index(true)
    from apps.billing.histograms import EDGES_MS

    assert (EDGES_MS[index - 1] if index else 0) <= p50 <= EDGES_MS[index]


def test_the_task_calls_the_service(world):
    tasks.rollups_update.apply()
    assert_rollups_match_records()
    # Beat runs it every minute: a tick with nothing new does nothing.
    tasks.rollups_update.apply()
    assert_rollups_match_records()


def test_the_beat_schedule_runs_rollups_and_invoices(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE
    tasks_scheduled = {entry["task"] for entry in schedule.values()}
    assert {
        "billing.rollups_update",
        "billing.invoices_close",
        "billing.invoices_draft",
    } <= tasks_scheduled
    from gateway_project.celery import app

    assert "billing.rollups_update" in app.tasks
    assert "billing.invoices_close" in app.tasks
    assert "billing.invoices_draft" in app.tasks


# --- concurrency ----------------------------------------------------------------------


def _in_thread(target, *args, **kwargs):
    """Run ``target`` in a thread with its own database connection; returns (thread, box)."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = target(*args, **kwargs)
        except BaseException as exc:  # reported by the test
            box["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_count_every_record_once():
    tenant = TenantFactory(name="busy")
    key = make_key(tenant).key
    records(
        *[
            record(tenant, key=key, created_at=T0 + timedelta(minutes=i), cost_usd="0.01")
            for i in range(120)
        ]
    )
    workers = [_in_thread(rollup_update, batch_size=7) for _ in range(3)]
    # More traffic arrives while they run.
    records(
        *[
            record(tenant, key=key, created_at=T0 + timedelta(minutes=i), cost_usd="0.02")
            for i in range(30)
        ]
    )
    for thread, box in workers:
        thread.join(60)
        assert "error" not in box, box
    consumed = sum(box["result"] for _, box in workers) + rollup_update()
    assert consumed == 150
    assert_rollups_match_records()


@pytest.mark.django_db(transaction=True)
def test_a_record_committed_late_with_a_lower_id_is_not_skipped():
    """PostgreSQL hands out ids before commit: a slow batch may commit id N after id N+1
    is visible. The rollup must wait for it rather than move the cursor past it."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers: ids always commit in order")
    tenant = TenantFactory(name="late")
    inserted, release = threading.Event(), threading.Event()

    def slow_batch() -> None:
        with transaction.atomic():
            records(record(tenant, created_at=T0, cost_usd="1"))
            inserted.set()
            release.wait(30)

    writer, writer_box = _in_thread(slow_batch)
    assert inserted.wait(30)
    records(record(tenant, created_at=T0, cost_usd="2"))  # a higher id, committed first
    roller, roller_box = _in_thread(rollup_update)
    time.sleep(0.5)
    assert roller.is_alive(), "the rollup must wait for the open insert"
    release.set()
    writer.join(30)
    roller.join(30)
    assert "error" not in writer_box and "error" not in roller_box, (writer_box, roller_box)
    assert roller_box["result"] == 2
    assert UsageRollup.objects.get(tenant=tenant).cost_usd == Decimal(3)
