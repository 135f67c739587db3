"""Provider health: probes (free or paid), model sync, circuit recovery, /readyz and the admin."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from apps.billing.models import UsageRecord
from apps.providers.models import Deployment, Model, Provider
from apps.providers.selectors import provider_health
from apps.providers.services import (
    deployment_create,
    model_create,
    provider_create,
    provider_sync_models,
    provider_test_connection,
)
from tests.conftest import free_port, settle, start_server


@pytest.mark.django_db
def test_free_probe_records_latency_and_status(fake_openai):
    provider = provider_create(
        name="p", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    ok, _ = provider_test_connection(provider=provider)
    provider.refresh_from_db()
    assert ok and provider.last_check_ok and provider.last_check_latency_ms > 0
    assert [r.path for r in fake_openai.requests] == []  # a models list, not a paid call
    assert provider_health(providers=[provider])[provider.pk].status == "up"


@pytest.mark.django_db
def test_failed_probe_marks_the_provider_down():
    provider = provider_create(
        name="p", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    ok, message = provider_test_connection(provider=provider)
    provider.refresh_from_db()
    assert not ok and provider.last_check_ok is False and "connect" in message
    assert provider_health(providers=[provider])[provider.pk].status == "down"


@pytest.mark.django_db
def test_paid_probe_is_minimal_tagged_and_never_billed(fake_openai):
    provider = provider_create(
        name="p",
        kind="openai",
        base_url=fake_openai.base_url,
        credential=fake_openai.api_key,
        options={"probe": {"model": "gpt-4o-mini", "paid": True}},
    )
    ok, _ = provider_test_connection(provider=provider)
    assert ok
    [request] = fake_openai.requests
    assert request.body["max_tokens"] == 1 and request.body["model"] == "gpt-4o-mini"
    assert request.headers["x-gateway-probe"] == "1"
    assert UsageRecord.objects.count() == 0


@pytest.mark.django_db
def test_sync_models_adds_disabled_models(fake_openai):
    provider = provider_create(
        name="p", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    created = provider_sync_models(provider=provider)
    assert [m.name for m in created] == ["gpt-4o-mini"]
    model = Model.objects.get(name="gpt-4o-mini")
    assert not model.enabled and Deployment.objects.filter(model=model, provider=provider).exists()
    assert provider_sync_models(provider=provider) == []  # idempotent


@pytest.mark.django_db
def test_admin_lists_provider_state_and_syncs(admin_client, fake_openai):
    up = provider_create(
        name="up", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    down = provider_create(
        name="down", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    provider_test_connection(provider=up)
    provider_test_connection(provider=down)
    page = admin_client.get("/admin/providers/provider/").content.decode()
    assert ">up<" in page and ">down<" in page
    response = admin_client.post(
        "/admin/providers/provider/",
        {
            "action": "sync_models",
            "_selected_action": [up.pk],
        },
        follow=True,
    )
    assert "1 model(s) added" in response.content.decode()


@pytest.mark.live
def test_readyz_reports_providers(live_url, fake_openai):
    good = provider_create(
        name="good", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    provider_test_connection(provider=good)
    body = httpx.get(live_url + "/readyz").json()
    assert body["checks"]["providers"] == {"status": "ok", "providers": {"good": "up"}}
    bad = provider_create(name="bad", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1")
    provider_test_connection(provider=bad)
    response = httpx.get(live_url + "/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["providers"]["providers"] == {"good": "up", "bad": "down"}


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="the probe closes circuits shared through Redis"
)
def test_probe_success_closes_a_circuit_opened_by_traffic(gw, fake_openai, tmp_path):
    server = start_server(
        tmp_path,
        name="probe",
        GATEWAY_CIRCUIT_FAILURES="2",
        GATEWAY_CIRCUIT_COOLDOWN_SECONDS="600",
        GATEWAY_CIRCUIT_SYNC_SECONDS="0.1",
        GATEWAY_DEFAULT_RETRIES="0",
    )
    try:
        flaky = provider_create(
            name="flaky",
            kind="openai",
            base_url=fake_openai.base_url,
            credential=fake_openai.api_key,
        )
        backup = provider_create(
            name="backup",
            kind="openai",
            base_url=fake_openai.base_url,
            credential=fake_openai.api_key,
        )
        model = model_create(name="probed")
        deployment_create(model=model, provider=flaky, upstream_model="toggle-p", priority=0)
        deployment_create(model=model, provider=backup, upstream_model="gpt-4o-mini", priority=1)
        settle()
        fake_openai.broken.add("p")

        def served() -> str:
            return httpx.post(
                server.url + "/v1/chat/completions",
                headers=gw.headers,
                json={"model": "probed", "messages": [{"role": "user", "content": "x"}]},
            ).headers["x-gateway-provider"]

        assert [served(), served()] == ["backup", "backup"]
        assert [served(), served()] == ["backup", "backup"]  # open: flaky gets nothing
        assert fake_openai.calls["toggle-p"] == 2
        fake_openai.broken.clear()
        assert provider_test_connection(provider=Provider.objects.get(name="flaky"))[0]
        time.sleep(0.3)
        assert served() == "flaky"
    finally:
        server.stop()
