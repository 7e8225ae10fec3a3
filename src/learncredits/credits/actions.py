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
from functools import cache

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.catalog.models import Content
from learncredits.catalog.services import current_price_book
from learncredits.credits import alerts
from learncredits.credits.events import emit, emit_in, emit_many
from learncredits.credits.locking import LockedBalance, lock_balance, lock_statement, locked_from
from learncredits.credits.models import (
    Assignment,
    Balance,
    CreditLot,
    LedgerEntry,
    LotDraw,
    Purchase,
)
from learncredits.db import sql
from learncredits.domain.balance import Counters, is_at_risk, split_start
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
    locked: LockedBalance, org: Organization, batch: sql.Batch | None = None
) -> None:
    """Write the balance row (last, to hold its lock no longer than needed) and, when the
    change crosses the at-risk line, open or resolve the alert in the same transaction (as
    well as the event asking the worker for an auto top-up, when one is due).

    ``batch`` holds writes not sent yet (a start's): the balance update joins them, so all
    go in one round trip on PostgreSQL."""
    batch = batch or sql.Batch()
    if locked.entries:
        counters = Counters(locked.credits, locked.assigned)
        at_risk = is_at_risk(counters, org.alert_threshold)
        batch.add(
            _stmts(connection.vendor)["balance_update"],
            [locked.credits, locked.assigned, at_risk, locked.org_id],
        )
    batch.run()
    if not locked.entries:
        return
    if at_risk != locked.at_risk:
        alerts.at_risk_changed(org.pk, counters, at_risk, org.alert_threshold)
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
        at_risk = is_at_risk(counters, org.alert_threshold)
        if at_risk == locked.at_risk:
            return
        Balance.objects.filter(org_id=org.pk).update(at_risk=at_risk)
        alerts.at_risk_changed(org.pk, counters, at_risk, org.alert_threshold)


# Columns written by the hot paths, in the order of their prebuilt statements.
_LEDGER_COLUMNS = (
    "org_id",
    "type",
    "credits_delta",
    "assigned_delta",
    "overage_credits",
    "retail_unit_price_cents",
    "credits_after",
    "assigned_after",
    "assignment_id",
    "purchase_id",
    "lot_id",
    "actor",
    "reason",
    "created_at",
)
_DRAW_COLUMNS = ("org_id", "entry_id", "lot_id", "quantity")
_ASSIGNMENT_READ = (
    "id",
    "employee_id",
    "content_id",
    "status",
    "credit_cost",
    "charged_credits",
    "overage_credits",
    "created_at",
    "started_at",
    "completed_at",
    "cancelled_at",
)
# A start reads this many open lots with its assignment; a larger draw reads them all.
_LOTS_WITH_START = 16


@cache
def _stmts(vendor: str) -> dict[str, str]:
    """The hot paths' statements, built once per database vendor from the models' names."""
    q = sql.quote
    balance = q(Balance._meta.db_table)
    lots = q(CreditLot._meta.db_table)
    assignments = q(Assignment._meta.db_table)
    columns = ", ".join(f"a.{q(c)}" for c in _ASSIGNMENT_READ)
    return {
        "balance_update": (
            f"UPDATE {balance} SET credits = %s, assigned = %s, at_risk = %s WHERE org_id = %s"
        ),
        "lots_open": (
            f"SELECT id, remaining FROM {lots} WHERE org_id = %s AND remaining > 0 ORDER BY id"
        ),
        "lot_draw": f"UPDATE {lots} SET remaining = remaining - %s WHERE id = %s",
        # The assignment and the org's oldest open lots in one round trip (run after the
        # balance lock, so both are current: every change to either takes that lock first).
        "start_read": (
            f"SELECT {columns}, l.id, l.remaining FROM {assignments} a "
            f"LEFT JOIN (SELECT id, remaining FROM {lots} WHERE org_id = %s AND remaining > 0 "
            f"ORDER BY id LIMIT {_LOTS_WITH_START}) l ON 1 = 1 "
            f"WHERE a.org_id = %s AND a.id = %s ORDER BY l.id"
        ),
        # Bulk assignment on PostgreSQL: the varying values as arrays, rows in their order.
        "bulk_assign_pg": (
            f"INSERT INTO {assignments} (org_id, content_id, employee_id, status, credit_cost, "
            f"charged_credits, overage_credits, created_at) "
            f"SELECT %s, %s, t.e, %s, %s, 0, 0, %s "
            f"FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(e, n) ORDER BY t.n "
            f"RETURNING id, employee_id"
        ),
        "bulk_reserve_pg": (
            f"INSERT INTO {q(LedgerEntry._meta.db_table)} (org_id, type, credits_delta, "
            f"assigned_delta, overage_credits, credits_after, assigned_after, assignment_id, "
            f"actor, reason, created_at) "
            f"SELECT %s, %s, 0, %s, 0, %s, t.after, t.a, %s, '', %s "
            f"FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS t(a, after, n) "
            f"ORDER BY t.n"
        ),
        # A lot draw of the ledger entry just inserted in the same batch (the sequence's
        # current value is this session's own).
        "draw_insert_pg": (
            f"INSERT INTO {q(LotDraw._meta.db_table)} (org_id, entry_id, lot_id, quantity) "
            f"VALUES (%s, currval(pg_get_serial_sequence("
            f"'{LedgerEntry._meta.db_table}', 'id')), %s, %s)"
        ),
        "assignment_start": (
            f"UPDATE {assignments} SET status = %s, started_at = %s, charged_credits = %s, "
            f"overage_credits = %s WHERE id = %s AND org_id = %s AND status = %s"
        ),
    }


def _draw_lots(
    org_id: int,
    quantity: int,
    first: list[tuple[int, int]] | None = None,
    batch: sql.Batch | None = None,
) -> list[tuple[int, int]]:
    """Take ``quantity`` credits from the org's lots, oldest first; returns (lot, quantity).

    ``first`` is the org's oldest open lots if the caller already read them (a start reads
    them with its assignment); when they hold too little, all open lots are read. With a
    ``batch``, the lot updates join it instead of running now."""
    if quantity <= 0:
        return []
    statements = _stmts(connection.vendor)
    with connection.cursor() as cursor:
        if first is None:
            cursor.execute(statements["lots_open"] + f" LIMIT {_LOTS_WITH_START}", [org_id])
            first = [(int(i), int(r)) for i, r in cursor.fetchall()]
        if sum(remaining for _, remaining in first) < quantity:
            cursor.execute(statements["lots_open"], [org_id])
            first = [(int(i), int(r)) for i, r in cursor.fetchall()]
        draws = draw_fifo(first, quantity)
        for draw in draws:
            if batch is not None:
                batch.add(statements["lot_draw"], [draw.quantity, draw.lot_id])
            else:
                cursor.execute(statements["lot_draw"], [draw.quantity, draw.lot_id])
    return [(d.lot_id, d.quantity) for d in draws]


def _record_draws(org_id: int, entry_id: int, draws: Iterable[tuple[int, int]]) -> None:
    """The cost basis of one ledger entry: one LotDraw row per lot drawn, in one INSERT."""
    sql.insert_no_return(
        LotDraw, _DRAW_COLUMNS, [(org_id, entry_id, lot_id, qty) for lot_id, qty in draws]
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


_ASSIGNMENT_INSERT = (
    "org_id",
    "content_id",
    "employee_id",
    "status",
    "credit_cost",
    "charged_credits",
    "overage_credits",
    "created_at",
    "started_at",
    "completed_at",
    "cancelled_at",
)


def _insert_assignments(
    org_id: int, content: Content, employee_ids: Sequence[int], now: datetime
) -> list[int]:
    """Insert one ``assigned`` row per employee with prebuilt statements; returns their ids
    in the order given (the rows as model instances are ``_assignments_of``, built after
    the transaction: for 10,000 rows that is a tenth of a second the writers need not wait).

    Why not bulk_create: for 10,000 rows its per-instance work (field lookups, pre_save,
    value preparation for every field of every row) was most of the bulk request's time.
    Here the values shared by all rows are prepared once."""
    status = Assignment.Status.ASSIGNED.value
    cost = content.credit_cost
    created_db = sql.adapt(Assignment, ("created_at",), (now,))[0]
    if connection.vendor == "postgresql":
        # One statement with the ids as one array parameter: a multi-row VALUES with
        # 10,000 x 11 parameters is slow to bind on PostgreSQL's client-side binding.
        with connection.cursor() as cursor:
            cursor.execute(
                _stmts(connection.vendor)["bulk_assign_pg"],
                [org_id, content.pk, status, cost, created_db, list(employee_ids)],
            )
            pk_of = {int(e): int(pk) for pk, e in cursor.fetchall()}
        return [pk_of[e] for e in employee_ids]
    return sql.insert_many_sqlite(
        Assignment,
        _ASSIGNMENT_INSERT,
        [
            (org_id, content.pk, e, status, cost, 0, 0, created_db, None, None, None)
            for e in employee_ids
        ],
        returning=True,
    )


def _assignments_of(
    org_id: int, content: Content, employee_ids: Sequence[int], pks: Sequence[int], now: datetime
) -> list[Assignment]:
    """The rows ``_insert_assignments`` wrote, as model instances."""
    status = Assignment.Status.ASSIGNED.value
    return [
        sql.loaded(
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
    entry_type = LedgerEntry.Type.RESERVE.value
    created_db = sql.adapt(LedgerEntry, ("created_at",), (now,))[0]
    credits = locked.credits
    first_after = locked.assigned + cost
    afters = list(range(first_after, first_after + cost * len(created), cost)) if cost else []
    if connection.vendor == "postgresql":
        # Ordered by position, so the ids run in the same order as assigned_after.
        with connection.cursor() as cursor:
            cursor.execute(
                _stmts(connection.vendor)["bulk_reserve_pg"],
                [
                    locked.org_id,
                    entry_type,
                    cost,
                    credits,
                    actor,
                    created_db,
                    list(created),
                    afters,
                ],
            )
    else:
        rows = [
            (
                locked.org_id,
                entry_type,
                0,
                cost,
                0,
                None,
                credits,
                after,
                pk,
                None,
                None,
                actor,
                "",
                created_db,
            )
            for pk, after in zip(created, afters, strict=True)
        ]
        sql.insert_many_sqlite(LedgerEntry, _LEDGER_COLUMNS, rows, returning=False)
    locked.assigned += cost * len(created)
    locked.entries += len(created)


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
        employees = sql.quote(Employee._meta.db_table)
        assignments = sql.quote(Assignment._meta.db_table)
        with connection.cursor() as cursor:
            where, params = sql.in_ids("id", unique_ids)
            cursor.execute(
                f"SELECT id, active FROM {employees} WHERE org_id = %s AND {where}",
                [org.pk, *params],
            )
            found = {int(pk): bool(active) for pk, active in cursor.fetchall()}
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
        with connection.cursor() as cursor:
            where, params = sql.in_ids("employee_id", unique_ids)
            cursor.execute(
                f"SELECT employee_id FROM {assignments} WHERE org_id = %s AND content_id = %s "
                f"AND status IN (%s, %s) AND {where}",
                [
                    org.pk,
                    content.pk,
                    Assignment.Status.ASSIGNED.value,
                    Assignment.Status.STARTED.value,
                    *params,
                ],
            )
            holding = {int(row[0]) for row in cursor.fetchall()}
        to_assign = [pk for pk in unique_ids if pk not in holding]
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
    lots: list[tuple[int, int]] | None = None,
    batch: sql.Batch | None = None,
) -> None:
    """Charge a started assignment: from the balance first, the rest as overage at retail.

    ``lots`` is the org's oldest open lots when the caller read them under the lock already.
    Every statement is prebuilt (see db/sql.py): this runs while the balance is locked.
    With a ``batch``, the writes may be left in it for the caller to send (with the balance
    update); they are sent here when an overage alert must follow them."""
    cost = assignment.credit_cost
    split = split_start(cost, locked.credits)
    assignment.status = Assignment.Status.STARTED
    assignment.started_at = now
    assignment.charged_credits = split.from_balance
    assignment.overage_credits = split.overage
    statements = _stmts(connection.vendor)
    # The writes below go to PostgreSQL in one round trip (see sql.Batch); the reads they
    # need (price book, lots) run first. Ids of the rows are not read back, except the
    # ledger entry's on SQLite, where the lot draws name it.
    own_batch = batch is None
    batch = batch or sql.Batch()
    batch.add(
        statements["assignment_start"],
        [
            Assignment.Status.STARTED.value,
            sql.adapt(Assignment, ("started_at",), (now,))[0],
            split.from_balance,
            split.overage,
            assignment.pk,
            locked.org_id,
            Assignment.Status.ASSIGNED.value,
        ],
        expect_rows=1,
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
        row = sql.adapt(LedgerEntry, _LEDGER_COLUMNS, [getattr(entry, c) for c in _LEDGER_COLUMNS])
        if connection.vendor == "postgresql":
            batch.add(
                sql.insert_sql(connection.vendor, LedgerEntry, _LEDGER_COLUMNS, 1, False), row
            )
            for lot_id, qty in draws:
                batch.add(statements["draw_insert_pg"], [locked.org_id, lot_id, qty])
        else:
            batch.run()
            (entry_id,) = sql.insert(LedgerEntry, _LEDGER_COLUMNS, [row])
            _record_draws(locked.org_id, entry_id, draws)
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
) -> tuple[LockedBalance, Assignment, list[tuple[int, int]]]:
    """The balance lock, then the assignment and the org's oldest open lots: one round trip.

    The read is its own statement after the lock (sent with it, run after it): joined into
    the locking statement, PostgreSQL would return these rows as of that statement's
    snapshot, taken before it waited for the lock (READ COMMITTED re-reads only the locked
    row), so a start could see a status or a lot's remaining that a concurrent action had
    already changed. A second statement takes a new snapshot once the lock is held."""
    batch = sql.Batch()
    lock_at = batch.add(*lock_statement(org_id), fetch=True)
    read_at = batch.add(
        _stmts(connection.vendor)["start_read"], [org_id, org_id, assignment_id], fetch=True
    )
    batch.run()
    locked = locked_from(org_id, batch.rows(lock_at))
    rows = batch.rows(read_at)
    if not rows:
        raise NotFound("assignment not found")
    a = rows[0]
    created_at = sql.aware(a[7])
    assert created_at is not None  # NOT NULL
    assignment = sql.loaded(
        Assignment,
        {
            "id": a[0],
            "org_id": org_id,
            "employee_id": a[1],
            "content_id": a[2],
            "status": a[3],
            "credit_cost": a[4],
            "charged_credits": a[5],
            "overage_credits": a[6],
            "created_at": created_at,
            "started_at": sql.aware(a[8]),
            "completed_at": sql.aware(a[9]),
            "cancelled_at": sql.aware(a[10]),
        },
    )
    n = len(_ASSIGNMENT_READ)
    lots = [(int(r[n]), int(r[n + 1])) for r in rows if r[n] is not None]
    return locked, assignment, lots


def start_assignment(org: Organization, assignment_id: int, *, actor: str) -> Assignment:
    """Start: deduct the cost from credits and assigned. Starting twice charges once."""
    with transaction.atomic():
        locked, assignment, lots = _lock_and_read_for_start(org.pk, assignment_id)
        if decide(assignment.status, Action.START) is Outcome.NOOP:
            return assignment
        batch = sql.Batch()
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
            _record_draws(org.pk, entry.pk, draws)
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
    with connection.cursor() as cursor:
        cursor.execute(_stmts(connection.vendor)["lot_draw"], [credits, lot.pk])
    _record_draws(org.pk, entry.pk, [(lot.pk, credits)])
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
