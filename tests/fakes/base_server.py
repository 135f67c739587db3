"""Plumbing shared by the fake provider servers: an aiohttp app in a background thread.

Each fake subclasses :class:`FakeServer`, adds its provider's routes in ``routes`` and
speaks that provider's wire format; requests are recorded so tests can assert what
the gateway's translation sent upstream.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# The words every fake answers with when it streams slowly.
SLOW_WORDS = [f"w{i} " for i in range(10)]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: Any


@dataclass
class FakeServer:
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = "fake-upstream-key"
    stream_delay: float = 0.05
    requests: list[Recorded] = field(default_factory=list)
    completed_streams: int = 0
    disconnects: int = 0

    name = "fake"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # --- plumbing ------------------------------------------------------------------
    def start(self) -> FakeServer:
        sock = socket.socket()
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        sock.close()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"fake {self.name} server did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=32 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(
            app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1
        )
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port)
        self._loop.run_until_complete(site.start())
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        except TimeoutError:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.requests.clear()
        self.completed_streams = 0
        self.disconnects = 0

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    async def record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        return body

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


async def sse_response(request: web.Request, content_type: str = "text/event-stream"):
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


def scripted_status(model: str) -> int | None:
    """A model named ``status-NNN`` answers with that HTTP status."""
    if model.startswith("status-") and model[7:10].isdigit():
        return int(model[7:10])
    return None
