"""Content policies: what a tenant's requests and answers may contain.

Scope: a policy belongs to a tenant. Without ``key`` it is a tenant default; with a
``key`` it applies to that key only and **replaces** the tenant's policies for it (a
key with an enabled policy that has no rules at all is therefore not filtered). All
enabled policies of one scope apply together.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from apps.core.models import TimeStampedModel
from apps.guardrails.engine import Action, PolicySpec
from apps.guardrails.validation import (
    PolicyError,
    normalize_detectors,
    normalize_regex_rules,
    normalize_terms,
    policy_spec,
)
from apps.keys.models import ApiKey
from apps.tenants.models import Tenant


class PolicyAction(models.TextChoices):
    BLOCK = Action.BLOCK.value, "block"
    REDACT = Action.REDACT.value, "redact"
    FLAG = Action.FLAG.value, "flag"


def default_list() -> list:
    return []


def default_dict() -> dict:
    return {}


class Policy(TimeStampedModel):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="content_policies")
    key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="content_policies",
        help_text="Empty: a default for the whole tenant. Set: this key only, replacing the "
        "tenant's policies for it.",
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    applies_to_input = models.BooleanField(default=True, help_text="Check prompts (messages).")
    applies_to_output = models.BooleanField(
        default=True, help_text="Filter answers, streamed or not."
    )
    blocked_terms = models.JSONField(
        default=default_list,
        blank=True,
        help_text="Words or phrases, matched whole and in any case.",
    )
    blocked_terms_action = models.CharField(
        max_length=8, choices=PolicyAction.choices, default=PolicyAction.BLOCK
    )
    regex_rules = models.JSONField(
        default=default_list,
        blank=True,
        help_text='A list of {"pattern": ..., "action": "block|redact|flag", "label": ...}.',
    )
    detectors = models.JSONField(
        default=default_dict,
        blank=True,
        help_text='{"email": "redact", ...}; detectors: email, phone, credit_card, iban, '
        "us_ssn, secret_token.",
    )

    class Meta:
        ordering = ["tenant__name", "name"]
        verbose_name = "content policy"
        verbose_name_plural = "content policies"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="policy_unique_tenant_name"),
            models.CheckConstraint(
                condition=models.Q(blocked_terms_action__in=PolicyAction.values),
                name="policy_terms_action_valid",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "enabled"], name="policy_tenant_enabled")]

    def __str__(self) -> str:
        return self.name

    @property
    def scope_label(self) -> str:
        return f"key {self.key.name}" if self.key_id else "tenant default"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        for field, normalize in (
            ("blocked_terms", normalize_terms),
            ("regex_rules", normalize_regex_rules),
            ("detectors", normalize_detectors),
        ):
            try:
                setattr(self, field, normalize(getattr(self, field)))
            except PolicyError as exc:
                errors.setdefault(exc.field, []).append(exc.message)
        if self.key_id and self.tenant_id and self.key.tenant_id != self.tenant_id:
            errors.setdefault("key", []).append("This key belongs to another tenant.")
        if errors:
            raise ValidationError(errors)

    def spec(self) -> PolicySpec:
        """The engine's view of this policy (its fields are validated on save)."""
        return policy_spec(
            name=self.name,
            applies_to_input=self.applies_to_input,
            applies_to_output=self.applies_to_output,
            blocked_terms=self.blocked_terms,
            blocked_terms_action=self.blocked_terms_action,
            regex_rules=self.regex_rules,
            detectors=self.detectors,
        )
