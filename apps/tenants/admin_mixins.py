"""Tenant scoping for the admin: the same answer as the API, from :mod:`apps.tenants.access`.

Superusers are platform admins and see everything. Any other *staff* user sees the
objects of the tenants they are a member of and changes those where their role is
owner or admin; objects without a tenant (platform providers and models) are at most
read-only to them. Membership, not Django's model permissions, decides: a tenant
member only needs ``is_staff`` to use the admin, and nobody has to keep Django
permissions in sync with memberships.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from apps.core.errors import GatewayError
from apps.tenants.access import Access, access_for_request
from apps.tenants.models import Tenant


def _is_staff(request: HttpRequest) -> bool:
    user = request.user
    return bool(user and user.is_active and user.is_staff)


def _tenant_id_at(obj: Any, lookup: str) -> int | None:
    """The tenant id reached from ``obj`` along an ORM path such as ``model__tenant``."""
    if lookup == "pk":
        return obj.pk
    *path, last = lookup.split("__")
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return getattr(obj, f"{last}_id")


def scoped_choices(
    model: type, access: Access, *, tenant_ids: frozenset[int] | None, with_platform: bool
) -> QuerySet | None:
    """What a form may offer of ``model`` to a tenant user; ``None``: leave it alone."""
    if tenant_ids is None:
        return None
    if model is Tenant:
        return Tenant.objects.filter(pk__in=tenant_ids)
    if model is get_user_model():
        # Only people the user already works with: the user list is not for every tenant.
        return model.objects.filter(memberships__tenant__in=access.readable or ()).distinct()
    if any(f.name == "tenant" for f in model._meta.get_fields()):
        condition = Q(tenant__in=tenant_ids)
        if with_platform:
            condition |= Q(tenant__isnull=True)
        return model._default_manager.filter(condition)
    return None


class _ScopedFormfieldsMixin:
    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        access = access_for_request(request)
        if access.readable is not None:
            owner = db_field.name == self.owner_field
            queryset = scoped_choices(
                db_field.remote_field.model,
                access,
                tenant_ids=access.writable if owner else access.readable,
                with_platform=not owner,
            )
            if queryset is not None:
                kwargs["queryset"] = queryset
            if owner:
                # A tenant user cannot create platform objects: the tenant is required.
                kwargs["required"] = True
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @property
    def owner_field(self) -> str:
        return ""


class TenantScopedAdminMixin(_ScopedFormfieldsMixin):
    """Scope a ``ModelAdmin`` to the requesting user's tenants.

    ``tenant_lookup`` is the ORM path from the model to its tenant (``"tenant"``,
    ``"model__tenant"``; ``"pk"`` for the tenant itself). With ``platform_readable``
    objects that have no tenant are listed read-only for tenant users.

    It also turns service errors raised while saving into an admin error message
    instead of a server error (the transaction has been rolled back by then).
    """

    tenant_lookup = "tenant"
    platform_readable = False

    @property
    def owner_field(self) -> str:
        return "" if self.tenant_lookup == "pk" else self.tenant_lookup.split("__")[0]

    def access(self, request: HttpRequest) -> Access:
        return access_for_request(request)

    def object_tenant_id(self, obj: Any) -> int | None:
        return _tenant_id_at(obj, self.tenant_lookup)

    def is_platform_admin(self, request: HttpRequest) -> bool:
        return self.access(request).readable is None

    def can_write(self, request: HttpRequest, obj: Any) -> bool:
        return self.access(request).can_write(self.object_tenant_id(obj))

    # --- what is listed ------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet:
        qs = super().get_queryset(request)
        access = self.access(request)
        if access.readable is None:
            return qs
        condition = Q(**{f"{self.tenant_lookup}__in": access.readable})
        if self.platform_readable and self.tenant_lookup != "pk":
            condition |= Q(**{f"{self.tenant_lookup}__isnull": True})
        return qs.filter(condition)

    # --- permissions: membership for tenant users, Django's for superusers -------
    def has_module_permission(self, request: HttpRequest) -> bool:
        access = self.access(request)
        if access.readable is None:
            return super().has_module_permission(request)
        return _is_staff(request) and bool(access.readable)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        access = self.access(request)
        if access.readable is None:
            return super().has_view_permission(request, obj)
        if not _is_staff(request) or not access.readable:
            return False
        if obj is None:
            return True
        tenant_id = self.object_tenant_id(obj)
        return access.can_read(tenant_id) or (tenant_id is None and self.platform_readable)

    def has_add_permission(self, request: HttpRequest) -> bool:
        access = self.access(request)
        if access.readable is None:
            return super().has_add_permission(request)
        return _is_staff(request) and access.can_write_any

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        access = self.access(request)
        if access.readable is None:
            return super().has_change_permission(request, obj)
        if not _is_staff(request):
            return False
        if obj is None:
            return access.can_write_any
        return access.can_write(self.object_tenant_id(obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    # --- writes ----------------------------------------------------------------
    def save_form(self, request: HttpRequest, form, change: bool):
        obj = super().save_form(request, form, change)
        # The form only offers writable tenants; this guards against anything else.
        if not self.can_write(request, obj):
            raise PermissionDenied
        return obj

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            if not self.has_delete_permission(request, obj):
                raise PermissionDenied
            self.delete_model(request, obj)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (GatewayError, ValidationError) as exc:
            return self.service_error_response(request, exc)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except (GatewayError, ValidationError) as exc:
            return self.service_error_response(request, exc)

    def service_error_response(
        self, request: HttpRequest, exc: GatewayError | ValidationError
    ) -> HttpResponse:
        message = exc.message if isinstance(exc, GatewayError) else "; ".join(exc.messages)
        self.message_user(request, f"Not saved: {message}", messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())


class TenantScopedInlineMixin(_ScopedFormfieldsMixin):
    """Inline rows belong to their parent: whoever may change the parent may change them."""

    parent_tenant_lookup = "tenant"

    def _parent_access(self, request: HttpRequest, obj: Any, *, write: bool) -> bool | None:
        access = access_for_request(request)
        if access.readable is None:
            return None
        if not _is_staff(request):
            return False
        if obj is None:
            return access.can_write_any
        tenant_id = _tenant_id_at(obj, self.parent_tenant_lookup)
        return access.can_write(tenant_id) if write else access.can_read(tenant_id)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._parent_access(request, obj, write=False)
        if allowed is None:
            return super().has_view_permission(request, obj)
        # Platform parents are shown read-only; their rows with them.
        if not allowed and obj is not None:
            return _tenant_id_at(obj, self.parent_tenant_lookup) is None
        return allowed

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._parent_access(request, obj, write=True)
        return super().has_add_permission(request, obj) if allowed is None else allowed

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._parent_access(request, obj, write=True)
        return super().has_change_permission(request, obj) if allowed is None else allowed

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._parent_access(request, obj, write=True)
        return super().has_delete_permission(request, obj) if allowed is None else allowed
