from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Prefetch, Q, QuerySet

from apps.billing.pricing import PriceInfo
from apps.core.crypto import DecryptionError
from apps.core.secrets import SecretReferenceError
from apps.providers.adapters import Target
from apps.providers.models import Deployment, Model, Price, Provider

logger = logging.getLogger("gateway.providers")


def provider_list(*, tenant_ids: list[int] | None) -> QuerySet[Provider]:
    """A tenant's own providers; ``None`` means all (superusers)."""
    qs = Provider.objects.select_related("tenant")
    return qs if tenant_ids is None else qs.filter(tenant_id__in=tenant_ids)


def model_list(*, tenant_ids: list[int] | None, include_global: bool = True) -> QuerySet[Model]:
    """Models a tenant can see: its own and, by default, the platform's."""
    qs = Model.objects.select_related("tenant").prefetch_related("deployments__provider")
    if tenant_ids is None:
        return qs
    condition = Q(tenant_id__in=tenant_ids)
    if include_global:
        condition |= Q(tenant__isnull=True)
    return qs.filter(condition)


def provider_target(
    *, provider: Provider, upstream_model: str = "", timeout: float = 15.0
) -> Target:
    return Target(
        provider_name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        credential=provider.get_credential(),
        upstream_model=upstream_model,
        options=dict(provider.options or {}),
        timeout=timeout,
        provider_id=provider.pk,
    )


@dataclass(frozen=True, slots=True)
class DeploymentRoute:
    target: Target
    weight: int
    priority: int
    credential_error: str = ""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    id: int
    tenant_id: int | None
    name: str
    mode: str
    description: str
    created: int
    context_window: int | None
    max_output_tokens: int | None
    input_price_per_million: Decimal
    output_price_per_million: Decimal
    fallbacks: tuple[str, ...]
    timeout_s: float | None
    retries: int | None
    deployments: tuple[DeploymentRoute, ...]
    owned_by: str
    prices: tuple[PriceInfo, ...] = ()
    routing: str = "weighted"
    fallback_on_content_filter: bool = False


@dataclass
class RoutingTable:
    """Every enabled model with its enabled deployments, as plain immutable values."""

    global_models: dict[str, ModelRoute] = field(default_factory=dict)
    tenant_models: dict[int, dict[str, ModelRoute]] = field(default_factory=dict)

    def resolve(self, tenant_id: int, name: str) -> ModelRoute | None:
        own = self.tenant_models.get(tenant_id)
        if own is not None and name in own:
            return own[name]
        return self.global_models.get(name)

    def visible(self, tenant_id: int) -> list[ModelRoute]:
        merged = {**self.global_models, **self.tenant_models.get(tenant_id, {})}
        return [merged[name] for name in sorted(merged)]


def routing_table_load(*, default_timeout: float) -> RoutingTable:
    table = RoutingTable()
    deployments = Deployment.objects.filter(enabled=True, provider__enabled=True).select_related(
        "provider"
    )
    models = (
        Model.objects.filter(enabled=True)
        .select_related("tenant")
        .prefetch_related(
            Prefetch("deployments", queryset=deployments, to_attr="live_deployments"),
            Prefetch(
                "prices",
                queryset=Price.objects.order_by("-effective_from"),
                to_attr="price_history",
            ),
        )
    )
    credentials: dict[int, tuple[str, str]] = {}
    for model in models:
        routes = []
        for dep in model.live_deployments:
            provider = dep.provider
            if provider.pk not in credentials:
                try:
                    credentials[provider.pk] = (provider.get_credential(), "")
                except (SecretReferenceError, DecryptionError) as exc:
                    logger.warning(
                        "provider credential unavailable",
                        extra={"provider": provider.name, "error": str(exc)},
                    )
                    credentials[provider.pk] = ("", str(exc))
            credential, error = credentials[provider.pk]
            timeout = float(dep.options.get("timeout_s") or model.timeout_s or default_timeout)
            routes.append(
                DeploymentRoute(
                    target=Target(
                        provider_name=provider.name,
                        kind=provider.kind,
                        base_url=provider.base_url,
                        credential=credential,
                        upstream_model=dep.upstream_model,
                        options={**(provider.options or {}), **(dep.options or {})},
                        timeout=timeout,
                        deployment_id=dep.pk,
                        provider_id=provider.pk,
                    ),
                    weight=dep.weight,
                    priority=dep.priority,
                    credential_error=error,
                )
            )
        route = ModelRoute(
            id=model.pk,
            tenant_id=model.tenant_id,
            name=model.name,
            mode=model.mode,
            description=model.description,
            created=int(model.created_at.timestamp()),
            context_window=model.context_window,
            max_output_tokens=model.max_output_tokens,
            input_price_per_million=model.input_price_per_million,
            output_price_per_million=model.output_price_per_million,
            fallbacks=tuple(model.fallbacks or ()),
            timeout_s=model.timeout_s,
            retries=model.retries,
            deployments=tuple(routes),
            owned_by=model.tenant.name if model.tenant_id else "gateway",
            prices=tuple(price_info(p) for p in model.price_history) or (model_list_price(model),),
            routing=model.routing,
            fallback_on_content_filter=model.fallback_on_content_filter,
        )
        if model.tenant_id is None:
            table.global_models[model.name] = route
        else:
            table.tenant_models.setdefault(model.tenant_id, {})[model.name] = route
    return table


def price_info(price: Price) -> PriceInfo:
    return PriceInfo(
        id=price.pk,
        effective_from=price.effective_from.timestamp(),
        input=price.input_per_million,
        output=price.output_per_million,
        cached_input=price.cached_input_per_million,
        cache_write=price.cache_write_per_million,
        reasoning=price.reasoning_per_million,
        long_context_threshold=price.long_context_threshold,
        long_context_input=price.long_context_input_per_million,
        long_context_output=price.long_context_output_per_million,
    )


def model_list_price(model: Model) -> PriceInfo:
    """The model's own price fields, for a model without price history."""
    return PriceInfo(
        id=None,
        effective_from=0.0,
        input=model.input_price_per_million,
        output=model.output_price_per_million,
    )


def price_current(*, model: Model) -> Price | None:
    from django.utils import timezone

    return (
        model.prices.filter(effective_from__lte=timezone.now()).order_by("-effective_from").first()
    )


@dataclass(frozen=True)
class ProviderHealth:
    status: str  # up | degraded | down | unknown
    circuits: dict[int, str]
    latency_ms: float | None


def provider_health(*, providers: list[Provider]) -> dict[int, ProviderHealth]:
    """Status from the last probe and the circuits of the provider's deployments."""
    from apps.gateway.circuit import circuit_states_sync

    deployments: dict[int, list[int]] = {}
    for provider_id, dep_id in Deployment.objects.filter(provider__in=providers).values_list(
        "provider_id", "pk"
    ):
        deployments.setdefault(provider_id, []).append(dep_id)
    states = circuit_states_sync([d for ids in deployments.values() for d in ids])
    result = {}
    for provider in providers:
        circuits = {d: states[d] for d in deployments.get(provider.pk, [])}
        open_count = sum(1 for s in circuits.values() if s != "closed")
        if provider.last_check_ok is False or (circuits and open_count == len(circuits)):
            status = "down"
        elif open_count:
            status = "degraded"
        elif provider.last_check_ok:
            status = "up"
        else:
            status = "unknown"
        result[provider.pk] = ProviderHealth(status, circuits, provider.last_check_latency_ms)
    return result
