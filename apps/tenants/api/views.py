from __future__ import annotations

from rest_framework import exceptions

from apps.tenants.api.base import TenantScopedViewSet, crud_schema
from apps.tenants.api.serializers import (
    PLATFORM_ONLY_FIELDS,
    TenantCreateSerializer,
    TenantSerializer,
    TenantUpdateSerializer,
)
from apps.tenants.models import Tenant
from apps.tenants.permissions import TenantRolePermission
from apps.tenants.selectors import tenant_list
from apps.tenants.services import tenant_create, tenant_delete, tenant_update


class TenantPermission(TenantRolePermission):
    """Platform admins create and delete tenants; a tenant's owners and admins update it."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        return view.action != "create" or view.access.is_platform_admin

    def has_object_permission(self, request, view, obj) -> bool:
        if not super().has_object_permission(request, view, obj):
            return False
        return view.action != "destroy" or view.access.is_platform_admin


@crud_schema(
    noun="a tenant",
    plural="tenants",
    output=TenantSerializer,
    create_input=TenantCreateSerializer,
    update_input=TenantUpdateSerializer,
)
class TenantViewSet(TenantScopedViewSet):
    """Tenants the caller belongs to (all of them for platform admins)."""

    serializer_class = TenantSerializer
    create_serializer_class = TenantCreateSerializer
    update_serializer_class = TenantUpdateSerializer
    permission_classes = [TenantPermission]
    search_fields = ["name", "display_name"]

    def get_queryset(self):
        return tenant_list(tenant_ids=self.access.tenant_ids)

    def perform_create(self, serializer) -> Tenant:
        return tenant_create(**serializer.validated_data)

    def perform_update(self, serializer) -> Tenant:
        tenant, fields = serializer.instance, serializer.validated_data
        # Sending back an unchanged value (a PUT of what GET returned) is fine.
        restricted = sorted(
            name
            for name in PLATFORM_ONLY_FIELDS & set(fields)
            if fields[name] != getattr(tenant, name)
        )
        if restricted and not self.access.is_platform_admin:
            raise exceptions.PermissionDenied(
                f"Only platform admins may change {', '.join(restricted)}."
            )
        return tenant_update(tenant=tenant, **fields)

    def perform_destroy(self, instance: Tenant) -> None:
        tenant_delete(tenant=instance)
