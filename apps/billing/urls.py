"""Staff pages under /admin/billing/ (mounted before the admin's own URLs)."""

from __future__ import annotations

from django.urls import path

from apps.billing.views import dashboard_page, invoice_csv_page, invoice_print_page

urlpatterns = [
    path("dashboard/", dashboard_page, name="billing-dashboard"),
    path("invoice/<int:pk>/print/", invoice_print_page, name="billing-invoice-print"),
    path("invoice/<int:pk>/csv/", invoice_csv_page, name="billing-invoice-csv"),
]
