"""Collecting monthly invoices through the payment provider, with retries on a schedule.

Each attempt is an ``InvoiceCharge`` committed before the provider is called, and the
provider's intent id is committed on it before the intent is confirmed (the same three steps
as a purchase, billing/purchases.py): a crash at any point is carried on by the next run
with the same attempt and the same intent, so an invoice is charged at most once per
attempt, and never twice in all. The attempt's result is written once, as its append-only
``InvoicePayment`` row, by a conditional pending -> done.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from learncredits import ids
from learncredits.billing.invoicing import amount_due_cents, invoice_status
from learncredits.billing.models import Invoice, InvoiceCharge, InvoicePayment
from learncredits.billing.payments import (
    PaymentOutcome,
    PaymentProvider,
    PaymentRequest,
    PaymentStatus,
    get_provider,
)
from learncredits.credits.events import emit

logger = logging.getLogger(__name__)


def collect_invoice(
    invoice_id: int, *, provider: PaymentProvider | None = None, now: datetime | None = None
) -> str:
    """Charge an unpaid monthly invoice once; returns its status afterwards."""
    provider = provider or get_provider()
    with transaction.atomic(durable=True):
        invoice = Invoice.objects.select_for_update().select_related("org").get(pk=invoice_id)
        if invoice.payments.filter(approved=True).exists():
            return "paid"
        charge = invoice.charges.filter(status=InvoiceCharge.Status.PENDING).first()
        if charge is None:
            # What is still owed: the total less its credit notes (a disputed line that was
            # credited is not charged); nothing at all once credit notes cancel all of it.
            due = amount_due_cents(invoice)
            if due == 0:
                return invoice_status(invoice, now=now)
            charge = InvoiceCharge.objects.create(
                org_id=invoice.org_id,
                invoice=invoice,
                attempt=invoice.payments.count() + 1,
                amount_cents=due,
                provider=provider.name,
            )
    outcome = _charge(charge, invoice, provider)
    _record(charge, invoice, outcome, now=now)
    invoice.refresh_from_db()
    return invoice_status(invoice, now=now)


def _charge(charge: InvoiceCharge, invoice: Invoice, provider: PaymentProvider) -> PaymentOutcome:
    """Create (once) and confirm (once) the attempt's intent, outside any transaction."""
    if not charge.provider_reference:
        created = provider.create_intent(
            PaymentRequest(
                reference=f"{ids.encode('invoice', invoice.pk)}.attempt_{charge.attempt}",
                org_id=invoice.org_id,
                customer=invoice.org.stripe_customer_id or "",
                billing_email=invoice.org.billing_email,
                amount_cents=charge.amount_cents,
                currency=invoice.currency,
                description=f"Invoice {invoice.number}",
                off_session=True,
            )
        )
        if not created.intent_id:
            return created  # refused before any intent was made (no card on file)
        with transaction.atomic(durable=True):
            stored = InvoiceCharge.objects.filter(pk=charge.pk, provider_reference="").update(
                provider_reference=created.intent_id
            )
        if not stored:
            provider.cancel(created.intent_id)  # a concurrent run stored its own first
        charge.refresh_from_db()
    outcome = provider.retrieve(charge.provider_reference)
    if outcome.status == PaymentStatus.OPEN:
        outcome = provider.confirm(charge.provider_reference)
    if outcome.status == PaymentStatus.REQUIRES_ACTION:
        # Nobody is there to authenticate a monthly charge: it fails, and is retried.
        provider.cancel(charge.provider_reference)
        outcome = PaymentOutcome(
            intent_id=charge.provider_reference,
            status=PaymentStatus.FAILED,
            decline_code="authentication_required",
            failure_reason="the card needs the cardholder to authenticate",
        )
    return outcome


def _record(
    charge: InvoiceCharge, invoice: Invoice, outcome: PaymentOutcome, *, now: datetime | None
) -> None:
    """The attempt's result, written once (whoever gets here first)."""
    if outcome.status not in (
        PaymentStatus.SUCCEEDED,
        PaymentStatus.FAILED,
        PaymentStatus.CANCELED,
    ):
        return  # still processing at the provider: the next run looks again
    approved = outcome.status == PaymentStatus.SUCCEEDED
    reason = "" if approved else (outcome.failure_reason or "the payment did not go through")
    with transaction.atomic(durable=True):
        done = InvoiceCharge.objects.filter(
            pk=charge.pk, status=InvoiceCharge.Status.PENDING
        ).update(status=InvoiceCharge.Status.DONE)
        if not done:
            return
        InvoicePayment.objects.create(
            org_id=invoice.org_id,
            invoice=invoice,
            attempt=charge.attempt,
            approved=approved,
            amount_cents=charge.amount_cents,
            reference=outcome.intent_id[:200],
            failure_reason=reason[:500],
            attempted_at=now or timezone.now(),
        )
        if not approved:
            schedule = settings.LEARNCREDITS_COLLECTION_RETRY_DAYS
            emit(
                invoice.org_id,
                "invoice.payment_failed",
                {
                    "id": ids.encode("invoice", invoice.pk),
                    "number": invoice.number,
                    "total_cents": invoice.total_cents,
                    "attempt": charge.attempt,
                    "reason": reason,
                    "will_retry": charge.attempt <= len(schedule),
                },
            )


def retry_due_collections(
    now: datetime | None = None, *, provider: PaymentProvider | None = None
) -> int:
    """Retry unpaid monthly invoices whose next attempt is due; returns attempts made.

    Attempt 1 runs at issue; attempt n+1 runs LEARNCREDITS_COLLECTION_RETRY_DAYS[n-1] days
    after issue; after the last one the invoice stays open/past_due for a person to handle.
    """
    now = now or timezone.now()
    schedule = list(settings.LEARNCREDITS_COLLECTION_RETRY_DAYS)
    approved = InvoicePayment.objects.filter(invoice=OuterRef("pk"), approved=True)
    candidates = (
        Invoice.objects.filter(kind=Invoice.Kind.MONTHLY)
        .annotate(is_paid=Exists(approved), attempts=Count("payments"))
        .filter(is_paid=False, attempts__lte=len(schedule))
        .filter(Q(attempts=0) | Q(issued_at__lte=now - timedelta(days=min(schedule))))
    )
    made = 0
    for invoice in candidates:
        attempts = invoice.attempts
        due = invoice.issued_at + timedelta(days=schedule[attempts - 1]) if attempts else now
        if due <= now:
            collect_invoice(invoice.pk, provider=provider, now=now)
            made += 1
    return made
