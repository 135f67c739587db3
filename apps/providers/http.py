"""One pooled HTTP client per process (per event loop), on aiohttp's connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from apps.core.errors import ProviderError, upstream_timeout, upstream_unavailable

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def get_client() -> httpx.AsyncClient:
    """The process's client for the running loop (tests run several loops; servers one)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        for old_loop in [lp for lp in _clients if lp.is_closed()]:
            del _clients[old_loop]
        limits = httpx.Limits(
            max_connections=settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS,
            max_keepalive_connections=settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS,
            keepalive_expiry=30,
        )
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits, trust_env=False),
            timeout=httpx.Timeout(settings.GATEWAY_UPSTREAM_TIMEOUT, connect=10.0),
        )
        _clients[loop] = client
    return client


async def close_clients() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()


def transport_error(exc: Exception, provider: str) -> ProviderError:
    """Map an httpx transport failure to what the client should see."""
    # httpx-aiohttp maps a refused connection to ConnectTimeout; the cause tells the truth.
    refused = isinstance(exc.__cause__, aiohttp.ClientConnectorError) and not isinstance(
        exc.__cause__, aiohttp.ServerTimeoutError
    )
    if isinstance(exc, httpx.TimeoutException) and not refused:
        return upstream_timeout(f"provider {provider} timed out")
    if refused or isinstance(exc, httpx.ConnectError):
        return upstream_unavailable(f"cannot connect to provider {provider}")
    return ProviderError(
        f"connection to provider {provider} failed: {type(exc).__name__}",
        status=502,
        retryable=True,
    )


async def iter_sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent event stream, one per event."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield "\n".join(data)
