from __future__ import annotations

from celery import shared_task

from apps.providers.models import Provider
from apps.providers.services import provider_test_connection


@shared_task(name="providers.provider_check", ignore_result=True)
def provider_check(provider_id: int) -> None:
    """Check one provider and record the outcome on it (idempotent: a repeat just re-checks)."""
    provider = Provider.objects.filter(pk=provider_id).first()
    if provider is not None:
        provider_test_connection(provider=provider)


@shared_task(name="providers.probe_all", ignore_result=True)
def providers_probe_all() -> None:
    """Periodic health probes (Celery beat): one task per enabled provider."""
    for provider_id in Provider.objects.filter(enabled=True).values_list("pk", flat=True):
        provider_check.delay(provider_id)
