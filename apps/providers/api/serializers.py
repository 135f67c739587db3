"""Providers and models. ``Model`` is the gateway's model entity (what clients name),
so ``ModelSerializer`` here is its serializer, not DRF's class of that name."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core import secrets
from apps.providers.adapters import registry
from apps.providers.models import Deployment, Model, ModelMode, Provider
from apps.providers.selectors import provider_list
from apps.tenants.access import Access, access_for_request
from apps.tenants.api.base import TenantOwnedCreateSerializer

CREDENTIAL_SOURCES = ["encrypted", "env", "file"]

# --- providers ------------------------------------------------------------------------------


class ProviderSerializer(serializers.ModelSerializer):
    """A provider as shown: whether it has a credential and where it lives, never its value."""

    has_credential = serializers.BooleanField(read_only=True)
    credential_source = serializers.SerializerMethodField(
        help_text="encrypted: stored here, encrypted; env/file: read from the server's "
        "environment or a file; null: none."
    )

    class Meta:
        model = Provider
        fields = [
            "id",
            "tenant",
            "name",
            "kind",
            "base_url",
            "options",
            "enabled",
            "has_credential",
            "credential_source",
            "last_check_at",
            "last_check_ok",
            "last_check_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(choices=CREDENTIAL_SOURCES, allow_null=True, read_only=True)
    )
    def get_credential_source(self, provider: Provider) -> str | None:
        if provider.credential_encrypted:
            return "encrypted"
        if provider.credential_ref:
            return provider.credential_ref.partition(":")[0]
        return None


class ProviderUpdateSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=100, required=False)
    kind = serializers.ChoiceField(choices=registry.choices(), required=False)
    base_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    credential = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text="The provider's API key, stored encrypted and never returned. Omit to keep "
        "the stored one; an empty string clears it. Platform admins may pass a reference "
        "instead: env:NAME or file:PATH.",
    )
    options = serializers.DictField(required=False, help_text="Kind-specific settings.")
    enabled = serializers.BooleanField(required=False)

    def validate_credential(self, value: str) -> str:
        # A reference makes the gateway read its own environment or files and send the
        # result to the provider's URL: only platform admins may point it at anything.
        if (
            secrets.is_reference(value)
            and not access_for_request(self.context["request"]).is_platform_admin
        ):
            raise serializers.ValidationError(
                "Only platform admins may use env: or file: references; send the key itself."
            )
        return value


class ProviderCreateSerializer(TenantOwnedCreateSerializer, ProviderUpdateSerializer):
    allow_platform = True

    name = serializers.SlugField(max_length=100)
    kind = serializers.ChoiceField(choices=registry.choices())


class ProviderTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()


# --- models and their deployments ----------------------------------------------------------


class DeploymentSerializer(serializers.ModelSerializer):
    provider_name = serializers.CharField(source="provider.name", read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "provider",
            "provider_name",
            "upstream_model",
            "weight",
            "priority",
            "enabled",
            "options",
        ]
        read_only_fields = fields


class ModelSerializer(serializers.ModelSerializer):
    """A model with the deployments that serve it (those on providers the caller can see)."""

    input_price_per_million = serializers.DecimalField(
        max_digits=14, decimal_places=6, read_only=True, help_text="USD per million input tokens."
    )
    output_price_per_million = serializers.DecimalField(
        max_digits=14, decimal_places=6, read_only=True, help_text="USD per million output tokens."
    )
    fallbacks = serializers.ListField(child=serializers.CharField(), read_only=True)
    deployments = serializers.SerializerMethodField()

    class Meta:
        model = Model
        fields = [
            "id",
            "tenant",
            "name",
            "description",
            "mode",
            "context_window",
            "max_output_tokens",
            "input_price_per_million",
            "output_price_per_million",
            "fallbacks",
            "timeout_s",
            "retries",
            "enabled",
            "deployments",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(DeploymentSerializer(many=True))
    def get_deployments(self, model: Model) -> list[dict[str, Any]]:
        # A platform provider is platform infrastructure: tenants see platform models,
        # not how the platform serves them.
        access: Access = access_for_request(self.context["request"])
        visible = [d for d in model.deployments.all() if access.can_read(d.provider.tenant_id)]
        return DeploymentSerializer(visible, many=True, context=self.context).data


class VisibleProviderField(serializers.PrimaryKeyRelatedField):
    """A provider id among those the caller can see; any other id reads as nonexistent."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("queryset", Provider.objects.all())
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet[Provider]:
        return provider_list(tenant_ids=access_for_request(self.context["request"]).tenant_ids)


class DeploymentInputSerializer(serializers.Serializer):
    provider = VisibleProviderField(
        help_text="A provider of the model's tenant (a platform provider for platform models)."
    )
    upstream_model = serializers.CharField(max_length=200, help_text="The model's name there.")
    weight = serializers.IntegerField(min_value=0, default=1)
    priority = serializers.IntegerField(
        min_value=0, max_value=32767, default=0, help_text="Lower first."
    )
    enabled = serializers.BooleanField(default=True)
    options = serializers.DictField(default=dict)


class ModelUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    mode = serializers.ChoiceField(choices=ModelMode.choices, required=False)
    context_window = serializers.IntegerField(min_value=1, allow_null=True, required=False)
    max_output_tokens = serializers.IntegerField(min_value=1, allow_null=True, required=False)
    input_price_per_million = serializers.DecimalField(
        max_digits=14, decimal_places=6, min_value=0, required=False
    )
    output_price_per_million = serializers.DecimalField(
        max_digits=14, decimal_places=6, min_value=0, required=False
    )
    fallbacks = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Model names tried in order when this one fails.",
    )
    timeout_s = serializers.FloatField(min_value=0.1, allow_null=True, required=False)
    retries = serializers.IntegerField(
        min_value=0, max_value=32767, allow_null=True, required=False
    )
    enabled = serializers.BooleanField(required=False)
    deployments = DeploymentInputSerializer(
        many=True,
        required=False,
        help_text="When given, replaces the model's deployments (matched on provider and "
        "upstream model, so unchanged ones keep their ids).",
    )

    def model_tenant_id(self, attrs: dict[str, Any]) -> int | None:
        return self.instance.tenant_id

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        deployments = attrs.get("deployments")
        if not deployments:
            return attrs
        tenant_id = self.model_tenant_id(attrs)
        seen = set()
        for spec in deployments:
            provider = spec["provider"]
            if provider.tenant_id not in (None, tenant_id):
                raise serializers.ValidationError(
                    {"deployments": "A tenant's provider can only serve that tenant's models."}
                )
            target = (provider.pk, spec["upstream_model"])
            if target in seen:
                raise serializers.ValidationError(
                    {"deployments": f"{provider.name}/{target[1]} is listed twice."}
                )
            seen.add(target)
        return attrs


class ModelCreateSerializer(TenantOwnedCreateSerializer, ModelUpdateSerializer):
    allow_platform = True

    name = serializers.CharField(max_length=200, help_text="The name clients send.")

    def model_tenant_id(self, attrs: dict[str, Any]) -> int | None:
        tenant = attrs.get("tenant")
        return tenant.pk if tenant else None
