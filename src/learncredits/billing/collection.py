"""Collecting monthly invoices through the payment provider, with retries on a schedule.

Each attempt is one append-only ``InvoicePayment`` row, made under a lock on the invoice
row, with a provider idempotency key derived from the invoice and the attempt number: a
crash after the provider charged but before our commit is retried with the same key, so
the provider charges once (the pattern zulip's billing uses with its ledger row ids).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from learncredits import ids
from learncredits.billing.invoicing import invoice_status
from learncredits.billing.models import Invoice, InvoicePayment
from learncredits.billing.payments import ChargeRequest, PaymentProvider, get_provider
from learncredits.notify.events import emit

logger = logging.getLogger(__name__)


def collect_invoice(
    invoice_id: int, *, provider: PaymentProvider | None = None, now: datetime | None = None
) -> str:
    """Charge an unpaid monthly invoice once; returns its status afterwards."""
    provider = provider or get_provider()
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("org").get(pk=invoice_id)
        if invoice.payments.filter(approved=True).exists():
            return "paid"
        attempt = invoice.payments.count() + 1
        result = provider.charge(
            ChargeRequest(
                org_id=invoice.org_id,
                billing_email=invoice.org.billing_email,
                amount_cents=invoice.total_cents,
                currency=invoice.currency,
                description=f"Invoice {invoice.number}",
                idempotency_key=f"invoice:{invoice.pk}:attempt:{attempt}",
            )
        )
        InvoicePayment.objects.create(
            org_id=invoice.org_id,
            invoice=invoice,
            attempt=attempt,
            approved=result.approved,
            amount_cents=invoice.total_cents,
            reference=result.reference[:200],
            failure_reason=result.failure_reason[:500],
            attempted_at=now or timezone.now(),
        )
        if not result.approved:
            schedule = settings.LEARNCREDITS_COLLECTION_RETRY_DAYS
            emit(
                invoice.org_id,
                "invoice.payment_failed",
                {
                    "id": ids.encode("invoice", invoice.pk),
                    "number": invoice.number,
                    "total_cents": invoice.total_cents,
                    "attempt": attempt,
                    "reason": result.failure_reason,
                    "will_retry": attempt <= len(schedule),
                },
            )
    return invoice_status(invoice, now=now)


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
