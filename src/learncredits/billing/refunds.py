"""Refunds and credit notes: credits and money going back, each exactly once.

Two things can be credited, both by the operator:

- **unconsumed credits of a paid purchase** (``refund_purchase``): the credits leave the
  balance by a ``refund`` ledger entry drawn from that purchase's own lot, a credit note is
  issued against the purchase's receipt, and the lot's unit price x the credits goes back
  through the payment provider;
- **lines of a monthly invoice** (``credit_invoice_lines``): a credit note cancels those
  overage lines; if the invoice was paid, their amount goes back through the provider,
  otherwise what is due on the invoice drops (``invoicing.amount_due_cents``).

Money and our rows cannot share a transaction, so a refund is the same three steps as a
purchase (billing/purchases.py): the credit side and a pending ``Refund`` row are committed
together in a durable transaction; the provider is called outside any transaction with the
refund row's reference (the same reference again is the same refund at the provider); the
answer is written by a conditional pending -> done. A crash after the provider call leaves
the row pending; ``settle_refund`` (a retry with the same Idempotency-Key, or
``resume_pending_refunds`` from the worker or a shell) carries it on with the same
reference, so the money goes back once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from learncredits import ids
from learncredits.billing.invoicing import CreditLine, issue_credit_note
from learncredits.billing.models import Invoice, InvoiceCharge, InvoiceLine, Refund
from learncredits.billing.payments import PaymentProvider, get_provider
from learncredits.credits import actions
from learncredits.credits.locking import lock_balance
from learncredits.credits.models import CreditLot, Purchase
from learncredits.domain.errors import (
    IdempotencyKeyReused,
    InvalidState,
    NotFound,
    ValidationFailed,
)
from learncredits.tenancy.models import Organization

MAX_REFUND_CREDITS = 1_000_000


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("reason must not be empty")
    return reason


def _replayed(org: Organization, key: str | None, purchase_id: int, credits: int) -> Refund | None:
    """The refund an earlier request with this Idempotency-Key made (the same request, or
    422), so a retry after a crash carries that refund on instead of refunding again."""
    if key is None:
        return None
    found = Refund.objects.filter(org_id=org.pk, idempotency_key=key).first()
    if found is not None and (found.purchase_id, found.credits) != (purchase_id, credits):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request",
            credit_note_id=ids.encode("invoice", found.credit_note_id),
        )
    return found


def refund_purchase(
    org: Organization,
    purchase_id: int,
    credits: int,
    *,
    reason: str,
    actor: str,
    idempotency_key: str | None = None,
    provider: PaymentProvider | None = None,
) -> Refund:
    """Give back ``credits`` unconsumed credits of a paid purchase, and their money.

    Refused (nothing written): a reason that is blank, credits below 1, a purchase that is
    not paid (409 ``invalid_state``), more credits than its lot still holds or than the org
    has available (409 ``refund_exceeds_available``; reserved credits stay reserved)."""
    reason = _reason(reason)
    if not 1 <= credits <= MAX_REFUND_CREDITS:
        raise ValidationFailed(f"credits must be between 1 and {MAX_REFUND_CREDITS}")
    with transaction.atomic(durable=True):
        found = _replayed(org, idempotency_key, purchase_id, credits)
        if found is None:
            locked = lock_balance(org.pk)
            purchase = Purchase.objects.filter(org_id=org.pk, pk=purchase_id).first()
            if purchase is None:
                raise NotFound("purchase not found")
            if purchase.status != Purchase.Status.PAID:
                raise InvalidState(f"a {purchase.status} purchase cannot be refunded")
            actions.refund_credits(org, locked, purchase, credits, reason=reason, actor=actor)
            lot = CreditLot.objects.get(purchase_id=purchase.pk)
            receipt = Invoice.objects.get(purchase_id=purchase.pk)
            line = receipt.lines.order_by("position").first()
            assert line is not None
            description = f"{credits} unused credits refunded"
            note = issue_credit_note(
                org,
                receipt,
                [CreditLine(line, credits, lot.unit_price_cents, description)],
                reason=reason,
                refunded=True,
            )
            try:
                with transaction.atomic():
                    found = Refund.objects.create(
                        org_id=org.pk,
                        purchase=purchase,
                        credit_note=note,
                        credits=credits,
                        # The credits at the lot's price, and the tax charged on them.
                        amount_cents=-note.total_cents,
                        currency=purchase.currency,
                        payment_reference=purchase.provider_reference,
                        provider=purchase.provider,
                        reason=reason,
                        actor=actor,
                        idempotency_key=idempotency_key,
                    )
            except IntegrityError:
                if idempotency_key is None:
                    raise
                # The same key, committed by a concurrent request a moment ago: undo ours.
                transaction.set_rollback(True)
                found = None
    if found is None:
        found = Refund.objects.get(org_id=org.pk, idempotency_key=idempotency_key)
    return settle_refund(found, provider)


def credit_invoice_lines(
    org: Organization,
    invoice_id: int,
    assignment_ids: list[int],
    *,
    reason: str,
    actor: str,
    provider: PaymentProvider | None = None,
) -> Invoice:
    """A credit note for the overage lines of a monthly invoice that bill these
    assignments; the money goes back if the invoice was paid. Returns the credit note.

    Refused (nothing written): an invoice that is not monthly (refund the purchase instead),
    an assignment that is not on the invoice (422), a line credited before (409), an
    invoice whose collection is running at this moment (409: try again once it is done)."""
    reason = _reason(reason)
    if not assignment_ids:
        raise ValidationFailed("assignment_ids must name at least one line")
    if len(set(assignment_ids)) != len(assignment_ids):
        raise ValidationFailed("assignment_ids must not repeat an assignment")
    with transaction.atomic(durable=True):
        lock_balance(org.pk)
        # The invoice row too: a collection attempt is created under this row's lock, so
        # one cannot start between the check for a running attempt below and our commit.
        invoice = Invoice.objects.select_for_update().filter(org_id=org.pk, pk=invoice_id).first()
        if invoice is None:
            raise NotFound("invoice not found")
        if invoice.kind != Invoice.Kind.MONTHLY:
            raise InvalidState(
                "only a monthly invoice's lines can be credited; a purchase is refunded instead"
            )
        lines = {
            line.assignment_id: line
            for line in invoice.lines.filter(assignment_id__in=assignment_ids)
        }
        unknown = [a for a in assignment_ids if a not in lines]
        if unknown:
            raise ValidationFailed(
                f"not on invoice {invoice.number}: "
                + ", ".join(str(ids.encode("assignment", a)) for a in unknown),
                assignment_ids=[ids.encode("assignment", a) for a in unknown],
            )
        credited = InvoiceLine.objects.filter(credits_line__in=list(lines.values()))
        if credited.exists():
            again = sorted(str(ids.encode("assignment", line.assignment_id)) for line in credited)
            raise InvalidState(f"already credited: {', '.join(again)}")
        if invoice.charges.filter(status=InvoiceCharge.Status.PENDING).exists():
            raise InvalidState("the invoice is being collected right now; try again shortly")
        payment = invoice.payments.filter(approved=True).first()
        ordered = [lines[a] for a in assignment_ids]
        note = issue_credit_note(
            org,
            invoice,
            [
                CreditLine(line, line.quantity, line.unit_price_cents, line.description)
                for line in ordered
            ],
            reason=reason,
            refunded=payment is not None,
        )
        refund = None
        if payment is not None:
            charge = invoice.charges.filter(attempt=payment.attempt).first()
            refund = Refund.objects.create(
                org_id=org.pk,
                credit_note=note,
                amount_cents=-note.total_cents,
                currency=invoice.currency,
                payment_reference=payment.reference,
                provider=charge.provider if charge else settings.LEARNCREDITS_PAYMENT_PROVIDER,
                reason=reason,
                actor=actor,
            )
    if refund is not None:
        settle_refund(refund, provider)
    return note


def settle_refund(refund: Refund, provider: PaymentProvider | None = None) -> Refund:
    """Carry a pending refund to done: ask the provider (outside any transaction) with the
    row's own reference, then a conditional pending -> done. Safe to run again after a
    crash at any point, and concurrently: the provider sees one reference, one refund."""
    if refund.status != Refund.Status.PENDING:
        return refund
    refund_id = ""
    if refund.amount_cents > 0:
        provider = provider or get_provider(refund.provider)
        refund_id = provider.refund(
            refund.payment_reference, refund.amount_cents, f"refund_{refund.pk}"
        )
    with transaction.atomic(durable=True):
        Refund.objects.filter(pk=refund.pk, status=Refund.Status.PENDING).update(
            status=Refund.Status.DONE, provider_reference=refund_id[:200], done_at=timezone.now()
        )
    refund.refresh_from_db()
    return refund


def resume_pending_refunds(
    *, older_than: timedelta = timedelta(minutes=5), now: datetime | None = None
) -> int:
    """Settle refunds left pending (a request that died after committing them); returns how
    many. For the worker's tick or a shell; the reference makes a repeat harmless."""
    now = now or timezone.now()
    stale = Refund.objects.filter(
        status=Refund.Status.PENDING, created_at__lte=now - older_than
    ).order_by("pk")
    settled = 0
    for refund in stale.iterator(chunk_size=100):
        settle_refund(refund)
        settled += 1
    return settled
