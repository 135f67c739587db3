"""Circuit breakers per deployment, and passive health from real traffic.

closed ─(N failures within the window)→ open ─(cool-down over)→ half-open: one request
(a live request or the periodic probe) is let through; success closes the circuit,
failure opens it again.

Each process decides from a local view of open circuits, so the request path pays
nothing while all is well. Failures are reported at once; with ``REDIS_URL`` the open
circuits live in Redis (shared by every process) and each process refreshes its view
every ``GATEWAY_CIRCUIT_SYNC_SECONDS``; the half-open probe is claimed with SET NX, so
only one process probes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from django.conf import settings

OPEN_KEY = "gw:cb:open"

FAILURE_LUA = """
local fails_key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local member = ARGV[5]
local dep = ARGV[6]
local probe = ARGV[7] == '1'
redis.call('ZADD', fails_key, now, member)
redis.call('ZREMRANGEBYSCORE', fails_key, '-inf', now - window)
redis.call('EXPIRE', fails_key, math.ceil(window) + 1)
if probe or redis.call('ZCARD', fails_key) >= threshold then
  redis.call('HSET', KEYS[2], dep, now + cooldown)
  return tostring(now + cooldown)
end
return '0'
"""


@dataclass
class DeploymentStats:
    """Moving averages of one deployment's recent traffic, in this process."""

    inflight: int = 0
    latency_ms: float | None = None
    error_rate: float = 0.0

    def observe(self, *, ok: bool, latency_ms: float, alpha: float = 0.2) -> None:
        self.latency_ms = (
            latency_ms
            if self.latency_ms is None
            else (1 - alpha) * self.latency_ms + alpha * latency_ms
        )
        self.error_rate = (1 - alpha) * self.error_rate + alpha * (0.0 if ok else 1.0)


@dataclass
class Breaker:
    open_until: dict[int, float] = field(default_factory=dict)
    failures: dict[int, list[float]] = field(default_factory=dict)
    probing: dict[int, float] = field(default_factory=dict)
    stats: dict[int, DeploymentStats] = field(default_factory=dict)
    synced_at: float = 0.0
    _redis: dict = field(default_factory=dict)

    # --- settings -----------------------------------------------------------------
    @staticmethod
    def _cfg() -> tuple[int, float, float]:
        return (
            settings.GATEWAY_CIRCUIT_FAILURES,
            settings.GATEWAY_CIRCUIT_WINDOW_SECONDS,
            settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS,
        )

    def stat(self, dep: int) -> DeploymentStats:
        stats = self.stats.get(dep)
        if stats is None:
            stats = self.stats[dep] = DeploymentStats()
        return stats

    def _client(self):
        if not settings.REDIS_URL:
            return None
        loop = asyncio.get_running_loop()
        client = self._redis.get(loop)
        if client is None:
            import redis.asyncio as redis

            for old in [lp for lp in self._redis if lp.is_closed()]:
                del self._redis[old]
            client = redis.from_url(settings.REDIS_URL, decode_responses=True)
            client.failure_script = client.register_script(FAILURE_LUA)
            self._redis[loop] = client
        return client

    # --- the request path -------------------------------------------------------
    async def sync(self) -> None:
        """Refresh the local view of open circuits from Redis (at most every few 100 ms)."""
        now = time.monotonic()
        if now - self.synced_at < settings.GATEWAY_CIRCUIT_SYNC_SECONDS:
            return
        self.synced_at = now
        client = self._client()
        if client is None:
            return
        try:
            shared = await client.hgetall(OPEN_KEY)
        except Exception:
            return  # Redis trouble must not stop traffic: keep the local view
        self.open_until = {int(k): float(v) for k, v in shared.items()}

    def state(self, dep: int) -> str:
        until = self.open_until.get(dep)
        if until is None:
            return "closed"
        return "open" if time.time() < until else "half_open"

    async def allow(self, dep: int) -> bool:
        """May a request go to ``dep`` now? In half-open state, only the one probe may."""
        state = self.state(dep)
        if state == "closed":
            return True
        if state == "open":
            return False
        return await self._claim_probe(dep)

    async def _claim_probe(self, dep: int) -> bool:
        _, _, cooldown = self._cfg()
        client = self._client()
        if client is None:
            claimed_at = self.probing.get(dep)
            if claimed_at is not None and time.time() - claimed_at < cooldown:
                return False
            self.probing[dep] = time.time()
            return True
        try:
            return bool(
                await client.set(f"gw:cb:probe:{dep}", "1", nx=True, ex=max(1, int(cooldown)))
            )
        except Exception:
            return False

    async def success(self, dep: int) -> None:
        if dep in self.open_until:
            await self.close(dep)

    async def failure(self, dep: int) -> None:
        threshold, window, cooldown = self._cfg()
        now = time.time()
        probe = self.state(dep) == "half_open"
        client = self._client()
        if client is None:
            recent = [t for t in self.failures.get(dep, []) if t > now - window] + [now]
            self.failures[dep] = recent
            if probe or len(recent) >= threshold:
                self.open_until[dep] = now + cooldown
                self.probing.pop(dep, None)
            return
        try:
            until = float(
                await client.failure_script(
                    keys=[f"gw:cb:f:{dep}", OPEN_KEY],
                    args=[
                        now,
                        window,
                        threshold,
                        cooldown,
                        f"{now}:{id(object())}",
                        dep,
                        "1" if probe else "0",
                    ],
                )
            )
        except Exception:
            return
        if until:
            self.open_until[dep] = until
            await client.delete(f"gw:cb:probe:{dep}")

    async def close(self, dep: int) -> None:
        self.open_until.pop(dep, None)
        self.failures.pop(dep, None)
        self.probing.pop(dep, None)
        client = self._client()
        if client is not None:
            try:
                await client.hdel(OPEN_KEY, dep)
                await client.delete(f"gw:cb:f:{dep}", f"gw:cb:probe:{dep}")
            except Exception:
                pass


breaker = Breaker()


def circuit_states_sync(deployment_ids: list[int]) -> dict[int, str]:
    """Circuit states for the admin and /readyz (outside the event loop)."""
    now = time.time()
    if settings.REDIS_URL:
        import redis

        try:
            shared = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True).hgetall(
                OPEN_KEY
            )
        except Exception:
            shared = {}
        open_until = {int(k): float(v) for k, v in shared.items()}
    else:
        open_until = dict(breaker.open_until)
    return {
        dep: (
            "closed" if dep not in open_until else "open" if now < open_until[dep] else "half_open"
        )
        for dep in deployment_ids
    }


def circuits_close_sync(deployment_ids: list[int]) -> None:
    """Close circuits after a successful health probe (outside the event loop)."""
    for dep in deployment_ids:
        breaker.open_until.pop(dep, None)
        breaker.failures.pop(dep, None)
    if settings.REDIS_URL and deployment_ids:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        client.hdel(OPEN_KEY, *deployment_ids)
        client.delete(
            *[f"gw:cb:f:{d}" for d in deployment_ids], *[f"gw:cb:probe:{d}" for d in deployment_ids]
        )
