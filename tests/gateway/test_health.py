from __future__ import annotations

import httpx
import pytest
from django.conf import settings

from tests.conftest import free_port, start_server

pytestmark = pytest.mark.live


def test_healthz_and_readyz(live_url):
    assert httpx.get(live_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(live_url + "/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["cache"]["status"] == "ok"


def test_production_path_uses_redis_when_configured():
    if settings.REDIS_URL:
        assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
        assert (
            settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
        )
        assert not settings.CELERY_TASK_ALWAYS_EAGER
    else:
        assert settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")
        assert settings.CELERY_TASK_ALWAYS_EAGER


def test_readyz_reports_down_when_the_cache_is_unreachable(
    live_server_process, transactional_db, tmp_path
):
    server = start_server(tmp_path, name="no-redis", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert httpx.get(server.url + "/healthz").status_code == 200
        ready = httpx.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "down"
        assert body["checks"]["cache"]["status"] == "down"
        assert body["checks"]["database"]["status"] == "ok"
    finally:
        server.stop()
