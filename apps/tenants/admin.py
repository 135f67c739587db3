from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import NestedObjects
from django.db import router
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from apps.core.admin import OFF, OK, adopt_saved, badge
from apps.providers.models import Deployment
from apps.tenants.admin_mixins import TenantScopedAdminMixin, TenantScopedInlineMixin
from apps.tenants.models import Membership, Tenant
from apps.tenants.services import (
    TENANT_FIELDS,
    membership_delete,
    membership_set,
    tenant_create,
    tenant_delete,
    tenant_update,
)

# What only platform admins decide about a tenant: its identity, whether it may
# call the gateway at all, and how much it may spend.
PLATFORM_TENANT_FIELDS = ("name", "is_active", "budget_limit_usd", "budget_period")


class MembershipInlineForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ("user", "role")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A membership is a (user, tenant) pair: change the role, or delete the row.
        if self.instance.pk and "user" in self.fields:
            self.fields["user"].disabled = True


class MembershipInline(TenantScopedInlineMixin, admin.TabularInline):
    model = Membership
    form = MembershipInlineForm
    parent_tenant_lookup = "pk"
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("user")


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    tenant_lookup = "pk"
    inlines = (MembershipInline,)
    list_display = (
        "name",
        "display_name",
        "status",
        "budget",
        "member_count",
        "key_count",
        "created_at",
    )
    list_filter = ("is_active", "budget_period")
    search_fields = ("name", "display_name")
    ordering = ("name",)
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "display_name", "is_active")}),
        ("Budget", {"fields": ("budget_limit_usd", "budget_period")}),
        ("More", {"fields": ("metadata", "created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _members=Count("memberships", distinct=True),
                _keys=Count("api_keys", distinct=True),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if not self.is_platform_admin(request):
            fields += PLATFORM_TENANT_FIELDS
        elif obj is not None:
            fields.append("name")  # the stable identifier clients and config refer to
        return fields

    # Creating and deleting tenants is the platform's business.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.is_platform_admin(request) and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return self.is_platform_admin(request) and super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request: HttpRequest):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if protected:
            # tenant_delete removes the deployments on the tenant's own providers first,
            # so those do not protect anything; whatever else does still counts.
            collector = NestedObjects(using=router.db_for_write(Tenant))
            collector.collect(objs)
            tenant_ids = {tenant.pk for tenant in objs}
            if all(
                isinstance(obj, Deployment) and obj.provider.tenant_id in tenant_ids
                for obj in collector.protected
            ):
                protected = []
        return deleted, counts, perms_needed, protected

    @admin.display(description="status", ordering="is_active")
    def status(self, obj: Tenant):
        return badge("active", OK) if obj.is_active else badge("disabled", OFF)

    @admin.display(description="budget", ordering="budget_limit_usd")
    def budget(self, obj: Tenant) -> str:
        if obj.budget_limit_usd is None:
            return "unlimited"
        return f"${obj.budget_limit_usd:,.2f} / {obj.budget_period}"

    @admin.display(description="members", ordering="_members")
    def member_count(self, obj: Tenant) -> int:
        return obj._members

    @admin.display(description="API keys", ordering="_keys")
    def key_count(self, obj: Tenant) -> int:
        return obj._keys

    def save_model(self, request: HttpRequest, obj: Tenant, form, change: bool) -> None:
        fields = {k: v for k, v in form.cleaned_data.items() if k in TENANT_FIELDS}
        if change:
            tenant_update(tenant=obj, **fields)
        else:
            adopt_saved(obj, tenant_create(name=obj.name, **fields))

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        tenant_delete(tenant=obj)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)
        for membership in formset.deleted_objects:
            membership_delete(membership=membership)
        for membership, _changed in formset.changed_objects:
            membership_set(user=membership.user, tenant=form.instance, role=membership.role)
        for membership in formset.new_objects:
            saved = membership_set(user=membership.user, tenant=form.instance, role=membership.role)
            adopt_saved(membership, saved)


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", ("tenant", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user", "tenant")
    search_fields = ("user__username", "user__email", "tenant__name")
    ordering = ("tenant__name", "user__username")
    fields = ("user", "tenant", "role", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None):
        fields = ["created_at", "updated_at"]
        if obj is not None:
            fields += ["user", "tenant"]
        return fields

    def save_model(self, request: HttpRequest, obj: Membership, form, change: bool) -> None:
        adopt_saved(obj, membership_set(user=obj.user, tenant=obj.tenant, role=obj.role))

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        membership_delete(membership=obj)
