"""An invoice as HTML and as PDF, both from the one template ``billing/invoice.html``."""

from __future__ import annotations

import io
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from xhtml2pdf import pisa

from learncredits.billing.invoicing import amount_due_cents, credited_cents, invoice_status
from learncredits.billing.models import Invoice, InvoiceTaxLine, Refund
from learncredits.domain.money import format_cents
from learncredits.domain.tax import NOTES, Treatment, label

TITLES: dict[str, str] = {
    Invoice.Kind.PURCHASE: "Receipt",
    Invoice.Kind.MONTHLY: "Invoice",
    Invoice.Kind.CREDIT_NOTE: "Credit note",
}


def invoice_context(invoice: Invoice) -> dict[str, Any]:
    tz = ZoneInfo(invoice.org.timezone)
    purchase = invoice.purchase
    lines = [
        {
            "description": line.description,
            "quantity": line.quantity,
            "unit_price": format_cents(line.unit_price_cents, invoice.currency),
            "amount": format_cents(line.amount_cents, invoice.currency),
        }
        for line in invoice.lines.all()
    ]
    retail_total = saving = None
    if purchase is not None:
        retail_total = format_cents(purchase.retail_unit_price_cents * purchase.quantity)
        saving = format_cents(
            (purchase.retail_unit_price_cents - purchase.unit_price_cents) * purchase.quantity
        )
    credited = invoice.credits_invoice
    credits_total = credited_cents(invoice) if credited is None else 0
    return {
        "invoice": invoice,
        "title": TITLES[invoice.kind],
        # A credit note names the invoice it credits; an invoice with credit notes shows
        # what they took off and what is still due.
        "credited": {
            "kind_label": TITLES[credited.kind],
            "number": credited.number,
            "issued_on": credited.issued_at.astimezone(tz).date().isoformat(),
        }
        if credited is not None
        else None,
        "refunded": credited is not None and Refund.objects.filter(credit_note=invoice).exists(),
        "credited_total": format_cents(credits_total, invoice.currency),
        "amount_due": format_cents(amount_due_cents(invoice), invoice.currency)
        if credits_total
        else None,
        **_parties(invoice),
        "subtotal": format_cents(invoice.total_cents - invoice.tax_cents, invoice.currency),
        "tax_lines": [
            {
                "label": _tax_label(line),
                "taxable": format_cents(line.taxable_cents, invoice.currency),
                "amount": format_cents(line.amount_cents, invoice.currency),
            }
            for line in invoice.tax_lines.all()
        ],
        "tax_note": NOTES[Treatment(invoice.tax_treatment)],
        "issued_on": invoice.issued_at.astimezone(tz).date().isoformat(),
        "due_on": invoice.due_at.astimezone(tz).date().isoformat(),
        "status": invoice_status(invoice),
        "lines": lines,
        "total": format_cents(invoice.total_cents, invoice.currency),
        "retail_total": retail_total,
        "saving": saving,
    }


def _tax_label(line: InvoiceTaxLine) -> str:
    return label(line.name, line.rate_bps, line.country, line.region or None)


def _parties(invoice: Invoice) -> dict[str, Any]:
    """The seller and buyer blocks as the document was issued (an invoice issued before
    seller details were kept prints the configured seller)."""
    seller = invoice.seller or {
        "legal_name": settings.LEARNCREDITS_SELLER,
        "address": settings.LEARNCREDITS_SELLER_ADDRESS,
    }
    buyer = invoice.buyer or {}
    region = buyer.get("region")
    return {
        "seller": seller.get("legal_name", ""),
        "seller_address_lines": [ln for ln in str(seller.get("address", "")).splitlines() if ln],
        "seller_country": seller.get("country", ""),
        "seller_tax_id": seller.get("tax_id", ""),
        "buyer_location": ((buyer.get("country") or "") + (f"-{region}" if region else "")),
        "buyer_tax_id": buyer.get("tax_id") or "",
    }


def invoice_html(invoice: Invoice, *, for_pdf: bool = False, csp_nonce: str = "") -> str:
    context = invoice_context(invoice)
    context["for_pdf"] = for_pdf
    context["csp_nonce"] = csp_nonce
    return render_to_string("billing/invoice.html", context)


def invoice_page(request: HttpRequest, invoice: Invoice) -> HttpResponse:
    """The invoice as a web page, for the dashboard and the API alike.

    Its styles are inline (the PDF renderer needs them there), and the Content-Security-
    Policy allows inline styles only with this request's nonce: without it the page
    renders unstyled."""
    nonce = str(getattr(request, "csp_nonce", ""))
    return HttpResponse(invoice_html(invoice, csp_nonce=nonce))


def invoice_pdf(invoice: Invoice) -> bytes:
    buffer = io.BytesIO()
    result = pisa.CreatePDF(invoice_html(invoice, for_pdf=True), dest=buffer, encoding="utf-8")
    if result.err:  # pragma: no cover - the template is ours and known to render
        raise RuntimeError(f"PDF rendering failed for {invoice.number}")
    return buffer.getvalue()
