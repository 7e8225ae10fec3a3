"""Stripe's webhook: the provider telling us how an intent ended.

It drives the same functions as the API and reconciliation, so it may arrive before the API
has answered, after it, twice, or never: ``purchases.apply_outcome`` changes a purchase only
while it is pending (credits are added once), and an invoice charge's result is written once
(``collection._record``, conditional on the attempt being pending). A webhook whose signature
does not verify changes nothing (400); an event about anything else is acknowledged and
ignored (200), or Stripe would keep sending it.
"""

from __future__ import annotations

import logging

from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.audit.models import AuditEvent
from learncredits.billing import purchases, stripe_provider
from learncredits.billing.collection import _record as record_invoice_charge
from learncredits.billing.models import InvoiceCharge, Refund
from learncredits.credits.models import Purchase

logger = logging.getLogger(__name__)


@csrf_exempt  # Stripe signs the body instead; it has no session or CSRF token
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Apply a ``payment_intent.succeeded`` / ``payment_intent.payment_failed`` event to the
    purchase (or monthly invoice attempt) whose stored intent it names; report the part of a
    ``charge.refunded`` that we did not make (``note_refund``)."""
    try:
        event = stripe_provider.parse_webhook(
            request.body, request.headers.get("Stripe-Signature", "")
        )
    except stripe_provider.WebhookSignatureError as exc:
        logger.warning("refused a Stripe webhook: %s", exc)
        return HttpResponse("bad signature", status=400, content_type="text/plain")
    update = stripe_provider.payment_update(event)
    if update is None:
        return HttpResponse(status=200)  # not about a payment
    intent_id, outcome = update
    if isinstance(outcome, stripe_provider.RefundUpdate):
        if intent_id:
            note_refund(str(getattr(event, "id", "") or ""), intent_id, outcome)
        return HttpResponse(status=200)
    if not intent_id:
        return HttpResponse(status=200)
    purchase = Purchase.objects.filter(
        provider=stripe_provider.PROVIDER_NAME, provider_reference=intent_id
    ).first()
    if purchase is not None:
        purchases.apply_outcome(purchase, outcome)
        return HttpResponse(status=200)
    charge = (
        InvoiceCharge.objects.filter(
            provider=stripe_provider.PROVIDER_NAME, provider_reference=intent_id
        )
        .select_related("invoice")
        .first()
    )
    if charge is not None:
        record_invoice_charge(charge, charge.invoice, outcome, now=None)
        return HttpResponse(status=200)
    # An intent no row of ours stored: one that lost the race to be stored (cancelled,
    # never confirmed), or not ours. Its metadata says which row it was made for.
    logger.info("Stripe event %s about intent %s of no stored row", event.type, intent_id)
    return HttpResponse(status=200)


OUTSIDE_REFUND = "stripe.refund_outside"


def note_refund(event_id: str, intent_id: str, update: stripe_provider.RefundUpdate) -> None:
    """Record money Stripe says went back on one of our intents beyond the refunds we made.

    Our own refunds are not news (their ``Refund`` rows, pending or done, were committed
    before Stripe was asked, so they are counted here whatever the order of events). What
    is left was refunded outside learncredits: it is recorded for the operator, once per
    event, and the credits are left alone: the operator decides whether to take them back.
    """
    ours = (
        Refund.objects.filter(
            provider=stripe_provider.PROVIDER_NAME, payment_reference=intent_id
        ).aggregate(total=Sum("amount_cents"))["total"]
        or 0
    )
    outside = update.amount_refunded_cents - ours
    if outside <= 0:
        logger.info("Stripe refund on intent %s is ours (%s cents)", intent_id, ours)
        return
    subject = _refunded_subject(intent_id)
    if subject is None:
        logger.info("Stripe refund on intent %s of no stored row", intent_id)
        return
    org_id, target = subject
    logger.warning(
        "Stripe reports %s cents refunded outside learncredits on %s (intent %s, charge %s); "
        "no credits were changed: an operator must decide",
        outside,
        target,
        intent_id,
        update.charge_id,
    )
    if (
        event_id
        and AuditEvent.objects.filter(
            action=OUTSIDE_REFUND, target=target, details__event_id=event_id
        ).exists()
    ):
        return  # Stripe delivered this event before
    audit.record(
        "stripe",
        OUTSIDE_REFUND,
        org_id=org_id,
        target=target,
        event_id=event_id,
        intent_id=intent_id,
        charge_id=update.charge_id,
        amount_refunded_cents=update.amount_refunded_cents,
        refunded_by_us_cents=ours,
        refunded_outside_cents=outside,
        fully_refunded=update.fully_refunded,
    )


def _refunded_subject(intent_id: str) -> tuple[int, str] | None:
    """(org id, what the intent paid for: the purchase's public id or the invoice number)."""
    purchase = Purchase.objects.filter(
        provider=stripe_provider.PROVIDER_NAME, provider_reference=intent_id
    ).first()
    if purchase is not None:
        target = ids.encode("purchase", purchase.pk) or f"purchase {purchase.pk}"
        return purchase.org_id, target
    charge = (
        InvoiceCharge.objects.filter(
            provider=stripe_provider.PROVIDER_NAME, provider_reference=intent_id
        )
        .select_related("invoice")
        .first()
    )
    if charge is not None:
        return charge.invoice.org_id, charge.invoice.number
    return None
