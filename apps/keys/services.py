from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from apps.core import crypto
from apps.core.errors import InvalidRequest
from apps.core.services import config_changed
from apps.keys.models import ApiKey, Scope
from apps.keys.secrets import display_prefix, generate_secret, hash_secret
from apps.tenants.models import Tenant

logger = logging.getLogger("gateway.audit")


@dataclass(frozen=True)
class CreatedKey:
    """A new key and its secret: the only moment the secret exists outside the client."""

    key: ApiKey
    secret: str
    signing_secret: str | None = None


def _validate_scopes(scopes: list[str]) -> list[str]:
    valid = set(Scope.values)
    unknown = [s for s in scopes if s not in valid]
    if unknown:
        raise InvalidRequest(f"unknown scope(s): {', '.join(unknown)}", param="scopes")
    return sorted(set(scopes), key=Scope.values.index)


def _bypass_changed(key: ApiKey, enabled: bool) -> None:
    """A key that skips limits and budgets is a deliberate, visible decision."""
    logger.warning(
        "key limits bypass %s",
        "enabled" if enabled else "disabled",
        extra={"tenant": key.tenant.name, "key": key.name, "key_prefix": key.prefix, "audit": True},
    )


@transaction.atomic
def key_create(
    *,
    tenant: Tenant,
    name: str,
    scopes: list[str] | None = None,
    allowed_models: list[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrent: int | None = None,
    limits_bypass: bool = False,
    ip_allowlist: list[str] | None = None,
    expires_at: datetime | None = None,
    secret: str | None = None,
    signing_secret: str | None = None,
    require_signature: bool = False,
    metadata: dict | None = None,
    created_by: AbstractBaseUser | None = None,
) -> CreatedKey:
    """Create a key. ``secret`` imports a known secret (config as code); else one is generated."""
    plain = secret or generate_secret()
    if len(plain) < 20:
        raise InvalidRequest(
            "an imported key secret must be at least 20 characters", param="secret"
        )
    if ApiKey.objects.filter(secret_hash=hash_secret(plain)).exists():
        raise InvalidRequest("that secret is already in use", param="secret")
    key = ApiKey(
        tenant=tenant,
        name=name,
        prefix=display_prefix(plain),
        secret_hash=hash_secret(plain),
        scopes=_validate_scopes(scopes if scopes is not None else [Scope.INFERENCE]),
        allowed_models=list(allowed_models or []),
        rpm=rpm,
        tpm=tpm,
        max_concurrent=max_concurrent,
        limits_bypass=limits_bypass,
        ip_allowlist=list(ip_allowlist or []),
        expires_at=expires_at,
        require_signature=require_signature,
        metadata=metadata or {},
        created_by=created_by if created_by and created_by.is_authenticated else None,
    )
    if signing_secret:
        key.signing_secret_encrypted = crypto.encrypt(signing_secret)
    key.full_clean(exclude=["secret_hash", "prefix"])
    key.save()
    if limits_bypass:
        _bypass_changed(key, True)
    config_changed()
    return CreatedKey(key=key, secret=plain, signing_secret=signing_secret)


@transaction.atomic
def key_update(*, key: ApiKey, **fields: object) -> ApiKey:
    """Change a key's settings (never its secret)."""
    allowed = {
        "name",
        "scopes",
        "allowed_models",
        "rpm",
        "tpm",
        "max_concurrent",
        "limits_bypass",
        "ip_allowlist",
        "expires_at",
        "require_signature",
        "metadata",
    }
    unknown = set(fields) - allowed
    if unknown:
        raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
    if "scopes" in fields:
        fields["scopes"] = _validate_scopes(list(fields["scopes"]))  # type: ignore[arg-type]
    if "limits_bypass" in fields and bool(fields["limits_bypass"]) != key.limits_bypass:
        _bypass_changed(key, bool(fields["limits_bypass"]))
    for name, value in fields.items():
        setattr(key, name, value)
    key.full_clean(exclude=["secret_hash", "prefix"])
    key.save()
    config_changed()
    return key


@transaction.atomic
def key_set_signing_secret(*, key: ApiKey, signing_secret: str) -> ApiKey:
    key.signing_secret_encrypted = crypto.encrypt(signing_secret)
    key.save(update_fields=["signing_secret_encrypted", "updated_at"])
    config_changed()
    return key


@transaction.atomic
def key_set_secret(*, key: ApiKey, secret: str) -> ApiKey:
    """Replace a key's secret with a known one (rotation from config as code).

    The previous secret stops authenticating as soon as the change commits.
    """
    if len(secret) < 20:
        raise InvalidRequest(
            "an imported key secret must be at least 20 characters", param="secret"
        )
    digest = hash_secret(secret)
    if ApiKey.objects.filter(secret_hash=digest).exclude(pk=key.pk).exists():
        raise InvalidRequest("that secret is already in use", param="secret")
    key.secret_hash, key.prefix = digest, display_prefix(secret)
    key.save(update_fields=["secret_hash", "prefix", "updated_at"])
    config_changed()
    return key


@transaction.atomic
def key_rotate(*, key: ApiKey, grace_seconds: int = 86_400) -> CreatedKey:
    """Give the key a new secret. The old one keeps working for ``grace_seconds`` (0: stops
    at once), so clients can be redeployed without downtime. Returns the new secret once."""
    if key.revoked_at is not None:
        raise InvalidRequest("a revoked key cannot be rotated", code="key_revoked")
    if grace_seconds < 0:
        raise InvalidRequest("grace_seconds cannot be negative", param="grace_seconds")
    plain = generate_secret()
    if grace_seconds:
        key.previous_secret_hash = key.secret_hash
        key.previous_secret_expires_at = timezone.now() + timedelta(seconds=grace_seconds)
    else:
        key.previous_secret_hash, key.previous_secret_expires_at = "", None
    key.secret_hash, key.prefix = hash_secret(plain), display_prefix(plain)
    key.save(
        update_fields=[
            "secret_hash",
            "prefix",
            "previous_secret_hash",
            "previous_secret_expires_at",
            "updated_at",
        ]
    )
    config_changed()
    return CreatedKey(key=key, secret=plain)


@transaction.atomic
def key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at", "updated_at"])
        config_changed()
    return key


@transaction.atomic
def key_delete(*, key: ApiKey) -> None:
    key.delete()
    config_changed()
