"""Billing pages for staff: the usage dashboard, printable invoices and CSV exports.

The dashboard reads hourly rollups only (see ``selectors.dashboard_build``): it stays
fast however many usage records there are. Every page is scoped to the tenants the
user may read, as the admin and the API are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from apps.billing.models import Invoice
from apps.billing.selectors import dashboard_build, invoice_list, rollup_list, top_keys
from apps.keys.selectors import key_list
from apps.tenants.access import Access, access_for_request
from apps.tenants.selectors import tenant_list

MAX_RANGE_DAYS = 400
DEFAULT_RANGE_DAYS = 7
TOP_KEYS_PER_PAGE = 20


# --- the dashboard ---------------------------------------------------------------------


class DashboardFilterForm(forms.Form):
    date_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    tenant = forms.TypedChoiceField(label="Tenant", required=False, coerce=int, empty_value=None)

    def __init__(self, *args: Any, tenants: Iterable[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [("", "All tenants")] + [(t.pk, t.name) for t in tenants]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        today = timezone.now().astimezone(UTC).date()
        date_to = data.get("date_to") or today
        date_from = data.get("date_from") or date_to - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        if date_from > date_to:
            raise forms.ValidationError("“From” must not be after “To”.")
        if (date_to - date_from).days >= MAX_RANGE_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_RANGE_DAYS} days.")
        data["date_from"], data["date_to"] = date_from, date_to
        return data


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def readable_access(request: HttpRequest) -> Access:
    access = access_for_request(request)
    if access.readable is not None and not access.readable:
        raise PermissionDenied
    return access


@staff_member_required
@require_GET
def dashboard_page(request: HttpRequest) -> HttpResponse:
    access = readable_access(request)
    tenants = list(tenant_list(tenant_ids=access.tenant_ids).order_by("name"))
    form = DashboardFilterForm(request.GET, tenants=tenants)
    if not form.is_valid():
        # Show the form with its errors over the default range.
        form_errors = form
        form = DashboardFilterForm({}, tenants=tenants)
        form.is_valid()
    else:
        form_errors = None
    date_from, date_to = form.cleaned_data["date_from"], form.cleaned_data["date_to"]
    tenant_id = form.cleaned_data.get("tenant")
    tenant_ids = [tenant_id] if tenant_id is not None else access.tenant_ids
    start, end = _day_start(date_from), _day_start(date_to) + timedelta(days=1)

    data = dashboard_build(tenant_ids=tenant_ids, start=start, end=end)
    keys_page = Paginator(
        top_keys(rollups=rollup_list(tenant_ids=tenant_ids, start=start, end=end)),
        TOP_KEYS_PER_PAGE,
    ).get_page(request.GET.get("keys_page"))
    key_rows = list(keys_page.object_list)
    names = dict(
        key_list(tenant_ids=access.tenant_ids)
        .filter(pk__in=[row["key_id"] for row in key_rows if row["key_id"]])
        .values_list("pk", "name")
    )
    tenant_names = {t.pk: t.name for t in tenants}
    for row in key_rows:
        row["key_name"] = names.get(row["key_id"], "")
        row["tenant_name"] = tenant_names.get(row["tenant_id"], "")
        row["error_rate"] = (
            round(100 * row["errors"] / row["requests"], 2) if row["requests"] else None
        )
    query = request.GET.copy()
    query.pop("keys_page", None)
    context = {
        **admin.site.each_context(request),
        "title": "Usage dashboard",
        "form": form,
        "form_errors": form_errors,
        "data": data,
        "chart_data": data.chart_data(),
        "keys_page": keys_page,
        "key_rows": key_rows,
        "base_query": query.urlencode(),
        "show_tenants": len(tenants) > 1 and tenant_id is None,
        "model_totals": [{"label": s.label, "cost": sum(s.values)} for s in data.spend_by_model],
    }
    return render(request, "admin/billing/dashboard.html", context)


# --- invoices ----------------------------------------------------------------------------

TEN_PLACES = Decimal("1e-10")
CSV_HEADER = [
    "invoice_id",
    "tenant",
    "period_start",
    "period_end",
    "status",
    "item",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "amount_usd",
]


def invoice_markup_usd(invoice: Invoice) -> Decimal:
    """The markup (negative: discount) before rounding, to 10 decimal places."""
    return (invoice.subtotal_usd * invoice.markup_pct / 100).quantize(
        TEN_PLACES, rounding=ROUND_HALF_UP
    )


def markup_label(invoice: Invoice) -> str:
    pct = invoice.markup_pct.normalize()
    if pct < 0:
        return f"discount ({pct:f}%)"
    return f"markup (+{pct:f}%)"


def invoice_csv(invoices: Iterable[Invoice]) -> str:
    """Lines, subtotal, markup and total of each invoice; amounts unrounded but the total."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for invoice in invoices:
        head = [
            invoice.pk,
            invoice.tenant.name,
            invoice.period_start.date().isoformat(),
            invoice.period_end.date().isoformat(),
            invoice.status,
        ]
        for line in invoice.lines.all():
            writer.writerow(
                [
                    *head,
                    "line",
                    line.model_name,
                    line.requests,
                    line.prompt_tokens,
                    line.completion_tokens,
                    f"{line.cost_usd:f}",
                ]
            )
        writer.writerow([*head, "subtotal", "", "", "", "", f"{invoice.subtotal_usd:f}"])
        writer.writerow(
            [*head, markup_label(invoice), "", "", "", "", f"{invoice_markup_usd(invoice):f}"]
        )
        writer.writerow([*head, "total", "", "", "", "", f"{invoice.total_usd:.2f}"])
    return out.getvalue()


def invoice_filename(invoice: Invoice, extension: str) -> str:
    return f"invoice-{invoice.tenant.name}-{invoice.period_start:%Y-%m}.{extension}"


def invoice_csv_response(invoices: list[Invoice], filename: str) -> HttpResponse:
    response = HttpResponse(invoice_csv(invoices), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _readable_invoice(request: HttpRequest, pk: int) -> Invoice:
    access = readable_access(request)
    return get_object_or_404(invoice_list(tenant_ids=access.tenant_ids), pk=pk)


@staff_member_required
@require_GET
def invoice_print_page(request: HttpRequest, pk: int) -> HttpResponse:
    invoice = _readable_invoice(request, pk)
    lines = list(invoice.lines.all())
    context = {
        "invoice": invoice,
        "lines": lines,
        "markup_usd": invoice_markup_usd(invoice),
        "markup_label": markup_label(invoice),
        "requests": sum(line.requests for line in lines),
        "prompt_tokens": sum(line.prompt_tokens for line in lines),
        "completion_tokens": sum(line.completion_tokens for line in lines),
        "site_header": admin.site.site_header,
        "period_last_day": invoice.period_end - timedelta(days=1),
    }
    return render(request, "billing/invoice_print.html", context)


@staff_member_required
@require_GET
def invoice_csv_page(request: HttpRequest, pk: int) -> HttpResponse:
    invoice = _readable_invoice(request, pk)
    return invoice_csv_response([invoice], invoice_filename(invoice, "csv"))
