"""Model rows to API objects: public ids, integer money, ISO 8601 UTC times."""

from __future__ import annotations

from typing import Any

from learncredits import ids
from learncredits.billing import tax as billing_tax
from learncredits.billing.invoicing import amount_due_cents, invoice_status
from learncredits.billing.models import Invoice, InvoiceTaxLine, Refund
from learncredits.billing.reports import Forecast
from learncredits.catalog.models import Content
from learncredits.credits.models import Assignment, Purchase
from learncredits.credits.queries import BalanceView
from learncredits.domain.pricing import PriceBook, Quote
from learncredits.domain.tax import NOTES, TaxedAmount, Treatment
from learncredits.ids import iso
from learncredits.tenancy.models import ApiKey, Employee, Membership, Organization


def org(o: Organization) -> dict[str, Any]:
    return {
        "id": ids.encode("org", o.pk),
        "name": o.name,
        "billing_email": o.billing_email,
        "timezone": o.timezone,
        "alert_threshold": o.alert_threshold,
        "tax": billing_tax.profile_dict(o),
        "created_at": iso(o.created_at),
    }


def balance(b: BalanceView) -> dict[str, Any]:
    return {
        "credits": b.credits,
        "assigned": b.assigned,
        "available": b.available,
        "at_risk": b.at_risk,
        "period": b.period,
        "overage_credits_this_period": b.overage_credits_this_period,
    }


def employee(e: Employee) -> dict[str, Any]:
    return {
        "id": ids.encode("employee", e.pk),
        "name": e.name,
        "email": e.email,
        "active": e.active,
    }


def content(c: Content) -> dict[str, Any]:
    return {
        "id": ids.encode("content", c.pk),
        "title": c.title,
        "premium": c.premium,
        "credit_cost": c.credit_cost,
        "xapi_activity_id": c.xapi_activity_id,
    }


def price_book(book: PriceBook) -> dict[str, Any]:
    return {
        "retail_unit_price_cents": book.retail_unit_price_cents,
        "currency": book.currency,
        "tiers": [
            {"min_quantity": t.min_quantity, "unit_price_cents": t.unit_price_cents}
            for t in book.tiers
        ],
    }


def quote(q: Quote, taxed: TaxedAmount | None = None) -> dict[str, Any]:
    """A quote; with ``taxed`` (the org has a tax profile), the tax it would pay too."""
    return {
        "quantity": q.quantity,
        "unit_price_cents": q.unit_price_cents,
        "total_cents": q.total_cents,
        "retail_total_cents": q.retail_total_cents,
        "savings_cents": q.savings_cents,
        "currency": q.currency,
        "better_quantity": q.better_quantity,
        "better_total_cents": q.better_total_cents,
        "tax_cents": None if taxed is None else taxed.tax_cents,
        "total_with_tax_cents": None if taxed is None else taxed.total_cents,
    }


def purchase(p: Purchase) -> dict[str, Any]:
    return {
        "id": ids.encode("purchase", p.pk),
        "quantity": p.quantity,
        "unit_price_cents": p.unit_price_cents,
        "total_cents": p.total_cents,
        "tax_cents": p.tax_cents,
        "total_with_tax_cents": p.total_cents + p.tax_cents,
        "currency": p.currency,
        "status": p.status,
        "invoice_id": _receipt_id(p),
        "provider_reference": p.provider_reference or None,
        "decline_code": p.decline_code or None,
        "next_action": (
            {"type": "authenticate", "url": p.action_url}
            if p.status == Purchase.Status.PENDING and p.action_url
            else None
        ),
        "refunded_credits": refunded_credits(p),
        "created_at": iso(p.created_at),
    }


def refunded_credits(p: Purchase) -> int:
    """Credits of a purchase given back so far (only a paid purchase can have any)."""
    if p.status != Purchase.Status.PAID:
        return 0
    return sum(Refund.objects.filter(purchase_id=p.pk).values_list("credits", flat=True))


def _receipt_id(p: Purchase) -> str | None:
    try:
        return ids.encode("invoice", p.receipt.pk)
    except Purchase.receipt.RelatedObjectDoesNotExist:
        return None


def assignment(a: Assignment) -> dict[str, Any]:
    return {
        "id": ids.encode("assignment", a.pk),
        "content_id": ids.encode("content", a.content_id),
        "employee_id": ids.encode("employee", a.employee_id),
        "status": a.status,
        "credit_cost": a.credit_cost,
        "charged_credits": a.charged_credits,
        "overage_credits": a.overage_credits,
        "created_at": iso(a.created_at),
        "started_at": iso(a.started_at),
        "completed_at": iso(a.completed_at),
        "cancelled_at": iso(a.cancelled_at),
    }


def user(m: Membership) -> dict[str, Any]:
    return {
        "id": ids.encode("user", m.user.pk),
        "email": m.user.email,
        "name": m.user.first_name,
        "role": m.role,
    }


def invoice(i: Invoice) -> dict[str, Any]:
    return {
        "id": ids.encode("invoice", i.pk),
        "number": i.number,
        "kind": i.kind,
        "period": i.period,
        "status": invoice_status(i),
        "currency": i.currency,
        "lines": [
            {
                "description": line.description,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
                "amount_cents": line.amount_cents,
                "assignment_id": ids.encode("assignment", line.assignment_id),
            }
            for line in i.lines.all()
        ],
        "seller": seller(i.seller),
        "buyer": buyer(i),
        "subtotal_cents": i.total_cents - i.tax_cents,
        "tax_lines": [tax_line(line) for line in i.tax_lines.all()],
        "tax_cents": i.tax_cents,
        "tax_treatment": i.tax_treatment,
        "reverse_charge": i.tax_treatment == Treatment.REVERSE_CHARGE,
        "tax_note": NOTES[Treatment(i.tax_treatment)],
        "total_cents": i.total_cents,
        "issued_at": iso(i.issued_at),
        "due_at": iso(i.due_at),
        "purchase_id": ids.encode("purchase", i.purchase_id),
        "credits_invoice_id": ids.encode("invoice", i.credits_invoice_id),
        "amount_due_cents": amount_due_cents(i),
    }


def seller(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": details.get("legal_name", ""),
        "address": details.get("address") or None,
        "email": None,
        "country": details.get("country") or None,
        "region": None,
        "tax_id": details.get("tax_id") or None,
        "exempt": False,
    }


def buyer(i: Invoice) -> dict[str, Any]:
    details = i.buyer or {}
    return {
        "name": i.buyer_name,
        "address": None,
        "email": i.buyer_email,
        "country": details.get("country"),
        "region": details.get("region"),
        "tax_id": details.get("tax_id"),
        "exempt": bool(details.get("exempt", False)),
    }


def tax_line(line: InvoiceTaxLine) -> dict[str, Any]:
    return {
        "name": line.name,
        "rate_bps": line.rate_bps,
        "country": line.country,
        "region": line.region or None,
        "taxable_cents": line.taxable_cents,
        "amount_cents": line.amount_cents,
    }


def forecast(f: Forecast) -> dict[str, Any]:
    return {
        "available": f.available,
        "daily_burn": float(f.daily_burn),
        "runs_out_on": f.runs_out_on.isoformat() if f.runs_out_on else None,
        "recommended_quantity": f.recommended_quantity,
        "quote": quote(f.quote) if f.quote else None,
    }


def api_key(k: ApiKey) -> dict[str, Any]:
    return {
        "id": ids.encode("api_key", k.pk),
        "name": k.name,
        "prefix": k.prefix,
        "created_at": iso(k.created_at),
        "last_used_at": iso(k.last_used_at),
        "revoked_at": iso(k.revoked_at),
    }
