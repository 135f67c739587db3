from __future__ import annotations

from collections.abc import Callable

from apps.billing.recorder import recorder
from apps.gateway.http import GatewayASGI
from apps.gateway.views import router
from apps.providers.adapters import registry
from apps.providers.http import close_clients


def http_application(django_app: Callable) -> GatewayASGI:
    registry.freeze()
    return GatewayASGI(router, fallback=django_app)


async def lifespan(scope: dict, receive: Callable, send: Callable) -> None:
    """Start-up and graceful shutdown for servers that speak the lifespan protocol."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # In-flight requests have finished (the server drains them first): write
            # every buffered usage record before the process goes.
            await recorder.close()
            await close_clients()
            await send({"type": "lifespan.shutdown.complete"})
            return
