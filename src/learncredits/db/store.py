"""Every hand-written SQL statement of the application, one function per statement.

Why a store: the hottest paths (authentication, the balance read, a start, a bulk assign, a
month-end close) bypass the ORM, because building the same statements again and again in
Python (queryset cloning, compiling, model instances) cost more than the database did
while the org's balance lock was held (docs/decisions/0010). Keeping those statements here,
and nowhere else, keeps their cost in one place: each function is named after what it asks
or writes, takes typed arguments and answers with named rows, and the differences between
SQLite and PostgreSQL stay inside it. Callers keep the domain logic, the locking order and
the transactions. ``tests/db/test_store.py`` answers each question again with the ORM.

How: each statement's text is built once per database vendor from the models' own table and
column names (cached), and values go through the model fields' own ``get_db_prep_save``, so
JSON, datetimes and booleans are stored exactly as the ORM stores them. On PostgreSQL the
hot statements run on server-binding cursors, which psycopg prepares once they have run a
few times on a connection, and a ``Batch`` sends several in one round trip.

It lives in ``db/`` rather than ``credits/`` because billing's statements (invoice numbers,
invoices, their lines) name billing's models, and credits must not import billing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, Generic, NamedTuple, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import DateTimeField, Field, JSONField, Model
from django.db.models.base import ModelState
from django.db.transaction import TransactionManagementError
from django.utils.dateparse import parse_datetime

from learncredits.billing.models import CreditNoteSequence, Invoice, InvoiceLine, InvoiceSequence
from learncredits.catalog.models import Content
from learncredits.credits.models import (
    Assignment,
    Balance,
    CreditLot,
    Event,
    LedgerEntry,
    LotDraw,
)
from learncredits.domain.errors import InvalidState
from learncredits.tenancy.models import ApiKey, Employee, Organization

M = TypeVar("M", bound=Model)
R = TypeVar("R")

# A start reads this many of the org's oldest open lots with its assignment; a draw that
# needs more reads them all.
LOTS_READ_WITH_START = 16


# --- machinery ------------------------------------------------------------------------------


@cache
def _attnames(model: type[Model]) -> frozenset[str]:
    return frozenset(f.attname for f in model._meta.concrete_fields)


def loaded(model: type[M], values: Mapping[str, Any]) -> M:
    """A model instance as if read from the database, from every concrete field's value.

    Why: ``Model.__init__`` costs tens of microseconds (it walks every field, with defaults
    and descriptors); a bulk of 10,000 rows answered with its instances paid that for each.
    Every concrete field must be given (a missing one would be deferred and read back from
    the database on access), which is checked."""
    if values.keys() != _attnames(model):
        raise ValueError(f"{model.__name__}: give exactly the concrete fields")
    obj = model.__new__(model)
    state = ModelState()
    state.adding = False
    state.db = DEFAULT_DB_ALIAS  # ``connection`` is always the default database's
    obj._state = state
    obj.__dict__.update(values)
    return obj


def _quote(name: str) -> str:
    return str(connection.ops.quote_name(name))


def _table(model: type[Model]) -> str:
    return _quote(model._meta.db_table)


@cache
def _fields(model: type[Model], names: tuple[str, ...]) -> tuple[Field[Any, Any], ...]:
    return tuple(model._meta.get_field(name) for name in names)  # type: ignore[misc]


@lru_cache(maxsize=64)
def _insert_sql(
    vendor: str, model: type[Model], names: tuple[str, ...], rows: int, returning: bool
) -> str:
    """``INSERT INTO table (columns) VALUES (...), ...`` for ``rows`` rows, optionally
    ``RETURNING`` the primary key. Cached per vendor, model, columns and row count
    (bounded: a bulk's last batch may have any row count)."""
    fields = _fields(model, names)
    columns = ", ".join(_quote(str(f.column)) for f in fields)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {_table(model)} ({columns}) VALUES {', '.join([one] * rows)}"
    if returning:
        pk = model._meta.pk
        assert pk is not None
        sql += f" RETURNING {_quote(str(pk.column))}"
    return sql


def _adapt(model: type[Model], names: Sequence[str], values: Sequence[Any]) -> list[Any]:
    """The values as the database wants them, converted by each model field like the ORM."""
    fields = _fields(model, tuple(names))
    return [f.get_db_prep_save(v, connection) for f, v in zip(fields, values, strict=True)]


def _insert(model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
    """Insert rows of already adapted values in one statement; returns their primary keys in
    the order given (both databases return ``RETURNING`` rows of a multi-row VALUES in order,
    which Django's own bulk_create relies on too)."""
    if not rows:
        return []
    sql = _insert_sql(connection.vendor, model, tuple(names), len(rows), True)
    params = [value for row in rows for value in row]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [int(row[0]) for row in cursor.fetchall()]


def _insert_no_return(
    model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows of already adapted values in one statement, reading nothing back."""
    if not rows:
        return
    sql = _insert_sql(connection.vendor, model, tuple(names), len(rows), False)
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])


def _in_ids(column: str, values: Sequence[int]) -> tuple[str, list[Any]]:
    """``column IN (...)`` for many ids: one array parameter on PostgreSQL (binding 10,000
    separate parameters client-side is slow there), the plain list elsewhere."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def _insert_many_sqlite(
    model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]], *, returning: bool
) -> list[int]:
    """Insert many rows on SQLite: one single-row statement stepped once per row in C
    (``executemany``), instead of multi-row VALUES cut at SQLite's 999 parameters, each
    statement built, converted and parsed again. Returns the new primary keys in order
    when ``returning``.

    The keys are the ``len(rows)`` ending at ``last_insert_rowid()``: the tables' ids are
    AUTOINCREMENT, so each new row takes one more than the largest id the table ever had,
    and inside a write transaction nobody else inserts (SQLite has one writer, and no
    trigger of ours inserts into these tables). Call inside a transaction."""
    if not rows:
        return []
    statement = _insert_sql(connection.vendor, model, tuple(names), 1, False)
    with connection.cursor() as cursor:
        cursor.executemany(statement, rows)
        if not returning:
            return []
        cursor.execute("SELECT last_insert_rowid()")
        (last,) = cursor.fetchone()
    return list(range(int(last) - len(rows) + 1, int(last) + 1))


def _batch_rows(columns: int) -> int:
    """How many rows of ``columns`` values one statement may carry on this database."""
    limit = connection.features.max_query_params or 65535
    return max(1, min(1000, limit // columns))


def _chunks(items: Sequence[R], size: int) -> Iterable[Sequence[R]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _aware(value: Any) -> datetime | None:
    """A datetime column read on the raw cursor, as the ORM would return it (aware, UTC).

    PostgreSQL already returns aware datetimes; SQLite returns naive ones (or text when the
    column's declared type is lost, as in a derived table)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _aware_not_null(value: Any) -> datetime:
    moment = _aware(value)
    assert moment is not None  # a NOT NULL column
    return moment


_ROWS = psycopg.pq.ExecStatus.TUPLES_OK


def _run_one(
    statement: str, params: Sequence[Any], using: str = DEFAULT_DB_ALIAS
) -> list[tuple[Any, ...]]:
    """One prebuilt statement; returns its rows (empty for a write). ``using`` names another
    database (the replica, for a read routed there).

    On PostgreSQL it runs on a server-binding cursor, so psycopg prepares it once it has
    run a few times on the connection (see ``Batch``); elsewhere on Django's cursor."""
    db = connections[using]
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            raw = psycopg.Cursor(cursor.cursor.connection)
            with db.wrap_database_errors:
                raw.execute(statement, params)
            # The result's status says whether it has rows; ``description`` would build a
            # column object per column to say the same (authentication asks on every
            # request).
            result = raw.pgresult
            return raw.fetchall() if result is not None and result.status == _ROWS else []
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description is not None else []


class Batch:
    """Statements sent to PostgreSQL in one round trip, or run one by one elsewhere.

    Why: a start runs several statements in a row while it holds the org's balance lock,
    and on a loaded machine each round trip to the server costs more than the statement
    itself. On PostgreSQL the statements go through psycopg's pipeline mode (all sent, then
    one sync) on cursors with server-side binding, so psycopg prepares each statement after
    it has run a few times on the connection and the server stops planning it again (the
    planning of the start's statements was a third of its database time). Inside a
    transaction the pipeline also carries the BEGIN, so a batch opening the transaction
    costs no extra round trip. SQLite's driver runs one statement per call, so there they
    simply run in order, with the same row counts and rows.

    Callers make a batch and ``run`` it; the store's ``..._in(batch, ...)`` functions queue
    their statements in it. A read queued in a batch answers with a ``Pending`` whose
    ``result()`` is ready after ``run``; no statement may depend on rows read by an earlier
    one of the same batch.
    """

    def __init__(self) -> None:
        self._statements: list[tuple[str, Sequence[Any]]] = []
        self._expected: dict[int, int] = {}
        self._fetch: set[int] = set()
        self._fetched: dict[int, list[tuple[Any, ...]]] = {}
        self._lead: int | None = None

    def _add(
        self,
        statement: str,
        params: Sequence[Any],
        *,
        expect_rows: int | None = None,
        fetch: bool = False,
        lead: bool = False,
    ) -> int:
        """Queue a statement; returns its index. With ``expect_rows``, ``run`` raises
        InvalidState unless it changes exactly that many rows (the transaction then rolls
        back); with ``fetch``, its rows are kept for ``_rows``; with ``lead``, it runs
        before every statement queued so far or later (one per batch)."""
        index = len(self._statements)
        if expect_rows is not None:
            self._expected[index] = expect_rows
        if fetch:
            self._fetch.add(index)
        if lead:
            if self._lead is not None:
                raise ValueError("a batch has one leading statement")
            self._lead = index
        self._statements.append((statement, params))
        return index

    def _order(self) -> list[int]:
        order = list(range(len(self._statements)))
        if self._lead is not None:
            order.remove(self._lead)
            order.insert(0, self._lead)
        return order

    def _rows(self, index: int) -> list[tuple[Any, ...]]:
        return self._fetched[index]

    def run(self) -> None:
        """Run every queued statement in order, a leading one first (nothing when none is
        queued)."""
        counts: dict[int, int] = {}
        self._fetched = {}
        if not self._statements:
            return
        order = self._order()
        # Django's cursor first: it opens (or health-checks) the connection and maps
        # driver errors to django.db's, as for every other query.
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                conn = cursor.cursor.connection
                cursors = {}
                with connection.wrap_database_errors, conn.pipeline():
                    for index in order:
                        statement, params = self._statements[index]
                        raw = psycopg.Cursor(conn)
                        raw.execute(statement, params)
                        cursors[index] = raw
                counts = {index: raw.rowcount for index, raw in cursors.items()}
                self._fetched = {i: cursors[i].fetchall() for i in self._fetch}
            else:
                for index in order:
                    statement, params = self._statements[index]
                    cursor.execute(statement, params)
                    counts[index] = cursor.rowcount
                    if index in self._fetch:
                        self._fetched[index] = cursor.fetchall()
        expected, self._statements, self._expected, self._fetch = self._expected, [], {}, set()
        self._lead = None
        for index, rows in expected.items():
            if counts[index] != rows:  # pragma: no cover - the balance lock prevents it
                raise InvalidState("a row changed concurrently")


@dataclass(frozen=True)
class Pending(Generic[R]):
    """The answer of a read queued in a ``Batch``: ``result()`` once the batch has run."""

    batch: Batch
    index: int
    decode: Callable[[list[tuple[Any, ...]]], R]

    def result(self) -> R:
        return self.decode(self.batch._rows(self.index))


# --- health -----------------------------------------------------------------------------------


def ping() -> None:
    """Ask the database the cheapest question there is; raises DatabaseError if it cannot
    answer (a readiness probe)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


_REPLICA_LAG_SQL = (
    "SELECT CASE"
    " WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)


def replica_lag_seconds(using: str) -> float | None:
    """How far the PostgreSQL database ``using`` (a streaming replica) is behind its primary,
    in seconds: 0 when it is not replaying, or has replayed all it received (why that and
    not the last transaction's age: db/routing.py); None when it cannot tell (nothing
    replayed since it started). Raises DatabaseError when it does not answer."""
    rows = _run_one(_REPLICA_LAG_SQL, [], using)
    value = rows[0][0] if rows else None
    return None if value is None else float(value)


# --- the balance row --------------------------------------------------------------------------


class BalanceRow(NamedTuple):
    credits: int
    assigned: int
    at_risk: bool


@cache
def _lock_balance_sql(vendor: str, for_update: bool) -> str:
    sql = f"SELECT credits, assigned, at_risk FROM {_table(Balance)} WHERE org_id = %s"
    return sql + " FOR UPDATE" if for_update else sql


def _lock_balance_statement() -> str:
    # SQLite has no FOR UPDATE: every transaction there is BEGIN IMMEDIATE (one writer).
    for_update = bool(connection.features.has_select_for_update)
    if for_update and connection.get_autocommit():
        # As the ORM's select_for_update(): a lock outside a transaction would be released
        # at once, which is always a bug in the caller.
        raise TransactionManagementError("lock_balance cannot be used outside a transaction")
    return _lock_balance_sql(connection.vendor, for_update)


def _balance_row(rows: list[tuple[Any, ...]]) -> BalanceRow | None:
    if not rows:
        return None
    credits, assigned, at_risk = rows[0]
    return BalanceRow(int(credits), int(assigned), bool(at_risk))


def lock_balance(org_id: int) -> BalanceRow | None:
    """Lock the org's balance row for the rest of the transaction and read it (None for an
    org without one). Raises TransactionManagementError outside a transaction."""
    return _balance_row(_run_one(_lock_balance_statement(), [org_id]))


def lock_balance_in(batch: Batch, org_id: int) -> Pending[BalanceRow | None]:
    """``lock_balance`` as a statement of ``batch``, for reads that must follow the lock
    in the same round trip."""
    index = batch._add(_lock_balance_statement(), [org_id], fetch=True)
    return Pending(batch, index, _balance_row)


def update_balance_in(
    batch: Batch, org_id: int, *, credits: int, assigned: int, at_risk: bool
) -> None:
    """Write the org's balance row, first of the batch's statements: its lock is already
    held (``lock_balance_in``), and a ledger insert after it in the same transaction then
    queues no second balance check at commit (credits migration 0015)."""
    batch._add(
        f"UPDATE {_table(Balance)} SET credits = %s, assigned = %s, at_risk = %s WHERE org_id = %s",
        [credits, assigned, at_risk, org_id],
        lead=True,
    )


class BalanceWithOverageRow(NamedTuple):
    credits: int
    assigned: int
    overage_credits: int


@cache
def _balance_with_overage_sql(vendor: str) -> str:
    ledger = _table(LedgerEntry)
    return (
        f"SELECT b.credits, b.assigned, (SELECT COALESCE(SUM(e.overage_credits), 0) "
        f"FROM {ledger} e WHERE e.org_id = b.org_id AND e.created_at >= %s "
        f"AND e.created_at < %s AND e.overage_credits > 0) "
        f"FROM {_table(Balance)} b WHERE b.org_id = %s"
    )


def balance_with_overage(
    org_id: int, start: datetime, end: datetime
) -> BalanceWithOverageRow | None:
    """The org's balance and the overage credits of its ledger entries in ``[start, end)``,
    in one statement (None for an org without a balance row)."""
    params = [*_adapt(LedgerEntry, ("created_at", "created_at"), (start, end)), org_id]
    rows = _run_one(_balance_with_overage_sql(connection.vendor), params)
    if not rows:
        return None
    credits, assigned, overage = rows[0]
    return BalanceWithOverageRow(int(credits), int(assigned), int(overage or 0))


# --- lots ---------------------------------------------------------------------------------------


class LotRow(NamedTuple):
    id: int
    remaining: int


@cache
def _open_lots_sql(vendor: str) -> str:
    return (
        f"SELECT id, remaining FROM {_table(CreditLot)} WHERE org_id = %s AND remaining > 0 "
        f"ORDER BY id"
    )


def open_lots(org_id: int, *, limit: int | None = None) -> list[LotRow]:
    """The org's lots with credits left, oldest first (at most ``limit`` of them)."""
    sql = _open_lots_sql(connection.vendor)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [org_id])
        return [LotRow(int(i), int(r)) for i, r in cursor.fetchall()]


@cache
def _draw_from_lot_sql(vendor: str) -> str:
    return f"UPDATE {_table(CreditLot)} SET remaining = remaining - %s WHERE id = %s"


def draw_from_lot(lot_id: int, quantity: int) -> None:
    """Take ``quantity`` credits out of the lot's remaining."""
    with connection.cursor() as cursor:
        cursor.execute(_draw_from_lot_sql(connection.vendor), [quantity, lot_id])


def draw_from_lot_in(batch: Batch, lot_id: int, quantity: int) -> None:
    """``draw_from_lot`` as a statement of ``batch``."""
    batch._add(_draw_from_lot_sql(connection.vendor), [quantity, lot_id])


_DRAW_COLUMNS = ("org_id", "entry_id", "lot_id", "quantity")


def insert_lot_draws(org_id: int, entry_id: int, draws: Iterable[tuple[int, int]]) -> None:
    """The cost basis of one ledger entry: one LotDraw row per ``(lot id, quantity)``, in
    one INSERT (none for no draws)."""
    _insert_no_return(
        LotDraw, _DRAW_COLUMNS, [(org_id, entry_id, lot_id, qty) for lot_id, qty in draws]
    )


# --- assignments -------------------------------------------------------------------------------


class AssignmentRow(NamedTuple):
    """Every concrete column of an assignment but its org (the caller knows it)."""

    id: int
    employee_id: int
    content_id: int
    status: str
    credit_cost: int
    charged_credits: int
    overage_credits: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None


class AssignmentWithLots(NamedTuple):
    assignment: AssignmentRow
    lots: list[LotRow]


@cache
def _assignment_with_lots_sql(vendor: str) -> str:
    columns = ", ".join(f"a.{_quote(c)}" for c in AssignmentRow._fields)
    return (
        f"SELECT {columns}, l.id, l.remaining FROM {_table(Assignment)} a "
        f"LEFT JOIN (SELECT id, remaining FROM {_table(CreditLot)} WHERE org_id = %s "
        f"AND remaining > 0 ORDER BY id LIMIT {LOTS_READ_WITH_START}) l ON 1 = 1 "
        f"WHERE a.org_id = %s AND a.id = %s ORDER BY l.id"
    )


def _assignment_with_lots(rows: list[tuple[Any, ...]]) -> AssignmentWithLots | None:
    if not rows:
        return None
    a = rows[0]
    assignment = AssignmentRow(
        a[0],
        a[1],
        a[2],
        a[3],
        a[4],
        a[5],
        a[6],
        _aware_not_null(a[7]),
        _aware(a[8]),
        _aware(a[9]),
        _aware(a[10]),
    )
    n = len(AssignmentRow._fields)
    lots = [LotRow(int(r[n]), int(r[n + 1])) for r in rows if r[n] is not None]
    return AssignmentWithLots(assignment, lots)


def assignment_with_open_lots_in(
    batch: Batch, org_id: int, assignment_id: int
) -> Pending[AssignmentWithLots | None]:
    """The org's assignment and its ``LOTS_READ_WITH_START`` oldest open lots (oldest
    first), in one statement of ``batch``; None when the org has no such assignment."""
    index = batch._add(
        _assignment_with_lots_sql(connection.vendor),
        [org_id, org_id, assignment_id],
        fetch=True,
    )
    return Pending(batch, index, _assignment_with_lots)


@cache
def _mark_assignment_started_sql(vendor: str) -> str:
    return (
        f"UPDATE {_table(Assignment)} SET status = %s, started_at = %s, charged_credits = %s, "
        f"overage_credits = %s WHERE id = %s AND org_id = %s AND status = %s"
    )


def mark_assignment_started_in(
    batch: Batch,
    org_id: int,
    assignment_id: int,
    *,
    started_at: datetime,
    charged_credits: int,
    overage_credits: int,
) -> None:
    """Move an ``assigned`` assignment to ``started`` with its charge, as a statement of
    ``batch``; the batch's ``run`` raises InvalidState if the assignment was not assigned."""
    batch._add(
        _mark_assignment_started_sql(connection.vendor),
        [
            Assignment.Status.STARTED.value,
            _adapt(Assignment, ("started_at",), (started_at,))[0],
            charged_credits,
            overage_credits,
            assignment_id,
            org_id,
            Assignment.Status.ASSIGNED.value,
        ],
        expect_rows=1,
    )


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


@cache
def _insert_assignments_pg_sql(vendor: str) -> str:
    return (
        f"INSERT INTO {_table(Assignment)} (org_id, content_id, employee_id, status, "
        f"credit_cost, charged_credits, overage_credits, created_at) "
        f"SELECT %s, %s, t.e, %s, %s, 0, 0, %s "
        f"FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(e, n) ORDER BY t.n "
        f"RETURNING id, employee_id"
    )


def insert_assignments(
    org_id: int,
    content_id: int,
    employee_ids: Sequence[int],
    *,
    status: str,
    credit_cost: int,
    created_at: datetime,
) -> list[int]:
    """One new assignment per employee (nothing charged, not started); returns their ids in
    the order of ``employee_ids``, which must be distinct.

    Why not bulk_create: for 10,000 rows its per-instance work (field lookups, pre_save,
    value preparation for every field of every row) was most of the bulk request's time.
    Here the values shared by all rows are prepared once."""
    created_db = _adapt(Assignment, ("created_at",), (created_at,))[0]
    if connection.vendor == "postgresql":
        # One statement with the ids as one array parameter: a multi-row VALUES with
        # 10,000 x 11 parameters is slow to bind on PostgreSQL's client-side binding.
        with connection.cursor() as cursor:
            cursor.execute(
                _insert_assignments_pg_sql(connection.vendor),
                [org_id, content_id, status, credit_cost, created_db, list(employee_ids)],
            )
            pk_of = {int(e): int(pk) for pk, e in cursor.fetchall()}
        return [pk_of[e] for e in employee_ids]
    return _insert_many_sqlite(
        Assignment,
        _ASSIGNMENT_INSERT,
        [
            (org_id, content_id, e, status, credit_cost, 0, 0, created_db, None, None, None)
            for e in employee_ids
        ],
        returning=True,
    )


class EmployeeActiveRow(NamedTuple):
    id: int
    active: bool
    department_id: int | None


def employees_active(org_id: int, employee_ids: Sequence[int]) -> list[EmployeeActiveRow]:
    """Which of ``employee_ids`` are the org's employees, whether each is active and its
    department (in no particular order; ids of other orgs or of nobody are left out)."""
    if not employee_ids:
        return []
    where, params = _in_ids("id", employee_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, active, department_id FROM {_table(Employee)} "
            f"WHERE org_id = %s AND {where}",
            [org_id, *params],
        )
        return [
            EmployeeActiveRow(int(pk), bool(active), None if dep is None else int(dep))
            for pk, active, dep in cursor.fetchall()
        ]


def employees_holding(
    org_id: int, content_id: int, employee_ids: Sequence[int], *, statuses: Sequence[str]
) -> set[int]:
    """Which of ``employee_ids`` hold an assignment of the content in one of ``statuses``."""
    if not employee_ids or not statuses:
        return set()
    where, params = _in_ids("employee_id", employee_ids)
    status_in = ", ".join(["%s"] * len(statuses))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT employee_id FROM {_table(Assignment)} WHERE org_id = %s AND content_id = %s "
            f"AND status IN ({status_in}) AND {where}",
            [org_id, content_id, *statuses, *params],
        )
        return {int(row[0]) for row in cursor.fetchall()}


# --- ledger entries -----------------------------------------------------------------------------


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


@cache
def _draw_of_last_entry_pg_sql(vendor: str) -> str:
    # A lot draw of the ledger entry just inserted in the same batch (the sequence's current
    # value is this session's own).
    return (
        f"INSERT INTO {_table(LotDraw)} (org_id, entry_id, lot_id, quantity) "
        f"VALUES (%s, currval(pg_get_serial_sequence("
        f"'{LedgerEntry._meta.db_table}', 'id')), %s, %s)"
    )


def insert_ledger_entry_in(
    batch: Batch, entry: LedgerEntry, draws: Sequence[tuple[int, int]]
) -> None:
    """Append the (unsaved) ledger entry and its lot draws (``(lot id, quantity)``).

    On PostgreSQL both join ``batch`` (the draws name the entry by its sequence's current
    value, so its id need not be read back). On SQLite the entry's id is needed for the
    draws: the batch runs first, then the entry and its draws are inserted at once. Either
    way ``entry.pk`` stays unset."""
    row = _adapt(LedgerEntry, _LEDGER_COLUMNS, [getattr(entry, c) for c in _LEDGER_COLUMNS])
    if connection.vendor == "postgresql":
        batch._add(_insert_sql(connection.vendor, LedgerEntry, _LEDGER_COLUMNS, 1, False), row)
        for lot_id, qty in draws:
            batch._add(_draw_of_last_entry_pg_sql(connection.vendor), [entry.org_id, lot_id, qty])
        return
    batch.run()
    (entry_id,) = _insert(LedgerEntry, _LEDGER_COLUMNS, [row])
    insert_lot_draws(entry.org_id, entry_id, draws)


@cache
def _insert_reserves_pg_sql(vendor: str) -> str:
    return (
        f"INSERT INTO {_table(LedgerEntry)} (org_id, type, credits_delta, "
        f"assigned_delta, overage_credits, credits_after, assigned_after, assignment_id, "
        f"actor, reason, created_at) "
        f"SELECT %s, %s, 0, %s, 0, %s, t.after, t.a, %s, '', %s "
        f"FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS t(a, after, n) "
        f"ORDER BY t.n"
    )


def insert_reserve_entries(
    org_id: int,
    *,
    entry_type: str,
    assigned_delta: int,
    credits_after: int,
    assignment_ids: Sequence[int],
    assigned_afters: Sequence[int],
    actor: str,
    created_at: datetime,
) -> None:
    """One ledger entry per assignment, in the order given (their ids run in that order),
    each reserving ``assigned_delta`` with its own ``assigned_after``; no credits move, no
    reason, no purchase, lot or price."""
    if not assignment_ids:
        return
    created_db = _adapt(LedgerEntry, ("created_at",), (created_at,))[0]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _insert_reserves_pg_sql(connection.vendor),
                [
                    org_id,
                    entry_type,
                    assigned_delta,
                    credits_after,
                    actor,
                    created_db,
                    list(assignment_ids),
                    list(assigned_afters),
                ],
            )
        return
    rows = [
        (
            org_id,
            entry_type,
            0,
            assigned_delta,
            0,
            None,
            credits_after,
            after,
            pk,
            None,
            None,
            actor,
            "",
            created_db,
        )
        for pk, after in zip(assignment_ids, assigned_afters, strict=True)
    ]
    _insert_many_sqlite(LedgerEntry, _LEDGER_COLUMNS, rows, returning=False)


# --- events ---------------------------------------------------------------------------------------


_EVENT_COLUMNS = ("org_id", "type", "data", "created_at", "dispatched_at")


def _event_row(org_id: int, event_type: str, data: Any, created_at: datetime) -> list[Any]:
    return _adapt(Event, _EVENT_COLUMNS, (org_id, event_type, data, created_at, None))


def insert_event(org_id: int, event_type: str, data: Any, created_at: datetime) -> int:
    """One undispatched event; returns its id."""
    (pk,) = _insert(Event, _EVENT_COLUMNS, [_event_row(org_id, event_type, data, created_at)])
    return pk


def insert_event_in(
    batch: Batch, org_id: int, event_type: str, data: Any, created_at: datetime
) -> None:
    """``insert_event`` as a statement of ``batch`` (the id is not read back)."""
    batch._add(
        _insert_sql(connection.vendor, Event, _EVENT_COLUMNS, 1, False),
        _event_row(org_id, event_type, data, created_at),
    )


class NewEvent(NamedTuple):
    org_id: int
    type: str
    data: Any


def insert_events(events: Sequence[NewEvent], created_at: datetime) -> None:
    """Many undispatched events of one moment, in as few INSERTs as the parameter limit
    allows (the shared datetime is converted once)."""
    data = Event._meta.get_field("data")
    (created,) = _adapt(Event, ("created_at",), (created_at,))
    rows = [
        [e.org_id, e.type, data.get_db_prep_save(e.data, connection), created, None] for e in events
    ]
    for chunk in _chunks(rows, _batch_rows(len(_EVENT_COLUMNS))):
        _insert_no_return(Event, _EVENT_COLUMNS, chunk)


# --- API keys ---------------------------------------------------------------------------------


class ApiKeyRow(NamedTuple):
    id: int
    secret_hash: str
    last_used_at: datetime | None
    org: Organization
    role: str


_ORG_FIELDS = tuple(Organization._meta.concrete_fields)


@cache
def _api_key_sql(vendor: str) -> str:
    q = _quote
    org_columns = ", ".join(f"o.{q(str(f.column))}" for f in _ORG_FIELDS)
    return (
        f"SELECT k.{q('id')}, k.{q('secret_hash')}, k.{q('last_used_at')}, k.{q('role')}, "
        f"{org_columns} "
        f"FROM {_table(ApiKey)} k "
        f"JOIN {_table(Organization)} o ON o.{q('id')} = k.{q('org_id')} "
        f"WHERE k.{q('prefix')} = %s AND k.{q('revoked_at')} IS NULL"
    )


def active_api_key(prefix: str, using: str = DEFAULT_DB_ALIAS) -> ApiKeyRow | None:
    """The unrevoked key with this public prefix and its organization, in one statement
    (every API request authenticates), or None; read from ``using``."""
    rows = _run_one(_api_key_sql(connections[using].vendor), [prefix], using)
    if not rows:
        return None
    row = rows[0]
    org = _org_from_row(row[4:])
    return ApiKeyRow(int(row[0]), row[1], _aware(row[2]), org, row[3])


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _org_decoder(field: Any) -> Callable[[Any], Any] | None:
    """How a column of the org read on the raw cursor becomes what the ORM would give:
    aware times, and JSON columns (the chosen alert recipients) parsed rather than text.
    None: the value is used as it comes (SQLite's driver already turns Django's ``bool``
    columns into booleans)."""
    if isinstance(field, DateTimeField):
        return _aware
    if isinstance(field, JSONField):
        return _json_value
    return None


# Worked out once: every API request decodes an org this way (authentication).
_ORG_DECODERS = tuple((f.attname, _org_decoder(f)) for f in _ORG_FIELDS)


def _org_from_row(values: Sequence[Any]) -> Organization:
    return loaded(
        Organization,
        {
            attname: value if decode is None else decode(value)
            for (attname, decode), value in zip(_ORG_DECODERS, values, strict=True)
        },
    )


def touch_api_key(key_id: int, last_used_at: datetime) -> None:
    """Record when the key was last used."""
    _run_one(
        f"UPDATE {_table(ApiKey)} SET last_used_at = %s WHERE id = %s",
        [_adapt(ApiKey, ("last_used_at",), (last_used_at,))[0], key_id],
    )


# --- invoices ---------------------------------------------------------------------------------


def advance_number_sequence(
    sequence: type[InvoiceSequence | CreditNoteSequence], year: int, count: int
) -> int:
    """Advance the year's counter of the series by ``count`` (creating it at 0 first);
    returns the last number reserved. The counter row stays locked until the transaction
    ends, so the numbers are gapless.

    One upsert instead of insert-if-missing, lock, read and update (three round trips).
    The conflicting row stays locked by the UPDATE until the issuing transaction ends, as
    with SELECT ... FOR UPDATE. PostgreSQL and SQLite (3.35+) accept the same statement."""
    table, year_col, last_col = _table(sequence), _quote("year"), _quote("last_number")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({year_col}, {last_col}) VALUES (%s, %s) "
            f"ON CONFLICT ({year_col}) DO UPDATE SET "
            f"{last_col} = {table}.{last_col} + excluded.{last_col} "
            f"RETURNING {last_col}",
            [year, count],
        )
        (last,) = cursor.fetchone()
    return int(last)


class OverageRow(NamedTuple):
    """An overage ledger entry not billed yet, with what its invoice line names."""

    entry_id: int
    org_id: int
    created_at: datetime
    overage_credits: int
    retail_unit_price_cents: int | None
    assignment_id: int | None
    credit_cost: int | None
    content_title: str | None
    employee_name: str | None


@cache
def _uninvoiced_overages_sql(vendor: str, org_filter: str) -> str:
    q = _quote
    return (
        f"SELECT e.{q('id')}, e.{q('org_id')}, e.{q('created_at')}, e.{q('overage_credits')}, "
        f"e.{q('retail_unit_price_cents')}, e.{q('assignment_id')}, a.{q('credit_cost')}, "
        f"c.{q('title')}, m.{q('name')} "
        f"FROM {_table(LedgerEntry)} e "
        f"LEFT JOIN {_table(Assignment)} a ON a.{q('id')} = e.{q('assignment_id')} "
        f"LEFT JOIN {_table(Content)} c ON c.{q('id')} = a.{q('content_id')} "
        f"LEFT JOIN {_table(Employee)} m ON m.{q('id')} = a.{q('employee_id')} "
        f"WHERE {org_filter} AND e.{q('overage_credits')} > 0 "
        f"AND e.{q('created_at')} >= %s AND e.{q('created_at')} < %s "
        f"AND NOT EXISTS (SELECT 1 FROM {_table(InvoiceLine)} l "
        f"WHERE l.{q('ledger_entry_id')} = e.{q('id')}) "
        f"ORDER BY e.{q('id')}"
    )


def uninvoiced_overages(org_ids: Sequence[int], start: datetime, end: datetime) -> list[OverageRow]:
    """The orgs' overage entries created in ``[start, end)`` that no invoice line bills
    yet, in id order, with their assignment's cost, content title and employee name: one
    statement for a whole batch of orgs."""
    if not org_ids:
        return []
    org_filter, params = _in_ids(f"e.{_quote('org_id')}", org_ids)
    params += _adapt(LedgerEntry, ("created_at", "created_at"), (start, end))
    with connection.cursor() as cursor:
        cursor.execute(_uninvoiced_overages_sql(connection.vendor, org_filter), params)
        rows = cursor.fetchall()
    return [
        OverageRow(
            int(entry_id),
            int(org_id),
            _aware_not_null(created_at),
            int(credits),
            price,
            assignment_id,
            cost,
            title,
            name,
        )
        for entry_id, org_id, created_at, credits, price, assignment_id, cost, title, name in rows
    ]


_INVOICE_PLAIN_COLUMNS = (
    "org_id",
    "number",
    "kind",
    "period",
    "currency",
    "total_cents",
    "tax_cents",
    "tax_treatment",
    "buyer_name",
    "buyer_email",
    "seller",
    "buyer",
    "purchase_id",
    "credits_invoice_id",
)
_INVOICE_COLUMNS = (*_INVOICE_PLAIN_COLUMNS, "issued_at", "due_at")


def insert_invoices(
    invoices: Sequence[Mapping[str, Any]], *, issued_at: datetime, due_at: datetime
) -> list[int]:
    """Invoices issued at one moment, in one INSERT; returns their ids in order. Each
    mapping gives every other column by field name (``org_id``, ``number``, ...); the two
    datetimes shared by the batch are converted once."""
    stamps = _adapt(Invoice, ("issued_at", "due_at"), (issued_at, due_at))
    return _insert(
        Invoice,
        _INVOICE_COLUMNS,
        [
            _adapt(Invoice, _INVOICE_PLAIN_COLUMNS, [v[k] for k in _INVOICE_PLAIN_COLUMNS]) + stamps
            for v in invoices
        ],
    )


class NewInvoiceLine(NamedTuple):
    org_id: int
    invoice_id: int
    position: int
    description: str
    quantity: int
    unit_price_cents: int
    amount_cents: int
    assignment_id: int | None
    ledger_entry_id: int | None


@cache
def _insert_invoice_lines_pg_sql(vendor: str) -> str:
    fields = [InvoiceLine._meta.get_field(name) for name in NewInvoiceLine._fields]
    columns = ", ".join(_quote(str(f.column)) for f in fields)  # type: ignore[union-attr]
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
    return f"INSERT INTO {_table(InvoiceLine)} ({columns}) SELECT * FROM unnest({arrays})"


def insert_invoice_lines(lines: Sequence[NewInvoiceLine]) -> None:
    """Invoice lines in as few INSERTs as the database's parameter limit allows (all in one
    on PostgreSQL)."""
    if not lines:
        return
    if connection.vendor == "postgresql":
        # One array a column: a VALUES list of thousands of placeholders is parsed in Python
        # by psycopg's client-side binding on every call (its cache skips long statements),
        # which cost more than the INSERT itself. Django's bulk_create does the same.
        with connection.cursor() as cursor:
            cursor.execute(
                _insert_invoice_lines_pg_sql(connection.vendor),
                [list(column) for column in zip(*lines, strict=True)],
            )
        return
    for chunk in _chunks(lines, _batch_rows(len(NewInvoiceLine._fields))):
        _insert_no_return(InvoiceLine, NewInvoiceLine._fields, chunk)
