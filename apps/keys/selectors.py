from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.core import crypto
from apps.keys.models import ApiKey
from apps.keys.secrets import hash_secret


def key_get_by_secret(*, secret: str) -> ApiKey | None:
    """The key a presented secret belongs to, active or not (callers decide); a rotated-out
    secret still counts during its grace period."""
    digest = hash_secret(secret)
    return (
        ApiKey.objects.select_related("tenant")
        .filter(
            Q(secret_hash=digest)
            | Q(previous_secret_hash=digest, previous_secret_expires_at__gt=timezone.now())
        )
        .first()
    )


def key_list(*, tenant_ids: list[int] | None) -> QuerySet[ApiKey]:
    """Keys of the given tenants; ``None`` means every tenant (superusers)."""
    qs = ApiKey.objects.select_related("tenant")
    return qs if tenant_ids is None else qs.filter(tenant_id__in=tenant_ids)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the request path needs to know about a key, kept in memory."""

    id: int
    tenant_id: int
    tenant_name: str
    name: str
    prefix: str
    scopes: frozenset[str]
    allowed_models: frozenset[str]
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    tenant_rpm: int | None
    tenant_tpm: int | None
    tenant_max_concurrent: int | None
    limits_bypass: bool
    expires_at: float | None
    revoked: bool
    tenant_active: bool
    require_signature: bool
    signing_secret: str | None
    ip_networks: tuple = ()


def key_info_get(*, secret_hash: str) -> KeyInfo | None:
    """The key a secret hash belongs to: its current secret, or its previous one while the
    rotation grace period lasts (then the key expires, for that secret, when it ends)."""
    now = timezone.now()
    key = (
        ApiKey.objects.select_related("tenant")
        .filter(
            Q(secret_hash=secret_hash)
            | Q(previous_secret_hash=secret_hash, previous_secret_expires_at__gt=now)
        )
        .first()
    )
    if key is None:
        return None
    expires = key.expires_at
    if key.secret_hash != secret_hash:
        expires = min(filter(None, [expires, key.previous_secret_expires_at]))
    return KeyInfo(
        id=key.pk,
        tenant_id=key.tenant_id,
        tenant_name=key.tenant.name,
        name=key.name,
        prefix=key.prefix,
        scopes=frozenset(key.scopes or ()),
        allowed_models=frozenset(key.allowed_models or ()),
        rpm=key.rpm,
        tpm=key.tpm,
        max_concurrent=key.max_concurrent,
        tenant_rpm=key.tenant.rpm,
        tenant_tpm=key.tenant.tpm,
        tenant_max_concurrent=key.tenant.max_concurrent,
        limits_bypass=key.limits_bypass,
        expires_at=expires.timestamp() if expires else None,
        revoked=key.revoked_at is not None,
        tenant_active=key.tenant.is_active,
        require_signature=key.require_signature,
        signing_secret=crypto.decrypt(key.signing_secret_encrypted)
        if key.signing_secret_encrypted
        else None,
        ip_networks=tuple(
            ipaddress.ip_network(str(n), strict=False) for n in key.ip_allowlist or ()
        ),
    )
