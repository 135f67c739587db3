"""The process's in-memory view of keys and routing, refreshed by polling a change token.

A warm request touches no database: keys and models come from dictionaries. Every
``GATEWAY_CONFIG_POLL_SECONDS`` one request per process asks the database whether the
configuration token moved and reloads if it did, so admin changes (a revoked key, a
new deployment) reach every process within that interval.
"""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from apps.billing.selectors import LimitsTable, limits_table_load
from apps.core.selectors import config_token
from apps.core.services import ROUTING
from apps.guardrails.selectors import PolicyTable, policies_load
from apps.keys.selectors import KeyInfo, key_info_get
from apps.providers.selectors import RoutingTable, routing_table_load

MAX_CACHED_KEYS = 50_000
_UNSET = object()


class GatewayState:
    def __init__(self) -> None:
        self.table: RoutingTable | None = None
        self.limits = LimitsTable()
        self.policies = PolicyTable()
        self.token: object = _UNSET
        self.checked_at = 0.0
        self.keys: dict[str, KeyInfo | None] = {}

    def _refresh_sync(self) -> None:
        close_old_connections()
        token = config_token(name=ROUTING)
        if self.table is None or token != self.token:
            table = routing_table_load(default_timeout=settings.GATEWAY_UPSTREAM_TIMEOUT)
            limits = limits_table_load()
            policies = policies_load()
            self.keys = {}
            self.table, self.limits, self.policies, self.token = table, limits, policies, token

    def _key_sync(self, secret_hash: str) -> KeyInfo | None:
        close_old_connections()
        return key_info_get(secret_hash=secret_hash)

    async def routing(self) -> RoutingTable:
        now = time.monotonic()
        if self.table is None or now - self.checked_at >= settings.GATEWAY_CONFIG_POLL_SECONDS:
            # Claim the refresh before awaiting so concurrent requests keep using the
            # current table instead of all hitting the database.
            self.checked_at = now
            try:
                await sync_to_async(self._refresh_sync, thread_sensitive=True)()
            except Exception:
                self.checked_at = 0.0
                raise
        assert self.table is not None
        return self.table

    async def key(self, secret_hash: str) -> KeyInfo | None:
        await self.routing()
        try:
            return self.keys[secret_hash]
        except KeyError:
            pass
        info = await sync_to_async(self._key_sync, thread_sensitive=True)(secret_hash)
        if len(self.keys) >= MAX_CACHED_KEYS:
            self.keys.clear()
        self.keys[secret_hash] = info
        return info

    def invalidate(self) -> None:
        self.token = _UNSET
        self.checked_at = 0.0


state = GatewayState()
