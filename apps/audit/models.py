from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.tenants.models import Tenant


class AppendOnlyError(Exception):
    """Audit events are written once and never changed or removed."""


class Source(models.TextChoices):
    ADMIN = "admin", "admin"
    API = "api", "API"
    CONFIG = "config", "config as code"
    SYSTEM = "system", "system"
    SHELL = "shell", "shell"


class Action(models.TextChoices):
    CREATE = "create", "create"
    UPDATE = "update", "update"
    DELETE = "delete", "delete"


class AuditEventQuerySet(models.QuerySet):
    """Bulk updates and deletes are refused like the single-row ones.

    Django's own ``SET_NULL`` (a deleted tenant or user) goes through the base manager,
    not this queryset, and is the one change the database triggers let through too.
    """

    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit events cannot be changed")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events cannot be deleted")


class AuditEvent(models.Model):
    """Who changed what, when, from where: one row per create, update or delete.

    ``changes`` maps a field to ``[old, new]`` (``old`` is null on create, ``new`` on
    delete); secrets appear only as ``"***"`` (set) or an empty value (not set).
    The row is append-only: the model refuses saves of existing rows and deletes, and
    database triggers refuse ``UPDATE``/``DELETE`` (see migration 0002).
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    actor = models.CharField(
        max_length=150, help_text='A username, "key:<prefix>", "config" or "system".'
    )
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    source = models.CharField(max_length=10, choices=Source.choices)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    tenant_name = models.CharField(
        max_length=100, blank=True, help_text="Kept when the tenant is deleted."
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    object_type = models.CharField(max_length=100, help_text="app_label.model")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="audit_tenant_created"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events cannot be deleted")
