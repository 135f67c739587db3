from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from apps.tenants.access import access_for_request


class TenantRolePermission(BasePermission):
    """Reads need access to some tenant; writes a write role (or a management:write key).

    Object-level checks compare the object's tenant with the caller's. Querysets are
    scoped separately, so an object of another tenant is simply not found.
    """

    message = "You do not have permission to perform this action."

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        access = access_for_request(request)
        if access.readable is not None and not access.readable:
            return False
        return request.method in SAFE_METHODS or access.can_write_any

    def has_object_permission(self, request, view, obj) -> bool:
        access = access_for_request(request)
        tenant_id = (
            obj.pk if obj.__class__.__name__ == "Tenant" else getattr(obj, "tenant_id", None)
        )
        if request.method in SAFE_METHODS:
            return tenant_id is None or access.can_read(tenant_id)
        return access.can_write(tenant_id)
