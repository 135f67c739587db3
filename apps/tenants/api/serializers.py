from __future__ import annotations

from rest_framework import serializers

from apps.tenants.models import BudgetPeriod, Tenant

# A tenant's spending limit and whether it is switched on are the platform's call.
PLATFORM_ONLY_FIELDS = frozenset({"is_active", "budget_limit_usd", "budget_period"})


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "display_name",
            "is_active",
            "budget_limit_usd",
            "budget_period",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class TenantUpdateSerializer(serializers.Serializer):
    display_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)
    is_active = serializers.BooleanField(required=False, help_text="Platform admins only.")
    budget_limit_usd = serializers.DecimalField(
        max_digits=14,
        decimal_places=4,
        min_value=0,
        allow_null=True,
        required=False,
        help_text="Platform admins only. Null: no limit.",
    )
    budget_period = serializers.ChoiceField(
        choices=BudgetPeriod.choices, required=False, help_text="Platform admins only."
    )


class TenantCreateSerializer(TenantUpdateSerializer):
    name = serializers.SlugField(max_length=100, help_text="Stable identifier, e.g. acme.")
