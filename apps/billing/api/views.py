"""/api/v1/usage/, /api/v1/budgets/ and /api/v1/invoices/: tenant-scoped, thin.

Usage records can number in the millions, so their list pages with a cursor (no
``COUNT(*)``, stable while new rows arrive); summaries read the hourly rollups.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import filters, generics, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.billing.api.serializers import (
    BudgetCreateSerializer,
    BudgetSerializer,
    BudgetUpdateSerializer,
    InvoiceSerializer,
    UsageQuerySerializer,
    UsageRecordSerializer,
    UsageSummaryQuerySerializer,
    UsageSummarySerializer,
)
from apps.billing.models import Budget, Invoice
from apps.billing.selectors import (
    budget_list,
    budgets_with_spend,
    invoice_list,
    rollup_list,
    usage_list,
    usage_summary,
)
from apps.billing.services import budget_delete, budget_set
from apps.billing.views import invoice_csv_response, invoice_filename
from apps.tenants.access import Access, access_for_request
from apps.tenants.api.base import (
    ENABLED_PARAM,
    QueryParam,
    QueryParamFilter,
    TenantScopedViewSet,
    crud_schema,
    error_responses,
)
from apps.tenants.models import BudgetPeriod


def scoped_tenant_ids(access: Access, tenant: int | None) -> list[int] | None:
    """The caller's readable tenants, narrowed to ``tenant`` when given."""
    if tenant is None:
        return access.tenant_ids
    return [tenant] if access.can_read(tenant) else []


# --- usage -----------------------------------------------------------------------------


class UsagePagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000


class UsageListApi(generics.ListAPIView):
    """Usage records, newest first: one per request, with tokens, cost and latency."""

    serializer_class = UsageRecordSerializer
    pagination_class = UsagePagination

    def get_queryset(self):
        query = UsageQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        access = access_for_request(self.request)
        return usage_list(
            tenant_ids=scoped_tenant_ids(access, params.get("tenant")),
            start=params.get("from"),
            end=params.get("to"),
            model=params.get("model"),
            key_id=params.get("key"),
            status=params.get("status"),
        )

    @extend_schema(
        operation_id="usage_list",
        summary="List usage records",
        parameters=[UsageQuerySerializer],
        responses={200: UsageRecordSerializer(many=True), **error_responses(400, 401, 403)},
    )
    def get(self, request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class UsageSummaryApi(APIView):
    """Requests, errors, tokens and cost per day, model or key.

    Read from hourly rollups, which a background task brings up to date every minute:
    ``from`` counts from the start of its hour.
    """

    @extend_schema(
        operation_id="usage_summary",
        summary="Summarise usage by day, model or key",
        parameters=[UsageSummaryQuerySerializer],
        responses={200: UsageSummarySerializer, **error_responses(400, 401, 403)},
    )
    def get(self, request, *args: Any, **kwargs: Any) -> Response:
        query = UsageSummaryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        access = access_for_request(request)
        rollups = rollup_list(
            tenant_ids=scoped_tenant_ids(access, params.get("tenant")),
            start=params.get("from"),
            end=params.get("to"),
            model=params.get("model"),
            key_id=params.get("key"),
        )
        body = {
            "group_by": params["group_by"],
            "from": params.get("from"),
            "to": params.get("to"),
            "results": usage_summary(rollups=rollups, group_by=params["group_by"]),
        }
        return Response(UsageSummarySerializer(body).data)


# --- budgets ---------------------------------------------------------------------------


@crud_schema(
    noun="a budget",
    plural="budgets",
    output=BudgetSerializer,
    create_input=BudgetCreateSerializer,
    update_input=BudgetUpdateSerializer,
)
class BudgetViewSet(TenantScopedViewSet):
    """Spending limits of a tenant or of one of its keys, per period; alerts at the soft
    limit go to a signed webhook."""

    serializer_class = BudgetSerializer
    create_serializer_class = BudgetCreateSerializer
    update_serializer_class = BudgetUpdateSerializer
    filter_backends = [QueryParamFilter, filters.OrderingFilter]
    filter_params = {
        "tenant": QueryParam("tenant_id", int, "Only budgets of this tenant (id)."),
        "key": QueryParam(
            "key_id", int, "Only budgets of this key (id); `null`: tenant-wide.", nullable=True
        ),
        "period": QueryParam("period", str, "daily, weekly, monthly or total."),
        "enabled": ENABLED_PARAM,
    }
    ordering_fields = ["created_at", "limit_usd", "period"]
    ordering = ["tenant_id", "id"]

    def get_queryset(self):
        return budgets_with_spend(budget_list(tenant_ids=self.access.tenant_ids))

    def _render_ready(self, budget: Budget) -> Budget:
        return self.get_queryset().get(pk=budget.pk)

    def perform_create(self, serializer) -> Budget:
        data = dict(serializer.validated_data)
        data.setdefault("period", BudgetPeriod.MONTHLY)
        budget = budget_set(
            tenant=data["tenant"],
            key=data.get("key"),
            period=data["period"],
            limit_usd=data["limit_usd"],
            soft_limit_pct=data["soft_limit_pct"],
            webhook_url=data.get("webhook_url", ""),
            webhook_secret=data.get("webhook_secret"),
            enabled=data["enabled"],
        )
        return self._render_ready(budget)

    def perform_update(self, serializer) -> Budget:
        budget: Budget = serializer.instance
        # A full update (PUT) carries the serializer's defaults; PATCH only what it names.
        data = serializer.validated_data
        budget = budget_set(
            tenant=budget.tenant,
            key=budget.key,
            period=budget.period,
            limit_usd=data.get("limit_usd", budget.limit_usd),
            soft_limit_pct=data.get("soft_limit_pct", budget.soft_limit_pct),
            webhook_url=data.get("webhook_url", budget.webhook_url),
            webhook_secret=data.get("webhook_secret"),
            enabled=data.get("enabled", budget.enabled),
        )
        return self._render_ready(budget)

    def perform_destroy(self, instance: Budget) -> None:
        budget_delete(budget=instance)


# --- invoices --------------------------------------------------------------------------


class CSVRenderer(BaseRenderer):
    """Lets ``Accept: text/csv`` through content negotiation; the CSV view answers with
    its own response, and errors arrive here as their JSON text."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        if isinstance(data, bytes):
            return data
        if isinstance(data, str):
            return data.encode()
        return JSONRenderer().render(data)


@extend_schema_view(
    list=extend_schema(responses={200: InvoiceSerializer, **error_responses(400, 401, 403)}),
    retrieve=extend_schema(responses={200: InvoiceSerializer, **error_responses(401, 403, 404)}),
)
class InvoiceViewSet(viewsets.ReadOnlyModelViewSet):
    """Monthly invoices with a line per model. Closed invoices never change; an open one
    is a draft that is rebuilt from usage until its month is closed."""

    serializer_class = InvoiceSerializer
    lookup_value_regex = r"[0-9]+"
    filter_backends = [QueryParamFilter, filters.OrderingFilter]
    filter_params = {
        "tenant": QueryParam("tenant_id", int, "Only invoices of this tenant (id)."),
        "status": QueryParam("status", str, "open or closed."),
    }
    ordering_fields = ["period_start", "total_usd"]
    ordering = ["-period_start", "tenant_id"]

    def get_queryset(self):
        return invoice_list(tenant_ids=access_for_request(self.request).tenant_ids)

    @extend_schema(
        operation_id="invoices_csv",
        summary="Download an invoice as CSV",
        description="One row per line (exact amounts), then subtotal, markup and total "
        "(rounded half up to the cent) rows.",
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The CSV file."),
            **{
                (code, "application/json"): response
                for code, response in error_responses(401, 403, 404).items()
            },
        },
    )
    @action(
        detail=True, methods=["get"], url_path="csv", renderer_classes=[JSONRenderer, CSVRenderer]
    )
    def csv(self, request, *args: Any, **kwargs: Any):
        invoice: Invoice = self.get_object()
        return invoice_csv_response([invoice], invoice_filename(invoice, "csv"))
