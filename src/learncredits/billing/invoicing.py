"""Issuing invoices: a receipt per paid purchase, and monthly overage invoices, exactly once.

Exactly once, by construction:

- every overage ledger entry is billed by at most one invoice line (``InvoiceLine.ledger_entry``
  is unique), and closing a period only picks entries that have no line yet, so closing again
  issues nothing unless new overages arrived, and then only those;
- a close takes the org's balance lock first (the same lock every start takes), so two closes
  of one org run one after the other and the second finds nothing left to bill;
- invoice numbers come from a per-year counter row locked and advanced in the same
  transaction as the invoice, so a rolled-back invoice leaves no gap.

A month-end close issues several orgs' invoices per transaction (``ORGS_PER_TRANSACTION``),
each org's exactly as its own close would, under its own balance lock; see ``_close_batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import ngettext

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.billing import tax as billing_tax
from learncredits.billing.models import (
    CreditNoteSequence,
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceSequence,
    InvoiceTaxLine,
    PeriodClose,
)
from learncredits.credits.events import emit, emit_all
from learncredits.credits.locking import lock_balance
from learncredits.credits.models import Alert, LedgerEntry, Purchase
from learncredits.db import store
from learncredits.domain import tax
from learncredits.domain.money import format_cents
from learncredits.domain.periods import ensure_begun, period_bounds, period_of, previous_period
from learncredits.tenancy.models import Organization

T = TypeVar("T")


def _reserve_numbers(
    issued_at: datetime,
    count: int,
    sequence: type[InvoiceSequence | CreditNoteSequence] = InvoiceSequence,
) -> tuple[int, int]:
    """Advance the year's counter by ``count``: returns (year, last number reserved); the
    numbers ``last - count + 1 .. last`` are the caller's. Call inside the issuing
    transaction. ``sequence`` is the series: invoices and receipts, or credit notes."""
    year = issued_at.astimezone(UTC).year
    return year, store.advance_number_sequence(sequence, year, count)


def next_invoice_number(issued_at: datetime) -> str:
    """The next gapless number of the year; call inside the issuing transaction."""
    year, number = _reserve_numbers(issued_at, 1)
    return f"INV-{year}-{number:06d}"


def next_credit_note_number(issued_at: datetime) -> str:
    """The next gapless credit note number of the year (a series of its own, so invoice
    numbers stay consecutive); call inside the issuing transaction."""
    year, number = _reserve_numbers(issued_at, 1, CreditNoteSequence)
    return f"CN-{year}-{number:06d}"


def _credited_subquery() -> Coalesce:
    notes = (
        Invoice.objects.filter(credits_invoice=OuterRef("pk"))
        .values("credits_invoice")
        .annotate(total=Sum("total_cents"))
        .values("total")
    )
    return Coalesce(Subquery(notes), 0)


def with_status(queryset: QuerySet[Invoice]) -> QuerySet[Invoice]:
    """Annotate ``is_paid`` and ``credited_cents`` (the credit notes' sum, <= 0): an
    invoice's status and amount due are derived from its payments and credit notes."""
    approved = InvoicePayment.objects.filter(invoice=OuterRef("pk"), approved=True)
    return queryset.annotate(is_paid=Exists(approved), credited_cents=_credited_subquery())


def credited_cents(invoice: Invoice) -> int:
    """The sum of the invoice's credit notes (0 or negative)."""
    credited = getattr(invoice, "credited_cents", None)
    if credited is None:
        credited = invoice.credit_notes.aggregate(total=Sum("total_cents"))["total"]
    return int(credited or 0)


def amount_due_cents(invoice: Invoice) -> int:
    """What is still to be paid: nothing once paid (a credit note on a paid invoice gives
    the money back instead), otherwise the total less its credit notes. A credit note is
    never due. Why: an invoice is immutable, so a disputed line is cancelled by a credit
    note, and what the customer owes is the invoice and its credit notes together."""
    if invoice.kind == Invoice.Kind.CREDIT_NOTE or _is_paid(invoice):
        return 0
    return max(0, invoice.total_cents + credited_cents(invoice))


def _is_paid(invoice: Invoice) -> bool:
    paid = getattr(invoice, "is_paid", None)
    if paid is None:
        paid = invoice.payments.filter(approved=True).exists()
    return bool(paid)


def invoice_status(invoice: Invoice, *, now: datetime | None = None) -> str:
    """paid once a payment was approved; credited when credit notes cancel all of an unpaid
    invoice; otherwise open, and past_due after the due date. A credit note is issued."""
    if invoice.kind == Invoice.Kind.CREDIT_NOTE:
        return "issued"
    if _is_paid(invoice):
        return "paid"
    if invoice.total_cents > 0 and amount_due_cents(invoice) == 0:
        return "credited"
    return "past_due" if (now or timezone.now()) > invoice.due_at else "open"


# --- receipts --------------------------------------------------------------------------------


def receipt_of(purchase: Purchase) -> Invoice:
    """A paid purchase's receipt (issued in the transaction that marked it paid)."""
    return Invoice.objects.get(org_id=purchase.org_id, purchase=purchase)


def issue_receipt(org: Organization, purchase: Purchase) -> Invoice:
    """The receipt of a paid purchase, paid at issue. Call in the transaction that marks the
    purchase paid (the org's balance is locked), so a purchase has its receipt or neither."""
    now = timezone.now()
    saving = (purchase.retail_unit_price_cents - purchase.unit_price_cents) * purchase.quantity
    description = (
        f"{credits_phrase(purchase.quantity)} at {format_cents(purchase.unit_price_cents)} each "
        f"(retail {format_cents(purchase.retail_unit_price_cents)}; "
        f"volume saving {format_cents(saving)})"
    )
    # The tax decided when the purchase was opened: what the receipt says is what was charged.
    taxed = billing_tax.taxed_from_json(purchase.total_cents, purchase.tax)
    invoice = Invoice.objects.create(
        org=org,
        number=next_invoice_number(now),
        kind=Invoice.Kind.PURCHASE,
        period=period_of(now, org.timezone),
        currency=purchase.currency,
        total_cents=taxed.total_cents,
        tax_cents=taxed.tax_cents,
        tax_treatment=taxed.treatment.value,
        buyer_name=org.name,
        buyer_email=org.billing_email,
        seller=purchase.tax.get("seller") or billing_tax.TaxContext.load().seller_snapshot(),
        buyer=purchase.tax.get("buyer", {}),
        purchase=purchase,
        issued_at=now,
        due_at=now,
    )
    InvoiceLine.objects.create(
        org=org,
        invoice=invoice,
        position=1,
        description=description,
        quantity=purchase.quantity,
        unit_price_cents=purchase.unit_price_cents,
        amount_cents=purchase.total_cents,
    )
    billing_tax.record_tax_lines(invoice, taxed)
    InvoicePayment.objects.create(
        org=org,
        invoice=invoice,
        attempt=1,
        approved=True,
        amount_cents=taxed.total_cents,
        reference=purchase.provider_reference,
        attempted_at=now,
    )
    _issued(invoice, taxed)
    return invoice


def _issued_data(invoice: Invoice, taxed: tax.TaxedAmount) -> dict[str, Any]:
    """The ``invoice.issued`` event's data."""
    return {
        "id": ids.encode("invoice", invoice.pk),
        "number": invoice.number,
        "kind": invoice.kind,
        "period": invoice.period,
        "subtotal_cents": invoice.total_cents - invoice.tax_cents,
        "tax_cents": invoice.tax_cents,
        "total_cents": invoice.total_cents,
        "currency": invoice.currency,
        "due_at": invoice.due_at.isoformat(),
        **_document_tax_data(invoice, taxed),
    }


def _document_tax_data(invoice: Invoice, taxed: tax.TaxedAmount) -> dict[str, Any]:
    """The parties and the tax of a document as it was issued, for its event: the email
    is composed from the event alone (notifications never read billing's tables), and it
    must show what the document shows."""
    return {
        "seller": dict(invoice.seller),
        "buyer": {
            "name": invoice.buyer_name,
            "email": invoice.buyer_email,
            **(invoice.buyer or {}),
        },
        "tax_lines": [
            {
                "name": line.name,
                "rate_bps": line.rate_bps,
                "country": line.country,
                "region": line.region,
                "label": tax.label(line.name, line.rate_bps, line.country, line.region),
                "taxable_cents": line.taxable_cents,
                "amount_cents": line.amount_cents,
            }
            for line in taxed.lines
        ],
        "tax_treatment": taxed.treatment.value,
        "reverse_charge": taxed.reverse_charge,
        "tax_note": taxed.note,
    }


def _issued(invoice: Invoice, taxed: tax.TaxedAmount) -> None:
    """Tell the org (email and webhook) in the issuing transaction, through the outbox."""
    emit(invoice.org_id, "invoice.issued", _issued_data(invoice, taxed))


# --- credit notes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditLine:
    """One line a credit note cancels: ``quantity`` x ``unit_price_cents`` (positive; the
    note's line is the negative of it) of the credited invoice's line ``line``."""

    line: InvoiceLine
    quantity: int
    unit_price_cents: int
    description: str


def issue_credit_note(
    org: Organization,
    credited: Invoice,
    lines: list[CreditLine],
    *,
    reason: str,
    refunded: bool,
) -> Invoice:
    """A credit note against ``credited``: its own number series, negative lines, the
    credited invoice's period and buyer, due at issue (nothing is ever owed on it).

    Call inside the transaction that makes the credit happen (the balance lock held), so
    the note, its number and what it credits stand or fall together. Emits
    ``credit_note.issued`` (email and webhooks through the outbox)."""
    now = timezone.now()
    # The tax of what is credited, in proportion to the credited invoice's own tax.
    taxed = billing_tax.credit_note_tax(
        credited, sum(c.quantity * c.unit_price_cents for c in lines)
    )
    note = Invoice.objects.create(
        org=org,
        number=next_credit_note_number(now),
        kind=Invoice.Kind.CREDIT_NOTE,
        period=credited.period,
        currency=credited.currency,
        total_cents=taxed.total_cents,
        tax_cents=taxed.tax_cents,
        tax_treatment=taxed.treatment.value,
        buyer_name=credited.buyer_name,
        buyer_email=credited.buyer_email,
        seller=credited.seller,
        buyer=credited.buyer,
        credits_invoice=credited,
        issued_at=now,
        due_at=now,
    )
    billing_tax.record_tax_lines(note, taxed)
    InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(
                org=org,
                invoice=note,
                position=position,
                description=f"Credit for {credited.number}: {c.description} ({reason})"[:500],
                quantity=c.quantity,
                unit_price_cents=-c.unit_price_cents,
                amount_cents=-c.quantity * c.unit_price_cents,
                assignment_id=c.line.assignment_id,
                credits_line=c.line,
            )
            for position, c in enumerate(lines, start=1)
        ]
    )
    emit(
        org.pk,
        "credit_note.issued",
        {
            "id": ids.encode("invoice", note.pk),
            "number": note.number,
            "kind": note.kind,
            "credits_invoice_id": ids.encode("invoice", credited.pk),
            "credits_invoice_number": credited.number,
            "subtotal_cents": note.total_cents - note.tax_cents,
            "tax_cents": note.tax_cents,
            "total_cents": note.total_cents,
            "currency": note.currency,
            "reason": reason,
            "refunded": refunded,
            **_document_tax_data(note, taxed),
        },
    )
    return note


# --- monthly overage invoices ----------------------------------------------------------------

# How many orgs one transaction of a month-end close issues. Each org's close is its own
# unit of work, but a transaction per org cost a commit and about ten round trips each; a
# batch shares them. The batch holds its orgs' balance locks (and, from the moment it takes
# its invoice numbers, the counter row every receipt also needs) until it commits, so a
# start of one of those orgs waits for the rest of the batch. Measured on the benchmark
# machine (1,000 orgs, 11 lines each): 10 orgs hold the first lock about 27 ms, 25 about
# 60 ms, 50 about 105 ms, 100 about 170 ms, while the whole close takes about the same time
# from 25 up (10 is about 25% slower). 25 keeps the wait well under a tenth of a second.
ORGS_PER_TRANSACTION = 25


@dataclass(frozen=True)
class _Overage:
    """An uninvoiced overage entry, with what its line says."""

    entry_id: int
    org_id: int
    created_at: datetime
    credits: int
    unit_price_cents: int
    assignment_id: int | None
    credit_cost: int | None
    title: str | None
    employee: str | None


def _uninvoiced_overages(closes: list[_OrgClose]) -> dict[int, list[_Overage]]:
    """Each org's uninvoiced overage entries of its own period, in id order (one query)."""
    window = (min(c.start for c in closes), max(c.end for c in closes))
    bounds = {c.org.pk: (c.start, c.end) for c in closes}
    found: dict[int, list[_Overage]] = {}
    for row in store.uninvoiced_overages([c.org.pk for c in closes], *window):
        start, end = bounds[row.org_id]
        if start <= row.created_at < end:  # the query's window is the union of the orgs'
            found.setdefault(row.org_id, []).append(
                _Overage(
                    row.entry_id,
                    row.org_id,
                    row.created_at,
                    row.overage_credits,
                    row.retail_unit_price_cents or 0,
                    row.assignment_id,
                    row.credit_cost,
                    row.content_title,
                    row.employee_name,
                )
            )
    return found


def credits_phrase(count: int) -> str:
    """ "1 credit", "2 credits": documents say what they count in words that agree with it."""
    return ngettext("%(count)d credit", "%(count)d credits", count) % {"count": count}


def _overage_line_text(overage: _Overage, tz: ZoneInfo) -> str:
    if overage.assignment_id is None:  # pragma: no cover - overages belong to an assignment
        return f"Overage of {credits_phrase(overage.credits)}"
    started = overage.created_at.astimezone(tz).date().isoformat()
    return (
        f"Overage: {overage.title} for {overage.employee} "
        f"(started {started}, {credits_phrase(overage.credit_cost or 0)}, "
        f"{overage.credits} not covered by the balance)"
    )


@dataclass(frozen=True)
class _OrgClose:
    """One org's close of one period: the period's bounds in the org's time zone."""

    org: Organization
    period: str
    start: datetime
    end: datetime

    @classmethod
    def of(cls, org: Organization, period: str) -> _OrgClose:
        start, end = period_bounds(period, org.timezone)
        return cls(org, period, start, end)


def _issue_monthly(closes: list[_OrgClose], *, record_close: bool) -> dict[int, Invoice]:
    """Issue the monthly invoices of ``closes`` (distinct orgs) in the current transaction.

    Takes each org's balance lock, in org id order (every batch takes them in the same
    order, so two batches cannot deadlock; a start takes one only), and only then decides
    what to bill. The invoice numbers are reserved last, once every balance lock is held,
    so a batch holding the counter row waits for no one. With ``record_close`` (the
    worker's automatic close), an org whose ``PeriodClose`` row for the period exists is
    skipped, and the others get theirs. Returns the issued invoices by org id.
    """
    closes = sorted(closes, key=lambda c: c.org.pk)
    for close in closes:
        lock_balance(close.org.pk)
    if record_close:
        done = set(
            PeriodClose.objects.filter(
                org_id__in=[c.org.pk for c in closes], period__in={c.period for c in closes}
            ).values_list("org_id", "period")
        )
        closes = [c for c in closes if (c.org.pk, c.period) not in done]
    if not closes:
        return {}
    overages = _uninvoiced_overages(closes)
    billed = [c for c in closes if c.org.pk in overages]
    invoices: dict[int, Invoice] = {}
    if billed:
        now = timezone.now()
        due = now + timedelta(days=settings.LEARNCREDITS_INVOICE_DUE_DAYS)
        year, last = _reserve_numbers(now, len(billed))
        currency = Invoice._meta.get_field("currency").get_default()
        # Each overage line is taxed at the rates in force on the day it arose.
        context = billing_tax.TaxContext.load()
        seller = context.seller_snapshot()
        taxes = {
            c.org.pk: context.tax(
                c.org,
                [
                    (o.credits * o.unit_price_cents, billing_tax.utc_day(o.created_at))
                    for o in overages[c.org.pk]
                ],
            )
            for c in billed
        }
        values = [
            {
                "org_id": c.org.pk,
                "number": f"INV-{year}-{last - len(billed) + n:06d}",
                "kind": Invoice.Kind.MONTHLY.value,
                "period": c.period,
                "currency": currency,
                "total_cents": taxes[c.org.pk].total_cents,
                "tax_cents": taxes[c.org.pk].tax_cents,
                "tax_treatment": taxes[c.org.pk].treatment.value,
                "buyer_name": c.org.name,
                "buyer_email": c.org.billing_email,
                "seller": seller,
                "buyer": billing_tax.buyer_snapshot(c.org),
                "purchase_id": None,
                "credits_invoice_id": None,
                "issued_at": now,
                "due_at": due,
            }
            for n, c in enumerate(billed, start=1)
        ]
        pks = store.insert_invoices(values, issued_at=now, due_at=due)
        for close, pk, value in zip(billed, pks, values, strict=True):
            invoice = store.loaded(Invoice, {"id": pk, **value})
            Invoice.org.field.set_cached_value(invoice, close.org)
            invoices[close.org.pk] = invoice
        _insert_lines(billed, overages, invoices)
        tax_rows = [
            row
            for c in billed
            for row in billing_tax.tax_line_rows(c.org.pk, invoices[c.org.pk], taxes[c.org.pk])
        ]
        if tax_rows:
            InvoiceTaxLine.objects.bulk_create(tax_rows)
        for period in {c.period for c in billed}:
            Alert.objects.filter(
                org_id__in=[c.org.pk for c in billed if c.period == period],
                kind=Alert.Kind.OVERAGE,
                period=period,
                active=True,
            ).update(active=False, resolved_at=now)
        emit_all(
            (
                (i.org_id, "invoice.issued", _issued_data(i, taxes[i.org_id]))
                for i in invoices.values()
            ),
            now=now,
        )
    if record_close:
        PeriodClose.objects.bulk_create(
            [
                PeriodClose(org=c.org, period=c.period, invoices_issued=int(c.org.pk in invoices))
                for c in closes
            ]
        )
    return invoices


def _insert_lines(
    billed: list[_OrgClose], overages: dict[int, list[_Overage]], invoices: dict[int, Invoice]
) -> None:
    """One line per overage entry, in entry id order, in as few INSERTs as the database's
    parameter limit allows (a whole batch of orgs in one on PostgreSQL)."""
    lines: list[store.NewInvoiceLine] = []
    for close in billed:
        tz = ZoneInfo(close.org.timezone)
        invoice_id = invoices[close.org.pk].pk
        for position, overage in enumerate(overages[close.org.pk], start=1):
            lines.append(
                store.NewInvoiceLine(
                    org_id=close.org.pk,
                    invoice_id=invoice_id,
                    position=position,
                    description=_overage_line_text(overage, tz)[:500],
                    quantity=overage.credits,
                    unit_price_cents=overage.unit_price_cents,
                    amount_cents=overage.credits * overage.unit_price_cents,
                    assignment_id=overage.assignment_id,
                    ledger_entry_id=overage.entry_id,
                )
            )
    store.insert_invoice_lines(lines)


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _after_commit(on_issue: Callable[[Invoice], None], invoices: list[Invoice]) -> None:
    """Hand a committed batch's invoices to ``on_issue`` (enqueueing each one's collection)
    in one transaction: one commit for the batch instead of one per invoice, and one call
    for the batch when the hook offers ``many(invoices)`` (``tasks.enqueue_collection``
    does). An invoice whose collection was not enqueued (a crash right after the close) is
    collected by the billing tick's retry, which picks up every unpaid invoice without an
    attempt."""
    many = getattr(on_issue, "many", None)
    with transaction.atomic():
        if many is not None:
            many(invoices)
        else:
            for invoice in invoices:
                on_issue(invoice)


def _close_batch(
    closes: list[_OrgClose],
    *,
    on_issue: Callable[[Invoice], None] | None,
    record_close: bool = False,
) -> dict[int, Invoice]:
    """Close a batch of orgs in one transaction. If it fails, the batch is rolled back
    (nothing billed, no number used) and closed again one org per transaction: the orgs
    before the failing one are closed as they would have been alone, and the failure is
    raised from that org's own close, as when every org had its own transaction."""
    try:
        with transaction.atomic():
            invoices = _issue_monthly(closes, record_close=record_close)
    except Exception:
        if len(closes) == 1:
            raise
        invoices = {}
        for close in sorted(closes, key=lambda c: c.org.pk):
            invoices.update(_close_batch([close], on_issue=on_issue, record_close=record_close))
        return invoices
    if on_issue is not None and invoices:
        # Outside the try: a failing hook must not look like a failed batch (the batch is
        # committed). Runs now, or when the caller's own transaction commits.
        issued = list(invoices.values())
        transaction.on_commit(lambda: _after_commit(on_issue, issued))
    return invoices


@dataclass(frozen=True)
class CloseSummary:
    period: str | None
    orgs: int
    invoices_issued: int
    total_cents: int


def last_complete_period(org: Organization, now: datetime | None = None) -> str:
    return previous_period(period_of(now or timezone.now(), org.timezone))


def _orgs_with_uninvoiced_overage(orgs: list[Organization], periods: dict[int, str]) -> set[int]:
    """The orgs that may have something to bill, in one query up front.

    Why: most orgs have no overage in a month, and closing each one costs its balance lock
    and a share of a transaction. The query covers the union of all the orgs' period
    windows (they differ by time zone), so it returns a superset: each org it names is
    still closed, and what it bills is decided exactly under the balance lock, so nothing is
    billed twice. An org it leaves out had no uninvoiced overage in its window when the run
    began; one arriving during the run is billed by the next close, like one arriving just
    after the org's turn would have been."""
    if not orgs:
        return set()
    bounds = [period_bounds(periods[org.pk], org.timezone) for org in orgs]
    ids = (
        LedgerEntry.objects.filter(
            overage_credits__gt=0,
            created_at__gte=min(start for start, _ in bounds),
            created_at__lt=max(end for _, end in bounds),
            invoice_line__isnull=True,
        )
        .values_list("org_id", flat=True)
        .distinct()
    )
    wanted = {org.pk for org in orgs}
    return {org_id for org_id in ids if org_id in wanted}


def close_all(
    period: str | None = None,
    *,
    orgs: Iterable[Organization] | None = None,
    on_issue: Callable[[Invoice], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    actor: str = "system",
) -> CloseSummary:
    """Close ``period`` for every org (default: each org's last complete month).

    The orgs with something to bill are closed ``ORGS_PER_TRANSACTION`` at a time, each
    batch in one transaction (see ``_close_batch`` for what happens when one org fails).
    The run is audited here, whoever starts it (the API, the CLI), with what it issued.
    """
    if period is not None:
        ensure_begun(period, timezone.now())
    queryset = list(orgs) if orgs is not None else list(Organization.objects.order_by("pk"))
    periods = {org.pk: period or last_complete_period(org) for org in queryset}
    billable = _orgs_with_uninvoiced_overage(queryset, periods)
    issued = 0
    total = 0
    batch: dict[int, _OrgClose] = {}
    waiting: list[int] = []  # progress indexes reported once their batch has committed

    def flush() -> None:
        nonlocal issued, total
        if batch:
            invoices = _close_batch(list(batch.values()), on_issue=on_issue)
            issued += len(invoices)
            total += sum(invoice.total_cents for invoice in invoices.values())
            batch.clear()
        if progress is not None:
            for index in waiting:
                progress(index, len(queryset))
        waiting.clear()

    for index, org in enumerate(queryset, start=1):
        if org.pk in billable:
            if org.pk in batch:  # the same org twice: its second close comes after the first
                flush()
            batch[org.pk] = _OrgClose.of(org, periods[org.pk])
        waiting.append(index)
        if len(batch) >= ORGS_PER_TRANSACTION or not batch:
            flush()
    flush()
    summary = CloseSummary(
        period=period, orgs=len(queryset), invoices_issued=issued, total_cents=total
    )
    _audit_close(actor, summary)
    return summary


def _audit_close(actor: str, summary: CloseSummary) -> None:
    """One audit row per close run, after its batches committed: it says what was issued,
    which is known only then (a batch that failed is not in it)."""
    audit.record(
        actor,
        "billing.close_period",
        target=summary.period or "",
        orgs=summary.orgs,
        invoices_issued=summary.invoices_issued,
        total_cents=summary.total_cents,
    )


def auto_close_due(
    now: datetime | None = None,
    *,
    on_issue: Callable[[Invoice], None] | None = None,
    actor: str = "system",
) -> int:
    """Close each org's previous month once, shortly after it ends in the org's time zone.

    Run periodically by the worker. The ``PeriodClose`` row (unique per org and period)
    makes the automatic close happen once; closing itself is idempotent anyway. The orgs
    still to close are found in one query, and closed in batches like ``close_all``; each
    batch checks the ``PeriodClose`` rows again under the balance locks.
    """
    now = now or timezone.now()
    orgs = list(Organization.objects.order_by("pk"))
    periods = {org.pk: last_complete_period(org, now) for org in orgs}
    done = set(
        PeriodClose.objects.filter(period__in=set(periods.values())).values_list("org_id", "period")
    )
    due = [
        _OrgClose.of(org, periods[org.pk]) for org in orgs if (org.pk, periods[org.pk]) not in done
    ]
    issued = 0
    total = 0
    for batch in _chunks(due, ORGS_PER_TRANSACTION):
        invoices = _close_batch(batch, on_issue=on_issue, record_close=True)
        issued += len(invoices)
        total += sum(invoice.total_cents for invoice in invoices.values())
    if due:  # the worker runs this every few minutes: only a run that closed something
        _audit_close(
            actor,
            CloseSummary(period=None, orgs=len(due), invoices_issued=issued, total_cents=total),
        )
    return issued
