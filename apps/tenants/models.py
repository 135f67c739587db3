from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.models import TimeStampedModel


class BudgetPeriod(models.TextChoices):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    TOTAL = "total"


class Tenant(TimeStampedModel):
    name = models.SlugField(max_length=100, unique=True, help_text="Stable identifier, e.g. acme.")
    display_name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    # Accepted from config now; enforced by the budgets feature.
    budget_limit_usd = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    budget_period = models.CharField(
        max_length=10, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTHLY
    )
    rpm = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute, all keys."
    )
    tpm = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per minute, all keys."
    )
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests in flight at once."
    )
    markup_pct = models.DecimalField(
        max_digits=7,
        decimal_places=3,
        default=0,
        help_text="Invoice markup (negative: discount), percent.",
    )
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(budget_limit_usd__isnull=True)
                | models.Q(budget_limit_usd__gte=0),
                name="tenant_budget_non_negative",
            )
        ]

    def __str__(self) -> str:
        return self.display_name or self.name


class Role(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


WRITE_ROLES = frozenset({Role.OWNER, Role.ADMIN})


class Membership(TimeStampedModel):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"
