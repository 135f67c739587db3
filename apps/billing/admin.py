"""Billing in the admin: usage records, budgets and their alerts, per-model limits,
invoices and cost recomputations. The usage dashboard lives at /admin/billing/dashboard/
(``apps.billing.views``).

Usage records can run into the millions: their list is read-only, paginated without an
exact count on PostgreSQL, and its filters and date drill-down read tenants and hourly
rollups rather than scanning the records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Max, Min, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import capfirst

from apps.billing.models import (
    Budget,
    BudgetAlert,
    CostRecomputation,
    Invoice,
    InvoiceLine,
    ModelRateLimit,
    UsageRecord,
)
from apps.billing.selectors import budgets_with_spend, rollup_list
from apps.billing.services import (
    budget_alerts_acknowledge,
    budget_delete,
    budget_set,
    invoice_close,
    invoice_refresh,
    model_rate_limit_delete,
    model_rate_limit_set,
)
from apps.billing.views import invoice_csv_response
from apps.core.admin import BAD, OFF, OK, WARN, adopt_saved, badge, enabled_badge
from apps.core.errors import GatewayError
from apps.tenants.access import access_for_request
from apps.tenants.admin_mixins import TenantScopedAdminMixin, TenantScopedInlineMixin
from apps.tenants.selectors import tenant_list

# --- shared pieces ----------------------------------------------------------------------


class ScopedTenantFilter(admin.SimpleListFilter):
    """Tenants the user may read (a related-field filter would list every tenant)."""

    title = "tenant"
    parameter_name = "tenant"
    tenant_field = "tenant_id"

    def lookups(self, request, model_admin):
        tenants = tenant_list(tenant_ids=access_for_request(request).tenant_ids)
        return [(str(t.pk), t.name) for t in tenants.order_by("name")]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(**{self.tenant_field: int(self.value())})
        return queryset


class EstimatedCountPaginator(Paginator):
    """PostgreSQL: an unfiltered count comes from the planner's statistics, not a scan."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if connection.vendor == "postgresql" and isinstance(qs, QuerySet) and not qs.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                    [qs.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] and row[0] > 10_000:
                return int(row[0])
        return super().count


def money(value: Any, places: int = 4) -> str:
    return "—" if value is None else f"{value:,.{places}f}"


class ReadOnlyAdminMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- usage records ----------------------------------------------------------------------


class StatusClassFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status_class"

    def lookups(self, request, model_admin):
        return (
            ("ok", "success (< 400)"),
            ("error", "error (≥ 400)"),
            ("4xx", "4xx"),
            ("429", "429 rate limited"),
            ("5xx", "5xx"),
        )

    def queryset(self, request, queryset):
        value = self.value()
        if value == "ok":
            return queryset.filter(status__lt=400)
        if value == "error":
            return queryset.filter(status__gte=400)
        if value == "4xx":
            return queryset.filter(status__gte=400, status__lt=500)
        if value == "429":
            return queryset.filter(status=429)
        if value == "5xx":
            return queryset.filter(status__gte=500)
        return queryset


class ModelNameFilter(admin.SimpleListFilter):
    """Model names as the rollups know them (a distinct over usage records would scan)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        names = (
            rollup_list(tenant_ids=access_for_request(request).tenant_ids)
            .order_by("model_name")
            .values_list("model_name", flat=True)
            .distinct()
        )
        return [(name, name) for name in names[:200]]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(
                Q(served_model=self.value()) | Q(served_model="", requested_model=self.value())
            )
        return queryset


def status_badge(status: int):
    if status < 400:
        return badge(str(status), OK)
    if status == 429 or status < 500:
        return badge(str(status), WARN)
    return badge(str(status), BAD)


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "tenant",
        "key_display",
        "model_display",
        "status_display",
        "tokens",
        "cost",
        "timing",
        "flags",
    )
    list_filter = (
        ScopedTenantFilter,
        StatusClassFilter,
        ModelNameFilter,
        "streamed",
        "usage_estimated",
        "cache_hit",
    )
    list_select_related = ("tenant",)
    search_fields = ("=request_id", "=key_prefix")
    search_help_text = "Exact request id or key prefix."
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-created_at",)
    fieldsets = (
        (
            None,
            {"fields": ("created_at", "request_id", "record_id", "tenant", "key", "key_prefix")},
        ),
        (
            "Routing",
            {
                "fields": (
                    "endpoint",
                    "requested_model",
                    "served_model",
                    "provider",
                    "upstream_model",
                    "deployment_id",
                    "experiment",
                    "variant",
                    "attempts",
                )
            },
        ),
        (
            "Usage and cost",
            {
                "fields": (
                    "prompt_tokens",
                    "completion_tokens",
                    "cached_tokens",
                    "cache_write_tokens",
                    "reasoning_tokens",
                    "usage_estimated",
                    "cost_usd",
                    "price_id",
                )
            },
        ),
        (
            "Outcome",
            {
                "fields": (
                    "status",
                    "error_code",
                    "latency_ms",
                    "ttft_ms",
                    "streamed",
                    "cache_hit",
                )
            },
        ),
    )

    @admin.display(description="key", ordering="key_prefix")
    def key_display(self, obj: UsageRecord):
        if not obj.key_prefix:
            return "—"
        return format_html('<code style="white-space: nowrap">{}</code>', obj.key_prefix)

    @admin.display(description="model")
    def model_display(self, obj: UsageRecord):
        name = obj.served_model or obj.requested_model
        if obj.served_model and obj.served_model != obj.requested_model:
            name = f"{obj.requested_model} → {obj.served_model}"
        if not obj.provider:
            return name
        return format_html("{}<br><small>{}</small>", name, obj.provider)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: UsageRecord):
        if obj.error_code:
            return format_html("{} <small>{}</small>", status_badge(obj.status), obj.error_code)
        return status_badge(obj.status)

    @admin.display(description="tokens in/out")
    def tokens(self, obj: UsageRecord) -> str:
        mark = "~" if obj.usage_estimated else ""
        return f"{mark}{obj.prompt_tokens} / {mark}{obj.completion_tokens}"

    @admin.display(description="cost USD", ordering="cost_usd")
    def cost(self, obj: UsageRecord) -> str:
        return money(obj.cost_usd, 6)

    @admin.display(description="latency / ttft ms", ordering="latency_ms")
    def timing(self, obj: UsageRecord) -> str:
        ttft = "—" if obj.ttft_ms is None else f"{obj.ttft_ms:,.0f}"
        return f"{obj.latency_ms:,.0f} / {ttft}"

    @admin.display(description="")
    def flags(self, obj: UsageRecord):
        parts = []
        if obj.streamed:
            parts.append(badge("stream", OFF))
        if obj.usage_estimated:
            parts.append(badge("estimated", WARN))
        if obj.cache_hit:
            parts.append(badge("cache", OK))
        return format_html(" ".join(["{}"] * len(parts)), *parts) if parts else ""

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            context["rollup_date_hierarchy"] = self.rollup_date_hierarchy(request, context["cl"])
            context["dashboard_url"] = reverse("billing-dashboard")
        return response

    def rollup_date_hierarchy(self, request: HttpRequest, cl) -> dict[str, Any]:
        """The admin's date drill-down, with its choices read from hourly rollups.

        Django's own lists distinct dates of the filtered records, a scan of the period;
        the rollups hold one row per hour and dimension instead. The links filter the
        records exactly as Django's would (``created_at__year`` and so on).
        """
        year, month, day = (
            cl.params.get(f"created_at__{part}") for part in ("year", "month", "day")
        )
        rollups = rollup_list(tenant_ids=access_for_request(request).tenant_ids)

        def link(filters: dict[str, Any]) -> str:
            return cl.get_query_string(filters, ["created_at__"])

        if not (year or month or day):
            span = rollups.aggregate(first=Min("bucket"), last=Max("bucket"))
            if span["first"] and span["last"]:
                first, last = (timezone.localtime(span[k]) for k in ("first", "last"))
                if first.year == last.year:
                    year = first.year
                    if first.month == last.month:
                        month = first.month
        if year and month and day:
            when = datetime(int(year), int(month), int(day), tzinfo=UTC)
            return {
                "show": True,
                "back": {
                    "link": link({"created_at__year": year, "created_at__month": month}),
                    "title": capfirst(formats.date_format(when, "YEAR_MONTH_FORMAT")),
                },
                "choices": [{"title": capfirst(formats.date_format(when, "MONTH_DAY_FORMAT"))}],
            }
        if year and month:
            days = rollups.filter(bucket__year=year, bucket__month=month).datetimes("bucket", "day")
            return {
                "show": True,
                "back": {"link": link({"created_at__year": year}), "title": str(year)},
                "choices": [
                    {
                        "link": link(
                            {
                                "created_at__year": year,
                                "created_at__month": month,
                                "created_at__day": d.day,
                            }
                        ),
                        "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                    }
                    for d in days
                ],
            }
        if year:
            months = rollups.filter(bucket__year=year).datetimes("bucket", "month")
            return {
                "show": True,
                "back": {"link": link({}), "title": "All dates"},
                "choices": [
                    {
                        "link": link({"created_at__year": year, "created_at__month": m.month}),
                        "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT")),
                    }
                    for m in months
                ],
            }
        years = rollups.datetimes("bucket", "year")
        return {
            "show": True,
            "back": None,
            "choices": [
                {"link": link({"created_at__year": str(y.year)}), "title": str(y.year)}
                for y in years
            ],
        }


# --- budgets -----------------------------------------------------------------------------


class BudgetForm(forms.ModelForm):
    webhook_secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Signs alert webhooks (HMAC-SHA256). Write-only: leave empty to keep the "
        "current one.",
    )
    clear_webhook_secret = forms.BooleanField(required=False, label="Remove the webhook secret")
    webhook_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text="Receives a signed alert at the soft limit.",
    )

    class Meta:
        model = Budget
        fields = (
            "tenant",
            "key",
            "period",
            "limit_usd",
            "soft_limit_pct",
            "webhook_url",
            "enabled",
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        tenant, key = data.get("tenant") or self.instance_tenant(), data.get("key")
        if key is not None and tenant is not None and key.tenant_id != tenant.pk:
            self.add_error("key", "This key belongs to another tenant.")
        return data

    def instance_tenant(self):
        return self.instance.tenant if self.instance.pk else None


@admin.register(Budget)
class BudgetAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    form = BudgetForm
    list_display = (
        "owner",
        "tenant",
        "period",
        "limit",
        "spent",
        "soft_limit_pct",
        "webhook",
        "enabled_display",
    )
    list_filter = (ScopedTenantFilter, "period", "enabled")
    list_select_related = ("tenant", "key")
    search_fields = ("tenant__name", "key__name", "key__prefix")
    readonly_fields = ("webhook_secret_status", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return budgets_with_spend(super().get_queryset(request))

    def get_fieldsets(self, request: HttpRequest, obj: Budget | None = None):
        secret = ("webhook_secret", "clear_webhook_secret")
        if obj is not None:
            secret = ("webhook_secret_status", *secret)
        return (
            (
                None,
                {"fields": ("tenant", "key", "period", "limit_usd", "soft_limit_pct", "enabled")},
            ),
            ("Alerts", {"fields": ("webhook_url", *secret)}),
            ("History", {"fields": ("created_at", "updated_at")}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Budget | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            # A budget is one (owner, period): change its limits, or add another budget.
            fields += ["tenant", "key", "period"]
        return fields

    @admin.display(description="budget of")
    def owner(self, obj: Budget):
        if obj.key_id:
            return format_html("key {} <code>{}</code>", obj.key.name, obj.key.prefix)
        return "whole tenant"

    @admin.display(description="limit USD", ordering="limit_usd")
    def limit(self, obj: Budget) -> str:
        return money(obj.limit_usd, 2)

    @admin.display(description="spent this period")
    def spent(self, obj: Budget):
        spent = getattr(obj, "spent_usd", None)
        if spent is None or not obj.limit_usd:
            return money(spent, 2)
        share = 100 * spent / obj.limit_usd
        tone = BAD if share >= 100 else WARN if share >= obj.soft_limit_pct else OK
        return format_html("{} {}", money(spent, 2), badge(f"{share:.0f}%", tone))

    @admin.display(description="webhook")
    def webhook(self, obj: Budget):
        if not obj.webhook_url:
            return "—"
        return format_html(
            "{} {}", obj.webhook_url, badge("signed", OK) if obj.webhook_secret_encrypted else ""
        )

    @admin.display(description="enabled", ordering="enabled")
    def enabled_display(self, obj: Budget):
        return enabled_badge(obj.enabled)

    @admin.display(description="webhook secret")
    def webhook_secret_status(self, obj: Budget) -> str:
        return "set (encrypted)" if obj.webhook_secret_encrypted else "not set"

    def save_model(self, request: HttpRequest, obj: Budget, form, change: bool) -> None:
        data = form.cleaned_data
        secret = data.get("webhook_secret") or None
        if data.get("clear_webhook_secret"):
            secret = ""
        saved = budget_set(
            tenant=obj.tenant,
            key=obj.key,
            period=obj.period,
            limit_usd=data["limit_usd"],
            soft_limit_pct=data["soft_limit_pct"],
            webhook_url=data.get("webhook_url") or "",
            webhook_secret=secret,
            enabled=data.get("enabled", False),
        )
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        budget_delete(budget=obj)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    tenant_lookup = "budget__tenant"
    list_display = (
        "created_at",
        "tenant",
        "budget",
        "level_display",
        "spent",
        "period_start",
        "webhook_status",
        "acknowledged",
    )
    list_filter = ("level", "acknowledged")
    list_select_related = ("budget__tenant", "budget__key")
    actions = ("acknowledge",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        return self.access(request).can_write_any

    @admin.display(description="tenant", ordering="budget__tenant__name")
    def tenant(self, obj: BudgetAlert) -> str:
        return obj.budget.tenant.name

    @admin.display(description="level", ordering="level")
    def level_display(self, obj: BudgetAlert):
        return badge(obj.level, BAD if obj.level == BudgetAlert.Level.HARD else WARN)

    @admin.display(description="spent USD", ordering="spent_usd")
    def spent(self, obj: BudgetAlert) -> str:
        return money(obj.spent_usd, 2)

    @admin.action(description="Acknowledge selected alerts", permissions=("acknowledge",))
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[BudgetAlert]) -> None:
        writable = [a.pk for a in queryset if self.can_write(request, a)]
        count = budget_alerts_acknowledge(alert_ids=writable)
        self.message_user(request, f"Acknowledged {count} alert(s).", messages.SUCCESS)


# --- per-model limits ----------------------------------------------------------------------


@admin.register(ModelRateLimit)
class ModelRateLimitAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ("model_name", "tenant", "rpm", "tpm", "max_concurrent", "updated_at")
    list_filter = (ScopedTenantFilter,)
    list_select_related = ("tenant",)
    search_fields = ("model_name", "tenant__name")
    fields = ("tenant", "model_name", "rpm", "tpm", "max_concurrent")

    def save_model(self, request: HttpRequest, obj: ModelRateLimit, form, change: bool) -> None:
        saved = model_rate_limit_set(
            tenant=obj.tenant,
            model_name=obj.model_name,
            rpm=obj.rpm,
            tpm=obj.tpm,
            max_concurrent=obj.max_concurrent,
            limit=obj if change else None,
        )
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: ModelRateLimit) -> None:
        model_rate_limit_delete(limit=obj)


# --- invoices ------------------------------------------------------------------------------


class InvoiceLineInline(TenantScopedInlineMixin, admin.TabularInline):
    model = InvoiceLine
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("model_name", "requests", "prompt_tokens", "completion_tokens", "cost_usd")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    inlines = (InvoiceLineInline,)
    list_display = (
        "period",
        "tenant",
        "status_display",
        "subtotal",
        "markup_pct",
        "total",
        "closed_at",
        "documents",
    )
    list_filter = ("status", ScopedTenantFilter)
    list_select_related = ("tenant",)
    search_fields = ("tenant__name",)
    date_hierarchy = "period_start"
    actions = ("close_selected", "refresh_selected", "export_csv")
    fields = (
        "tenant",
        "period_start",
        "period_end",
        "status",
        "subtotal_usd",
        "markup_pct",
        "total_usd",
        "closed_at",
        "documents",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_billing_permission(self, request: HttpRequest) -> bool:
        """Closing and rebuilding invoices is the platform's business, not the tenant's."""
        return self.is_platform_admin(request)

    @admin.display(description="period", ordering="period_start")
    def period(self, obj: Invoice) -> str:
        return f"{obj.period_start:%Y-%m}"

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Invoice):
        return badge(obj.status, OK if obj.status == Invoice.Status.CLOSED else WARN)

    @admin.display(description="subtotal USD", ordering="subtotal_usd")
    def subtotal(self, obj: Invoice) -> str:
        return money(obj.subtotal_usd, 4)

    @admin.display(description="total USD", ordering="total_usd")
    def total(self, obj: Invoice) -> str:
        return money(obj.total_usd, 2)

    @admin.display(description="documents")
    def documents(self, obj: Invoice):
        if not obj.pk:
            return "—"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">printable invoice</a> · '
            '<a href="{}">CSV</a>',
            reverse("billing-invoice-print", args=[obj.pk]),
            reverse("billing-invoice-csv", args=[obj.pk]),
        )

    @admin.action(description="Close selected invoices", permissions=("billing",))
    def close_selected(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        closed, failed = 0, []
        for invoice in queryset.select_related("tenant"):
            if invoice.status == Invoice.Status.CLOSED:
                continue
            try:
                invoice_close(tenant=invoice.tenant, period_start=invoice.period_start)
                closed += 1
            except GatewayError as exc:
                failed.append(f"{invoice}: {exc.message}")
        if closed:
            self.message_user(request, f"Closed {closed} invoice(s).", messages.SUCCESS)
        for message in failed:
            self.message_user(request, f"Not closed: {message}", messages.ERROR)
        if not closed and not failed:
            self.message_user(request, "The selected invoices were closed already.", messages.INFO)

    @admin.action(description="Rebuild selected open invoices from usage", permissions=("billing",))
    def refresh_selected(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        refreshed = 0
        for invoice in queryset.filter(status=Invoice.Status.OPEN).select_related("tenant"):
            invoice_refresh(tenant=invoice.tenant, period_start=invoice.period_start)
            refreshed += 1
        self.message_user(
            request,
            f"Rebuilt {refreshed} open invoice(s); closed invoices never change.",
            messages.SUCCESS,
        )

    @admin.action(description="Export selected invoices as CSV", permissions=("view",))
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Invoice]):
        invoices = list(queryset.select_related("tenant").prefetch_related("lines"))
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        return invoice_csv_response(invoices, f"invoices-{stamp}.csv")


# --- cost recomputations (platform admins) -------------------------------------------------


@admin.register(CostRecomputation)
class CostRecomputationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Written by ``manage.py recompute_costs``; an audit trail, so never edited."""

    list_display = (
        "created_at",
        "window_start",
        "window_end",
        "model_display",
        "records",
        "old_total",
        "new_total",
        "difference",
        "actor",
    )
    list_filter = ("model_name",)
    search_fields = ("model_name", "actor", "note")
    date_hierarchy = "created_at"

    @admin.display(description="model", ordering="model_name")
    def model_display(self, obj: CostRecomputation) -> str:
        return obj.model_name or "all models"

    @admin.display(description="old total USD")
    def old_total(self, obj: CostRecomputation) -> str:
        return money(obj.old_total_usd, 6)

    @admin.display(description="new total USD")
    def new_total(self, obj: CostRecomputation) -> str:
        return money(obj.new_total_usd, 6)

    @admin.display(description="difference USD")
    def difference(self, obj: CostRecomputation) -> str:
        return f"{obj.new_total_usd - obj.old_total_usd:+,.6f}"
