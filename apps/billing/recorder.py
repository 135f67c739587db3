"""Usage records are written in bulk, off the request path, and never dropped.

A finished request appends one row to an in-process buffer (no I/O). A background task
writes the buffer with one bulk INSERT every ``GATEWAY_USAGE_FLUSH_SECONDS`` (or sooner
when ``GATEWAY_USAGE_BATCH`` rows are waiting). Rows carry a unique ``record_id``, so a
batch written twice (a retry after a timeout that did commit) is not doubled.

- Database down: rows stay buffered and are retried; the buffer is bounded by
  ``GATEWAY_USAGE_MAX_BUFFER`` rows, past which new rows are appended to a local spill
  file (``var/usage-spill.jsonl``) that the next flush imports.
- Graceful shutdown (SIGTERM): the ASGI lifespan shutdown (uvicorn) and an ``atexit``
  hook (daphne, management commands) write everything still buffered.
- Crash (SIGKILL, power loss): at most the rows of the last flush interval are lost.
- A row the database refuses (its tenant was deleted meanwhile) goes to
  ``var/usage-rejected.jsonl`` instead of blocking the rows behind it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction

logger = logging.getLogger("gateway.usage")


class UsageRecorder:
    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")
        self._listeners: list = []
        atexit.register(self.flush_sync)

    # --- producing -----------------------------------------------------------
    def add(self, row: dict[str, Any]) -> None:
        """Queue one row. Cheap: no I/O on the caller's path."""
        with self._lock:
            if len(self._pending) >= settings.GATEWAY_USAGE_MAX_BUFFER:
                self._spill([row])
                return
            self._pending.append(row)
            size = len(self._pending)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_sync()  # no event loop (a management command, a sync test)
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        if size >= settings.GATEWAY_USAGE_BATCH and self._wakeup is not None:
            self._wakeup.set()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pending)

    def on_written(self, listener) -> None:
        """Call ``listener(rows)`` in the writer thread after each committed batch."""
        self._listeners.append(listener)

    # --- writing -------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(
                    self._wakeup.wait(), timeout=settings.GATEWAY_USAGE_FLUSH_SECONDS
                )
            except TimeoutError:
                pass
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._flush_once)

    async def close(self) -> None:
        """Write everything (graceful shutdown); retries for a while if the database is down."""
        for attempt in range(20):
            await self.flush()
            if not self.pending():
                break
            await asyncio.sleep(min(0.25 * (attempt + 1), 2))
        if self._task is not None:
            self._task.cancel()

    def flush_sync(self) -> int:
        if not self._pending and not self._spill_path().exists():
            return 0
        return self._executor.submit(self._flush_once).result()

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._pending = self._pending, []
        return rows

    def _flush_once(self) -> int:
        rows = self._take() + self._read_spill()
        if not rows:
            return 0
        from apps.billing.models import UsageRecord

        try:
            close_old_connections()
            self._insert(UsageRecord, rows)
        except Exception:
            logger.exception("usage write failed; will retry", extra={"rows": len(rows)})
            with self._lock:
                self._pending[:0] = rows
                overflow = len(self._pending) - settings.GATEWAY_USAGE_MAX_BUFFER
                if overflow > 0:
                    self._spill(self._pending[-overflow:])
                    del self._pending[-overflow:]
            return 0
        for listener in self._listeners:
            try:
                listener(rows)
            except Exception:
                logger.exception("usage listener failed")
        return len(rows)

    def _insert(self, model, rows: list[dict[str, Any]]) -> None:
        """One bulk INSERT; if the batch breaks a constraint (a tenant deleted while its
        rows were buffered), rows go one by one and the rejected ones to a dead-letter file."""
        try:
            with transaction.atomic():
                model.objects.bulk_create(
                    [model(**row) for row in rows], batch_size=500, ignore_conflicts=True
                )
            return
        except IntegrityError:
            pass
        rejected = []
        for row in rows:
            try:
                with transaction.atomic():
                    model.objects.bulk_create([model(**row)], ignore_conflicts=True)
            except IntegrityError:
                rejected.append(row)
        if rejected:
            with self._spill_path().with_name("usage-rejected.jsonl").open("ab") as fh:
                for row in rejected:
                    fh.write(orjson.dumps(row, default=str) + b"\n")
            logger.error(
                "usage rows rejected by the database; kept in usage-rejected.jsonl",
                extra={"rows": len(rejected)},
            )

    # --- spill file (database unavailable for long) ---------------------------
    def _spill_path(self) -> Path:
        return Path(settings.VAR_DIR) / "usage-spill.jsonl"

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        with self._spill_path().open("ab") as fh:
            for row in rows:
                fh.write(orjson.dumps(row, default=str) + b"\n")
        logger.warning("usage buffer full: rows spilled to disk", extra={"rows": len(rows)})

    def _read_spill(self) -> list[dict[str, Any]]:
        path = self._spill_path()
        if not path.exists():
            return []
        claimed = path.with_suffix(".importing")
        path.rename(claimed)
        rows = [orjson.loads(line) for line in claimed.read_bytes().splitlines() if line.strip()]
        claimed.unlink()
        return rows


recorder = UsageRecorder()
