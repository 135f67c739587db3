from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from apps.core import crypto, secrets
from apps.core.models import TimeStampedModel
from apps.providers.adapters.base import kind_choices
from apps.tenants.models import Tenant


class Provider(TimeStampedModel):
    """An upstream account: a kind of API, where it lives and the credential for it.

    ``tenant`` empty means a platform provider, managed by platform admins; a tenant's
    own providers (bring your own key) are visible to that tenant only.
    """

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="providers"
    )
    name = models.SlugField(max_length=100)
    kind = models.CharField(max_length=32, choices=kind_choices)
    base_url = models.URLField(max_length=500, blank=True)
    # A reference (env:NAME / file:PATH) is not a secret and is kept as written;
    # a literal credential only ever lives here encrypted.
    credential_ref = models.CharField(max_length=300, blank=True)
    credential_encrypted = models.TextField(blank=True)
    options = models.JSONField(
        default=dict, blank=True, help_text="Kind-specific settings, e.g. mock latency_ms."
    )
    enabled = models.BooleanField(default=True)
    last_check_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_check_ok = models.BooleanField(null=True, editable=False)
    last_check_message = models.CharField(max_length=500, blank=True, editable=False)
    last_check_latency_ms = models.FloatField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="provider_unique_tenant_name"),
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(tenant__isnull=True),
                name="provider_unique_global_name",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credential(self) -> bool:
        return bool(self.credential_ref or self.credential_encrypted)

    def set_credential(self, value: str) -> None:
        """Store a credential: a reference as written, a literal encrypted; empty clears it."""
        if not value:
            self.credential_ref, self.credential_encrypted = "", ""
        elif secrets.is_reference(value):
            self.credential_ref, self.credential_encrypted = value, ""
        else:
            self.credential_ref, self.credential_encrypted = "", crypto.encrypt(value)

    def get_credential(self) -> str:
        if self.credential_ref:
            return secrets.resolve(self.credential_ref)
        if self.credential_encrypted:
            return crypto.decrypt(self.credential_encrypted)
        return ""


class ModelMode(models.TextChoices):
    CHAT = "chat"
    EMBEDDING = "embedding"


PER_MILLION = dict(
    max_digits=14, decimal_places=6, default=Decimal("0"), validators=[MinValueValidator(0)]
)


class Routing(models.TextChoices):
    WEIGHTED = "weighted", "Weighted random"
    LEAST_INFLIGHT = "least_inflight", "Least in-flight"
    LOWEST_LATENCY = "lowest_latency", "Lowest latency (moving average)"
    LOWEST_COST = "lowest_cost", "Lowest cost"


class Model(TimeStampedModel):
    """A model as clients name it, served by one or more deployments."""

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="models"
    )
    name = models.CharField(max_length=200, help_text="The name clients send, e.g. gpt-4o-mini.")
    description = models.TextField(blank=True)
    mode = models.CharField(max_length=16, choices=ModelMode.choices, default=ModelMode.CHAT)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_price_per_million = models.DecimalField(**PER_MILLION)
    output_price_per_million = models.DecimalField(**PER_MILLION)
    fallbacks = models.JSONField(default=list, blank=True, help_text="Model names tried in order.")
    timeout_s = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.1)])
    retries = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Extra attempts per deployment on retryable failures."
    )
    routing = models.CharField(
        max_length=20,
        choices=Routing.choices,
        default=Routing.WEIGHTED,
        help_text="How to choose among deployments of the same priority.",
    )
    fallback_on_content_filter = models.BooleanField(
        default=False,
        help_text="Try the fallback models when the provider's content filter refuses.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="model_unique_tenant_name"),
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(tenant__isnull=True),
                name="model_unique_global_name",
            ),
        ]

    def __str__(self) -> str:
        return self.name


RATE = dict(
    max_digits=14, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(0)]
)


class Price(TimeStampedModel):
    """A model's prices from ``effective_from`` on; history is kept, so cost is exact in hindsight.

    Empty rates fall back: cached input and cache writes to the input rate, reasoning to
    the output rate. Above ``long_context_threshold`` prompt tokens the long-context rates
    apply to the whole request, as providers that tier by prompt length charge it.
    """

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="prices")
    effective_from = models.DateTimeField(db_index=True)
    input_per_million = models.DecimalField(
        max_digits=14, decimal_places=6, validators=[MinValueValidator(0)]
    )
    output_per_million = models.DecimalField(
        max_digits=14, decimal_places=6, validators=[MinValueValidator(0)]
    )
    cached_input_per_million = models.DecimalField(**RATE)
    cache_write_per_million = models.DecimalField(**RATE)
    reasoning_per_million = models.DecimalField(**RATE)
    long_context_threshold = models.PositiveIntegerField(null=True, blank=True)
    long_context_input_per_million = models.DecimalField(**RATE)
    long_context_output_per_million = models.DecimalField(**RATE)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="price_unique_model_effective_from"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model.name} from {self.effective_from:%Y-%m-%d %H:%M}"


class Deployment(TimeStampedModel):
    """One way to serve a model: a provider and the model's name there."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="deployments")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="deployments")
    upstream_model = models.CharField(max_length=200)
    weight = models.PositiveIntegerField(
        default=1, help_text="Share of traffic among equal priorities."
    )
    priority = models.PositiveSmallIntegerField(
        default=0,
        help_text="Lower first; a higher number is used only when lower ones are unavailable.",
    )
    enabled = models.BooleanField(default=True)
    options = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["model__name", "priority", "-weight"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "provider", "upstream_model"], name="deployment_unique_target"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model.name} → {self.provider.name}/{self.upstream_model}"
