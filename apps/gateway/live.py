"""Live traffic: every finished request, shown on the admin's live page from every process.

``request_finished`` calls :func:`publish` on the hot path. It only appends to an
in-process buffer; a background task flushes the buffer every
``GATEWAY_LIVE_FLUSH_SECONDS`` with one ``group_send`` to the channel layer (Redis when
``REDIS_URL`` is set, so the page sees every process), and the request never waits on
it. The feed is a view, not a ledger: when more than ``GATEWAY_LIVE_BUFFER`` events pile
up between flushes the oldest are dropped, and a failing channel layer drops a batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from apps.gateway.pipeline import CallContext

logger = logging.getLogger("gateway.live")

GROUP = "gateway.live"
EVENT_TYPE = "live.batch"
# Events per group message: keeps one message well under channel layers' size limits.
MAX_BATCH = 500
SERVER = f"{socket.gethostname()}:{os.getpid()}"


class LivePublisher:
    def __init__(self) -> None:
        self.buffer: deque[dict[str, Any]] | None = None
        self.task: asyncio.Task | None = None
        self.dropped = 0

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event; never blocks and never raises into the request path."""
        if self.buffer is None:
            self.buffer = deque(maxlen=max(1, settings.GATEWAY_LIVE_BUFFER))
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # A synchronous caller (a management command, a Celery task): the event
            # leaves with the next flush an async request starts.
            return
        task = self.task
        if task is None or task.done() or task.get_loop() is not loop:
            self.task = loop.create_task(self._flush_loop(), name="gateway-live-flush")

    def _take(self) -> list[dict[str, Any]]:
        buffer = self.buffer
        if not buffer:
            return []
        return [buffer.popleft() for _ in range(min(len(buffer), MAX_BATCH))]

    async def _flush_loop(self) -> None:
        # Runs while there is traffic; the next publish after a quiet moment restarts it.
        interval = settings.GATEWAY_LIVE_FLUSH_SECONDS
        while self.buffer:
            await asyncio.sleep(interval)
            while events := self._take():
                await self._send(events)

    async def _send(self, events: list[dict[str, Any]]) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            await layer.group_send(GROUP, {"type": EVENT_TYPE, "events": events})
        except Exception:
            logger.warning("live traffic batch dropped", exc_info=True)


publisher = LivePublisher()


def publish_request(ctx: CallContext, row: dict[str, Any]) -> None:
    """One finished request for the live-traffic page: its usage row, minus nothing secret.

    ``row`` is what ``request_finished`` records (``accounting.usage_row``); prompts and
    answers are never part of it.
    """
    cost = row.get("cost_usd")
    publisher.publish(
        {
            "ts": time.time(),
            "server": SERVER,
            "request_id": row.get("request_id"),
            "endpoint": row.get("endpoint"),
            "tenant_id": row.get("tenant_id"),
            "tenant": ctx.key.tenant_name,
            "key_prefix": row.get("key_prefix"),
            "model": row.get("served_model") or row.get("requested_model") or None,
            "provider": row.get("provider") or None,
            "stream": bool(row.get("streamed")),
            "status": row.get("status"),
            "error_code": row.get("error_code") or None,
            "latency_ms": row.get("latency_ms"),
            "ttft_ms": row.get("ttft_ms"),
            "prompt_tokens": row.get("prompt_tokens"),
            "completion_tokens": row.get("completion_tokens"),
            "usage_estimated": bool(row.get("usage_estimated")),
            "cost_usd": format(cost, "f") if cost is not None else None,
        }
    )
