"""The content-policy editor, with a "Try it" box on the change page.

Try it checks sample text against the rules *as they are in the form* (edited, not yet
saved): the form posts with ``_gw_try``, is validated, nothing is saved, and the page
comes back with the edits and the engine's verdict for the text as a prompt and as an
answer. Users who may only view a policy try the saved one.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from apps.core.admin import BAD, OFF, OK, WARN, adopt_saved, badge, enabled_badge
from apps.guardrails.detectors import DETECTORS
from apps.guardrails.engine import CompiledPolicy, FilterResult, InputVerdict, compile_policies
from apps.guardrails.forms import PolicyForm, detector_field_name
from apps.guardrails.models import Policy
from apps.guardrails.services import policy_create, policy_delete, policy_update
from apps.guardrails.validation import PolicyError
from apps.tenants.access import access_for_request
from apps.tenants.admin_mixins import TenantScopedAdminMixin
from apps.tenants.selectors import tenant_list

TRY_SUBMIT = "_gw_try"
TRY_TEXT = "_gw_try_text"
TRY_MAX_CHARS = 20_000


class TenantFilter(admin.SimpleListFilter):
    """Tenants the user may read (a related-field filter would list every tenant)."""

    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        tenants = tenant_list(tenant_ids=access_for_request(request).tenant_ids)
        return [(str(t.pk), t.name) for t in tenants.order_by("name")]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(tenant_id=int(self.value()))
        return queryset


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return (("tenant", "tenant default"), ("key", "one key"))

    def queryset(self, request, queryset):
        if self.value() == "tenant":
            return queryset.filter(key__isnull=True)
        if self.value() == "key":
            return queryset.filter(key__isnull=False)
        return queryset


def _verdict(blocked: bool, findings: tuple, changed: bool) -> tuple[str, str]:
    if blocked:
        return "blocked", BAD
    if changed:
        return "redacted", WARN
    if findings:
        return "flagged", WARN
    return "clean", OK


def try_policy(policy: CompiledPolicy, text: str) -> dict[str, Any]:
    """What the engine makes of ``text`` as a prompt and as an answer (for the template)."""
    verdict: InputVerdict = policy.check_input([{"role": "user", "content": text}])
    result: FilterResult = policy.filter_output_text(text)
    prompt = verdict.messages[0]["content"]
    state, tone = _verdict(verdict.blocked, verdict.findings, prompt != text)
    out_state, out_tone = _verdict(result.blocked, result.findings, result.emit != text)
    return {
        "text": text,
        "input": {
            "state": state,
            "badge": badge(state, tone),
            "active": policy.filters_input,
            "text": "" if verdict.blocked else prompt,
            "reason": verdict.reason,
            "redactions": verdict.redactions,
            "flags": verdict.flags,
        },
        "output": {
            "state": out_state,
            "badge": badge(out_state, out_tone),
            "active": policy.filters_output,
            "text": result.emit,
            "reason": result.reason,
            "redactions": result.redactions,
            "flags": result.flags,
        },
    }


@admin.register(Policy)
class PolicyAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    form = PolicyForm
    list_display = (
        "name",
        "tenant",
        "scope",
        "enabled_display",
        "directions",
        "rules_summary",
        "updated_at",
    )
    list_filter = (TenantFilter, ScopeFilter, "enabled", "applies_to_input", "applies_to_output")
    list_select_related = ("tenant", "key")
    search_fields = ("name", "description", "tenant__name", "key__name", "key__prefix")
    readonly_fields = ("created_at", "updated_at")
    actions = ("enable_policies", "disable_policies")

    class Media:
        css = {"all": ("guardrails/policy.css",)}

    # --- the editor ------------------------------------------------------------------
    def get_fieldsets(self, request: HttpRequest, obj: Policy | None = None):
        editable = self.has_change_permission(request, obj) if obj else True
        detectors = (
            tuple(detector_field_name(name) for name in DETECTORS)
            if editable
            else ("detectors_display",)
        )
        terms = ("blocked_terms", "blocked_terms_action") if editable else ("terms_display",)
        rules = ("regex_rules",) if editable else ("rules_display",)
        hidden = ("detectors",) if editable else ()
        return (
            (
                None,
                {
                    "fields": (
                        "tenant",
                        "key",
                        "name",
                        "description",
                        "enabled",
                        ("applies_to_input", "applies_to_output"),
                        *hidden,
                    )
                },
            ),
            (
                "PII and secret detectors",
                {
                    "fields": detectors,
                    "description": "Each detector blocks, redacts (replaces the match with "
                    "[REDACTED:LABEL]) or flags (reports, changes nothing).",
                },
            ),
            ("Blocked terms", {"fields": terms}),
            ("Regex rules", {"fields": rules}),
            ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Policy | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("tenant")  # a policy does not move between tenants
        if obj is not None and not self.has_change_permission(request, obj):
            fields += ["detectors_display", "terms_display", "rules_display"]
        return fields

    def save_model(self, request: HttpRequest, obj: Policy, form, change: bool) -> None:
        data = form.cleaned_data
        fields = {
            "name": data["name"],
            "description": data.get("description", ""),
            "key": data.get("key"),
            "enabled": data.get("enabled", False),
            "applies_to_input": data.get("applies_to_input", False),
            "applies_to_output": data.get("applies_to_output", False),
            "blocked_terms": data.get("blocked_terms") or [],
            "blocked_terms_action": data.get("blocked_terms_action") or "block",
            "regex_rules": data.get("regex_rules") or [],
            "detectors": data.get("detectors") or {},
        }
        if change:
            saved = policy_update(policy=obj, **fields)
        else:
            saved = policy_create(tenant=obj.tenant, **fields)
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        policy_delete(policy=obj)

    # --- list columns ----------------------------------------------------------------
    @admin.display(description="applies to", ordering="key")
    def scope(self, obj: Policy):
        if obj.key_id:
            return format_html("key {} <code>{}</code>", obj.key.name, obj.key.prefix)
        return "whole tenant"

    @admin.display(description="enabled", ordering="enabled")
    def enabled_display(self, obj: Policy):
        return enabled_badge(obj.enabled)

    @admin.display(description="checks")
    def directions(self, obj: Policy):
        parts = [
            badge(label, OK if on else OFF)
            for label, on in (("input", obj.applies_to_input), ("output", obj.applies_to_output))
        ]
        return format_html("{} {}", *parts)

    @admin.display(description="rules")
    def rules_summary(self, obj: Policy) -> str:
        parts = []
        if obj.detectors:
            parts.append(", ".join(f"{name}: {action}" for name, action in obj.detectors.items()))
        if obj.blocked_terms:
            parts.append(f"{len(obj.blocked_terms)} term(s): {obj.blocked_terms_action}")
        if obj.regex_rules:
            parts.append(f"{len(obj.regex_rules)} regex rule(s)")
        return "; ".join(parts) or "no rules"

    # --- read-only views of the JSON fields (viewers) -------------------------------
    @admin.display(description="detectors")
    def detectors_display(self, obj: Policy) -> str:
        return ", ".join(f"{n}: {a}" for n, a in (obj.detectors or {}).items()) or "none"

    @admin.display(description="blocked terms")
    def terms_display(self, obj: Policy) -> str:
        terms = ", ".join(obj.blocked_terms or ()) or "none"
        return f"{terms} ({obj.blocked_terms_action})"

    @admin.display(description="regex rules")
    def rules_display(self, obj: Policy):
        rules = obj.regex_rules or []
        if not rules:
            return "none"
        lines = format_html(
            "".join(["<li>{}: <code>{}</code> → {}</li>"] * len(rules)),
            *[v for r in rules for v in (r.get("label"), r.get("pattern"), r.get("action"))],
        )
        return format_html("<ul>{}</ul>", lines)

    # --- actions ----------------------------------------------------------------------
    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Policy], enabled: bool):
        changed = 0
        for policy in queryset.select_related("tenant", "key"):
            if self.can_write(request, policy) and policy.enabled != enabled:
                policy_update(policy=policy, enabled=enabled)
                changed += 1
        state = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{state} {changed} policy(ies).", messages.SUCCESS)

    @admin.action(description="Enable selected policies", permissions=("change",))
    def enable_policies(self, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected policies", permissions=("change",))
    def disable_policies(self, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        self._set_enabled(request, queryset, False)

    # --- try it ----------------------------------------------------------------------
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and TRY_SUBMIT in request.POST:
            return self.try_it_view(request, object_id, form_url, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def try_it_view(
        self,
        request: HttpRequest,
        object_id: str | None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        """The change (or add) page again, with the form as posted and the verdict."""
        add = object_id is None
        obj = None if add else self.get_object(request, unquote(object_id))
        if add:
            if not self.has_add_permission(request):
                raise PermissionDenied
        else:
            if obj is None:
                return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
            if not self.has_view_or_change_permission(request, obj):
                raise PermissionDenied
        editable = add or self.has_change_permission(request, obj)
        text = request.POST.get(TRY_TEXT, "")[:TRY_MAX_CHARS]
        fieldsets = self.get_fieldsets(request, obj)
        ModelForm = self.get_form(request, obj, change=not add, fields=flatten_fieldsets(fieldsets))
        result: dict[str, Any] = {"text": text}
        if editable:
            form = ModelForm(request.POST, request.FILES, instance=obj)
            if form.is_valid():
                draft = form.save(commit=False)  # the edits, in memory only
                result.update(self._try(draft, text))
            else:
                result["error"] = "Fix the errors above to try these rules."
            readonly = self.get_readonly_fields(request, obj)
        else:
            form = ModelForm(instance=obj)
            result.update(self._try(obj, text))
            readonly = flatten_fieldsets(fieldsets)
        admin_form = helpers.AdminForm(
            form,
            list(fieldsets),
            self.get_prepopulated_fields(request, obj) if editable else {},
            readonly,
            model_admin=self,
        )
        verb = "Add" if add else "Change" if editable else "View"
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb} {self.opts.verbose_name}",
            "subtitle": str(obj) if obj else None,
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            "try_it": result,
            **(extra_context or {}),
        }
        return self.render_change_form(
            request, context, add=add, change=not add, obj=obj, form_url=form_url
        )

    def _try(self, policy: Policy, text: str) -> dict[str, Any]:
        try:
            spec = policy.spec()
        except PolicyError as exc:
            return {"error": exc.message}
        return try_policy(compile_policies([spec]), text)
