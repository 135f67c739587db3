"""``/ws/admin/live/``: the admin's live-traffic feed (publishing: apps/gateway/live.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from apps.core.errors import PermissionDenied
from apps.gateway import live
from apps.gateway.consumers.frames import CloseCode, dumps, error_frame
from apps.tenants.access import access_for_user


class LiveTrafficConsumer(AsyncWebsocketConsumer):
    """``/ws/admin/live/``: staff only; finished requests from every process, as they come.

    Each user sees the tenants they may read (every tenant for superusers). A page that
    stops reading is dropped after ``GATEWAY_WS_SEND_TIMEOUT``; while it lags, the channel
    layer's bounded per-channel queue drops batches rather than growing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access = None

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            exc = PermissionDenied("The live-traffic feed is for staff users.", code="staff_only")
            await self.send(text_data=dumps(error_frame(exc)))
            await self.close(CloseCode.FORBIDDEN)
            return
        if self.channel_layer is None:
            await self.close(CloseCode.INTERNAL_ERROR)
            return
        self.access = await database_sync_to_async(access_for_user)(user)
        await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.send(text_data=dumps({"type": "live.hello", "server": live.SERVER}))

    async def disconnect(self, code: int) -> None:
        if self.access is not None and self.channel_layer is not None:
            await self.channel_layer.group_discard(live.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The feed is one-way; a ping keeps proxies from closing an idle page.
        await self._send({"type": "pong"})

    async def live_batch(self, message: dict[str, Any]) -> None:
        access = self.access
        if access is None:
            return
        events = [e for e in message.get("events", ()) if access.can_read(e.get("tenant_id"))]
        if events:
            await self._send({"type": "live.batch", "events": events})

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(settings.GATEWAY_WS_SEND_TIMEOUT):
                await self.send(text_data=dumps(frame))
        except (TimeoutError, OSError, RuntimeError):
            await self.disconnect(CloseCode.SLOW_READER)
            raise StopConsumer
