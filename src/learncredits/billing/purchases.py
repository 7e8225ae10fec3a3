"""Buying credits: a purchase row, a charge through the payment provider, credits once paid.

The money and the credits live in two systems that cannot share a transaction, so the
purchase moves through states that each survive a crash, and every caller (the API, the
dashboard, auto top-up, the worker's reconciliation, the provider's webhook) drives the same
purchase forward with the same steps:

1. ``open_purchase``: the pending row, with its price and the caller's Idempotency-Key,
   committed in a transaction of its own (``durable``: opening it inside another transaction
   is a programming error and fails loudly). A retry with the same key finds this row.
2. ``settle_purchase``: outside any transaction, an unconfirmed payment intent is created
   and its id committed on the row; only then is it confirmed. A retry that finds an id
   continues with that intent, so one purchase is charged at most once, whatever the
   provider does with idempotency keys. An intent that lost the race to be stored is
   cancelled unconfirmed: it never charges.
3. ``apply_outcome``: what the provider says, applied conditionally. Succeeded adds the
   credits under the balance lock (``credits.actions.mark_purchase_paid``: pending -> paid,
   once) and, in the same transaction, the receipt and ``purchase.paid``; declined marks
   the row failed; needing authentication keeps it pending with the place to authenticate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from learncredits import ids
from learncredits.billing import tax as billing_tax
from learncredits.billing.invoicing import issue_receipt
from learncredits.billing.payment_methods import STRIPE, require_card
from learncredits.billing.payments import (
    PaymentOutcome,
    PaymentProvider,
    PaymentRequest,
    PaymentStatus,
    get_provider,
)
from learncredits.catalog.services import current_price_book
from learncredits.credits.actions import mark_purchase_paid
from learncredits.credits.events import emit
from learncredits.credits.models import Purchase
from learncredits.domain import pricing
from learncredits.domain.errors import IdempotencyKeyReused, PaymentFailed
from learncredits.tenancy.models import Organization


@dataclass(frozen=True)
class Opened:
    purchase: Purchase
    # True when the Idempotency-Key named a purchase made before: the answer is a replay.
    existing: bool


def open_purchase(
    org: Organization,
    quantity: int,
    *,
    actor: str,
    provider_name: str,
    idempotency_key: str | None = None,
) -> Opened:
    """The pending purchase for this request, committed: a new one at today's best price, or
    the one the same Idempotency-Key opened before (the same quantity, or 422)."""
    with transaction.atomic(durable=True):
        if idempotency_key is not None:
            found = Purchase.objects.filter(org_id=org.pk, idempotency_key=idempotency_key).first()
            if found is not None:
                return Opened(_same_request(found, quantity), existing=True)
        try:
            with transaction.atomic():
                purchase = create_pending(
                    org,
                    quantity,
                    actor=actor,
                    provider_name=provider_name,
                    idempotency_key=idempotency_key,
                )
        except IntegrityError:
            if idempotency_key is None:
                raise
            # The same key, committed by a concurrent request a moment ago.
            found = Purchase.objects.get(org_id=org.pk, idempotency_key=idempotency_key)
            return Opened(_same_request(found, quantity), existing=True)
    return Opened(purchase, existing=False)


def create_pending(
    org: Organization,
    quantity: int,
    *,
    actor: str,
    provider_name: str,
    idempotency_key: str | None = None,
) -> Purchase:
    """A pending purchase at today's best price, written in the caller's transaction (which
    must commit before the purchase is settled)."""
    book = current_price_book()
    quote = pricing.quote(book, quantity)
    tax_cents, tax = billing_tax.purchase_tax(org, quote.total_cents, timezone.now())
    return Purchase.objects.create(
        org_id=org.pk,
        quantity=quantity,
        unit_price_cents=quote.unit_price_cents,
        total_cents=quote.total_cents,
        tax_cents=tax_cents,
        tax=tax,
        retail_unit_price_cents=book.retail_unit_price_cents,
        currency=quote.currency,
        provider=provider_name,
        actor=actor,
        idempotency_key=idempotency_key,
    )


def _same_request(found: Purchase, quantity: int) -> Purchase:
    if found.quantity != quantity:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request",
            purchase_id=ids.encode("purchase", found.pk),
        )
    return found


def _request_for(
    purchase: Purchase, org: Organization, *, off_session: bool = False
) -> PaymentRequest:
    return PaymentRequest(
        reference=ids.encode("purchase", purchase.pk) or "",
        org_id=org.pk,
        # The org's Stripe customer (its card on file); none for the test provider. Not made
        # here: an org without one has no card either, and the provider says so.
        customer=(org.stripe_customer_id or "") if purchase.provider == STRIPE else "",
        billing_email=org.billing_email,
        # Prices are net of tax; the card pays the tax too.
        amount_cents=purchase.total_cents + purchase.tax_cents,
        currency=purchase.currency,
        description=f"{purchase.quantity} learncredits credits",
        off_session=off_session,
    )


def _with_action_url(outcome: PaymentOutcome) -> PaymentOutcome:
    """An intent waiting for authentication that the provider gave no page for (Stripe's
    ``use_stripe_sdk``): the customer completes it on our payment page, with Stripe.js."""
    if outcome.status != PaymentStatus.REQUIRES_ACTION or outcome.action_url:
        return outcome
    base = str(settings.LEARNCREDITS_BASE_URL).rstrip("/")
    return replace(outcome, action_url=f"{base}/settings/payment?authenticate={outcome.intent_id}")


def settle_purchase(
    purchase: Purchase, provider: PaymentProvider | None = None, *, off_session: bool = False
) -> Purchase:
    """Carry a purchase as far as the provider lets it go now; raises PaymentFailed for a
    declined one (also when it was declined before: a retry gets the same answer).
    ``off_session``: nobody is there to authenticate (auto top-up)."""
    provider = provider or get_provider(purchase.provider)
    org = Organization.objects.get(pk=purchase.org_id)
    if purchase.status == Purchase.Status.PENDING:
        if not purchase.provider_reference:
            created = provider.create_intent(_request_for(purchase, org, off_session=off_session))
            if not created.intent_id:
                # No intent was made (no card on file): nothing to store or confirm; the
                # purchase fails with the provider's reason.
                purchase = apply_outcome(purchase, created, org=org)
            else:
                with transaction.atomic(durable=True):
                    stored = Purchase.objects.filter(
                        pk=purchase.pk, status=Purchase.Status.PENDING, provider_reference=""
                    ).update(provider_reference=created.intent_id)
                if not stored:
                    provider.cancel(created.intent_id)
                purchase.refresh_from_db()
        if purchase.status == Purchase.Status.PENDING:
            outcome = provider.retrieve(purchase.provider_reference)
            if outcome.status == PaymentStatus.OPEN:
                outcome = provider.confirm(purchase.provider_reference)
            purchase = apply_outcome(purchase, _with_action_url(outcome), org=org)
    if purchase.status == Purchase.Status.FAILED:
        raise PaymentFailed(
            f"the payment was declined: {purchase.failure_reason}",
            purchase_id=ids.encode("purchase", purchase.pk),
            decline_code=purchase.decline_code,
        )
    return purchase


def _credit_paid_purchase(org: Organization, purchase: Purchase, *, reference: str) -> Purchase:
    """The credits, the receipt and ``purchase.paid`` in one transaction, so a paid purchase
    has all three or none; the balance lock taken by ``mark_purchase_paid`` is held until
    the receipt is written. Only the call that moved the purchase to paid writes them."""
    with transaction.atomic():
        if mark_purchase_paid(org, purchase, reference=reference, actor=purchase.actor):
            receipt = issue_receipt(org, purchase)
            emit(
                org.pk,
                "purchase.paid",
                {
                    "id": ids.encode("purchase", purchase.pk),
                    "quantity": purchase.quantity,
                    "unit_price_cents": purchase.unit_price_cents,
                    "total_cents": purchase.total_cents,
                    "tax_cents": purchase.tax_cents,
                    "currency": purchase.currency,
                    "invoice_id": ids.encode("invoice", receipt.pk),
                },
            )
    purchase.refresh_from_db()
    return purchase


def apply_outcome(
    purchase: Purchase, outcome: PaymentOutcome, *, org: Organization | None = None
) -> Purchase:
    """Apply what the provider says about a purchase's intent; safe to apply twice, and in
    any order with the webhook and reconciliation (every change is conditional on pending)."""
    org = org or Organization.objects.get(pk=purchase.org_id)
    pending = Purchase.objects.filter(pk=purchase.pk, status=Purchase.Status.PENDING)
    if outcome.status == PaymentStatus.SUCCEEDED:
        return _credit_paid_purchase(org, purchase, reference=outcome.intent_id)
    if outcome.status in (PaymentStatus.FAILED, PaymentStatus.CANCELED):
        with transaction.atomic(durable=True):
            pending.update(
                status=Purchase.Status.FAILED,
                failure_reason=(outcome.failure_reason or "the payment did not go through")[:500],
                decline_code=outcome.decline_code[:60],
                action_url="",
            )
    elif outcome.status == PaymentStatus.REQUIRES_ACTION:
        with transaction.atomic(durable=True):
            pending.update(action_url=outcome.action_url[:500])
    purchase.refresh_from_db()
    return purchase


def purchase_credits(
    org: Organization,
    quantity: int,
    *,
    actor: str,
    idempotency_key: str | None = None,
    provider: PaymentProvider | None = None,
) -> Opened:
    """Buy credits at the best rate: open (or find) the purchase, then settle it."""
    provider = provider or get_provider()
    if (
        idempotency_key is None
        or not Purchase.objects.filter(org_id=org.pk, idempotency_key=idempotency_key).exists()
    ):
        # Before anything is opened: without a card nothing can be charged (a retry of a
        # purchase already opened is answered as that purchase, card or not).
        require_card(org, provider.name)
    opened = open_purchase(
        org, quantity, actor=actor, provider_name=provider.name, idempotency_key=idempotency_key
    )
    return Opened(settle_purchase(opened.purchase, provider), existing=opened.existing)


RECONCILE_AFTER = timedelta(minutes=15)
# How long a payment may wait for the customer to authenticate before it is given up.
AUTHENTICATION_WINDOW = timedelta(hours=24)


def reconcile_pending(
    *, older_than: timedelta = RECONCILE_AFTER, now: datetime | None = None
) -> dict[str, int]:
    """Settle purchases left pending (a request that died, a webhook that never came) from
    the provider's own state: paid if it took the money, failed if it did not. An intent
    never confirmed, or a purchase that never got one, is abandoned: nobody is waiting for
    it any more, and charging it now would surprise the customer. Returns counts by result.
    """
    now = now or timezone.now()
    counts: dict[str, int] = {"paid": 0, "failed": 0, "waiting": 0}
    stale = Purchase.objects.filter(
        status=Purchase.Status.PENDING, created_at__lte=now - older_than
    ).order_by("pk")
    for purchase in stale.iterator(chunk_size=100):
        provider = get_provider(purchase.provider)
        outcome = (
            provider.retrieve(purchase.provider_reference) if purchase.provider_reference else None
        )
        if (
            outcome is not None
            and outcome.status == PaymentStatus.REQUIRES_ACTION
            and purchase.created_at > now - AUTHENTICATION_WINDOW
        ):
            counts["waiting"] += 1
            continue
        if outcome is None or outcome.status in (
            PaymentStatus.OPEN,
            PaymentStatus.REQUIRES_ACTION,
        ):
            if purchase.provider_reference:
                provider.cancel(purchase.provider_reference)
            outcome = PaymentOutcome(
                intent_id=purchase.provider_reference,
                status=PaymentStatus.FAILED,
                decline_code="abandoned",
                failure_reason="the payment was not completed and was given up",
            )
        settled = apply_outcome(purchase, outcome)
        counts[settled.status if settled.status in counts else "waiting"] += 1
    return counts
