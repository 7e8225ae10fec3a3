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

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from learncredits.billing import purchases, stripe_provider
from learncredits.billing.collection import _record as record_invoice_charge
from learncredits.billing.models import InvoiceCharge
from learncredits.billing.payments import PaymentOutcome
from learncredits.credits.models import Purchase

logger = logging.getLogger(__name__)


@csrf_exempt  # Stripe signs the body instead; it has no session or CSRF token
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Apply a ``payment_intent.succeeded`` / ``payment_intent.payment_failed`` event to the
    purchase (or monthly invoice attempt) whose stored intent it names."""
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
    if not isinstance(outcome, PaymentOutcome) or not intent_id:
        return HttpResponse(status=200)  # a refund: recorded when it is made, not here
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
