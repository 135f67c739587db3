from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.core.errors import GatewayError, InvalidRequest
from apps.providers.adapters import registry
from apps.providers.http import close_clients
from apps.providers.models import Deployment, Model, Price, Provider
from apps.providers.selectors import price_current, provider_target
from apps.tenants.models import Tenant

PROVIDER_FIELDS = {"name", "kind", "base_url", "options", "enabled"}
MODEL_FIELDS = {
    "name",
    "description",
    "mode",
    "context_window",
    "max_output_tokens",
    "input_price_per_million",
    "output_price_per_million",
    "fallbacks",
    "timeout_s",
    "retries",
    "routing",
    "fallback_on_content_filter",
    "enabled",
}
DEPLOYMENT_FIELDS = {"upstream_model", "weight", "priority", "enabled", "options"}


def _check_kind(kind: str) -> None:
    if kind not in registry.kinds():
        raise InvalidRequest(
            f"unknown provider kind {kind!r}; known: {', '.join(registry.kinds())}", param="kind"
        )


@transaction.atomic
def provider_create(
    *,
    name: str,
    kind: str,
    tenant: Tenant | None = None,
    base_url: str = "",
    credential: str = "",
    options: dict[str, Any] | None = None,
    enabled: bool = True,
) -> Provider:
    """Create a provider; ``credential`` may be a literal (stored encrypted) or env:/file: reference."""
    _check_kind(kind)
    provider = Provider(
        tenant=tenant,
        name=name,
        kind=kind,
        base_url=base_url,
        options=options or {},
        enabled=enabled,
    )
    provider.set_credential(credential)
    provider.full_clean()
    provider.save()
    return provider


@transaction.atomic
def provider_update(
    *, provider: Provider, credential: str | None = None, **fields: Any
) -> Provider:
    """Change a provider. ``credential=None`` keeps the stored one; ``""`` clears it."""
    unknown = set(fields) - PROVIDER_FIELDS
    if unknown:
        raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
    if "kind" in fields:
        _check_kind(fields["kind"])
    for name, value in fields.items():
        setattr(provider, name, value)
    if credential is not None:
        provider.set_credential(credential)
    provider.full_clean()
    provider.save()
    return provider


@transaction.atomic
def provider_delete(*, provider: Provider) -> None:
    if provider.deployments.exists():
        raise InvalidRequest(
            "the provider still serves deployments; remove them first", code="provider_in_use"
        )
    provider.delete()


def provider_test_connection(*, provider: Provider) -> tuple[bool, str]:
    """Probe the provider and remember the outcome, its latency, and close its circuits
    when it answers.

    The probe costs nothing by default (the provider's models list or similar free
    endpoint). ``options.probe = {"model": "...", "paid": true}`` sends instead a
    one-token chat request, tagged ``x-gateway-probe: 1`` and never billed to a tenant.
    """
    started = time.perf_counter()
    try:
        target = provider_target(provider=provider)
        adapter = registry.get(provider.kind)
        probe = (provider.options or {}).get("probe") or {}

        async def check() -> str:
            try:
                if probe.get("paid") and probe.get("model"):
                    paid = dataclasses.replace(
                        target,
                        upstream_model=probe["model"],
                        options={
                            **target.options,
                            "headers": {
                                **(target.options.get("headers") or {}),
                                "x-gateway-probe": "1",
                            },
                        },
                    )
                    await adapter.chat(
                        paid, {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
                    )
                    return f"ok: {probe['model']} answered a one-token probe"
                return await adapter.check(target)
            finally:
                await close_clients()

        message = asyncio.run(check())
        ok = True
    except GatewayError as exc:
        ok, message = False, exc.message
    except Exception as exc:  # a misconfigured credential reference, a bad URL …
        ok, message = False, f"{type(exc).__name__}: {exc}"
    latency = round((time.perf_counter() - started) * 1000, 2)
    Provider.objects.filter(pk=provider.pk).update(
        last_check_at=timezone.now(),
        last_check_ok=ok,
        last_check_message=message[:500],
        last_check_latency_ms=latency if ok else None,
    )
    if ok:
        from apps.gateway.circuit import circuits_close_sync

        circuits_close_sync(list(provider.deployments.values_list("pk", flat=True)))
    return ok, message


def provider_sync_models(*, provider: Provider) -> list[Model]:
    """Create a disabled model (and its deployment) for every upstream model the provider
    lists that it does not serve yet; an admin sets prices and enables them."""

    async def listing() -> list[str]:
        try:
            return await registry.get(provider.kind).list_models(provider_target(provider=provider))
        finally:
            await close_clients()

    names = asyncio.run(listing())
    served = set(provider.deployments.values_list("upstream_model", flat=True))
    created = []
    with transaction.atomic():
        for name in sorted(set(names) - served):
            model = Model.objects.filter(tenant=provider.tenant, name=name).first()
            if model is None:
                model = model_create(
                    name=name,
                    tenant=provider.tenant,
                    enabled=False,
                    description=f"Synced from provider {provider.name}: set prices, then enable.",
                )
                created.append(model)
            deployment_create(model=model, provider=provider, upstream_model=name)
    return created


@transaction.atomic
def model_create(
    *,
    name: str,
    tenant: Tenant | None = None,
    input_price_per_million: Decimal | float | str = 0,
    output_price_per_million: Decimal | float | str = 0,
    **fields: Any,
) -> Model:
    unknown = set(fields) - MODEL_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown model field(s) {', '.join(sorted(unknown))}")
    model = Model(
        tenant=tenant,
        name=name,
        input_price_per_million=Decimal(str(input_price_per_million)),
        output_price_per_million=Decimal(str(output_price_per_million)),
        **fields,
    )
    model.full_clean()
    model.save()
    return model


@transaction.atomic
def model_update(*, model: Model, **fields: Any) -> Model:
    unknown = set(fields) - MODEL_FIELDS
    if unknown:
        raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        if name.endswith("_per_million"):
            value = Decimal(str(value))
        setattr(model, name, value)
    model.full_clean()
    model.save()
    return model


@transaction.atomic
def model_delete(*, model: Model) -> None:
    model.delete()


@transaction.atomic
def deployment_create(
    *, model: Model, provider: Provider, upstream_model: str, **fields: Any
) -> Deployment:
    unknown = set(fields) - DEPLOYMENT_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown deployment field(s) {', '.join(sorted(unknown))}")
    if provider.tenant_id is not None and provider.tenant_id != model.tenant_id:
        raise InvalidRequest(
            "a tenant's provider can only serve that tenant's models", param="provider"
        )
    deployment = Deployment(model=model, provider=provider, upstream_model=upstream_model, **fields)
    deployment.full_clean()
    deployment.save()
    return deployment


@transaction.atomic
def provider_deployments_delete(*, tenant: Tenant) -> None:
    """Remove every deployment on the tenant's providers (before the tenant goes)."""
    Deployment.objects.filter(provider__tenant=tenant).delete()


@transaction.atomic
def deployment_update(*, deployment: Deployment, **fields: Any) -> Deployment:
    unknown = set(fields) - DEPLOYMENT_FIELDS
    if unknown:
        raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(deployment, name, value)
    deployment.full_clean()
    deployment.save()
    return deployment


@transaction.atomic
def deployment_delete(*, deployment: Deployment) -> None:
    deployment.delete()


@transaction.atomic
def model_deployments_set(
    *,
    model: Model,
    deployments: list[dict[str, Any]],
    provider_tenant_ids: list[int] | None = None,
) -> list[Deployment]:
    """Make the model's deployments exactly ``deployments`` (each: provider, upstream_model, …).

    Entries are matched on (provider, upstream model), so an unchanged deployment keeps
    its id. Only deployments on providers of ``provider_tenant_ids`` are replaced
    (``None``: all): a tenant editing its model leaves deployments it cannot see, such
    as ones a platform admin put on a platform provider, alone.
    """
    managed = {
        (d.provider_id, d.upstream_model): d
        for d in model.deployments.select_related("provider")
        if provider_tenant_ids is None or d.provider.tenant_id in provider_tenant_ids
    }
    result = []
    for spec in deployments:
        fields = dict(spec)
        provider, upstream_model = fields.pop("provider"), fields.pop("upstream_model")
        current = managed.pop((provider.pk, upstream_model), None)
        if current is None:
            result.append(
                deployment_create(
                    model=model, provider=provider, upstream_model=upstream_model, **fields
                )
            )
        else:
            result.append(deployment_update(deployment=current, **fields))
    for leftover in managed.values():
        deployment_delete(deployment=leftover)
    return result


def price_sync_from_model(*, model: Model) -> Price | None:
    """Start a new price when the model's list price changed: history is never rewritten."""
    current = price_current(model=model)
    if current is not None and (
        current.input_per_million == model.input_price_per_million
        and current.output_per_million == model.output_price_per_million
    ):
        return None
    price = Price(
        model=model,
        effective_from=timezone.now(),
        input_per_million=model.input_price_per_million,
        output_per_million=model.output_price_per_million,
    )
    if current is not None:
        # Keep the rates only the price table knows about.
        for name in (
            "cached_input_per_million",
            "cache_write_per_million",
            "reasoning_per_million",
            "long_context_threshold",
            "long_context_input_per_million",
            "long_context_output_per_million",
        ):
            setattr(price, name, getattr(current, name))
    price.save()
    return price
