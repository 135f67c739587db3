from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from apps.core.models import TimeStampedModel
from apps.tenants.models import Tenant


class Scope(models.TextChoices):
    INFERENCE = "inference"
    MANAGEMENT_READ = "management:read"
    MANAGEMENT_WRITE = "management:write"


DEFAULT_SCOPES = [Scope.INFERENCE.value]


def default_scopes() -> list[str]:
    return list(DEFAULT_SCOPES)


class ApiKey(TimeStampedModel):
    """A gateway key. Only a SHA-256 of the secret and a display prefix are stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    # Rotation: the previous secret keeps working until previous_secret_expires_at.
    previous_secret_hash = models.CharField(
        max_length=64, blank=True, db_index=True, editable=False
    )
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    ip_allowlist = models.JSONField(
        default=list,
        blank=True,
        help_text="CIDR ranges the key may be used from; empty means anywhere.",
    )
    scopes = models.JSONField(default=default_scopes, blank=True)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model names this key may use; empty means all."
    )
    rpm = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute.")
    tpm = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute.")
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests in flight at once."
    )
    limits_bypass = models.BooleanField(
        default=False,
        help_text="Skip rate limits and budgets (usage is still recorded). Audited; use sparingly.",
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    signing_secret_encrypted = models.TextField(blank=True, editable=False)
    require_signature = models.BooleanField(default=False)
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )

    class Meta:
        ordering = ["tenant__name", "name"]
        verbose_name = "API key"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="apikey_unique_tenant_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def clean(self) -> None:
        super().clean()
        errors = []
        for entry in self.ip_allowlist or []:
            try:
                ipaddress.ip_network(str(entry), strict=False)
            except ValueError:
                errors.append(f"{entry!r} is not an IP address or CIDR range")
        if errors:
            raise ValidationError({"ip_allowlist": errors})

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.is_revoked and not self.is_expired
