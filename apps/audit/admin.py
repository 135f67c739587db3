from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.audit.models import Action, AuditEvent
from apps.core.admin import BAD, OK, WARN, badge
from apps.tenants.admin_mixins import TenantScopedAdminMixin

ACTION_TONES = {Action.CREATE: OK, Action.UPDATE: WARN, Action.DELETE: BAD}


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


class ObjectTypeFilter(admin.SimpleListFilter):
    title = "object type"
    parameter_name = "object_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin):
        types = (
            model_admin.get_queryset(request)
            .order_by("object_type")
            .values_list("object_type", flat=True)
            .distinct()
        )
        return [(t, t) for t in types]

    def queryset(self, request: HttpRequest, queryset):
        return queryset.filter(object_type=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    """Read-only for everyone: the trail is written by the application, never by hand.

    Tenant staff see their tenants' events; platform events (no tenant) and other
    tenants' stay with platform admins.
    """

    list_display = (
        "created_at",
        "actor",
        "source",
        "action_badge",
        "object_type",
        "object_repr",
        "tenant_name",
        "changed_fields",
    )
    list_filter = (
        "source",
        "action",
        ObjectTypeFilter,
        ("tenant", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    search_fields = ("actor", "object_repr", "object_id", "tenant_name", "request_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    list_per_page = 100
    show_full_result_count = False
    fields = (
        "created_at",
        "actor",
        "actor_user",
        "source",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "tenant",
        "tenant_name",
        "request_id",
        "ip",
        "changes_table",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).select_related("actor_user", "tenant")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="action", ordering="action")
    def action_badge(self, obj: AuditEvent) -> SafeString:
        return badge(obj.action, ACTION_TONES.get(obj.action, WARN))

    @admin.display(description="fields")
    def changed_fields(self, obj: AuditEvent) -> str:
        names = sorted(obj.changes or {})
        text = ", ".join(names[:6])
        return text + (f" (+{len(names) - 6})" if len(names) > 6 else "")

    @admin.display(description="changes")
    def changes_table(self, obj: AuditEvent) -> SafeString:
        if not obj.changes:
            return format_html("<p>{}</p>", "No field values recorded.")
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            ((name, _show(old), _show(new)) for name, (old, new) in sorted(obj.changes.items())),
        )
        return format_html(
            '<table class="gw-audit-changes"><thead><tr><th>field</th><th>before</th>'
            "<th>after</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )
