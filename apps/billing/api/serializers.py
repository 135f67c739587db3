"""Billing API shapes. Money is a decimal string, never a float."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.billing.models import Budget, Invoice, InvoiceLine, UsageRecord
from apps.billing.selectors import SUMMARY_GROUPS
from apps.keys.models import ApiKey
from apps.keys.selectors import key_list
from apps.tenants.access import access_for_request
from apps.tenants.api.base import TenantOwnedCreateSerializer
from apps.tenants.models import BudgetPeriod

MONEY = dict(max_digits=20, decimal_places=10, coerce_to_string=True)

# --- usage -----------------------------------------------------------------------------


class UsageRecordSerializer(serializers.ModelSerializer):
    """One request's usage and cost, as recorded."""

    model = serializers.SerializerMethodField(help_text="The model as served, else as requested.")
    total_tokens = serializers.IntegerField(read_only=True)
    cost_usd = serializers.DecimalField(read_only=True, **MONEY)

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "record_id",
            "created_at",
            "request_id",
            "tenant",
            "key",
            "key_prefix",
            "endpoint",
            "model",
            "requested_model",
            "served_model",
            "provider",
            "upstream_model",
            "experiment",
            "variant",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cached_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "usage_estimated",
            "cost_usd",
            "latency_ms",
            "ttft_ms",
            "status",
            "error_code",
            "cache_hit",
            "streamed",
        ]
        read_only_fields = fields

    def get_model(self, obj: UsageRecord) -> str:
        return obj.served_model or obj.requested_model


def parse_moment(value: str, *, end: bool = False):
    """An ISO 8601 datetime, or a date: its start, or with ``end`` the next day's start
    (so ``to=2025-01-31`` includes that whole day)."""
    day = parse_date(value) if len(value) == 10 else None
    if day is not None:
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        return moment + timedelta(days=1) if end else moment
    moment = parse_datetime(value)
    if moment is None:
        raise ValueError(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class MomentField(serializers.CharField):
    def __init__(self, *, end: bool = False, **kwargs: Any) -> None:
        self.end = end
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any):
        text = super().to_internal_value(data)
        try:
            return parse_moment(text, end=self.end)
        except ValueError:
            raise serializers.ValidationError(
                "Expected an ISO 8601 date (2025-01-31) or datetime (2025-01-31T12:00:00Z)."
            )


class UsageQuerySerializer(serializers.Serializer):
    """Query parameters of the usage endpoints."""

    tenant = serializers.IntegerField(required=False, help_text="Only this tenant (id).")
    model = serializers.CharField(required=False, help_text="Model name (as served or requested).")
    key = serializers.IntegerField(required=False, help_text="Only this key (id).")
    status = serializers.RegexField(
        r"^(\d{3}|error|success)$",
        required=False,
        help_text="An HTTP status, `error` (400 and above) or `success`.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `from` is a Python keyword: the fields are added by name.
        self.fields["from"] = MomentField(
            help_text="Start (inclusive): ISO 8601 date or datetime, UTC unless it says."
        )
        self.fields["to"] = MomentField(
            end=True,
            help_text="End (exclusive); a date includes that whole day.",
        )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("from") and attrs.get("to") and attrs["to"] <= attrs["from"]:
            raise serializers.ValidationError({"to": "Must be after `from`."})
        status = attrs.get("status")
        if status and status.isdigit():
            attrs["status"] = int(status)
        return attrs


class UsageSummaryQuerySerializer(UsageQuerySerializer):
    group_by = serializers.ChoiceField(choices=SUMMARY_GROUPS, help_text="day, model or key.")
    status = None  # rollups count errors; they do not split by status


class UsageSummaryRowSerializer(serializers.Serializer):
    day = serializers.DateField(required=False, help_text="With group_by=day (UTC).")
    model = serializers.CharField(required=False, help_text="With group_by=model.")
    key = serializers.IntegerField(
        required=False, allow_null=True, help_text="With group_by=key: the key's id."
    )
    key_prefix = serializers.CharField(required=False, help_text="With group_by=key.")
    requests = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="Requests that ended with status 400 or above.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(**MONEY)


class UsageSummarySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=SUMMARY_GROUPS)
    results = UsageSummaryRowSerializer(many=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["from"] = serializers.DateTimeField(
            allow_null=True, help_text="Start of the first hour counted (rollups are hourly)."
        )
        self.fields["to"] = serializers.DateTimeField(allow_null=True, help_text="End (exclusive).")


# --- budgets ---------------------------------------------------------------------------


class BudgetSerializer(serializers.ModelSerializer):
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=4, coerce_to_string=True)
    has_webhook_secret = serializers.SerializerMethodField(
        help_text="Whether alerts are signed. The secret itself is write-only."
    )
    spent_usd = serializers.SerializerMethodField(
        help_text="Spend of the current period, from hourly rollups (a minute behind at most)."
    )

    class Meta:
        model = Budget
        fields = [
            "id",
            "tenant",
            "key",
            "period",
            "limit_usd",
            "soft_limit_pct",
            "webhook_url",
            "has_webhook_secret",
            "enabled",
            "spent_usd",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_has_webhook_secret(self, obj: Budget) -> bool:
        return bool(obj.webhook_secret_encrypted)

    @extend_schema_field(
        serializers.DecimalField(max_digits=20, decimal_places=10, allow_null=True)
    )
    def get_spent_usd(self, obj: Budget) -> str | None:
        spent = getattr(obj, "spent_usd", None)
        return None if spent is None else f"{Decimal(spent):.10f}"


class ScopedKeyField(serializers.PrimaryKeyRelatedField):
    """A key of a tenant the caller can read; any other id reads as nonexistent."""

    def get_queryset(self):
        return key_list(tenant_ids=access_for_request(self.context["request"]).tenant_ids)


class BudgetWriteFields(serializers.Serializer):
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal(0))
    soft_limit_pct = serializers.IntegerField(min_value=0, max_value=100, default=80)
    webhook_url = serializers.URLField(required=False, allow_blank=True, default="")
    webhook_secret = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        max_length=500,
        help_text="Signs alert webhooks (HMAC-SHA256). Write-only; empty removes it, "
        "omitted keeps it.",
    )
    enabled = serializers.BooleanField(default=True)


class BudgetCreateSerializer(TenantOwnedCreateSerializer, BudgetWriteFields):
    key = ScopedKeyField(
        required=False,
        allow_null=True,
        queryset=ApiKey.objects.none(),
        help_text="A key of the tenant: the budget applies to that key only. "
        "Omitted or null: the whole tenant.",
    )
    period = serializers.ChoiceField(choices=BudgetPeriod.choices, default=BudgetPeriod.MONTHLY)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        tenant, key = attrs["tenant"], attrs.get("key")
        if key is not None and key.tenant_id != tenant.pk:
            raise serializers.ValidationError({"key": "This key belongs to another tenant."})
        if Budget.objects.filter(tenant=tenant, key=key, period=attrs["period"]).exists():
            raise serializers.ValidationError(
                {"period": "A budget for this tenant (or key) and period exists; update it."}
            )
        return attrs


class BudgetUpdateSerializer(BudgetWriteFields):
    """The owner and the period of a budget are fixed; everything else may change."""


# --- invoices --------------------------------------------------------------------------


class InvoiceLineSerializer(serializers.ModelSerializer):
    cost_usd = serializers.DecimalField(read_only=True, **MONEY)

    class Meta:
        model = InvoiceLine
        fields = ["model_name", "requests", "prompt_tokens", "completion_tokens", "cost_usd"]
        read_only_fields = fields


class InvoiceSerializer(serializers.ModelSerializer):
    lines = InvoiceLineSerializer(many=True, read_only=True)
    subtotal_usd = serializers.DecimalField(
        read_only=True, help_text="Exact sum of the lines.", **MONEY
    )
    markup_pct = serializers.DecimalField(
        max_digits=7,
        decimal_places=3,
        read_only=True,
        help_text="Percent added to the subtotal; negative: a discount.",
    )
    total_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=2,
        read_only=True,
        help_text="Subtotal with markup, rounded half up to the cent.",
    )

    class Meta:
        model = Invoice
        fields = [
            "id",
            "tenant",
            "period_start",
            "period_end",
            "status",
            "subtotal_usd",
            "markup_pct",
            "total_usd",
            "closed_at",
            "lines",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
