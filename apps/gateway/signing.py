"""HMAC request signing (optional or required per key).

Headers: ``X-Gateway-Timestamp`` (unix seconds), ``X-Gateway-Nonce`` (random, ≤ 64 chars)
and ``X-Gateway-Signature: v1=<hex>`` where hex is HMAC-SHA256, keyed with the key's
signing secret, over::

    timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n" + path_with_query + "\\n" + sha256_hex(raw_body)

A timestamp more than ``GATEWAY_SIGNATURE_MAX_SKEW`` seconds away is refused, and so is
a nonce seen before within twice that window (in Redis when configured, so a request
replayed to another process fails too).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time

from django.conf import settings

from apps.core.errors import AuthenticationFailed
from apps.keys.selectors import KeyInfo

_NONCE = re.compile(r"^[A-Za-z0-9._~+/=-]{8,64}$")


def canonical(timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([timestamp, nonce, method.upper(), path_with_query, digest]).encode()


def sign(
    secret: str, timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes
) -> str:
    mac = hmac.new(
        secret.encode(), canonical(timestamp, nonce, method, path_with_query, body), hashlib.sha256
    )
    return "v1=" + mac.hexdigest()


class NonceStore:
    """Remembers nonces for the replay window: Redis (shared) or this process."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._redis: dict = {}

    def _client(self):
        if not settings.REDIS_URL:
            return None
        loop = asyncio.get_running_loop()
        client = self._redis.get(loop)
        if client is None:
            import redis.asyncio as redis

            for old in [lp for lp in self._redis if lp.is_closed()]:
                del self._redis[old]
            client = self._redis[loop] = redis.from_url(settings.REDIS_URL)
        return client

    async def first_use(self, key_id: int, nonce: str, ttl: int) -> bool:
        client = self._client()
        if client is not None:
            return bool(await client.set(f"gw:nonce:{key_id}:{nonce}", 1, nx=True, ex=ttl))
        now = time.time()
        if len(self._seen) > 100_000:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
        name = f"{key_id}:{nonce}"
        if self._seen.get(name, 0) > now:
            return False
        self._seen[name] = now + ttl
        return True


nonces = NonceStore()


async def verify(
    key: KeyInfo, *, headers: dict[str, str], method: str, path_with_query: str, body: bytes
) -> None:
    """Check a request's signature when the key requires one or the client sent one."""
    signature = headers.get("x-gateway-signature")
    if signature is None and not key.require_signature:
        return
    if not key.signing_secret:
        raise AuthenticationFailed(
            "This key has no signing secret to verify with.", code="signature_invalid"
        )
    timestamp = headers.get("x-gateway-timestamp", "")
    nonce = headers.get("x-gateway-nonce", "")
    if not signature or not timestamp or not nonce:
        raise AuthenticationFailed(
            "This key requires signed requests: send X-Gateway-Timestamp, X-Gateway-Nonce and "
            "X-Gateway-Signature.",
            code="signature_required",
        )
    skew = settings.GATEWAY_SIGNATURE_MAX_SKEW
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > skew:
        raise AuthenticationFailed(
            f"The request timestamp is more than {skew} s off.", code="signature_expired"
        )
    if not _NONCE.match(nonce):
        raise AuthenticationFailed(
            "The nonce must be 8 to 64 URL-safe characters.", code="signature_invalid"
        )
    expected = sign(key.signing_secret, timestamp, nonce, method, path_with_query, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise AuthenticationFailed(
            "The request signature does not match.", code="signature_invalid"
        )
    # Only a valid signature consumes its nonce, so a forged request cannot burn one.
    if not await nonces.first_use(key.id, nonce, 2 * skew):
        raise AuthenticationFailed("This nonce was used before.", code="signature_replayed")
