"""Billing endpoints of the v1 API: invoices, closing a period, and the billing reports."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router
from pydantic import Field

from learncredits.api import schemas as s
from learncredits.api.auth import decode_or_404, department_filter, org_for, require_operator
from learncredits.api.common import ListParams, content, paginate, responses
from learncredits.billing import reports
from learncredits.billing.documents import invoice_page, invoice_pdf
from learncredits.billing.invoicing import CloseSummary, close_all, with_status
from learncredits.billing.models import Invoice
from learncredits.billing.tasks import enqueue_collection
from learncredits.domain.errors import NotFound
from learncredits.domain.periods import period_bounds
from learncredits.domain.tax import label
from learncredits.tenancy.models import Organization

router = Router(tags=["billing"])

PERIOD_PATTERN = r"^\d{4}-\d{2}$"


def _csv(rows: list[list[Any]], filename: str) -> HttpResponse:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@router.post("/billing/close-period", response=responses(200, s.ClosePeriodOut))
def close_period(request: HttpRequest, body: s.ClosePeriodIn) -> CloseSummary:
    """Issue every org's monthly invoice for ``period`` (also early, for the month in
    progress). Running it again issues only what arrived since."""
    principal = require_operator(request)
    return close_all(body.period, on_issue=enqueue_collection, actor=principal.label)


class InvoiceListParams(ListParams):
    format: Literal["json", "csv"] = "json"


def _invoices(org: Organization) -> Any:
    return with_status(Invoice.objects.filter(org=org)).prefetch_related("lines", "tax_lines")


@router.get(
    "/orgs/{org_id}/invoices",
    response=responses(200, s.InvoicePage),
    openapi_extra=content("text/csv"),
)
def list_invoices(request: HttpRequest, org_id: str, params: Query[InvoiceListParams]) -> Any:
    org = org_for(request, org_id)
    if params.format == "csv":
        rows: list[list[Any]] = [
            [
                "id",
                "number",
                "kind",
                "period",
                "status",
                "currency",
                "total_cents",
                "issued_at",
                "due_at",
                "lines",
                "subtotal_cents",
                "tax_cents",
                "tax_treatment",
                "buyer_country",
                "buyer_tax_id",
                "buyer_name",
                "buyer_region",
                "seller_name",
                "seller_address",
                "seller_country",
                "seller_tax_id",
                "tax_lines",
                "reverse_charge",
                "tax_note",
            ]
        ]
        for invoice in _invoices(org).order_by("pk"):
            data = s.InvoiceOut.from_orm(invoice)
            rows.append(
                [
                    data.id,
                    data.number,
                    data.kind,
                    data.period,
                    data.status,
                    data.currency,
                    data.total_cents,
                    data.issued_at,
                    data.due_at,
                    len(data.lines),
                    data.subtotal_cents,
                    data.tax_cents,
                    data.tax_treatment,
                    data.buyer.country or "",
                    data.buyer.tax_id or "",
                    data.buyer.name,
                    data.buyer.region or "",
                    data.seller.name,
                    data.seller.address or "",
                    data.seller.country or "",
                    data.seller.tax_id or "",
                    _tax_lines_cell(data.tax_lines),
                    "true" if data.reverse_charge else "false",
                    data.tax_note,
                ]
            )
        return _csv(rows, f"invoices-org_{org.pk}.csv")
    return paginate(_invoices(org), params)


def _tax_lines_cell(lines: list[s.TaxLineOut]) -> str:
    """The document's tax lines in one cell, as printed with their amount in cents:
    ``VAT 19% (DE): 570; VAT 16% (DE): 320``."""
    return "; ".join(
        f"{label(t.name, t.rate_bps, t.country, t.region)}: {t.amount_cents}" for t in lines
    )


def _invoice(request: HttpRequest, org_id: str, invoice_id: str) -> Invoice:
    org = org_for(request, org_id)
    pk = decode_or_404("invoice", invoice_id, "invoice")
    found: Invoice | None = _invoices(org).select_related("org", "purchase").filter(pk=pk).first()
    if found is None:
        raise NotFound("invoice not found")
    return found


@router.get("/orgs/{org_id}/invoices/{invoice_id}", response=responses(200, s.InvoiceOut))
def get_invoice(request: HttpRequest, org_id: str, invoice_id: str) -> Invoice:
    return _invoice(request, org_id, invoice_id)


@router.get(
    "/orgs/{org_id}/invoices/{invoice_id}/pdf",
    response=responses(200, None),
    openapi_extra=content("application/pdf", binary=True),
)
def get_invoice_pdf(request: HttpRequest, org_id: str, invoice_id: str) -> HttpResponse:
    invoice = _invoice(request, org_id, invoice_id)
    response = HttpResponse(invoice_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{invoice.number}.pdf"'
    return response


@router.get(
    "/orgs/{org_id}/invoices/{invoice_id}/html",
    response=responses(200, None),
    openapi_extra=content("text/html"),
)
def get_invoice_html(request: HttpRequest, org_id: str, invoice_id: str) -> HttpResponse:
    """The invoice as a web page, from the same template as its PDF."""
    return invoice_page(request, _invoice(request, org_id, invoice_id))


class StatementParams(s.Schema):
    period: str = Field(..., pattern=PERIOD_PATTERN)
    format: Literal["json", "csv"] = "json"


def _statement_answer(statement: reports.Statement, params: StatementParams, name: str) -> Any:
    if params.format == "csv":
        data = statement.as_dict()
        return _csv([list(data), list(data.values())], f"statement-{name}-{params.period}.csv")
    return statement


class OrgStatementParams(StatementParams):
    department_id: str | None = Field(None, max_length=40)


@router.get(
    "/orgs/{org_id}/statement",
    response=responses(200, s.StatementOut),
    openapi_extra=content("text/csv"),
)
def get_statement(request: HttpRequest, org_id: str, params: Query[OrgStatementParams]) -> Any:
    """The org's statement; with ``department_id``, the consumption figures are that
    department's (see docs/identity.md) and the rest stay the org's."""
    org = org_for(request, org_id)
    department_pk = department_filter(request, org, params.department_id)
    name = f"org_{org.pk}" + (f"-dep_{department_pk}" if department_pk else "")
    return _statement_answer(
        reports.statement(org, params.period, department_id=department_pk), params, name
    )


@router.get(
    "/billing/statement",
    response=responses(200, s.StatementOut),
    openapi_extra=content("text/csv"),
)
def get_operator_statement(request: HttpRequest, params: Query[StatementParams]) -> Any:
    """Every organization's statement for the period, summed (operator only)."""
    require_operator(request)
    period_bounds(params.period, "UTC")
    return _statement_answer(reports.operator_statement(params.period), params, "all")


class UsageParams(s.Schema):
    from_: date = Field(..., alias="from")
    to: date
    granularity: Literal["day", "month"] = "day"
    department_id: str | None = Field(None, max_length=40)


@router.get("/orgs/{org_id}/usage", response=responses(200, s.UsageOut))
def get_usage(
    request: HttpRequest, org_id: str, params: Query[UsageParams]
) -> list[reports.UsagePoint]:
    org = org_for(request, org_id)
    department_pk = department_filter(request, org, params.department_id)
    return reports.usage(
        org, params.from_, params.to, params.granularity, department_id=department_pk
    )


class ForecastParams(s.Schema):
    horizon_days: int = Field(30, ge=1, le=3650)


@router.get("/orgs/{org_id}/forecast", response=responses(200, s.ForecastOut))
def get_forecast(
    request: HttpRequest, org_id: str, params: Query[ForecastParams]
) -> reports.Forecast:
    org = org_for(request, org_id)
    return reports.forecast(org, params.horizon_days)
