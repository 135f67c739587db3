from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminURLFieldWidget
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from apps.core import secrets
from apps.core.admin import (
    BAD,
    OFF,
    OK,
    WARN,
    CommaSeparatedField,
    adopt_saved,
    badge,
    enabled_badge,
)
from apps.core.errors import GatewayError
from apps.providers.models import Deployment, Model, Provider
from apps.providers.selectors import provider_health
from apps.providers.services import (
    DEPLOYMENT_FIELDS,
    MODEL_FIELDS,
    PROVIDER_FIELDS,
    deployment_create,
    deployment_delete,
    deployment_update,
    model_create,
    model_delete,
    model_update,
    provider_create,
    provider_delete,
    provider_sync_models,
    provider_test_connection,
    provider_update,
)
from apps.tenants.admin_mixins import TenantScopedAdminMixin, TenantScopedInlineMixin

TENANT_PROVIDER_MISMATCH = "A tenant's provider can only serve that tenant's models."


def owner_label(tenant_id: int | None, tenant: Any) -> str:
    return str(tenant) if tenant_id else "platform"


def provider_choice_label(provider: Provider) -> str:
    return f"{provider.name} ({owner_label(provider.tenant_id, provider.tenant)}, {provider.kind})"


def credential_state(provider: Provider) -> str:
    """What the admin may say about a credential: never the value, never the ciphertext."""
    if provider.credential_ref:
        return f"reference: {provider.credential_ref}"
    if provider.credential_encrypted:
        return "set (encrypted)"
    return "not set"


def health_badge(provider: Provider):
    if provider.last_check_ok is None:
        return badge("not checked", OFF)
    return badge("ok", OK) if provider.last_check_ok else badge("failed", BAD)


# --- providers ------------------------------------------------------------------


class ProviderForm(forms.ModelForm):
    """The credential is write-only: it is never rendered back, not even after an error."""

    base_url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        widget=AdminURLFieldWidget,
        help_text="As the provider's official SDK takes it (OpenAI: https://…/v1). "
        "Empty: the kind's default.",
    )

    credential = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "new-password", "class": "vTextField"}
        ),
        help_text="An API key (stored encrypted) or a reference: env:NAME or file:PATH. "
        "When editing, leave blank to keep the current credential.",
    )
    clear_credential = forms.BooleanField(
        required=False, label="Clear credential", help_text="Remove the stored credential."
    )

    class Meta:
        model = Provider
        fields = ("tenant", "name", "kind", "base_url", "enabled", "options")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and "credential" in self.fields:
            self.fields["credential"].label = "New credential"

    def clean_credential(self) -> str:
        value = self.cleaned_data.get("credential") or ""
        if secrets.is_reference(value) and not value.split(":", 1)[1].strip():
            raise forms.ValidationError("A reference needs a name: env:NAME or file:PATH.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("credential") and data.get("clear_credential"):
            raise forms.ValidationError("Enter a new credential or clear it, not both.")
        return data

    def credential_change(self) -> str | None:
        """``None`` keeps the stored credential, ``""`` clears it, anything else replaces it."""
        if self.cleaned_data.get("clear_credential"):
            return ""
        return self.cleaned_data.get("credential") or None


@admin.register(Provider)
class ProviderAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    form = ProviderForm
    platform_readable = True
    list_display = (
        "name",
        "kind",
        "owner",
        "base_url",
        "credential_status",
        "status",
        "health",
        "state",
        "last_check_at",
        "deployment_count",
    )
    list_filter = (
        "kind",
        "enabled",
        "last_check_ok",
        ("tenant", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("tenant",)
    search_fields = ("name", "base_url", "tenant__name")
    ordering = ("name",)
    actions = ("test_connection", "sync_models")
    readonly_fields = (
        "credential_status",
        "health",
        "last_check_at",
        "last_check_message",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_deployments=Count("deployments"))

    def get_list_display(self, request: HttpRequest):
        if self.is_platform_admin(request):
            return self.list_display
        # Platform providers are listed to tenants, their endpoints are not.
        return tuple(f for f in self.list_display if f != "base_url")

    def get_fieldsets(self, request: HttpRequest, obj: Provider | None = None):
        if obj is None:
            return (
                (None, {"fields": ("tenant", "name", "kind", "base_url", "enabled")}),
                ("Credential", {"fields": ("credential",)}),
                ("Options", {"fields": ("options",), "classes": ("collapse",)}),
            )
        health = ("Health", {"fields": ("health", "last_check_at", "last_check_message")})
        if not self.has_change_permission(request, obj):
            main = ("tenant", "name", "kind", "enabled", "credential_status")
            if obj.tenant_id is not None or self.is_platform_admin(request):
                main += ("base_url", "options")
            return ((None, {"fields": main}), health)
        return (
            (None, {"fields": ("tenant", "name", "kind", "base_url", "enabled")}),
            ("Credential", {"fields": ("credential_status", "credential", "clear_credential")}),
            ("Options", {"fields": ("options",)}),
            health,
            ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Provider | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("tenant")
        return fields

    # --- columns -------------------------------------------------------------
    @admin.display(description="owner", ordering="tenant__name")
    def owner(self, obj: Provider) -> str:
        return owner_label(obj.tenant_id, obj.tenant)

    @admin.display(description="stored credential")
    def credential_status(self, obj: Provider) -> str:
        return credential_state(obj)

    @admin.display(description="enabled", ordering="enabled")
    def status(self, obj: Provider):
        return enabled_badge(obj.enabled)

    @admin.display(description="last check", ordering="last_check_ok")
    def health(self, obj: Provider):
        if obj.last_check_ok is False and obj.last_check_message:
            return format_html(
                '{} <span title="{}">{}</span>',
                health_badge(obj),
                obj.last_check_message,
                obj.last_check_message[:80],
            )
        return health_badge(obj)

    @admin.display(description="deployments", ordering="_deployments")
    def deployment_count(self, obj: Provider) -> int:
        return obj._deployments

    def get_changelist_instance(self, request: HttpRequest):
        # The page's health in one pass: one query for deployments, one Redis read.
        changelist = super().get_changelist_instance(request)
        health = provider_health(providers=list(changelist.result_list))
        for provider in changelist.result_list:
            provider.health_info = health.get(provider.pk)
        return changelist

    @admin.display(description="state")
    def state(self, obj: Provider):
        health = getattr(obj, "health_info", None) or provider_health(providers=[obj])[obj.pk]
        colour = {"up": OK, "degraded": WARN, "down": BAD}.get(health.status, OFF)
        open_circuits = sum(1 for s in health.circuits.values() if s != "closed")
        details = [
            f"{health.latency_ms:.0f} ms" if health.latency_ms is not None else "",
            f"{open_circuits} open circuit(s)" if open_circuits else "",
        ]
        return format_html(
            "{} <small>{}</small>", badge(health.status, colour), " · ".join(filter(None, details))
        )

    @admin.action(description="Sync models from the provider", permissions=("change",))
    def sync_models(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            if not self.can_write(request, provider):
                self.message_user(request, f"Not allowed to sync {provider.name}.", messages.ERROR)
                continue
            try:
                created = provider_sync_models(provider=provider)
            except GatewayError as exc:
                self.message_user(request, f"{provider.name}: {exc.message}", messages.ERROR)
                continue
            names = ", ".join(m.name for m in created) or "none new"
            self.message_user(
                request,
                f"{provider.name}: {len(created)} model(s) added, disabled until priced: {names}",
                messages.SUCCESS,
            )

    # --- writes ----------------------------------------------------------------
    def save_model(self, request: HttpRequest, obj: Provider, form, change: bool) -> None:
        fields = {k: v for k, v in form.cleaned_data.items() if k in PROVIDER_FIELDS}
        credential = form.credential_change()
        if change:
            provider_update(provider=obj, credential=credential, **fields)
        else:
            adopt_saved(
                obj, provider_create(tenant=obj.tenant, credential=credential or "", **fields)
            )

    def delete_model(self, request: HttpRequest, obj: Provider) -> None:
        provider_delete(provider=obj)

    # --- test connection: an action on the list and a button on the page ----------
    @admin.action(description="Test connection", permissions=("change",))
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            self._test_one(request, provider)

    def _test_one(self, request: HttpRequest, provider: Provider) -> None:
        if not self.can_write(request, provider):
            self.message_user(request, f"Not allowed to test {provider.name}.", messages.ERROR)
            return
        ok, message = provider_test_connection(provider=provider)
        self.message_user(
            request,
            f"Connection to {provider.name}: {message}",
            messages.SUCCESS if ok else messages.ERROR,
        )

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/test-connection/",
                self.admin_site.admin_view(self.test_connection_view),
                name="{}_{}_test_connection".format(*info),
            ),
            *super().get_urls(),
        ]

    def test_connection_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._test_connection_view)(request, object_id)

    def _test_connection_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        provider = self.get_object(request, unquote(object_id))
        if provider is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, provider):
            raise PermissionDenied
        self._test_one(request, provider)
        return HttpResponseRedirect(
            reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[provider.pk],
                current_app=self.admin_site.name,
            )
        )


# --- models and deployments --------------------------------------------------------


class DeploymentInlineForm(forms.ModelForm):
    class Meta:
        model = Deployment
        fields = ("provider", "upstream_model", "weight", "priority", "enabled")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A deployment's target is fixed once created: add a new row to move traffic.
        if self.instance.pk and "provider" in self.fields:
            self.fields["provider"].disabled = True


class DeploymentInlineFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        tenant_id = self.instance.tenant_id
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or self._should_delete_form(form):
                continue
            provider = form.cleaned_data.get("provider")
            if provider and provider.tenant_id is not None and provider.tenant_id != tenant_id:
                form.add_error("provider", TENANT_PROVIDER_MISMATCH)


class DeploymentInline(TenantScopedInlineMixin, admin.TabularInline):
    model = Deployment
    form = DeploymentInlineForm
    formset = DeploymentInlineFormSet
    fields = ("provider", "upstream_model", "weight", "priority", "enabled", "provider_health")
    readonly_fields = ("provider_health",)
    extra = 1

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("provider", "provider__tenant")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "provider" and field is not None:
            field.queryset = field.queryset.select_related("tenant")
            field.label_from_instance = provider_choice_label
        return field

    @admin.display(description="provider health")
    def provider_health(self, obj: Deployment):
        return health_badge(obj.provider) if obj.pk else "–"


class GatewayModelForm(forms.ModelForm):
    fallbacks = CommaSeparatedField(
        required=False,
        help_text="Other model names tried in order when every deployment fails.",
        widget=forms.TextInput(attrs={"class": "vLargeTextField"}),
    )

    class Meta:
        model = Model
        fields = ("tenant", *sorted(MODEL_FIELDS))


@admin.register(Model)
class ModelAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    form = GatewayModelForm
    platform_readable = True
    inlines = (DeploymentInline,)
    list_display = (
        "name",
        "owner",
        "mode",
        "deployment_count",
        "pricing",
        "status",
        "updated_at",
    )
    list_filter = ("mode", "enabled", ("tenant", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("tenant",)
    search_fields = ("name", "description", "deployments__upstream_model")
    ordering = ("name",)
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("tenant", "name", "description", "mode", "enabled")}),
        (
            "Pricing (USD per million tokens)",
            {"fields": ("input_price_per_million", "output_price_per_million")},
        ),
        ("Routing", {"fields": ("fallbacks", "timeout_s", "retries")}),
        ("Limits", {"fields": ("context_window", "max_output_tokens")}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _deployments=Count("deployments"),
                _live=Count("deployments", filter=Q(deployments__enabled=True)),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("tenant")
        return fields

    @admin.display(description="owner", ordering="tenant__name")
    def owner(self, obj: Model) -> str:
        return owner_label(obj.tenant_id, obj.tenant)

    @admin.display(description="deployments (enabled / all)", ordering="_live")
    def deployment_count(self, obj: Model):
        if obj._deployments and not obj._live:
            return badge(f"0 / {obj._deployments}", WARN)
        if not obj._deployments:
            return badge("none", BAD)
        return f"{obj._live} / {obj._deployments}"

    @admin.display(description="USD per 1M tokens (in / out)", ordering="input_price_per_million")
    def pricing(self, obj: Model) -> str:
        return f"{_money(obj.input_price_per_million)} / {_money(obj.output_price_per_million)}"

    @admin.display(description="enabled", ordering="enabled")
    def status(self, obj: Model):
        return enabled_badge(obj.enabled)

    def save_model(self, request: HttpRequest, obj: Model, form, change: bool) -> None:
        fields = {k: v for k, v in form.cleaned_data.items() if k in MODEL_FIELDS}
        if change:
            model_update(model=obj, **fields)
        else:
            adopt_saved(obj, model_create(tenant=obj.tenant, **fields))

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        model_delete(model=obj)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not Deployment:
            return super().save_formset(request, form, formset, change)
        save_deployments(model=form.instance, formset=formset)


def _money(value: Decimal) -> str:
    """At least cents; more digits only where the price has them (0.00015)."""
    whole, _, fraction = f"{value:f}".partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def save_deployments(*, model: Model, formset) -> None:
    """Apply an inline formset of deployments through the services."""
    formset.save(commit=False)
    for deployment in formset.deleted_objects:
        deployment_delete(deployment=deployment)
    for deployment, changed in formset.changed_objects:
        fields = {name: getattr(deployment, name) for name in changed if name in DEPLOYMENT_FIELDS}
        if fields:
            deployment_update(deployment=deployment, **fields)
    for deployment in formset.new_objects:
        saved = deployment_create(
            model=model,
            provider=deployment.provider,
            upstream_model=deployment.upstream_model,
            weight=deployment.weight,
            priority=deployment.priority,
            enabled=deployment.enabled,
        )
        adopt_saved(deployment, saved)


class DeploymentForm(forms.ModelForm):
    class Meta:
        model = Deployment
        fields = ("model", "provider", "upstream_model", "weight", "priority", "enabled", "options")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        model = data.get("model") or (self.instance.model if self.instance.pk else None)
        provider = data.get("provider") or (self.instance.provider if self.instance.pk else None)
        if (
            model is not None
            and provider is not None
            and provider.tenant_id is not None
            and provider.tenant_id != model.tenant_id
        ):
            raise forms.ValidationError(TENANT_PROVIDER_MISMATCH)
        return data


@admin.register(Deployment)
class DeploymentAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    form = DeploymentForm
    tenant_lookup = "model__tenant"
    platform_readable = True
    list_display = (
        "model",
        "owner",
        "provider",
        "upstream_model",
        "weight",
        "priority",
        "status",
        "provider_health",
    )
    list_filter = (
        "enabled",
        "provider__kind",
        ("provider", admin.RelatedOnlyFieldListFilter),
        ("model__tenant", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("model", "model__tenant", "provider")
    search_fields = ("model__name", "provider__name", "upstream_model")
    ordering = ("model__name", "priority", "-weight")
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Deployment | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["model", "provider"]
        return fields

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "provider" and field is not None:
            field.queryset = field.queryset.select_related("tenant")
            field.label_from_instance = provider_choice_label
        return field

    @admin.display(description="owner", ordering="model__tenant__name")
    def owner(self, obj: Deployment) -> str:
        return owner_label(obj.model.tenant_id, obj.model.tenant)

    @admin.display(description="enabled", ordering="enabled")
    def status(self, obj: Deployment):
        return enabled_badge(obj.enabled)

    @admin.display(description="provider health", ordering="provider__last_check_ok")
    def provider_health(self, obj: Deployment):
        return health_badge(obj.provider)

    def save_model(self, request: HttpRequest, obj: Deployment, form, change: bool) -> None:
        fields = {k: v for k, v in form.cleaned_data.items() if k in DEPLOYMENT_FIELDS}
        if change:
            deployment_update(deployment=obj, **fields)
        else:
            adopt_saved(
                obj,
                deployment_create(
                    model=obj.model,
                    provider=obj.provider,
                    upstream_model=fields.pop("upstream_model"),
                    **fields,
                ),
            )

    def delete_model(self, request: HttpRequest, obj: Deployment) -> None:
        deployment_delete(deployment=obj)
