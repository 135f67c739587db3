"""Liveness and readiness."""

from __future__ import annotations

import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _cache() -> None:
    probe = f"readyz:{uuid.uuid4().hex}"
    cache.set(probe, "1", 5)
    if cache.get(probe) != "1":
        raise RuntimeError("cache did not return the value just written")
    cache.delete(probe)


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _broker() -> None:
    from gateway_project.celery import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def _providers() -> dict:
    """Provider states: from the last probes and the circuits. Providers being down makes
    the gateway degraded, not unready: it still serves every other provider."""
    from apps.providers.models import Provider
    from apps.providers.selectors import provider_health

    providers = list(Provider.objects.filter(enabled=True))
    health = provider_health(providers=providers)
    states = {p.name: health[p.pk].status for p in providers}
    down = [name for name, state in states.items() if state == "down"]
    degraded = [name for name, state in states.items() if state == "degraded"]
    status = "ok"
    if down or degraded:
        status = "down" if providers and len(down) == len(providers) else "degraded"
    return {"status": status, "providers": states}


@never_cache
@require_GET
def readyz(request):
    checks = {"database": _timed(_database), "cache": _timed(_cache)}
    if settings.CELERY_BROKER_URL:
        checks["broker"] = _timed(_broker)
    try:
        checks["providers"] = _providers()
    except Exception as exc:
        checks["providers"] = {"status": "degraded", "error": f"{type(exc).__name__}: {exc}"[:300]}
    # Only what this process itself needs makes it unready; providers degrade it.
    critical = ("database", "cache")
    if any(checks[name]["status"] == "down" for name in critical):
        status = "down"
    elif any(c["status"] != "ok" for c in checks.values()):  # incl. providers all down
        status = "degraded"
    else:
        status = "ok"
    return JsonResponse(
        {"status": status, "checks": checks}, status=503 if status == "down" else 200
    )
