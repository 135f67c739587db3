"""Who may see and change which tenant's objects: one answer for the API and the admin."""

from __future__ import annotations

from dataclasses import dataclass

from apps.keys.models import ApiKey, Scope
from apps.tenants.models import WRITE_ROLES, Membership


@dataclass(frozen=True)
class Access:
    """``readable``/``writable`` are tenant ids; ``None`` means every tenant (superusers)."""

    readable: frozenset[int] | None
    writable: frozenset[int] | None
    is_platform_admin: bool = False

    @property
    def tenant_ids(self) -> list[int] | None:
        return None if self.readable is None else sorted(self.readable)

    def can_read(self, tenant_id: int | None) -> bool:
        if self.readable is None:
            return True
        return tenant_id is not None and tenant_id in self.readable

    def can_write(self, tenant_id: int | None) -> bool:
        """Platform objects (no tenant) are writable by platform admins only."""
        if self.writable is None:
            return True
        return tenant_id is not None and tenant_id in self.writable

    @property
    def can_write_any(self) -> bool:
        return self.writable is None or bool(self.writable)


NO_ACCESS = Access(readable=frozenset(), writable=frozenset())


def access_for_user(user) -> Access:
    if not user or not user.is_authenticated or not user.is_active:
        return NO_ACCESS
    if user.is_superuser:
        return Access(readable=None, writable=None, is_platform_admin=True)
    roles = dict(
        Membership.objects.filter(user=user, tenant__is_active=True).values_list(
            "tenant_id", "role"
        )
    )
    return Access(
        readable=frozenset(roles),
        writable=frozenset(t for t, role in roles.items() if role in WRITE_ROLES),
    )


def access_for_key(key: ApiKey) -> Access:
    scopes = set(key.scopes or ())
    tenant = frozenset({key.tenant_id})
    readable = tenant if scopes & {Scope.MANAGEMENT_READ, Scope.MANAGEMENT_WRITE} else frozenset()
    writable = tenant if Scope.MANAGEMENT_WRITE in scopes else frozenset()
    return Access(readable=readable, writable=writable)


def access_for_request(request) -> Access:
    cached = getattr(request, "_gateway_access", None)
    if cached is not None:
        return cached
    auth = getattr(request, "auth", None)
    access = access_for_key(auth) if isinstance(auth, ApiKey) else access_for_user(request.user)
    request._gateway_access = access
    return access
