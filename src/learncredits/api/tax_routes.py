"""Tax (operator): the seller's details, the tax rate schedule, and the tax report. Every
rule lives in billing/tax.py and domain/tax.py."""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router
from pydantic import Field

from learncredits.api import schemas as s
from learncredits.api.auth import require_operator
from learncredits.api.common import content, responses
from learncredits.billing import tax as billing_tax
from learncredits.domain.periods import period_bounds
from learncredits.domain.tax import Seller

router = Router(tags=["operator"])


@router.put("/seller", response=responses(200, s.SellerOut))
def put_seller(request: HttpRequest, body: s.SellerIn) -> Seller:
    """The seller's legal details, printed on every document issued from now on (documents
    already issued keep theirs). The tax id is checked for the country."""
    principal = require_operator(request)
    return billing_tax.set_seller(
        legal_name=body.legal_name,
        address=body.address,
        country=body.country,
        tax_id=body.tax_id,
        actor=principal.label,
    )


@router.get("/seller", response=responses(200, s.SellerOut))
def get_seller(request: HttpRequest) -> Seller:
    require_operator(request)
    return billing_tax.current_seller()


@router.put("/tax/rates", response=responses(200, s.TaxRatesOut))
def put_tax_rates(request: HttpRequest, body: s.TaxRatesIn) -> billing_tax.RateTable:
    """A new version of the whole rate schedule: every tax of every jurisdiction, each
    version with the day it takes effect (00:00 UTC). Lines are taxed at the rates in
    force on their own day; documents already issued never change."""
    principal = require_operator(request)
    entries = [rate.model_dump() for rate in body.rates]
    return billing_tax.set_rates(entries, actor=principal.label)


@router.get("/tax/rates", response=responses(200, s.TaxRatesOut))
def get_tax_rates(request: HttpRequest) -> billing_tax.RateTable:
    require_operator(request)
    return billing_tax.current_rates()


class TaxReportParams(s.Schema):
    period: str = Field(..., pattern=r"^\d{4}-\d{2}$")
    format: Literal["json", "csv"] = "json"


@router.get(
    "/tax/report",
    response=responses(200, s.TaxReportOut),
    openapi_extra=content("text/csv"),
)
def get_tax_report(request: HttpRequest, params: Query[TaxReportParams]) -> Any:
    """Tax charged in a month (UTC, by issue date) per jurisdiction and rate, credit notes
    netted, and the sales charged no tax (reverse charge, exempt, no profile or no rate)."""
    require_operator(request)
    period_bounds(params.period, "UTC")
    report = billing_tax.tax_report(params.period)
    if params.format == "csv":
        rows = [vars(row) for row in report.rows]
        untaxed = [vars(row) for row in report.untaxed]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            [
                "period",
                "kind",
                "country",
                "region",
                "name",
                "rate_bps",
                "net_cents",
                "tax_cents",
                "documents",
            ]
        )
        for row in rows:
            writer.writerow(
                [
                    report.period,
                    "taxed",
                    row["country"],
                    row["region"] or "",
                    row["name"],
                    row["rate_bps"],
                    row["taxable_cents"],
                    row["tax_cents"],
                    row["documents"],
                ]
            )
        for row in untaxed:
            writer.writerow(
                [
                    report.period,
                    row["treatment"],
                    row["country"],
                    "",
                    "",
                    0,
                    row["net_cents"],
                    0,
                    row["documents"],
                ]
            )
        response = HttpResponse(buffer.getvalue(), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="tax-{report.period}.csv"'
        return response
    return report
