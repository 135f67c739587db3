"""Admission control: rate limits and budget reservations, atomically, in one round trip.

Counters are kept per scope (a key, a tenant, a model within a tenant):
- requests per minute and tokens per minute: one-second buckets over a sliding 60 s window;
- concurrent requests: a sorted set of in-flight request ids (entries expire after
  ``CONCURRENCY_TTL`` so a crashed process cannot leak slots for long);
- budgets: ``spent`` and ``reserved`` in nano-dollars per budget and period. A request
  reserves the most it can cost; finishing settles to the actual cost. A budget counter
  missing from the store (cold start, expiry) is rebuilt from recorded usage.

With ``REDIS_URL`` one Lua script admits (and another settles) in one round trip, shared
by every gateway process; without it the same rules run in process memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from django.conf import settings

from apps.billing.periods import period_end, period_start
from apps.billing.selectors import BudgetInfo
from apps.core.errors import BudgetExceeded, RateLimited

NANO = Decimal(1_000_000_000)
WINDOW = 60
CONCURRENCY_TTL = 900


def to_nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True, slots=True)
class Counter:
    kind: str  # "r" requests/min, "t" tokens/min, "c" concurrent
    scope: str
    limit: int
    label: str  # key | tenant | model

    @property
    def store_key(self) -> str:
        return f"gw:rl:{self.kind}:{self.scope}"


@dataclass(frozen=True, slots=True)
class Charge:
    budget: BudgetInfo
    store_key: str
    amount: int  # nano-dollars reserved
    ttl: int
    reset_at: float | None


@dataclass(slots=True)
class Admission:
    member: str
    counters: list[Counter] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget whose spend moved from ``before`` to ``after`` (nano-dollars) when settling."""

    budget: BudgetInfo
    period_start: datetime
    before: int
    after: int


ADMIT_LUA = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local n = tonumber(ARGV[3])
local pos = 4
local remaining = {}
local window_start = now - 59
for i = 1, n do
  local kind = ARGV[pos]
  local limit = tonumber(ARGV[pos + 1])
  pos = pos + 2
  local key = KEYS[i]
  if kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - __TTL__)
    local used = redis.call('ZCARD', key)
    if used >= limit then return {0, i, 1} end
    remaining[i] = limit - used - 1
  else
    local fields = redis.call('HGETALL', key)
    local used = 0
    local oldest = now
    for j = 1, #fields, 2 do
      local sec = tonumber(fields[j])
      if sec < window_start then
        redis.call('HDEL', key, fields[j])
      else
        used = used + tonumber(fields[j + 1])
        if sec < oldest then oldest = sec end
      end
    end
    if kind == 'r' then
      if used + 1 > limit then return {0, i, oldest + 60 - now} end
      remaining[i] = limit - used - 1
    else
      if used >= limit then return {0, i, oldest + 60 - now} end
      remaining[i] = limit - used
    end
  end
end
local nb = tonumber(ARGV[pos])
pos = pos + 1
for b = 1, nb do
  local key = KEYS[n + b]
  local limit = tonumber(ARGV[pos])
  local amount = tonumber(ARGV[pos + 1])
  pos = pos + 3
  local spent = redis.call('HGET', key, 'spent')
  if not spent then return {-1, b} end
  local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
  if tonumber(spent) + reserved + amount > limit then return {0, n + b, 0} end
end
pos = 4
for i = 1, n do
  local kind = ARGV[pos]
  pos = pos + 2
  if kind == 'c' then
    redis.call('ZADD', KEYS[i], now, member)
    redis.call('EXPIRE', KEYS[i], __TTL__)
  elseif kind == 'r' then
    redis.call('HINCRBY', KEYS[i], now, 1)
    redis.call('EXPIRE', KEYS[i], 120)
  end
end
pos = pos + 1
for b = 1, nb do
  local amount = tonumber(ARGV[pos + 1])
  local ttl = tonumber(ARGV[pos + 2])
  pos = pos + 3
  redis.call('HINCRBY', KEYS[n + b], 'reserved', amount)
  if ttl > 0 then redis.call('EXPIRE', KEYS[n + b], ttl) end
end
local out = {1}
for i = 1, n do out[i + 1] = remaining[i] end
return out
""".replace("__TTL__", str(CONCURRENCY_TTL))

SETTLE_LUA = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local tokens = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local pos = 5
for i = 1, n do
  local kind = ARGV[pos]
  pos = pos + 1
  if kind == 'c' then
    redis.call('ZREM', KEYS[i], member)
  elseif kind == 't' and tokens > 0 then
    redis.call('HINCRBY', KEYS[i], now, tokens)
    redis.call('EXPIRE', KEYS[i], 120)
  end
end
local nb = tonumber(ARGV[pos])
pos = pos + 1
local out = {}
for b = 1, nb do
  local key = KEYS[n + b]
  local reserved = tonumber(ARGV[pos])
  local actual = tonumber(ARGV[pos + 1])
  pos = pos + 2
  redis.call('HINCRBY', key, 'reserved', -reserved)
  local before = tonumber(redis.call('HGET', key, 'spent') or '0')
  local after = redis.call('HINCRBY', key, 'spent', actual)
  out[b * 2 - 1] = before
  out[b * 2] = after
end
return out
"""


class MemoryStore:
    """The same rules in process memory (one process: the embedded default)."""

    def __init__(self) -> None:
        self.windows: dict[str, dict[int, int]] = {}
        self.inflight: dict[str, dict[str, int]] = {}
        self.budgets: dict[str, list[int]] = {}

    def _used(self, key: str, now: int) -> tuple[int, int]:
        buckets = self.windows.setdefault(key, {})
        for sec in [s for s in buckets if s < now - 59]:
            del buckets[sec]
        return sum(buckets.values()), min(buckets, default=now)

    async def admit(
        self, now: int, member: str, counters: list[Counter], charges: list[Charge]
    ) -> list[int]:
        remaining: list[int] = []
        for i, c in enumerate(counters, start=1):
            key = c.store_key
            if c.kind == "c":
                slots = self.inflight.setdefault(key, {})
                for m in [m for m, t in slots.items() if t < now - CONCURRENCY_TTL]:
                    del slots[m]
                if len(slots) >= c.limit:
                    return [0, i, 1]
                remaining.append(c.limit - len(slots) - 1)
                continue
            used, oldest = self._used(key, now)
            need = 1 if c.kind == "r" else 0
            if used + need > c.limit or (c.kind == "t" and used >= c.limit):
                return [0, i, oldest + 60 - now]
            remaining.append(c.limit - used - need)
        for b, charge in enumerate(charges, start=1):
            state = self.budgets.get(charge.store_key)
            if state is None:
                return [-1, b]
            if state[0] + state[1] + charge.amount > to_nano(charge.budget.limit_usd):
                return [0, len(counters) + b, 0]
        for c in counters:
            if c.kind == "c":
                self.inflight[c.store_key][member] = now
            elif c.kind == "r":
                buckets = self.windows.setdefault(c.store_key, {})
                buckets[now] = buckets.get(now, 0) + 1
        for charge in charges:
            self.budgets[charge.store_key][1] += charge.amount
        return [1, *remaining]

    async def settle(
        self,
        now: int,
        member: str,
        tokens: int,
        counters: list[Counter],
        charges: list[tuple[Charge, int]],
    ) -> list[int]:
        for c in counters:
            if c.kind == "c":
                self.inflight.get(c.store_key, {}).pop(member, None)
            elif c.kind == "t" and tokens > 0:
                buckets = self.windows.setdefault(c.store_key, {})
                buckets[now] = buckets.get(now, 0) + tokens
        out: list[int] = []
        for charge, actual in charges:
            state = self.budgets.setdefault(charge.store_key, [0, 0])
            state[1] -= charge.amount
            before = state[0]
            state[0] += actual
            out.extend([before, state[0]])
        return out

    async def init_budget(self, key: str, spent: int, ttl: int) -> None:
        self.budgets.setdefault(key, [spent, 0])

    async def reset(self) -> None:
        self.windows.clear()
        self.inflight.clear()
        self.budgets.clear()


class RedisStore:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._url = url
        self._redis = redis
        self._clients: dict[asyncio.AbstractEventLoop, object] = {}

    def _client(self):
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old]
            client = self._redis.from_url(
                self._url, decode_responses=True, health_check_interval=30
            )
            client.admit_script = client.register_script(ADMIT_LUA)
            client.settle_script = client.register_script(SETTLE_LUA)
            self._clients[loop] = client
        return client

    async def admit(
        self, now: int, member: str, counters: list[Counter], charges: list[Charge]
    ) -> list[int]:
        client = self._client()
        args: list[object] = [now, member, len(counters)]
        for c in counters:
            args.extend([c.kind, c.limit])
        args.append(len(charges))
        for charge in charges:
            args.extend([to_nano(charge.budget.limit_usd), charge.amount, charge.ttl])
        keys = [c.store_key for c in counters] + [ch.store_key for ch in charges]
        return [int(v) for v in await client.admit_script(keys=keys, args=args)]

    async def settle(
        self,
        now: int,
        member: str,
        tokens: int,
        counters: list[Counter],
        charges: list[tuple[Charge, int]],
    ) -> list[int]:
        client = self._client()
        args: list[object] = [
            now,
            member,
            tokens,
            len(counters),
            *[c.kind for c in counters],
            len(charges),
        ]
        for charge, actual in charges:
            args.extend([charge.amount, actual])
        keys = [c.store_key for c in counters] + [ch.store_key for ch, _ in charges]
        return [int(v) for v in await client.settle_script(keys=keys, args=args)]

    async def init_budget(self, key: str, spent: int, ttl: int) -> None:
        client = self._client()
        await client.hsetnx(key, "spent", spent)
        if ttl > 0:
            await client.expire(key, ttl)

    async def reset(self) -> None:
        client = self._client()
        async for key in client.scan_iter(match="gw:rl:*"):
            await client.delete(key)
        async for key in client.scan_iter(match="gw:budget:*"):
            await client.delete(key)


def make_store() -> MemoryStore | RedisStore:
    url = getattr(settings, "GATEWAY_LIMITS_REDIS_URL", "") or settings.REDIS_URL
    return RedisStore(url) if url else MemoryStore()


def counters_for(
    key, model_name: str, model_limits: tuple[int | None, int | None, int | None] | None
) -> list[Counter]:
    """Every limit that applies to one request: the key's, the tenant's, the tenant's model's."""
    counters: list[Counter] = []
    scopes = [
        ("key", f"k{key.id}", key.rpm, key.tpm, key.max_concurrent),
        ("tenant", f"t{key.tenant_id}", key.tenant_rpm, key.tenant_tpm, key.tenant_max_concurrent),
    ]
    if model_limits is not None:
        scopes.append(("model", f"t{key.tenant_id}:m:{model_name}", *model_limits))
    for label, scope, rpm, tpm, concurrent in scopes:
        if rpm:
            counters.append(Counter("r", scope, rpm, label))
        if tpm:
            counters.append(Counter("t", scope, tpm, label))
        if concurrent:
            counters.append(Counter("c", scope, concurrent, label))
    return counters


def charges_for(budgets: list[BudgetInfo], amount_usd: Decimal, now: datetime) -> list[Charge]:
    charges = []
    for budget in budgets:
        start = period_start(budget.period, now)
        end = period_end(budget.period, start)
        ttl = int((end - now).total_seconds()) + 86_400 if end else 0
        charges.append(
            Charge(
                budget=budget,
                store_key=f"gw:budget:{budget.id}:{int(start.timestamp())}",
                amount=to_nano(amount_usd),
                ttl=ttl,
                reset_at=end.timestamp() if end else None,
            )
        )
    return charges


def rate_headers(counters: list[Counter], remaining: list[int]) -> dict[str, str]:
    """The tightest request and token limits, as OpenAI names the headers."""
    headers: dict[str, str] = {}
    for kind, name in (("r", "requests"), ("t", "tokens")):
        pairs = [(rem, c) for c, rem in zip(counters, remaining, strict=False) if c.kind == kind]
        if pairs:
            rem, counter = min(pairs, key=lambda p: p[0])
            headers[f"x-ratelimit-limit-{name}"] = str(counter.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, rem))
    return headers


class Admitter:
    """Admits a request against its limits and budgets, and settles it afterwards."""

    def __init__(self) -> None:
        self.store: MemoryStore | RedisStore | None = None
        self.spent_loader = None  # async (budget, since) -> Decimal; set by the gateway

    def _store(self) -> MemoryStore | RedisStore:
        if self.store is None:
            self.store = make_store()
        return self.store

    async def admit(
        self,
        *,
        member: str,
        counters: list[Counter],
        budgets: list[BudgetInfo],
        reserve_usd: Decimal,
    ) -> Admission:
        store = self._store()
        now_dt = datetime.now(UTC)
        charges = charges_for(budgets, reserve_usd, now_dt)
        admission = Admission(member=member, counters=counters, charges=charges)
        if not counters and not charges:
            return admission
        for _ in range(len(charges) + 1):
            result = await store.admit(int(time.time()), member, counters, charges)
            if result[0] != -1:
                break
            charge = charges[result[1] - 1]
            since = datetime.fromtimestamp(int(charge.store_key.rsplit(":", 1)[1]), UTC)
            spent = (
                await self.spent_loader(charge.budget, since) if self.spent_loader else Decimal(0)
            )
            await store.init_budget(charge.store_key, to_nano(spent), charge.ttl)
        if result[0] == 1:
            admission.headers = rate_headers(counters, result[1:])
            return admission
        index, retry_after = result[1], result[2]
        if index > len(counters):
            charge = charges[index - len(counters) - 1]
            owner = "key" if charge.budget.key_id else "tenant"
            reset = math.ceil(charge.reset_at - time.time()) if charge.reset_at else None
            raise BudgetExceeded(
                f"The {owner}'s {charge.budget.period} budget of ${charge.budget.limit_usd} is exhausted.",
                headers={"retry-after": str(reset)} if reset else {},
            )
        counter = counters[index - 1]
        what = {"r": "requests per minute", "t": "tokens per minute", "c": "concurrent requests"}[
            counter.kind
        ]
        headers = rate_headers(counters, [0 if c is counter else c.limit for c in counters])
        headers["retry-after"] = str(max(1, int(retry_after)))
        raise RateLimited(
            f"Rate limit reached for the {counter.label}: {counter.limit} {what}. Retry after {headers['retry-after']} s.",
            headers=headers,
        )

    async def settle(
        self, admission: Admission, *, tokens: int, cost_usd: Decimal
    ) -> list[Crossing]:
        if admission.settled or (not admission.counters and not admission.charges):
            return []
        admission.settled = True
        actual = to_nano(cost_usd) if cost_usd > 0 else 0
        pairs = [(charge, actual) for charge in admission.charges]
        result = await self._store().settle(
            int(time.time()), admission.member, tokens, admission.counters, pairs
        )
        crossings = []
        for i, charge in enumerate(admission.charges):
            start = datetime.fromtimestamp(int(charge.store_key.rsplit(":", 1)[1]), UTC)
            crossings.append(Crossing(charge.budget, start, result[2 * i], result[2 * i + 1]))
        return crossings


admitter = Admitter()
