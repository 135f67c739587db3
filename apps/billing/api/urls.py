from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.billing.api.views import BudgetViewSet, InvoiceViewSet, UsageListApi, UsageSummaryApi

app_name = "billing-api"

router = SimpleRouter()
router.register("budgets", BudgetViewSet, basename="budget")
router.register("invoices", InvoiceViewSet, basename="invoice")

urlpatterns = [
    path("usage/", UsageListApi.as_view(), name="usage-list"),
    path("usage/summary/", UsageSummaryApi.as_view(), name="usage-summary"),
    *router.urls,
]
