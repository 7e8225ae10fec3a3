"""Every write path that changes credits or assignments: one function per action.

The API, the dashboard, the CLI and the worker all call these and nothing else. Each
function runs in one transaction and serializes on the org's balance row: on PostgreSQL by
``SELECT ... FOR UPDATE`` on it, on SQLite because every transaction is IMMEDIATE (one
writer at a time). The balance row is always the first row an action locks, so two actions
can never wait on each other in opposite orders (no deadlocks). Each ledger entry carries the
balances after it, and the balance row is written last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.billing import auto_top_up
from learncredits.billing.invoicing import issue_receipt
from learncredits.billing.payments import ChargeRequest, PaymentProvider, get_provider
from learncredits.catalog.models import Content
from learncredits.catalog.services import current_price_book
from learncredits.credits.locking import LockedBalance, lock_balance
from learncredits.credits.models import (
    Assignment,
    Balance,
    CreditLot,
    LedgerEntry,
    LotDraw,
    Purchase,
)
from learncredits.domain import pricing
from learncredits.domain.balance import Counters, is_at_risk, split_start
from learncredits.domain.errors import (
    EmployeeInactive,
    InsufficientCredits,
    InvalidState,
    NotFound,
    PaymentFailed,
    ValidationFailed,
)
from learncredits.domain.lifecycle import Action, Outcome, decide
from learncredits.domain.lots import draw_fifo
from learncredits.domain.periods import period_of
from learncredits.notify import alerts
from learncredits.notify.events import emit, emit_many
from learncredits.tenancy.models import Employee, Organization

MAX_BULK_ASSIGN = 10_000
MAX_ADJUSTMENT = 1_000_000_000


def _entry(
    locked: LockedBalance,
    entry_type: str,
    *,
    actor: str,
    credits_delta: int = 0,
    assigned_delta: int = 0,
    overage: int = 0,
    retail_unit_price_cents: int | None = None,
    assignment_id: int | None = None,
    purchase_id: int | None = None,
    lot_id: int | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> LedgerEntry:
    """Advance the locked counters and build (not save) the ledger entry describing it."""
    locked.credits += credits_delta
    locked.assigned += assigned_delta
    locked.entries += 1
    return LedgerEntry(
        org_id=locked.org_id,
        type=entry_type,
        credits_delta=credits_delta,
        assigned_delta=assigned_delta,
        overage_credits=overage,
        retail_unit_price_cents=retail_unit_price_cents,
        credits_after=locked.credits,
        assigned_after=locked.assigned,
        assignment_id=assignment_id,
        purchase_id=purchase_id,
        lot_id=lot_id,
        actor=actor,
        reason=reason,
        created_at=now or timezone.now(),
    )


def _write_balance(locked: LockedBalance, org: Organization) -> None:
    """Write the balance row (last, to hold its lock no longer than needed) and, when the
    change crosses the at-risk line, open or resolve the alert in the same transaction."""
    if not locked.entries:
        return
    counters = Counters(locked.credits, locked.assigned)
    at_risk = is_at_risk(counters, org.alert_threshold)
    Balance.objects.filter(org_id=locked.org_id).update(
        credits=locked.credits, assigned=locked.assigned, at_risk=at_risk
    )
    if at_risk != locked.at_risk:
        alerts.at_risk_changed(org.pk, counters, at_risk, org.alert_threshold)
        locked.at_risk = at_risk
    auto_top_up.check_after_change(org, locked.available_before, counters)


def reevaluate_at_risk(org: Organization) -> None:
    """After the org's alert threshold changed: the same rule, without a balance change."""
    with transaction.atomic():
        locked = lock_balance(org.pk)
        locked.entries = 1
        _write_balance(locked, org)


def _draw_lots(org_id: int, quantity: int) -> list[tuple[int, int]]:
    """Take ``quantity`` credits from the org's lots, oldest first; returns (lot, quantity)."""
    if quantity <= 0:
        return []
    open_lots = CreditLot.objects.filter(org_id=org_id, remaining__gt=0).order_by("id")
    # One round trip for the usual case (a start drawn from the oldest lot or two, while the
    # balance lock is held); only a draw larger than the first 16 lots reads them all.
    first = list(open_lots.values_list("id", "remaining")[:16])
    if sum(remaining for _, remaining in first) < quantity:
        first = list(open_lots.values_list("id", "remaining"))
    draws = draw_fifo(first, quantity)
    for draw in draws:
        CreditLot.objects.filter(pk=draw.lot_id).update(remaining=F("remaining") - draw.quantity)
    return [(d.lot_id, d.quantity) for d in draws]


def _record_draws(org_id: int, entry: LedgerEntry, draws: Iterable[tuple[int, int]]) -> None:
    LotDraw.objects.bulk_create(
        LotDraw(org_id=org_id, entry=entry, lot_id=lot_id, quantity=qty) for lot_id, qty in draws
    )


def _get_assignment(org_id: int, assignment_id: int) -> Assignment:
    try:
        return Assignment.objects.get(org_id=org_id, pk=assignment_id)
    except Assignment.DoesNotExist:
        raise NotFound("assignment not found") from None


def _get_employee(org_id: int, employee_id: int) -> Employee:
    try:
        return Employee.objects.get(org_id=org_id, pk=employee_id)
    except Employee.DoesNotExist:
        raise NotFound("employee not found") from None


# --- assign -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkAssignResult:
    created: list[Assignment]
    skipped_employee_ids: list[int]


def assign_bulk(
    org: Organization, *, content_id: int, employee_ids: Sequence[int], actor: str
) -> BulkAssignResult:
    """Assign one content item to many employees, all or nothing.

    Unknown or inactive employees refuse the whole request; employees already holding an
    open assignment of the item are skipped (and not charged again). Each new premium
    assignment reserves its cost: one ``reserve`` ledger entry per assignment.
    """
    unique_ids = list(dict.fromkeys(employee_ids))
    if not 1 <= len(unique_ids) <= MAX_BULK_ASSIGN:
        raise ValidationFailed(f"employee_ids must hold 1 to {MAX_BULK_ASSIGN} ids")
    try:
        content = Content.objects.get(pk=content_id)
    except Content.DoesNotExist:
        raise NotFound("content not found") from None

    with transaction.atomic():
        locked = lock_balance(org.pk)
        found = dict(
            Employee.objects.filter(org_id=org.pk, pk__in=unique_ids).values_list("pk", "active")
        )
        missing = [pk for pk in unique_ids if pk not in found]
        if missing:
            raise NotFound(f"{len(missing)} employee(s) not found", missing_employee_ids=missing)
        inactive = [pk for pk in unique_ids if not found[pk]]
        if inactive:
            raise EmployeeInactive(
                f"{len(inactive)} employee(s) inactive", inactive_employee_ids=inactive
            )
        holding = set(
            Assignment.objects.filter(
                org_id=org.pk,
                content_id=content.pk,
                employee_id__in=unique_ids,
                status__in=[Assignment.Status.ASSIGNED, Assignment.Status.STARTED],
            ).values_list("employee_id", flat=True)
        )
        to_assign = [pk for pk in unique_ids if pk not in holding]
        now = timezone.now()
        created = Assignment.objects.bulk_create(
            [
                Assignment(
                    org_id=org.pk,
                    content_id=content.pk,
                    employee_id=pk,
                    credit_cost=content.credit_cost,
                    created_at=now,
                )
                for pk in to_assign
            ],
            batch_size=1000,
        )
        if content.credit_cost and created:
            LedgerEntry.objects.bulk_create(
                (
                    _entry(
                        locked,
                        LedgerEntry.Type.RESERVE,
                        actor=actor,
                        assigned_delta=content.credit_cost,
                        assignment_id=a.pk,
                        now=now,
                    )
                    for a in created
                ),
                batch_size=1000,
            )
        if created:
            emit(
                org.pk,
                "assignment.assigned",
                {
                    "content_id": ids.encode("content", content.pk),
                    "credit_cost": content.credit_cost,
                    # Ids only: a bulk of 10,000 stays a reasonable webhook body.
                    "assignments": [
                        {
                            "id": ids.encode("assignment", a.pk),
                            "employee_id": ids.encode("employee", a.employee_id),
                        }
                        for a in created
                    ],
                },
            )
        _write_balance(locked, org)
    return BulkAssignResult(
        created=created, skipped_employee_ids=[pk for pk in unique_ids if pk in holding]
    )


# --- start, complete, cancel, reassign --------------------------------------------------------


def _event_data(a: Assignment) -> dict[str, object]:
    return {
        "id": ids.encode("assignment", a.pk),
        "employee_id": ids.encode("employee", a.employee_id),
        "content_id": ids.encode("content", a.content_id),
        "status": a.status,
        "credit_cost": a.credit_cost,
        "charged_credits": a.charged_credits,
        "overage_credits": a.overage_credits,
    }


def _consume(
    locked: LockedBalance, org: Organization, assignment: Assignment, *, actor: str, now: datetime
) -> None:
    """Charge a started assignment: from the balance first, the rest as overage at retail."""
    cost = assignment.credit_cost
    split = split_start(cost, locked.credits)
    assignment.status = Assignment.Status.STARTED
    assignment.started_at = now
    assignment.charged_credits = split.from_balance
    assignment.overage_credits = split.overage
    updated = Assignment.objects.filter(
        pk=assignment.pk, org_id=locked.org_id, status=Assignment.Status.ASSIGNED
    ).update(
        status=Assignment.Status.STARTED,
        started_at=now,
        charged_credits=split.from_balance,
        overage_credits=split.overage,
    )
    if updated != 1:  # pragma: no cover - impossible while the balance lock is held
        raise InvalidState("assignment changed concurrently")
    emit(org.pk, "assignment.started", _event_data(assignment))
    if cost == 0:
        return
    retail = current_price_book().retail_unit_price_cents if split.overage else None
    draws = _draw_lots(locked.org_id, split.from_balance)
    entry = _entry(
        locked,
        LedgerEntry.Type.CONSUME,
        actor=actor,
        credits_delta=-split.from_balance,
        assigned_delta=-cost,
        overage=split.overage,
        retail_unit_price_cents=retail,
        assignment_id=assignment.pk,
        now=now,
    )
    entry.save()
    _record_draws(locked.org_id, entry, draws)
    if split.overage:
        alerts.overage_incurred(
            org.pk,
            period_of(now, org.timezone),
            {
                "assignment_id": ids.encode("assignment", assignment.pk),
                "overage_credits": split.overage,
                "retail_unit_price_cents": retail,
                "amount_cents": split.overage * (retail or 0),
            },
        )


def start_assignment(org: Organization, assignment_id: int, *, actor: str) -> Assignment:
    """Start: deduct the cost from credits and assigned. Starting twice charges once."""
    with transaction.atomic():
        locked = lock_balance(org.pk)
        assignment = _get_assignment(org.pk, assignment_id)
        if decide(assignment.status, Action.START) is Outcome.NOOP:
            return assignment
        _consume(locked, org, assignment, actor=actor, now=timezone.now())
        _write_balance(locked, org)
    return assignment


def complete_assignment(org: Organization, assignment_id: int, *, actor: str) -> Assignment:
    """Complete; an assignment never started is started (and charged) first."""
    with transaction.atomic():
        locked = lock_balance(org.pk)
        assignment = _get_assignment(org.pk, assignment_id)
        outcome = decide(assignment.status, Action.COMPLETE)
        if outcome is Outcome.NOOP:
            return assignment
        now = timezone.now()
        if outcome is Outcome.START_THEN_COMPLETE:
            _consume(locked, org, assignment, actor=actor, now=now)
        Assignment.objects.filter(pk=assignment.pk, org_id=org.pk).update(
            status=Assignment.Status.COMPLETED, completed_at=now
        )
        assignment.status = Assignment.Status.COMPLETED
        assignment.completed_at = now
        emit(org.pk, "assignment.completed", _event_data(assignment))
        _write_balance(locked, org)
    return assignment


def _release(
    locked: LockedBalance, assignments: Sequence[Assignment], *, actor: str, reason: str
) -> None:
    """Cancel not-started assignments and release their reservations."""
    now = timezone.now()
    Assignment.objects.filter(
        org_id=locked.org_id,
        pk__in=[a.pk for a in assignments],
        status=Assignment.Status.ASSIGNED,
    ).update(status=Assignment.Status.CANCELLED, cancelled_at=now)
    LedgerEntry.objects.bulk_create(
        _entry(
            locked,
            LedgerEntry.Type.RELEASE,
            actor=actor,
            assigned_delta=-a.credit_cost,
            assignment_id=a.pk,
            reason=reason,
            now=now,
        )
        for a in assignments
        if a.credit_cost
    )
    for a in assignments:
        a.status = Assignment.Status.CANCELLED
        a.cancelled_at = now
    emit_many(
        locked.org_id,
        "assignment.cancelled",
        [{**_event_data(a), "reason": reason} for a in assignments],
    )


def cancel_assignment(org: Organization, assignment_id: int, *, actor: str) -> Assignment:
    """Cancel before start: the reservation is released. Cancelling twice is harmless."""
    with transaction.atomic():
        locked = lock_balance(org.pk)
        assignment = _get_assignment(org.pk, assignment_id)
        if decide(assignment.status, Action.CANCEL) is Outcome.NOOP:
            return assignment
        _release(locked, [assignment], actor=actor, reason="cancelled")
        _write_balance(locked, org)
    return assignment


def reassign_assignment(
    org: Organization, assignment_id: int, *, employee_id: int, actor: str
) -> Assignment:
    """Move a not-started reservation to another active employee; balances are unchanged.

    It still takes the balance lock first, like every action: bulk assignment decides who
    already holds the item under that lock, and a reassignment racing it must not change
    the answer underneath it."""
    with transaction.atomic():
        lock_balance(org.pk)
        assignment = Assignment.objects.filter(org_id=org.pk, pk=assignment_id).first()
        if assignment is None:
            raise NotFound("assignment not found")
        decide(assignment.status, Action.REASSIGN)
        employee = _get_employee(org.pk, employee_id)
        if not employee.active:
            raise EmployeeInactive("the new employee is inactive")
        if employee.pk == assignment.employee_id:
            return assignment
        try:
            with transaction.atomic():
                Assignment.objects.filter(pk=assignment.pk, org_id=org.pk).update(
                    employee_id=employee.pk
                )
        except IntegrityError:
            raise InvalidState(
                "the employee already holds an open assignment of this content"
            ) from None
        assignment.employee_id = employee.pk
    return assignment


def deactivate_employee(org: Organization, employee_id: int, *, actor: str) -> Employee:
    """The employee left: cancel every not-started assignment and release its reservation."""
    with transaction.atomic():
        locked = lock_balance(org.pk)
        employee = _get_employee(org.pk, employee_id)
        if not employee.active:
            return employee
        employee.active = False
        employee.deactivated_at = timezone.now()
        employee.save(update_fields=["active", "deactivated_at"])
        pending = list(
            Assignment.objects.filter(
                org_id=org.pk, employee_id=employee.pk, status=Assignment.Status.ASSIGNED
            )
        )
        _release(locked, pending, actor=actor, reason="employee deactivated")
        _write_balance(locked, org)
    return employee


# --- credits in and out ---------------------------------------------------------------------


def _add_lot(
    locked: LockedBalance,
    *,
    kind: str,
    quantity: int,
    unit_price_cents: int,
    entry_type: str,
    actor: str,
    reason: str = "",
    purchase_id: int | None = None,
) -> LedgerEntry:
    lot = CreditLot.objects.create(
        org_id=locked.org_id,
        kind=kind,
        purchase_id=purchase_id,
        quantity=quantity,
        remaining=quantity,
        unit_price_cents=unit_price_cents,
    )
    entry = _entry(
        locked,
        entry_type,
        actor=actor,
        credits_delta=quantity,
        purchase_id=purchase_id,
        lot_id=lot.pk,
        reason=reason,
    )
    entry.save()
    return entry


def purchase_credits(
    org: Organization,
    quantity: int,
    *,
    actor: str,
    provider: PaymentProvider | None = None,
    idempotency_key: str | None = None,
) -> Purchase:
    """Buy credits at the best rate: charge first, add the credits once the charge succeeds.

    The purchase row is written (pending) before the charge, and turned paid by a
    conditional update under the balance lock, so its credits are added exactly once. A
    declined charge marks it failed, adds nothing and raises PaymentFailed.
    """
    book = current_price_book()
    quote = pricing.quote(book, quantity)
    provider = provider or get_provider()
    with transaction.atomic():
        purchase = Purchase.objects.create(
            org_id=org.pk,
            quantity=quantity,
            unit_price_cents=quote.unit_price_cents,
            total_cents=quote.total_cents,
            retail_unit_price_cents=book.retail_unit_price_cents,
            currency=quote.currency,
            provider=provider.name,
            actor=actor,
        )
    result = provider.charge(
        ChargeRequest(
            org_id=org.pk,
            billing_email=org.billing_email,
            amount_cents=quote.total_cents,
            currency=quote.currency,
            description=f"{quantity} learncredits credits",
            # Scoped by org and caller (two orgs may pick the same Idempotency-Key), and
            # without a client key, by the purchase row.
            idempotency_key=(
                f"purchase:org_{org.pk}:{actor}:{idempotency_key}"
                if idempotency_key
                else f"purchase:pur_{purchase.pk}"
            ),
        )
    )
    if not result.approved:
        Purchase.objects.filter(pk=purchase.pk, status=Purchase.Status.PENDING).update(
            status=Purchase.Status.FAILED, failure_reason=result.failure_reason[:500]
        )
        raise PaymentFailed(
            f"the payment was declined: {result.failure_reason}",
            purchase_id=ids.encode("purchase", purchase.pk),
        )
    return _mark_paid(org, purchase, reference=result.reference, actor=actor)


def _mark_paid(org: Organization, purchase: Purchase, *, reference: str, actor: str) -> Purchase:
    with transaction.atomic():
        locked = lock_balance(org.pk)
        now = timezone.now()
        became_paid = Purchase.objects.filter(
            pk=purchase.pk, org_id=org.pk, status=Purchase.Status.PENDING
        ).update(status=Purchase.Status.PAID, paid_at=now, provider_reference=reference[:200])
        if became_paid:
            purchase.status = Purchase.Status.PAID
            purchase.paid_at = now
            purchase.provider_reference = reference[:200]
            _add_lot(
                locked,
                kind=CreditLot.Kind.PURCHASE,
                quantity=purchase.quantity,
                unit_price_cents=purchase.unit_price_cents,
                entry_type=LedgerEntry.Type.PURCHASE,
                actor=actor,
                purchase_id=purchase.pk,
            )
            receipt = issue_receipt(org, purchase)
            emit(
                org.pk,
                "purchase.paid",
                {
                    "id": ids.encode("purchase", purchase.pk),
                    "quantity": purchase.quantity,
                    "unit_price_cents": purchase.unit_price_cents,
                    "total_cents": purchase.total_cents,
                    "currency": purchase.currency,
                    "invoice_id": ids.encode("invoice", receipt.pk),
                },
            )
            _write_balance(locked, org)
    purchase.refresh_from_db()
    return purchase


def adjust_credits(org: Organization, credits: int, *, reason: str, actor: str) -> LedgerEntry:
    """An operator's correction: a positive one grants a lot at cost 0, a negative one
    removes credits from the oldest lots. A reason is required; credits never go negative."""
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("reason must not be empty")
    if credits == 0 or abs(credits) > MAX_ADJUSTMENT:
        raise ValidationFailed(f"credits must be a non-zero integer within ±{MAX_ADJUSTMENT}")
    with transaction.atomic():
        locked = lock_balance(org.pk)
        if credits > 0:
            entry = _add_lot(
                locked,
                kind=CreditLot.Kind.GRANT,
                quantity=credits,
                unit_price_cents=0,
                entry_type=LedgerEntry.Type.ADJUSTMENT,
                actor=actor,
                reason=reason,
            )
        else:
            if locked.credits + credits < 0:
                raise InsufficientCredits(
                    f"the org holds {locked.credits} credits; cannot remove {-credits}"
                )
            draws = _draw_lots(org.pk, -credits)
            entry = _entry(
                locked,
                LedgerEntry.Type.ADJUSTMENT,
                actor=actor,
                credits_delta=credits,
                reason=reason,
            )
            entry.save()
            _record_draws(org.pk, entry, draws)
        audit.record(
            actor,
            "credits.adjust",
            org_id=org.pk,
            target=f"led_{entry.pk}",
            credits=credits,
            reason=reason,
        )
        _write_balance(locked, org)
    return entry
