"""Every write path that changes credits or assignments: one function per action.

The API, the dashboard, the CLI and the worker all call these and nothing else. Each
function runs in one transaction and serializes on the org's balance row: on PostgreSQL by
``SELECT ... FOR UPDATE`` on it, on SQLite because every transaction is IMMEDIATE (one
writer at a time). The balance row is always the first row an action locks, so two actions
can never wait on each other in opposite orders (no deadlocks). Each ledger entry carries the
balances after it, and the balance row is written last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.catalog.models import Content
from learncredits.catalog.services import current_price_book
from learncredits.credits import alerts, budgets
from learncredits.credits.events import emit, emit_in, emit_many
from learncredits.credits.locking import LockedBalance, lock_balance, locked_from
from learncredits.credits.models import (
    Assignment,
    Balance,
    CreditLot,
    LedgerEntry,
    Purchase,
)
from learncredits.db import store
from learncredits.domain.balance import Counters, is_at_risk, split_start
from learncredits.domain.budgets import BudgetOutlook
from learncredits.domain.errors import (
    EmployeeInactive,
    InsufficientCredits,
    InvalidState,
    NotFound,
    RefundExceedsAvailable,
    ValidationFailed,
)
from learncredits.domain.lifecycle import Action, Outcome, decide
from learncredits.domain.lots import draw_fifo
from learncredits.domain.periods import period_of
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


def _write_balance(
    locked: LockedBalance, org: Organization, batch: store.Batch | None = None
) -> None:
    """Write the balance row and, when the change crosses the at-risk line, open or resolve
    the alert in the same transaction (as well as the event asking the worker for an auto
    top-up, when one is due).

    ``batch`` holds writes not sent yet (a start's): the balance update joins them, ahead of
    them (the lock is already held), so all go in one round trip on PostgreSQL and the
    ledger entry among them queues no second balance check."""
    batch = batch or store.Batch()
    if locked.entries:
        counters = Counters(locked.credits, locked.assigned)
        at_risk = is_at_risk(counters, org.alert_line())
        store.update_balance_in(
            batch, locked.org_id, credits=locked.credits, assigned=locked.assigned, at_risk=at_risk
        )
    batch.run()
    if not locked.entries:
        return
    if at_risk != locked.at_risk:
        alerts.at_risk_changed(org.pk, counters, at_risk, org.alert_line())
        locked.at_risk = at_risk
    alerts.auto_top_up_check(org, locked.available_before, counters)


def reevaluate_at_risk(org: Organization) -> None:
    """After the org's alert threshold changed: the at-risk rule again, on counters that did
    not move. Only the flag (and the alert and its event) can change, and only when the
    answer did: no ledger entry, no balance write, and no auto top-up check, since
    available is what it was."""
    with transaction.atomic():
        locked = lock_balance(org.pk)
        counters = Counters(locked.credits, locked.assigned)
        at_risk = is_at_risk(counters, org.alert_line())
        if at_risk == locked.at_risk:
            return
        Balance.objects.filter(org_id=org.pk).update(at_risk=at_risk)
        alerts.at_risk_changed(org.pk, counters, at_risk, org.alert_line())


def _draw_lots(
    org_id: int,
    quantity: int,
    first: list[store.LotRow] | None = None,
    batch: store.Batch | None = None,
) -> list[tuple[int, int]]:
    """Take ``quantity`` credits from the org's lots, oldest first; returns (lot, quantity).

    ``first`` is the org's oldest open lots if the caller already read them (a start reads
    them with its assignment); when they hold too little, all open lots are read. With a
    ``batch``, the lot updates join it instead of running now."""
    if quantity <= 0:
        return []
    if first is None:
        first = store.open_lots(org_id, limit=store.LOTS_READ_WITH_START)
    if sum(lot.remaining for lot in first) < quantity:
        first = store.open_lots(org_id)
    draws = draw_fifo(first, quantity)
    for draw in draws:
        if batch is not None:
            store.draw_from_lot_in(batch, draw.lot_id, draw.quantity)
        else:
            store.draw_from_lot(draw.lot_id, draw.quantity)
    return [(d.lot_id, d.quantity) for d in draws]


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


def _insert_assignments(
    org_id: int, content: Content, employee_ids: Sequence[int], now: datetime
) -> list[int]:
    """Insert one ``assigned`` row per employee (the store's prebuilt statements); returns
    their ids in the order given (the rows as model instances are ``_assignments_of``,
    built after the transaction: for 10,000 rows that is a tenth of a second the writers
    need not wait)."""
    return store.insert_assignments(
        org_id,
        content.pk,
        employee_ids,
        status=Assignment.Status.ASSIGNED.value,
        credit_cost=content.credit_cost,
        created_at=now,
    )


def _assignments_of(
    org_id: int, content: Content, employee_ids: Sequence[int], pks: Sequence[int], now: datetime
) -> list[Assignment]:
    """The rows ``_insert_assignments`` wrote, as model instances."""
    status = Assignment.Status.ASSIGNED.value
    return [
        store.loaded(
            Assignment,
            {
                "id": pk,
                "org_id": org_id,
                "content_id": content.pk,
                "employee_id": e,
                "status": status,
                "credit_cost": content.credit_cost,
                "charged_credits": 0,
                "overage_credits": 0,
                "created_at": now,
                "started_at": None,
                "completed_at": None,
                "cancelled_at": None,
            },
        )
        for pk, e in zip(pks, employee_ids, strict=True)
    ]


def _insert_reserves(
    locked: LockedBalance, created: Sequence[int], cost: int, *, actor: str, now: datetime
) -> None:
    """One ``reserve`` ledger entry per new assignment, in assignment order, each carrying
    the balance after it; the locked counters advance as if each were appended one by one."""
    first_after = locked.assigned + cost
    afters = list(range(first_after, first_after + cost * len(created), cost)) if cost else []
    # Ordered by position, so the ids run in the same order as assigned_after.
    store.insert_reserve_entries(
        locked.org_id,
        entry_type=LedgerEntry.Type.RESERVE.value,
        assigned_delta=cost,
        credits_after=locked.credits,
        assignment_ids=created,
        assigned_afters=afters,
        actor=actor,
        created_at=now,
    )
    locked.assigned += cost * len(created)
    locked.entries += len(created)


@dataclass(frozen=True)
class BulkAssignResult:
    created: list[Assignment]
    skipped_employee_ids: list[int]
    # Departments this assignment took over budget (an admin's: a manager's is refused).
    budget_warnings: list[BudgetOutlook] = field(default_factory=list)


@dataclass(frozen=True)
class ReassignResult:
    assignment: Assignment
    budget_warnings: list[BudgetOutlook] = field(default_factory=list)


def _outside(manager_of: frozenset[int] | None, department_id: int | None) -> bool:
    """Whether a manager (``manager_of``: their departments) may not see this employee.
    Everyone else (None) sees every employee of the org."""
    return manager_of is not None and department_id not in manager_of


def assign_bulk(
    org: Organization,
    *,
    content_id: int,
    employee_ids: Sequence[int],
    actor: str,
    manager_of: frozenset[int] | None = None,
) -> BulkAssignResult:
    """Assign one content item to many employees, all or nothing.

    Unknown or inactive employees refuse the whole request; employees already holding an
    open assignment of the item are skipped (and not charged again). Each new premium
    assignment reserves its cost: one ``reserve`` ledger entry per assignment.

    ``manager_of`` is a manager's departments: employees outside them are unknown to the
    manager (404), and a department budget the assignment would exceed refuses it
    (``budget_exceeded``). For anyone else the budgets over which it goes are returned, to
    be told. Both are decided under the balance lock, so concurrent assignments cannot
    together go over a budget.
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
        rows = store.employees_active(org.pk, unique_ids)
        found = {row.id: row.active for row in rows if not _outside(manager_of, row.department_id)}
        department_of = {row.id: row.department_id for row in rows}
        missing = [pk for pk in unique_ids if pk not in found]
        if missing:
            raise NotFound(
                f"{len(missing)} employee(s) not found",
                missing_employee_ids=[ids.encode("employee", pk) for pk in missing],
            )
        inactive = [pk for pk in unique_ids if not found[pk]]
        if inactive:
            raise EmployeeInactive(
                f"{len(inactive)} employee(s) inactive",
                inactive_employee_ids=[ids.encode("employee", pk) for pk in inactive],
            )
        holding = store.employees_holding(
            org.pk,
            content.pk,
            unique_ids,
            statuses=(Assignment.Status.ASSIGNED.value, Assignment.Status.STARTED.value),
        )
        to_assign = [pk for pk in unique_ids if pk not in holding]
        adding: dict[int, int] = {}
        for pk in to_assign:
            department_id = department_of[pk]
            if department_id is not None:
                adding[department_id] = adding.get(department_id, 0) + content.credit_cost
        warnings = budgets.check(org, adding, enforce=manager_of is not None)
        now = timezone.now()
        created = _insert_assignments(org.pk, content, to_assign, now)
        if content.credit_cost and created:
            _insert_reserves(locked, created, content.credit_cost, actor=actor, now=now)
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
                            "id": ids.encode("assignment", pk),
                            "employee_id": ids.encode("employee", employee),
                        }
                        for pk, employee in zip(created, to_assign, strict=True)
                    ],
                },
            )
        _write_balance(locked, org)
    return BulkAssignResult(
        created=_assignments_of(org.pk, content, to_assign, created, now),
        skipped_employee_ids=[pk for pk in unique_ids if pk in holding],
        budget_warnings=warnings,
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
    locked: LockedBalance,
    org: Organization,
    assignment: Assignment,
    *,
    actor: str,
    now: datetime,
    lots: list[store.LotRow] | None = None,
    batch: store.Batch | None = None,
) -> None:
    """Charge a started assignment: from the balance first, the rest as overage at retail.

    ``lots`` is the org's oldest open lots when the caller read them under the lock already.
    Every statement is prebuilt (see db/store.py): this runs while the balance is locked.
    With a ``batch``, the writes may be left in it for the caller to send (with the balance
    update); they are sent here when an overage alert must follow them."""
    cost = assignment.credit_cost
    split = split_start(cost, locked.credits)
    assignment.status = Assignment.Status.STARTED
    assignment.started_at = now
    assignment.charged_credits = split.from_balance
    assignment.overage_credits = split.overage
    # The writes below go to PostgreSQL in one round trip (see store.Batch); the reads they
    # need (price book, lots) run first. Ids of the rows are not read back, except the
    # ledger entry's on SQLite, where the lot draws name it.
    own_batch = batch is None
    batch = batch or store.Batch()
    store.mark_assignment_started_in(
        batch,
        locked.org_id,
        assignment.pk,
        started_at=now,
        charged_credits=split.from_balance,
        overage_credits=split.overage,
    )
    emit_in(batch, org.pk, "assignment.started", _event_data(assignment))
    retail = None
    if cost:
        retail = current_price_book().retail_unit_price_cents if split.overage else None
        draws = _draw_lots(locked.org_id, split.from_balance, lots, batch)
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
        store.insert_ledger_entry_in(batch, entry, draws)
    if own_batch or split.overage:
        batch.run()
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


def _lock_and_read_for_start(
    org_id: int, assignment_id: int
) -> tuple[LockedBalance, Assignment, list[store.LotRow]]:
    """The balance lock, then the assignment and the org's oldest open lots: one round trip.

    The read is its own statement after the lock (sent with it, run after it): joined into
    the locking statement, PostgreSQL would return these rows as of that statement's
    snapshot, taken before it waited for the lock (READ COMMITTED re-reads only the locked
    row), so a start could see a status or a lot's remaining that a concurrent action had
    already changed. A second statement takes a new snapshot once the lock is held."""
    batch = store.Batch()
    balance = store.lock_balance_in(batch, org_id)
    read = store.assignment_with_open_lots_in(batch, org_id, assignment_id)
    batch.run()
    locked = locked_from(org_id, balance.result())
    found = read.result()
    if found is None:
        raise NotFound("assignment not found")
    assignment = store.loaded(Assignment, {"org_id": org_id, **found.assignment._asdict()})
    return locked, assignment, found.lots


def start_assignment(org: Organization, assignment_id: int, *, actor: str) -> Assignment:
    """Start: deduct the cost from credits and assigned. Starting twice charges once."""
    with transaction.atomic():
        locked, assignment, lots = _lock_and_read_for_start(org.pk, assignment_id)
        if decide(assignment.status, Action.START) is Outcome.NOOP:
            return assignment
        batch = store.Batch()
        _consume(locked, org, assignment, actor=actor, now=timezone.now(), lots=lots, batch=batch)
        _write_balance(locked, org, batch)
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
    locked: LockedBalance,
    assignments: Sequence[Assignment],
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> None:
    """Cancel not-started assignments and release their reservations."""
    now = now or timezone.now()
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


def _get_managed_assignment(
    org_id: int, assignment_id: int, manager_of: frozenset[int] | None
) -> Assignment:
    """The assignment, or not found when a manager's departments do not hold its employee."""
    assignment = _get_assignment(org_id, assignment_id)
    if manager_of is not None:
        department_id = (
            Employee.objects.filter(pk=assignment.employee_id)
            .values_list("department_id", flat=True)
            .first()
        )
        if _outside(manager_of, department_id):
            raise NotFound("assignment not found")
    return assignment


def cancel_assignment(
    org: Organization,
    assignment_id: int,
    *,
    actor: str,
    manager_of: frozenset[int] | None = None,
) -> Assignment:
    """Cancel before start: the reservation is released. Cancelling twice is harmless.
    A manager (``manager_of``) cancels only their departments' employees' assignments."""
    with transaction.atomic():
        locked = lock_balance(org.pk)
        assignment = _get_managed_assignment(org.pk, assignment_id, manager_of)
        if decide(assignment.status, Action.CANCEL) is Outcome.NOOP:
            return assignment
        _release(locked, [assignment], actor=actor, reason="cancelled")
        _write_balance(locked, org)
    return assignment


def release_unstarted(
    locked: LockedBalance,
    org: Organization,
    assignments: Sequence[Assignment],
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """Cancel assignments nobody started, as ``cancel_assignment`` does (release entries,
    ``assignment.cancelled`` events, the balance written last), for a caller that already
    holds the balance lock (``locked``) in its transaction and has read under that lock
    which assignments are still ``assigned``: the aging service (credits/aging.py), which
    also decides which ones are due and writes the audit row in the same transaction."""
    if not assignments:
        return
    _release(locked, assignments, actor=actor, reason=reason, now=now)
    _write_balance(locked, org)


def reassign_assignment(
    org: Organization,
    assignment_id: int,
    *,
    employee_id: int,
    actor: str,
    manager_of: frozenset[int] | None = None,
) -> Assignment:
    """``reassign``'s assignment, for callers that need not be told about budgets."""
    return reassign(
        org, assignment_id, employee_id=employee_id, actor=actor, manager_of=manager_of
    ).assignment


def reassign(
    org: Organization,
    assignment_id: int,
    *,
    employee_id: int,
    actor: str,
    manager_of: frozenset[int] | None = None,
) -> ReassignResult:
    """Move a not-started reservation to another active employee; balances are unchanged.

    It still takes the balance lock first, like every action: bulk assignment decides who
    already holds the item under that lock, and a reassignment racing it must not change
    the answer underneath it. A reservation moved into another department commits its cost
    there: a manager (``manager_of``, who may move only between their own departments'
    employees) is refused past that budget, anyone else is told."""
    with transaction.atomic():
        lock_balance(org.pk)
        assignment = _get_managed_assignment(org.pk, assignment_id, manager_of)
        decide(assignment.status, Action.REASSIGN)
        employee = _get_employee(org.pk, employee_id)
        if _outside(manager_of, employee.department_id):
            raise NotFound("employee not found")
        if not employee.active:
            raise EmployeeInactive("the new employee is inactive")
        if employee.pk == assignment.employee_id:
            return ReassignResult(assignment)
        warnings: list[BudgetOutlook] = []
        previous_department = (
            Employee.objects.filter(pk=assignment.employee_id)
            .values_list("department_id", flat=True)
            .first()
        )
        if employee.department_id is not None and employee.department_id != previous_department:
            warnings = budgets.check(
                org,
                {employee.department_id: assignment.credit_cost},
                enforce=manager_of is not None,
            )
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
    return ReassignResult(assignment, warnings)


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
        audit.record(
            actor,
            "employee.deactivate",
            org_id=org.pk,
            target=f"emp_{employee.pk}",
            released=len(pending),
        )
    return employee


def reactivate_employee(org: Organization, employee_id: int, *, actor: str) -> Employee:
    """The employee is back (rehired, or deprovisioned by mistake): they may be assigned
    content again. What their deactivation released stays released: those credits may have
    been reserved for someone else since, so nothing is re-reserved behind the admin's back.

    Reactivating an active employee is a harmless repeat, like deactivating twice. The
    balance lock is taken, as deactivation takes it, so the two never interleave and a bulk
    assignment deciding who is active under that lock sees one state or the other."""
    with transaction.atomic():
        lock_balance(org.pk)
        employee = _get_employee(org.pk, employee_id)
        if employee.active:
            return employee
        employee.active = True
        employee.deactivated_at = None
        employee.save(update_fields=["active", "deactivated_at"])
        audit.record(actor, "employee.reactivate", org_id=org.pk, target=f"emp_{employee.pk}")
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


def mark_purchase_paid(
    org: Organization, purchase: Purchase, *, reference: str, actor: str
) -> bool:
    """Add a paid purchase's credits, exactly once: a conditional pending -> paid under the
    balance lock, so the provider's answer, its webhook and reconciliation may all report the
    same payment and only the first adds the lot and the ledger entry. True for that first.

    The receipt and the ``purchase.paid`` event are billing's: it calls this inside its own
    transaction (billing/purchases.py), so the lock is held until all of them are written."""
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
            _write_balance(locked, org)
    return bool(became_paid)


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
            store.insert_lot_draws(org.pk, entry.pk, draws)
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


def refund_credits(
    org: Organization,
    locked: LockedBalance,
    purchase: Purchase,
    credits: int,
    *,
    reason: str,
    actor: str,
) -> LedgerEntry:
    """Take ``credits`` of a paid purchase back out of the balance, as a ``refund`` entry
    drawn from that purchase's own lot (not first in, first out: the money going back is
    that lot's price, so its cost basis must leave with it).

    The caller holds the balance lock (``locked``) in the transaction that also writes the
    credit note and the pending refund row, so the three stand or fall together. Refuses
    more than the lot still holds, and more than is available: reserved credits stay."""
    lot = CreditLot.objects.filter(org_id=org.pk, purchase_id=purchase.pk).first()
    if purchase.status != Purchase.Status.PAID or lot is None:
        raise InvalidState("only a paid purchase can be refunded")
    available = locked.credits - locked.assigned
    refundable = max(0, min(lot.remaining, available))
    if credits > refundable:
        raise RefundExceedsAvailable(
            f"at most {refundable} credits of this purchase can be refunded "
            f"({lot.remaining} left of it, {max(0, available)} available)",
            refundable=refundable,
        )
    entry = _entry(
        locked,
        LedgerEntry.Type.REFUND,
        actor=actor,
        credits_delta=-credits,
        purchase_id=purchase.pk,
        reason=reason,
    )
    entry.save()
    store.draw_from_lot(lot.pk, credits)
    store.insert_lot_draws(org.pk, entry.pk, [(lot.pk, credits)])
    audit.record(
        actor,
        "credits.refund",
        org_id=org.pk,
        target=f"led_{entry.pk}",
        credits=-credits,
        reason=reason,
    )
    # A refund is the operator's decision, not consumption: it must not look like a drop
    # below the org's auto top-up trigger and buy the credits straight back.
    locked.available_before = locked.credits - locked.assigned
    _write_balance(locked, org)
    return entry
