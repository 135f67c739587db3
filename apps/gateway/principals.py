"""Who calls over WebSocket when no key is presented: a signed-in user acting for a tenant.

The pipeline works on a :class:`KeyInfo`. A session principal is the small, explicit
equivalent for a browser user: the tenant's id, name and tenant-wide limits, the
inference scope, no model allowlist and no per-key limits (tenant limits, budgets and
policies still apply, since they key on the tenant). No key row exists: ``id`` is
``SESSION_KEY_ID`` (0, which billing reads as "no key"), and ``prefix`` names the user,
so usage records, log lines and the live-traffic page say who it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.keys.models import Scope
from apps.keys.selectors import KeyInfo
from apps.tenants.access import access_for_user
from apps.tenants.selectors import tenant_list

SESSION_KEY_ID = 0


@dataclass(frozen=True, slots=True)
class SessionTenant:
    id: int
    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None


def session_tenants(user) -> list[SessionTenant]:
    """Active tenants the user may chat as: their memberships (every tenant for superusers)."""
    access = access_for_user(user)
    if access.readable is not None and not access.readable:
        return []
    tenants = tenant_list(tenant_ids=access.tenant_ids).filter(is_active=True).order_by("name")
    return [
        SessionTenant(id=t.pk, name=t.name, rpm=t.rpm, tpm=t.tpm, max_concurrent=t.max_concurrent)
        for t in tenants
    ]


def session_principal(user, tenant: SessionTenant) -> KeyInfo:
    return KeyInfo(
        id=SESSION_KEY_ID,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        name=f"session:{user.get_username()}",
        prefix=f"user:{user.pk}",
        scopes=frozenset({Scope.INFERENCE}),
        allowed_models=frozenset(),
        rpm=None,
        tpm=None,
        max_concurrent=None,
        tenant_rpm=tenant.rpm,
        tenant_tpm=tenant.tpm,
        tenant_max_concurrent=tenant.max_concurrent,
        limits_bypass=False,
        expires_at=None,
        revoked=False,
        tenant_active=True,
        require_signature=False,
        signing_secret=None,
    )


def is_session_principal(key: KeyInfo) -> bool:
    """True for a signed-in user's principal: there is no key row to attach usage to."""
    return key.id == SESSION_KEY_ID
