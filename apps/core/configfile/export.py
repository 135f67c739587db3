"""The stored configuration as a document in the shape apply accepts; no secret ever leaves.

Defaults are left out so the document stays short; apply fills them back in, so
export → apply → export gives the same document.
"""

from __future__ import annotations

from typing import Any

from apps.core.configfile.schema import KEEP_CURRENT
from apps.keys.models import ApiKey
from apps.providers.models import Model, ModelMode, Provider
from apps.tenants.models import BudgetPeriod, Tenant


def _provider(provider: Provider) -> dict[str, Any]:
    data: dict[str, Any] = {"name": provider.name, "kind": provider.kind}
    if provider.base_url:
        data["base_url"] = provider.base_url
    if provider.credential_ref:
        data["api_key"] = provider.credential_ref  # a reference is not a secret
    elif provider.credential_encrypted:
        data["api_key"] = KEEP_CURRENT
    if provider.options:
        data["options"] = provider.options
    if not provider.enabled:
        data["enabled"] = False
    return data


def _model(model: Model) -> dict[str, Any]:
    data: dict[str, Any] = {"name": model.name}
    if model.description:
        data["description"] = model.description
    if model.mode != ModelMode.CHAT:
        data["mode"] = model.mode
    for field in ("context_window", "max_output_tokens"):
        if getattr(model, field) is not None:
            data[field] = getattr(model, field)
    deployments = sorted(
        model.deployments.all(),
        key=lambda d: (d.priority, -d.weight, d.provider.name, d.upstream_model),
    )
    data["deployments"] = []
    for deployment in deployments:
        entry: dict[str, Any] = {
            "provider": deployment.provider.name,
            "upstream_model": deployment.upstream_model,
            "weight": deployment.weight,
        }
        if deployment.priority:
            entry["priority"] = deployment.priority
        if not deployment.enabled:
            entry["enabled"] = False
        if deployment.options:
            entry["options"] = deployment.options
        data["deployments"].append(entry)
    data["pricing"] = {
        "input_per_million": model.input_price_per_million,
        "output_per_million": model.output_price_per_million,
    }
    if model.fallbacks:
        data["fallbacks"] = list(model.fallbacks)
    if model.timeout_s is not None:
        data["timeout_s"] = model.timeout_s
    if model.retries is not None:
        data["retries"] = model.retries
    if not model.enabled:
        data["enabled"] = False
    return data


def _key(key: ApiKey) -> dict[str, Any]:
    # Neither the secret (only its hash exists) nor the signing secret is ever exported.
    data: dict[str, Any] = {"name": key.name, "scopes": list(key.scopes)}
    for field in ("rpm", "tpm"):
        if getattr(key, field) is not None:
            data[field] = getattr(key, field)
    if key.allowed_models:
        data["models"] = list(key.allowed_models)
    if key.require_signature:
        data["require_signature"] = True
    if key.expires_at is not None:
        data["expires_at"] = key.expires_at.isoformat()
    if key.revoked_at is not None:
        data["revoked"] = True
    return data


def _tenant(tenant: Tenant) -> dict[str, Any]:
    data: dict[str, Any] = {"name": tenant.name}
    if tenant.display_name:
        data["display_name"] = tenant.display_name
    if not tenant.is_active:
        data["enabled"] = False
    if tenant.budget_limit_usd is not None or tenant.budget_period != BudgetPeriod.MONTHLY:
        budget: dict[str, Any] = {}
        if tenant.budget_limit_usd is not None:
            budget["limit_usd"] = tenant.budget_limit_usd
        budget["period"] = tenant.budget_period
        data["budget"] = budget
    data["keys"] = [_key(key) for key in sorted(tenant.api_keys.all(), key=lambda k: k.name)]
    return data


def config_export() -> dict[str, Any]:
    """Platform providers and models, every tenant and its keys. Money stays ``Decimal``."""
    providers = Provider.objects.filter(tenant__isnull=True).order_by("name")
    models = (
        Model.objects.filter(tenant__isnull=True)
        .prefetch_related("deployments__provider")
        .order_by("name")
    )
    tenants = Tenant.objects.prefetch_related("api_keys").order_by("name")
    return {
        "providers": [_provider(p) for p in providers],
        "models": [_model(m) for m in models],
        "tenants": [_tenant(t) for t in tenants],
    }
