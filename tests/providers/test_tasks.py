"""Provider checks as Celery tasks: in process by default, on a real worker with a broker."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from apps.providers.models import Provider
from apps.providers.services import provider_create
from apps.providers.tasks import provider_check


@pytest.mark.django_db
def test_provider_check_runs_in_process_without_a_broker(fake_openai):
    if settings.CELERY_BROKER_URL:
        pytest.skip("a broker is configured: see the worker test")
    provider = provider_create(
        name="p", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    provider_check.delay(provider.pk)
    provider.refresh_from_db()
    assert provider.last_check_ok is True
    assert "1 model" in provider.last_check_message


@pytest.mark.redis
def test_provider_check_runs_on_a_real_worker(celery_worker, fake_openai):
    if celery_worker is None:
        pytest.skip("needs a broker (the production-path run of .ci/run sets REDIS_URL)")
    good = provider_create(
        name="good", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    bad = provider_create(
        name="bad", kind="openai", base_url=fake_openai.base_url, credential="sk-wrong"
    )
    provider_check.delay(good.pk)
    provider_check.delay(bad.pk)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            Provider.objects.filter(pk__in=[good.pk, bad.pk], last_check_at__isnull=False).count()
            == 2
        ):
            break
        assert celery_worker.proc.poll() is None, celery_worker.output()
        time.sleep(0.2)
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.last_check_ok is True, celery_worker.output()
    assert bad.last_check_ok is False
    assert "credential" in bad.last_check_message
