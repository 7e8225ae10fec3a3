"""Which events become emails, to whom, and with what words (templates in notify/email/).

One email when an org becomes at risk, one for the first overage of a period, one per issued
invoice and credit note, one per declined payment (and when auto top-up or a webhook endpoint
is switched off). Recipients: the ones an owner or admin chose (tenancy/recipients.py), else
the org's billing email and its admins. One more, to the owner and admins only unless
recipients were chosen, lists the assignments nobody started that will be released in seven
days (credits/aging.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.template.loader import render_to_string

from learncredits.catalog.services import current_price_book
from learncredits.credits.models import Event
from learncredits.domain import pricing
from learncredits.domain.balance import AlertThreshold, Counters, credits_to_leave_risk
from learncredits.domain.money import format_cents
from learncredits.notify.models import EmailMessage
from learncredits.tenancy import recipients as alert_recipients
from learncredits.tenancy.models import Organization

SUBJECTS = {
    "balance.at_risk": "Your learncredits balance is running low",
    "overage.incurred": "Assignments are now billed at the retail rate",
    "invoice.issued": "Your learncredits {kind} {number}",
    "credit_note.issued": "Your learncredits credit note {number}",
    "invoice.payment_failed": "Payment declined for invoice {number}",
    "auto_top_up.failed": "Auto top-up stopped: the payment was declined",
    "webhook.endpoint_disabled": "A webhook endpoint was switched off",
    "assignment.release_warning": "{count} unstarted assignment{plural} will be released",
}


def recipients(org: Organization) -> list[str]:
    """Who gets the org's emails: the recipients an owner or admin chose on Settings >
    Billing (tenancy/recipients.py), or, until someone chooses, the billing email and every
    owner and admin (owners are admins too, docs/identity.md "Roles")."""
    chosen = alert_recipients.chosen_emails(org)
    if chosen is not None:
        return chosen
    return list(dict.fromkeys([org.billing_email, *alert_recipients.owners_and_admins(org)]))


def admins_and_owner(org: Organization) -> list[str]:
    """Who decides about the org's assignments, for the release warning: the chosen
    recipients when someone chose, else its owner and admins (the billing email when it
    has neither)."""
    chosen = alert_recipients.chosen_emails(org)
    if chosen is not None:
        return chosen
    return alert_recipients.owners_and_admins(org) or [org.billing_email]


def _top_up_quote(needed: int) -> dict[str, Any] | None:
    if needed < 1:
        return None
    quote = pricing.quote(current_price_book(), min(needed, pricing.MAX_PURCHASE_QUANTITY))
    return {
        "quantity": quote.quantity,
        "total": format_cents(quote.total_cents),
        "unit_price": format_cents(quote.unit_price_cents),
        "better_quantity": quote.better_quantity,
        "better_total": format_cents(quote.better_total_cents)
        if quote.better_total_cents is not None
        else None,
    }


def _tax_context(data: dict[str, Any]) -> dict[str, Any]:
    """What a document's email shows besides its total: the seller and buyer blocks and,
    for a taxed document or one with a tax profile (exempt, reverse charge), the subtotal,
    one line per tax and what the document says about its tax. An untaxed document of an
    org without a profile, or an event recorded before documents carried these, reads as
    it always did."""
    context: dict[str, Any] = {}
    seller = data.get("seller")
    if isinstance(seller, dict) and seller.get("legal_name"):
        context["seller"] = _party_lines(
            seller.get("legal_name"),
            *str(seller.get("address") or "").splitlines(),
            seller.get("country"),
            _tax_id_line(seller.get("tax_id")),
        )
    buyer = data.get("buyer")
    if isinstance(buyer, dict) and buyer.get("name"):
        region = buyer.get("region")
        where = (buyer.get("country") or "") + (f"-{region}" if region else "")
        context["buyer"] = _party_lines(
            buyer.get("name"), buyer.get("email"), where, _tax_id_line(buyer.get("tax_id"))
        )
    tax_cents = int(data.get("tax_cents") or 0)
    profiled = data.get("tax_treatment") not in (None, "no_profile")
    if (not tax_cents and not profiled) or "total_cents" not in data:
        return context
    subtotal_cents = int(data.get("subtotal_cents", int(data["total_cents"]) - tax_cents))
    context.update(
        show_tax=True,
        subtotal=format_cents(subtotal_cents),
        tax=format_cents(tax_cents),
        tax_lines=[
            {
                "label": str(line.get("label") or line.get("name") or "Tax"),
                "taxable": format_cents(int(line.get("taxable_cents") or 0)),
                "amount": format_cents(int(line.get("amount_cents") or 0)),
            }
            for line in data.get("tax_lines") or ()
            if isinstance(line, dict)
        ],
        tax_note=str(data.get("tax_note") or ""),
    )
    return context


def _tax_id_line(tax_id: object) -> str:
    return f"Tax id: {tax_id}" if tax_id else ""


def _party_lines(*parts: object) -> list[str]:
    return [str(part).strip() for part in parts if part and str(part).strip()]


def compose(event: Event) -> EmailMessage | None:
    """The email an event causes, or None. Rendered now, so a retry sends the same words."""
    if event.type not in SUBJECTS:
        return None
    data = dict(event.data)
    if event.type == "overage.incurred" and not data.get("first_of_period"):
        return None
    org = event.org
    context: dict[str, Any] = {
        "org": org,
        "data": data,
        "billing_url": settings.LEARNCREDITS_BASE_URL.rstrip("/") + "/settings/billing",
    }
    if event.type == "balance.at_risk":
        # The line as it was (a percentage rises with what is bought, so the quantity
        # is computed from the rule, not from the line in credits alone).
        percent = data.get("alert_threshold_percent")
        threshold = AlertThreshold(
            credits=int(data["alert_threshold"]),
            percent=int(percent) if percent is not None else None,
        )
        counters = Counters(int(data["credits"]), int(data["assigned"]))
        context["quote"] = _top_up_quote(credits_to_leave_risk(counters, threshold))
    for key in ("total_cents", "amount_cents"):
        if key in data:
            context[key.replace("_cents", "")] = format_cents(int(data[key]))
    context.update(_tax_context(data))
    count = len(data.get("assignments") or [])
    if event.type == "assignment.release_warning":
        context["assignments_url"] = (
            settings.LEARNCREDITS_BASE_URL.rstrip("/") + "/assignments?status=assigned"
        )
    kind = event.type.replace(".", "_")
    subject = SUBJECTS[event.type].format(
        kind="receipt" if data.get("kind") == "purchase" else "invoice",
        number=data.get("number", ""),
        count=count,
        plural="" if count == 1 else "s",
    )
    return EmailMessage(
        org=org,
        event=event,
        kind=event.type,
        recipients=admins_and_owner(org)
        if event.type == "assignment.release_warning"
        else recipients(org),
        subject=subject,
        text=render_to_string(f"notify/email/{kind}.txt", context),
        html=render_to_string(f"notify/email/{kind}.html", context),
    )
