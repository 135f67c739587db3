from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from apps.keys.models import ApiKey, Scope
from apps.keys.services import CreatedKey
from apps.tenants.api.base import TenantOwnedCreateSerializer

SCOPE_HELP = (
    "inference: the OpenAI-compatible /v1 API; management:read: GET on this API; "
    "management:write: changes through this API."
)


class KeySerializer(serializers.ModelSerializer):
    """A key as listed: its prefix identifies it, the secret is never shown again."""

    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), read_only=True
    )
    allowed_models = serializers.ListField(child=serializers.CharField(), read_only=True)
    is_active = serializers.BooleanField(read_only=True, help_text="Neither revoked nor expired.")

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "tenant",
            "name",
            "prefix",
            "scopes",
            "allowed_models",
            "rpm",
            "tpm",
            "max_concurrent",
            "ip_allowlist",
            "limits_bypass",
            "expires_at",
            "previous_secret_expires_at",
            "revoked_at",
            "last_used_at",
            "is_active",
            "require_signature",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class KeyCreatedSerializer(KeySerializer):
    """The create response: the key and, this once only, its secret."""

    secret = serializers.CharField(
        read_only=True,
        help_text="The key itself. Shown only in this response; store it now.",
    )

    class Meta(KeySerializer.Meta):
        fields = [*KeySerializer.Meta.fields, "secret"]
        read_only_fields = fields

    def to_representation(self, instance: CreatedKey) -> dict[str, Any]:
        data = KeySerializer(instance.key, context=self.context).data
        data["secret"] = instance.secret
        return data


class KeyUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), required=False, help_text=SCOPE_HELP
    )
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Model names this key may use; empty means all.",
    )
    rpm = serializers.IntegerField(
        min_value=1,
        allow_null=True,
        required=False,
        help_text="Requests per minute; null: no limit.",
    )
    tpm = serializers.IntegerField(
        min_value=1, allow_null=True, required=False, help_text="Tokens per minute; null: no limit."
    )
    max_concurrent = serializers.IntegerField(
        min_value=1,
        allow_null=True,
        required=False,
        help_text="Requests in flight at once; null: no limit.",
    )
    ip_allowlist = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text="CIDR ranges the key may be used from; empty means anywhere.",
    )
    expires_at = serializers.DateTimeField(allow_null=True, required=False)
    metadata = serializers.DictField(required=False)

    def validate_ip_allowlist(self, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise serializers.ValidationError(f"{entry!r} is not an IP address or CIDR range.")
        return value

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future; revoke a key to stop it now.")
        return value


class KeyCreateSerializer(TenantOwnedCreateSerializer, KeyUpdateSerializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices),
        default=lambda: [Scope.INFERENCE.value],
        help_text=SCOPE_HELP + " Default: [inference].",
    )


class KeyRotateSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=30 * 86_400,
        default=86_400,
        help_text="How long the old secret keeps working (0: it stops at once).",
    )
