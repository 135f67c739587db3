"""Admin site branding and small helpers the apps' admin modules share."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.utils.html import format_html
from django.utils.safestring import SafeString

from apps.core.models import ConfigState

admin.site.site_header = "LLM Gateway"
admin.site.site_title = "LLM Gateway"
admin.site.index_title = "Control plane"

# Badge tones; the colours live in static/admin-extra/admin.css.
OK, BAD, WARN, OFF = "ok", "bad", "warn", "off"


def badge(label: str, tone: str) -> SafeString:
    return format_html('<span class="gw-badge gw-badge--{}">{}</span>', tone, label)


def enabled_badge(enabled: bool) -> SafeString:
    return badge("enabled", OK) if enabled else badge("disabled", OFF)


def adopt_saved(target: models.Model, saved: models.Model) -> None:
    """Make the admin's in-memory object the row a service just wrote.

    The admin keeps the instance its form built and passes it on to logging and
    redirects, while services create their own instance; copying the saved state back
    keeps both views of the object the same.
    """
    for field in saved._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db


class CommaSeparatedField(forms.CharField):
    """A list of short strings edited as ``a, b, c`` (stored as a JSON list)."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list | tuple):
            items = [str(v).strip() for v in value]
        else:
            items = [part.strip() for part in (super().to_python(value) or "").split(",")]
        return list(dict.fromkeys(item for item in items if item))


@admin.register(ConfigState)
class ConfigStateAdmin(admin.ModelAdmin):
    """Read-only: the tokens gateway processes poll to notice configuration changes."""

    list_display = ("name", "token", "changed_at")
    ordering = ("name",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
