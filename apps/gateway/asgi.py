from __future__ import annotations

import gc
from collections.abc import Callable

from apps.billing.recorder import recorder
from apps.gateway import anthropic_api, completions  # noqa: F401  (register /v1/messages, /v1/completions)
from apps.gateway.http import GatewayASGI
from apps.gateway.views import router
from apps.providers.adapters import registry
from apps.providers.http import close_clients


def http_application(django_app: Callable) -> GatewayASGI:
    registry.freeze()
    # Everything imported so far (Django, the apps, their modules: ~110k objects) lives as
    # long as the process. Moving it out of the collector's reach keeps full collections
    # from walking it again and again: without this, every ~1000th request paused the
    # event loop for 70-130 ms (bench/README.md, "Profiling findings").
    gc.collect()
    gc.freeze()
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
