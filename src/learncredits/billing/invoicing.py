"""Issuing invoices: a receipt per paid purchase, and monthly overage invoices, exactly once.

Exactly once, by construction:

- every overage ledger entry is billed by at most one invoice line (``InvoiceLine.ledger_entry``
  is unique), and closing a period only picks entries that have no line yet, so closing again
  issues nothing unless new overages arrived, and then only those;
- a close takes the org's balance lock first (the same lock every start takes), so two closes
  of one org run one after the other and the second finds nothing left to bill;
- invoice numbers come from a per-year counter row locked and advanced in the same
  transaction as the invoice, so a rolled-back invoice leaves no gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from learncredits import ids
from learncredits.billing.models import (
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceSequence,
    PeriodClose,
)
from learncredits.credits.locking import lock_balance
from learncredits.credits.models import LedgerEntry, Purchase
from learncredits.domain.money import format_cents
from learncredits.domain.periods import period_bounds, period_of, previous_period
from learncredits.notify.events import emit
from learncredits.notify.models import Alert
from learncredits.tenancy.models import Organization


def next_invoice_number(issued_at: datetime) -> str:
    """The next gapless number of the year; call inside the issuing transaction."""
    year = issued_at.astimezone(UTC).year
    # One upsert instead of insert-if-missing, lock, read and update (three round trips, on
    # every invoice of a month-end close). The conflicting row stays locked by the UPDATE
    # until the issuing transaction ends, as with SELECT ... FOR UPDATE, so the number is
    # gapless. PostgreSQL and SQLite (3.35+) accept the same statement.
    quote = connection.ops.quote_name
    table, year_col, last_col = (
        quote(InvoiceSequence._meta.db_table),
        quote("year"),
        quote("last_number"),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({year_col}, {last_col}) VALUES (%s, 1) "
            f"ON CONFLICT ({year_col}) DO UPDATE SET {last_col} = {table}.{last_col} + 1 "
            f"RETURNING {last_col}",
            [year],
        )
        (number,) = cursor.fetchone()
    return f"INV-{year}-{number:06d}"


def with_status(queryset: QuerySet[Invoice]) -> QuerySet[Invoice]:
    """Annotate ``is_paid``: an invoice's status is derived from its payment attempts."""
    approved = InvoicePayment.objects.filter(invoice=OuterRef("pk"), approved=True)
    return queryset.annotate(is_paid=Exists(approved))


def invoice_status(invoice: Invoice, *, now: datetime | None = None) -> str:
    """paid once a payment was approved; otherwise open, and past_due after the due date."""
    paid = getattr(invoice, "is_paid", None)
    if paid is None:
        paid = invoice.payments.filter(approved=True).exists()
    if paid:
        return "paid"
    return "past_due" if (now or timezone.now()) > invoice.due_at else "open"


# --- receipts --------------------------------------------------------------------------------


def issue_receipt(org: Organization, purchase: Purchase) -> Invoice:
    """The receipt of a paid purchase, paid at issue. Call in the transaction that marks the
    purchase paid (the org's balance is locked), so a purchase has its receipt or neither."""
    now = timezone.now()
    saving = (purchase.retail_unit_price_cents - purchase.unit_price_cents) * purchase.quantity
    description = (
        f"{purchase.quantity} credits at {format_cents(purchase.unit_price_cents)} each "
        f"(retail {format_cents(purchase.retail_unit_price_cents)}; "
        f"volume saving {format_cents(saving)})"
    )
    invoice = Invoice.objects.create(
        org=org,
        number=next_invoice_number(now),
        kind=Invoice.Kind.PURCHASE,
        period=period_of(now, org.timezone),
        currency=purchase.currency,
        total_cents=purchase.total_cents,
        buyer_name=org.name,
        buyer_email=org.billing_email,
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
    InvoicePayment.objects.create(
        org=org,
        invoice=invoice,
        attempt=1,
        approved=True,
        amount_cents=purchase.total_cents,
        reference=purchase.provider_reference,
        attempted_at=now,
    )
    _issued(invoice)
    return invoice


def _issued(invoice: Invoice) -> None:
    """Tell the org (email and webhook) in the issuing transaction, through the outbox."""
    emit(
        invoice.org_id,
        "invoice.issued",
        {
            "id": ids.encode("invoice", invoice.pk),
            "number": invoice.number,
            "kind": invoice.kind,
            "period": invoice.period,
            "total_cents": invoice.total_cents,
            "currency": invoice.currency,
            "due_at": invoice.due_at.isoformat(),
        },
    )


# --- monthly overage invoices ----------------------------------------------------------------


def _overage_line_text(entry: LedgerEntry, tz_name: str) -> str:
    assignment = entry.assignment
    if assignment is None:  # pragma: no cover - overage entries always belong to an assignment
        return f"Overage of {entry.overage_credits} credits"
    started = entry.created_at.astimezone(ZoneInfo(tz_name)).date().isoformat()
    return (
        f"Overage: {assignment.content.title} for {assignment.employee.name} "
        f"(started {started}, {assignment.credit_cost} credits, "
        f"{entry.overage_credits} not covered by the balance)"
    )


def close_period(
    org: Organization,
    period: str,
    *,
    on_issue: Callable[[Invoice], None] | None = None,
) -> Invoice | None:
    """Invoice the org's not-yet-invoiced overages of ``period`` (its own time zone).

    Returns the new invoice, or None when there was nothing to bill. Safe to run any number
    of times, concurrently, early (for the month in progress) and late.
    """
    start, end = period_bounds(period, org.timezone)
    with transaction.atomic():
        lock_balance(org.pk)
        entries = list(
            LedgerEntry.objects.filter(
                org_id=org.pk,
                overage_credits__gt=0,
                created_at__gte=start,
                created_at__lt=end,
                invoice_line__isnull=True,
            )
            .select_related("assignment__content", "assignment__employee")
            .order_by("pk")
        )
        if not entries:
            return None
        now = timezone.now()
        lines = [
            InvoiceLine(
                org_id=org.pk,
                position=position,
                description=_overage_line_text(entry, org.timezone)[:500],
                quantity=entry.overage_credits,
                unit_price_cents=entry.retail_unit_price_cents or 0,
                amount_cents=entry.overage_credits * (entry.retail_unit_price_cents or 0),
                assignment_id=entry.assignment_id,
                ledger_entry_id=entry.pk,
            )
            for position, entry in enumerate(entries, start=1)
        ]
        invoice = Invoice.objects.create(
            org=org,
            number=next_invoice_number(now),
            kind=Invoice.Kind.MONTHLY,
            period=period,
            total_cents=sum(line.amount_cents for line in lines),
            buyer_name=org.name,
            buyer_email=org.billing_email,
            issued_at=now,
            due_at=now + timedelta(days=settings.LEARNCREDITS_INVOICE_DUE_DAYS),
        )
        for line in lines:
            line.invoice = invoice
        InvoiceLine.objects.bulk_create(lines, batch_size=1000)
        Alert.objects.filter(
            org_id=org.pk, kind=Alert.Kind.OVERAGE, period=period, active=True
        ).update(active=False, resolved_at=now)
        _issued(invoice)
        if on_issue is not None:
            transaction.on_commit(lambda: on_issue(invoice))
    return invoice


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

    Why: most orgs have no overage in a month, and closing each one costs a transaction and
    several statements. The query covers the union of all the orgs' period windows (they
    differ by time zone), so it returns a superset: each org it names is still closed by
    ``close_period``, which decides exactly under the balance lock, so nothing is billed
    twice. An org it leaves out had no uninvoiced overage in its window when the run began;
    one arriving during the run is billed by the next close, like one arriving just after
    the org's turn would have been."""
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
) -> CloseSummary:
    """Close ``period`` for every org (default: each org's last complete month)."""
    queryset = list(orgs) if orgs is not None else list(Organization.objects.order_by("pk"))
    periods = {org.pk: period or last_complete_period(org) for org in queryset}
    billable = _orgs_with_uninvoiced_overage(queryset, periods)
    issued = 0
    total = 0
    for index, org in enumerate(queryset, start=1):
        invoice = None
        if org.pk in billable:
            invoice = close_period(org, periods[org.pk], on_issue=on_issue)
        if invoice is not None:
            issued += 1
            total += invoice.total_cents
        if progress is not None:
            progress(index, len(queryset))
    return CloseSummary(
        period=period, orgs=len(queryset), invoices_issued=issued, total_cents=total
    )


def auto_close_due(
    now: datetime | None = None, *, on_issue: Callable[[Invoice], None] | None = None
) -> int:
    """Close each org's previous month once, shortly after it ends in the org's time zone.

    Run periodically by the worker. The ``PeriodClose`` row (unique per org and period)
    makes the automatic close happen once; closing itself is idempotent anyway.
    """
    now = now or timezone.now()
    issued = 0
    for org in Organization.objects.order_by("pk"):
        period = last_complete_period(org, now)
        if PeriodClose.objects.filter(org=org, period=period).exists():
            continue
        with transaction.atomic():
            lock_balance(org.pk)
            if PeriodClose.objects.filter(org=org, period=period).exists():
                continue
            invoice = close_period(org, period, on_issue=on_issue)
            PeriodClose.objects.create(org=org, period=period, invoices_issued=int(bool(invoice)))
        issued += int(invoice is not None)
    return issued
