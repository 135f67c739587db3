"""Apply a config document: check it against the database, then write through the services.

Every write goes through the owning app's service functions, inside one transaction:
either the whole document is applied or nothing is. Only fields that differ are
passed to a service, so re-applying an unchanged file touches no row (``updated_at``
stays put and no configuration-change token is bumped).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.core import crypto
from apps.core.configfile.report import (
    CREATED,
    DELETED,
    UNCHANGED,
    UPDATED,
    ApplyReport,
    GeneratedSecret,
)
from apps.core.configfile.schema import (
    KEEP_CURRENT,
    ConfigSpec,
    DeploymentSpec,
    KeySpec,
    ModelSpec,
    ProviderSpec,
    TenantSpec,
    parse_document,
)
from apps.core.errors import GatewayError
from apps.keys.models import ApiKey
from apps.keys.secrets import hash_secret
from apps.keys.services import (
    key_create,
    key_delete,
    key_revoke,
    key_set_secret,
    key_set_signing_secret,
    key_update,
)
from apps.providers.models import Deployment, Model, Provider
from apps.providers.services import (
    deployment_create,
    deployment_delete,
    deployment_update,
    model_create,
    model_delete,
    model_update,
    provider_create,
    provider_delete,
    provider_update,
)
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create, tenant_delete, tenant_update


class _Rollback(Exception):
    """Raised inside the transaction to undo a dry run or a failed apply."""


def _platform_providers() -> dict[str, Provider]:
    return {p.name: p for p in Provider.objects.filter(tenant__isnull=True)}


def _platform_models() -> dict[str, Model]:
    return {m.name: m for m in Model.objects.filter(tenant__isnull=True)}


def _check_references(spec: ConfigSpec, report: ApplyReport, *, prune: bool) -> None:
    """Cross-check the document against itself and the stored configuration."""
    errors, warnings = report.errors, report.warnings
    stored_providers = _platform_providers()
    stored_models = _platform_models()
    file_providers = {p.name: p for p in spec.providers or []}
    file_models = {m.name for m in spec.models or []}
    # A stored provider stays referable unless this apply prunes it.
    known_providers = set(file_providers)
    if not (prune and spec.providers is not None):
        known_providers |= set(stored_providers)
    known_models = set(file_models)
    if not (prune and spec.models is not None):
        known_models |= set(stored_models)

    for provider in spec.providers or []:
        if provider.api_key == KEEP_CURRENT:
            stored = stored_providers.get(provider.name)
            if stored is None or not stored.has_credential:
                errors.append(
                    f"{provider.path}.api_key: {KEEP_CURRENT!r} keeps the stored credential, "
                    f"but provider {provider.name!r} has none yet; give the real value "
                    "(env:NAME, file:PATH or a literal)"
                )

    for model in spec.models or []:
        for deployment in model.deployments:
            if deployment.provider and deployment.provider not in known_providers:
                errors.append(
                    f"{deployment.path}.provider: unknown provider {deployment.provider!r}"
                )
        for i, name in enumerate(model.fallbacks):
            if name != model.name and name not in known_models:
                errors.append(f"{model.path}.fallbacks[{i}]: unknown model {name!r}")

    seen_secrets: dict[str, str] = {}
    for tenant in spec.tenants or []:
        for key in tenant.keys or []:
            label = f"{tenant.name}/{key.name}"
            for name in key.models:
                if name not in known_models:
                    warnings.append(
                        f"{key.path}.models: {name!r} is not a platform model in this file "
                        "or the database; the key can use it only once it exists"
                    )
            stored = ApiKey.objects.filter(tenant__name=tenant.name, name=key.name).first()
            if key.secret is not None:
                digest = hash_secret(key.secret)
                if digest in seen_secrets:
                    errors.append(
                        f"{key.path}.secret: the same secret is already used by "
                        f"{seen_secrets[digest]}"
                    )
                seen_secrets[digest] = key.path
                other = (
                    ApiKey.objects.select_related("tenant")
                    .filter(secret_hash=digest)
                    .exclude(pk=stored.pk if stored else None)
                    .first()
                )
                if other is not None:
                    errors.append(
                        f"{key.path}.secret: that secret already belongs to key "
                        f"{other.tenant.name}/{other.name}"
                    )
            if stored is not None and stored.revoked_at is not None and not key.revoked:
                # Revoked in the admin after the file was written: revocation is final.
                warnings.append(
                    f"{key.path}: key {label} is revoked and stays revoked (revocation cannot "
                    "be undone); add `revoked: true` to the file or use another key name"
                )
            has_signing = key.signing_secret is not None or bool(
                stored and stored.signing_secret_encrypted
            )
            if key.require_signature and not has_signing:
                warnings.append(
                    f"{key.path}: require_signature is true but the key has no signing_secret; "
                    "every request with it will be refused until one is set"
                )

    if prune and spec.providers is not None:
        for name, provider in stored_providers.items():
            if name in file_providers:
                continue
            blocking = Deployment.objects.filter(provider=provider).select_related(
                "model", "provider"
            )
            if spec.models is not None:
                # Every platform model is then rewritten by the file or pruned, so only
                # deployments of models the file cannot manage still need the provider.
                blocking = blocking.exclude(model__tenant__isnull=True)
            users = sorted({str(d) for d in blocking})
            if users:
                errors.append(
                    f"providers: cannot prune provider {name!r}: still used by {', '.join(users)}"
                )


# --- writers -----------------------------------------------------------------------------


def _credential_matches(provider: Provider, api_key: str) -> bool:
    if api_key == KEEP_CURRENT:
        return True
    if not api_key:
        return not provider.has_credential
    if api_key.startswith(("env:", "file:")):
        return provider.credential_ref == api_key and not provider.credential_encrypted
    if provider.credential_ref or not provider.credential_encrypted:
        return False
    try:
        return crypto.decrypt(provider.credential_encrypted) == api_key
    except crypto.DecryptionError:
        return False


def _diff(obj: object, wanted: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in wanted.items() if getattr(obj, name) != value}


def _apply_provider(spec: ProviderSpec, stored: Provider | None, report: ApplyReport) -> Provider:
    wanted = {
        "kind": spec.kind,
        "base_url": spec.base_url,
        "options": spec.options,
        "enabled": spec.enabled,
    }
    if stored is None:
        provider = provider_create(name=spec.name, credential=spec.api_key, **wanted)
        report.add("provider", spec.name, CREATED)
        return provider
    changes = _diff(stored, wanted)
    fields = list(changes)
    credential = None
    if not _credential_matches(stored, spec.api_key):
        credential = spec.api_key
        fields.append("api_key")
    if not fields:
        report.add("provider", spec.name, UNCHANGED)
        return stored
    provider = provider_update(provider=stored, credential=credential, **changes)
    report.add("provider", spec.name, UPDATED, fields)
    return provider


# YAML field name for each model field, for "updated (...)" lines.
_MODEL_LABELS = {
    "input_price_per_million": "pricing.input_per_million",
    "output_price_per_million": "pricing.output_per_million",
}


def _apply_model(spec: ModelSpec, stored: Model | None, report: ApplyReport) -> Model:
    wanted = {
        "description": spec.description,
        "mode": spec.mode,
        "context_window": spec.context_window,
        "max_output_tokens": spec.max_output_tokens,
        "input_price_per_million": spec.input_price_per_million,
        "output_price_per_million": spec.output_price_per_million,
        "fallbacks": spec.fallbacks,
        "timeout_s": spec.timeout_s,
        "retries": spec.retries,
        "enabled": spec.enabled,
    }
    if stored is None:
        model = model_create(name=spec.name, **wanted)
        report.add("model", spec.name, CREATED)
        return model
    changes = _diff(stored, wanted)
    if not changes:
        report.add("model", spec.name, UNCHANGED)
        return stored
    model = model_update(model=stored, **changes)
    report.add("model", spec.name, UPDATED, [_MODEL_LABELS.get(f, f) for f in changes])
    return model


def _apply_deployments(
    model: Model,
    specs: list[DeploymentSpec],
    providers: dict[str, Provider],
    report: ApplyReport,
) -> None:
    """The file is authoritative for a model's deployments: missing ones are removed."""
    # Platform models only have platform providers' deployments, so names identify them.
    stored = {
        (d.provider.name, d.upstream_model): d for d in model.deployments.select_related("provider")
    }
    wanted_targets = {d.target for d in specs}
    for target, deployment in stored.items():
        if target not in wanted_targets:
            deployment_delete(deployment=deployment)
            report.add("deployment", f"{model.name} -> {'/'.join(target)}", DELETED)
    for spec in specs:
        label = f"{model.name} -> {spec.provider}/{spec.upstream_model}"
        wanted = {
            "weight": spec.weight,
            "priority": spec.priority,
            "enabled": spec.enabled,
            "options": spec.options,
        }
        existing = stored.get(spec.target)
        if existing is None:
            deployment_create(
                model=model,
                provider=providers[spec.provider],
                upstream_model=spec.upstream_model,
                **wanted,
            )
            report.add("deployment", label, CREATED)
            continue
        changes = _diff(existing, wanted)
        if changes:
            deployment_update(deployment=existing, **changes)
            report.add("deployment", label, UPDATED, list(changes))
        else:
            report.add("deployment", label, UNCHANGED)


def _apply_tenant(spec: TenantSpec, stored: Tenant | None, report: ApplyReport) -> Tenant:
    wanted = {
        "display_name": spec.display_name,
        "is_active": spec.enabled,
        "budget_limit_usd": spec.budget_limit_usd,
        "budget_period": spec.budget_period,
    }
    if stored is None:
        tenant = tenant_create(name=spec.name, **wanted)
        report.add("tenant", spec.name, CREATED)
        return tenant
    changes = _diff(stored, wanted)
    if not changes:
        report.add("tenant", spec.name, UNCHANGED)
        return stored
    tenant = tenant_update(tenant=stored, **changes)
    labels = {
        "is_active": "enabled",
        "budget_limit_usd": "budget.limit_usd",
        "budget_period": "budget.period",
    }
    report.add("tenant", spec.name, UPDATED, [labels.get(f, f) for f in changes])
    return tenant


def _signing_matches(key: ApiKey, signing_secret: str) -> bool:
    if not key.signing_secret_encrypted:
        return False
    try:
        return crypto.decrypt(key.signing_secret_encrypted) == signing_secret
    except crypto.DecryptionError:
        return False


def _apply_key(tenant: Tenant, spec: KeySpec, stored: ApiKey | None, report: ApplyReport) -> None:
    label = f"{tenant.name}/{spec.name}"
    wanted = {
        "scopes": spec.scopes,
        "allowed_models": spec.models,
        "rpm": spec.rpm,
        "tpm": spec.tpm,
        "expires_at": spec.expires_at,
        "require_signature": spec.require_signature,
    }
    if stored is None:
        created = key_create(
            tenant=tenant,
            name=spec.name,
            secret=spec.secret,
            signing_secret=spec.signing_secret,
            **wanted,
        )
        note = ""
        if spec.revoked:
            key_revoke(key=created.key)
            note = "revoked"
        elif spec.secret is None:
            report.generated_secrets.append(GeneratedSecret(key=label, secret=created.secret))
            note = "secret generated, shown below once"
        report.add("key", label, CREATED, note=note)
        return
    changes = _diff(stored, wanted)
    fields = [{"allowed_models": "models"}.get(f, f) for f in changes]
    note = ""
    if changes:
        key_update(key=stored, **changes)
    if spec.signing_secret is not None and not _signing_matches(stored, spec.signing_secret):
        key_set_signing_secret(key=stored, signing_secret=spec.signing_secret)
        fields.append("signing_secret")
    if spec.secret is not None and hash_secret(spec.secret) != stored.secret_hash:
        # The file is authoritative: a different imported secret is a rotation.
        key_set_secret(key=stored, secret=spec.secret)
        fields.append("secret")
        note = "SECRET ROTATED: the previous secret no longer authenticates"
    if spec.revoked and stored.revoked_at is None:
        key_revoke(key=stored)
        fields.append("revoked")
    report.add("key", label, UPDATED if fields else UNCHANGED, fields, note)


def _write(spec: ConfigSpec, report: ApplyReport, *, prune: bool) -> None:
    providers = _platform_providers()
    for provider_spec in spec.providers or []:
        providers[provider_spec.name] = _apply_provider(
            provider_spec, providers.get(provider_spec.name), report
        )

    models = _platform_models()
    for model_spec in spec.models or []:
        model = _apply_model(model_spec, models.get(model_spec.name), report)
        _apply_deployments(model, model_spec.deployments, providers, report)
    if prune and spec.models is not None:
        wanted = {m.name for m in spec.models}
        for name, model in sorted(models.items()):
            if name not in wanted:
                model_delete(model=model)
                report.add("model", name, DELETED)
    if prune and spec.providers is not None:
        wanted = {p.name for p in spec.providers}
        for name, provider in sorted(providers.items()):
            if name not in wanted:
                provider_delete(provider=provider)
                report.add("provider", name, DELETED)

    tenants = {t.name: t for t in Tenant.objects.all()}
    for tenant_spec in spec.tenants or []:
        tenant = _apply_tenant(tenant_spec, tenants.get(tenant_spec.name), report)
        if tenant_spec.keys is None:
            continue
        keys = {k.name: k for k in ApiKey.objects.filter(tenant=tenant)}
        for key_spec in tenant_spec.keys:
            _apply_key(tenant, key_spec, keys.get(key_spec.name), report)
        if prune:
            wanted = {k.name for k in tenant_spec.keys}
            for name, key in sorted(keys.items()):
                if name not in wanted:
                    key_delete(key=key)
                    report.add("key", f"{tenant.name}/{name}", DELETED)
    if prune and spec.tenants is not None:
        wanted = {t.name for t in spec.tenants}
        for name, tenant in sorted(tenants.items()):
            if name not in wanted:
                tenant_delete(tenant=tenant)
                report.add("tenant", name, DELETED, note="with its keys and data")


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "message_dict"):
            return "; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            )
        return " ".join(exc.messages)
    if isinstance(exc, GatewayError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def config_apply(*, data: object, dry_run: bool = False, prune: bool = False) -> ApplyReport:
    """Validate a loaded YAML document and apply it atomically.

    With errors nothing is written and ``report.errors`` lists each with its YAML path.
    ``dry_run`` performs the whole apply and rolls it back, so the report is exact.
    ``prune`` also deletes platform providers and models, tenants and (for tenants whose
    ``keys`` the file lists) keys that the file does not mention — only for the sections
    the file contains.
    """
    report = ApplyReport(dry_run=dry_run, prune=prune)
    spec, report.errors = parse_document(data)
    # Cross-checks run on whatever parsed, so one run lists every problem.
    _check_references(spec, report, prune=prune)
    if report.errors:
        return report
    try:
        with transaction.atomic():
            try:
                _write(spec, report, prune=prune)
            except Exception as exc:  # reported, and everything written so far is undone
                last = report.changes[-1].line() if report.changes else "start"
                report.errors.append(f"apply failed after {last!r}: {_error_text(exc)}")
            if report.errors or dry_run:
                raise _Rollback
    except _Rollback:
        pass
    if report.errors:
        report.changes.clear()
    if dry_run:
        report.generated_secrets.clear()
    return report
