from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from apps.core.models import TimeStampedModel
from apps.keys.models import ApiKey
from apps.tenants.models import BudgetPeriod, Tenant

COST = dict(max_digits=20, decimal_places=10, default=Decimal("0"))


class UsageRecord(models.Model):
    """Exactly one row per request that reached routing; written in bulk, off the request path."""

    record_id = models.UUIDField(
        unique=True, help_text="Idempotency: a re-flushed record is not doubled."
    )
    created_at = models.DateTimeField(db_index=True, help_text="When the request started.")
    request_id = models.CharField(max_length=128, db_index=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_records")
    key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    key_prefix = models.CharField(max_length=16, blank=True)
    endpoint = models.CharField(max_length=32, default="chat")
    requested_model = models.CharField(max_length=200)
    served_model = models.CharField(max_length=200, blank=True)
    deployment_id = models.BigIntegerField(null=True, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    experiment = models.CharField(max_length=100, blank=True)
    variant = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(**COST)
    price_id = models.BigIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)
    status = models.PositiveSmallIntegerField(db_index=True)
    error_code = models.CharField(max_length=64, blank=True)
    cache_hit = models.BooleanField(default=False)
    streamed = models.BooleanField(default=False)
    attempts = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="usage_tenant_created"),
            models.Index(fields=["key", "created_at"], name="usage_key_created"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.served_model or self.requested_model} {self.status}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Budget(TimeStampedModel):
    """A spending limit for a tenant, or for one key when ``key`` is set."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="budgets")
    key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    period = models.CharField(
        max_length=10, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTHLY
    )
    limit_usd = models.DecimalField(
        max_digits=14, decimal_places=4, validators=[MinValueValidator(0)]
    )
    soft_limit_pct = models.PositiveSmallIntegerField(
        default=80,
        validators=[MaxValueValidator(100)],
        help_text="Alert when spend crosses this share.",
    )
    webhook_url = models.URLField(
        blank=True, help_text="Receives a signed alert at the soft limit."
    )
    webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period"],
                condition=models.Q(key__isnull=True),
                name="budget_unique_tenant_period",
            ),
            models.UniqueConstraint(fields=["key", "period"], name="budget_unique_key_period"),
        ]

    def __str__(self) -> str:
        owner = f"key {self.key.name}" if self.key_id else f"tenant {self.tenant.name}"
        return f"{owner}: ${self.limit_usd} {self.period}"


class BudgetAlert(models.Model):
    """A threshold crossing, kept once per budget and period (also the admin's notice)."""

    class Level(models.TextChoices):
        SOFT = "soft"
        HARD = "hard"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateTimeField()
    level = models.CharField(max_length=8, choices=Level.choices)
    spent_usd = models.DecimalField(max_digits=20, decimal_places=10)
    created_at = models.DateTimeField(auto_now_add=True)
    webhook_status = models.CharField(max_length=200, blank=True)
    acknowledged = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "level"], name="budget_alert_once_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.level} at ${self.spent_usd}"


class ModelRateLimit(TimeStampedModel):
    """Limits for one model within one tenant (all of its keys together)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="model_limits")
    model_name = models.CharField(max_length=200)
    rpm = models.PositiveIntegerField(null=True, blank=True)
    tpm = models.PositiveIntegerField(null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "model_name"], name="model_limit_unique")
        ]

    def __str__(self) -> str:
        return f"{self.tenant.name}/{self.model_name}"


class Invoice(TimeStampedModel):
    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="invoices")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    subtotal_usd = models.DecimalField(max_digits=20, decimal_places=10, default=Decimal("0"))
    markup_pct = models.DecimalField(max_digits=7, decimal_places=3, default=Decimal("0"))
    total_usd = models.DecimalField(max_digits=20, decimal_places=2, default=Decimal("0"))
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period_start", "tenant__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period_start"], name="invoice_unique_tenant_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant.name} {self.period_start:%Y-%m}"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    model_name = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(**COST)

    class Meta:
        ordering = ["model_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "model_name"], name="invoice_line_unique_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.invoice} {self.model_name}"


class UsageRollup(models.Model):
    """Hourly aggregates that dashboards read instead of raw usage rows."""

    bucket = models.DateTimeField(help_text="Start of the hour.")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rollups")
    key_id = models.BigIntegerField(default=0, help_text="0: no key.")
    key_prefix = models.CharField(max_length=16, blank=True)
    model_name = models.CharField(max_length=200)
    provider = models.CharField(max_length=100, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(**COST)
    latency_ms_sum = models.FloatField(default=0)
    latency_histogram = models.JSONField(
        default=list, blank=True, help_text="Counts per fixed latency bucket."
    )
    ttft_histogram = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-bucket"]
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "tenant", "key_id", "model_name", "provider"],
                name="rollup_unique_dimensions",
            )
        ]
        indexes = [models.Index(fields=["tenant", "bucket"], name="rollup_tenant_bucket")]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:00} {self.tenant_id} {self.model_name}"


class RollupCursor(models.Model):
    """How far rollups have consumed usage records (by primary key)."""

    name = models.CharField(max_length=50, primary_key=True)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}@{self.last_id}"


class CostRecomputation(models.Model):
    """A record that past costs were recomputed after a price correction."""

    created_at = models.DateTimeField(auto_now_add=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    model_name = models.CharField(max_length=200, blank=True)
    records = models.PositiveIntegerField(default=0)
    old_total_usd = models.DecimalField(**COST)
    new_total_usd = models.DecimalField(**COST)
    actor = models.CharField(max_length=150, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"recompute {self.window_start:%Y-%m-%d}..{self.window_end:%Y-%m-%d} ({self.records} records)"
