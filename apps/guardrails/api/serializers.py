"""Content-policy API shapes. Validation of terms and patterns is the model's (one set of
rules for the API, the admin and config): its errors come back as 400s on the field."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.guardrails.detectors import DETECTORS
from apps.guardrails.engine import Action
from apps.guardrails.models import Policy
from apps.guardrails.patterns import MAX_PATTERN_LENGTH
from apps.guardrails.validation import MAX_TERM_LENGTH
from apps.keys.models import ApiKey
from apps.keys.selectors import key_list
from apps.tenants.access import access_for_request
from apps.tenants.api.base import TenantOwnedCreateSerializer

ACTIONS = [a.value for a in Action]


class RegexRuleSerializer(serializers.Serializer):
    pattern = serializers.CharField(
        max_length=MAX_PATTERN_LENGTH,
        trim_whitespace=False,
        help_text="A Python regular expression; (?i) for any case. It must match something "
        "and must not nest unbounded repeats like (a+)+.",
    )
    action = serializers.ChoiceField(choices=ACTIONS, default=Action.REDACT.value)
    label = serializers.CharField(
        max_length=40,
        default="CUSTOM",
        help_text="Shown in redactions ([REDACTED:LABEL]) and reports; letters, digits, _.",
    )


class DetectorsSerializer(serializers.Serializer):
    """Which built-in detectors run, and their action; omitted or null: off."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            name: serializers.ChoiceField(
                choices=ACTIONS,
                required=False,
                allow_null=True,
                help_text=detector.description,
            )
            for name, detector in DETECTORS.items()
        }

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if isinstance(data, dict):
            unknown = set(data) - set(DETECTORS)
            if unknown:
                raise serializers.ValidationError(
                    f"Unknown detector(s): {', '.join(sorted(unknown))}."
                )
        values = super().to_internal_value(data)
        return {name: action for name, action in values.items() if action}

    def to_representation(self, instance: dict[str, str]) -> dict[str, str]:
        return {name: instance[name] for name in DETECTORS if name in (instance or {})}


class PolicySerializer(serializers.ModelSerializer):
    blocked_terms = serializers.ListField(child=serializers.CharField(), read_only=True)
    regex_rules = RegexRuleSerializer(many=True, read_only=True)
    detectors = DetectorsSerializer(read_only=True)
    scope = serializers.SerializerMethodField(
        help_text="tenant: a default for the whole tenant; key: this key only (replacing the "
        "tenant's policies for it)."
    )

    class Meta:
        model = Policy
        fields = [
            "id",
            "tenant",
            "key",
            "scope",
            "name",
            "description",
            "enabled",
            "applies_to_input",
            "applies_to_output",
            "detectors",
            "blocked_terms",
            "blocked_terms_action",
            "regex_rules",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_scope(self, obj: Policy) -> str:
        return "key" if obj.key_id else "tenant"


class ScopedKeyField(serializers.PrimaryKeyRelatedField):
    """A key of a tenant the caller can read; any other id reads as nonexistent."""

    def get_queryset(self):
        return key_list(tenant_ids=access_for_request(self.context["request"]).tenant_ids)


class PolicyWriteFields(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    key = ScopedKeyField(
        required=False,
        allow_null=True,
        default=None,
        queryset=ApiKey.objects.none(),
        help_text="A key of the tenant: the policy applies to that key only and replaces "
        "the tenant's policies for it. Omitted or null: a default for the whole tenant.",
    )
    enabled = serializers.BooleanField(default=True)
    applies_to_input = serializers.BooleanField(default=True, help_text="Check prompts.")
    applies_to_output = serializers.BooleanField(
        default=True, help_text="Filter answers, streamed or not."
    )
    detectors = DetectorsSerializer(required=False, default=dict)
    blocked_terms = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TERM_LENGTH),
        required=False,
        default=list,
        help_text="Words or phrases, matched whole and in any case.",
    )
    blocked_terms_action = serializers.ChoiceField(choices=ACTIONS, default=Action.BLOCK.value)
    regex_rules = RegexRuleSerializer(many=True, required=False, default=list)


class PolicyCreateSerializer(TenantOwnedCreateSerializer, PolicyWriteFields):
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        key = attrs.get("key")
        if key is not None and key.tenant_id != attrs["tenant"].pk:
            raise serializers.ValidationError({"key": "This key belongs to another tenant."})
        return attrs


class PolicyUpdateSerializer(PolicyWriteFields):
    """The tenant of a policy is fixed; everything else may change."""


class PolicyTrySerializer(serializers.Serializer):
    text = serializers.CharField(
        max_length=20_000, allow_blank=True, trim_whitespace=False, help_text="Sample text."
    )


class VerdictSerializer(serializers.Serializer):
    checked = serializers.BooleanField(help_text="Whether the policy applies in this direction.")
    blocked = serializers.BooleanField()
    text = serializers.CharField(
        help_text="Input: the prompt as the provider would get it (empty when blocked). "
        "Output: what the client would receive (the text before a block)."
    )
    reason = serializers.CharField(help_text="Why it was blocked; empty otherwise.")
    redactions = serializers.ListField(child=serializers.CharField())
    flags = serializers.ListField(child=serializers.CharField())


class PolicyTryResultSerializer(serializers.Serializer):
    input = VerdictSerializer()
    output = VerdictSerializer()
