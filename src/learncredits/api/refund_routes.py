"""Refunds and credit notes (operator only): credits and money going back, each answered
with the credit note it issued. Every rule lives in billing/refunds.py."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router, Status

from learncredits.api import schemas as s
from learncredits.api.auth import decode_or_404, org_for, require_operator
from learncredits.api.common import responses
from learncredits.billing import refunds
from learncredits.billing.invoicing import with_status
from learncredits.billing.models import Invoice

router = Router(tags=["operator"])


def _note(pk: int) -> Invoice:
    return with_status(Invoice.objects.filter(pk=pk)).select_related("org").get()


@router.post(
    "/orgs/{org_id}/purchases/{purchase_id}/refund",
    response=responses(201, s.InvoiceOut),
)
def refund_purchase(
    request: HttpRequest, response: HttpResponse, org_id: str, purchase_id: str, body: s.RefundIn
) -> Status[Any]:
    """Refund unconsumed credits of a paid purchase at its lot's unit price: the credits
    leave the balance (a ``refund`` ledger entry), the money goes back through the payment
    provider, and the answer is the credit note issued against the purchase's receipt."""
    principal = require_operator(request)
    org = org_for(request, org_id)
    pk = decode_or_404("purchase", purchase_id, "purchase")
    key = request.headers.get("Idempotency-Key")
    refund = refunds.refund_purchase(
        org, pk, body.credits, reason=body.reason, actor=principal.label, idempotency_key=key
    )
    return Status(201, _note(refund.credit_note_id))


@router.post(
    "/orgs/{org_id}/invoices/{invoice_id}/credit-note",
    response=responses(201, s.InvoiceOut),
)
def credit_invoice(
    request: HttpRequest, org_id: str, invoice_id: str, body: s.CreditNoteIn
) -> Status[Any]:
    """Credit lines of a monthly invoice (named by their assignments): a credit note, and
    the money back if the invoice was paid, or less due on it if not."""
    principal = require_operator(request)
    org = org_for(request, org_id)
    pk = decode_or_404("invoice", invoice_id, "invoice")
    assignment_ids = []
    for value in body.assignment_ids:
        decoded = decode_or_404("assignment", value, "assignment")
        assignment_ids.append(decoded)
    note = refunds.credit_invoice_lines(
        org, pk, assignment_ids, reason=body.reason, actor=principal.label
    )
    return Status(201, _note(note.pk))
