"""Prebuilt SQL for the hot write paths, run on the cursor instead of through model methods.

Why: the start of an assignment holds the org's balance row lock for every statement it
runs after taking it, and with the ORM most of that time was Python building the same
statements again (queryset cloning, compiling, model instances), not the database. Here each
statement's text is built once per database vendor from the models' own table and column
names, and the values go through the model fields' own ``get_db_prep_save`` (so JSON,
datetimes and booleans are stored exactly as the ORM stores them, on SQLite and on
PostgreSQL). The statements are plain SQL that both databases accept (``RETURNING`` needs
SQLite 3.35, which Django 5.2's supported versions may predate, so it is checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Field, Model
from django.db.models.base import ModelState
from django.utils.dateparse import parse_datetime

from learncredits.domain.errors import InvalidState

M = TypeVar("M", bound=Model)


@cache
def _attnames(model: type[Model]) -> frozenset[str]:
    return frozenset(f.attname for f in model._meta.concrete_fields)


def loaded(model: type[M], values: dict[str, Any]) -> M:
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


def quote(name: str) -> str:
    """A table or column name, quoted for the current database."""
    return str(connection.ops.quote_name(name))


@cache
def _fields(model: type[Model], names: tuple[str, ...]) -> tuple[Field[Any, Any], ...]:
    return tuple(model._meta.get_field(name) for name in names)  # type: ignore[misc]


@lru_cache(maxsize=64)
def insert_sql(
    vendor: str, model: type[Model], names: tuple[str, ...], rows: int, returning: bool
) -> str:
    """``INSERT INTO table (columns) VALUES (...), ...`` for ``rows`` rows, optionally
    ``RETURNING`` the primary key. Cached per vendor, model, columns and row count
    (bounded: a bulk's last batch may have any row count)."""
    fields = _fields(model, names)
    columns = ", ".join(quote(str(f.column)) for f in fields)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([one] * rows)}"
    if returning:
        pk = model._meta.pk
        assert pk is not None
        sql += f" RETURNING {quote(str(pk.column))}"
    return sql


def adapt(model: type[Model], names: Sequence[str], values: Sequence[Any]) -> list[Any]:
    """The values as the database wants them, converted by each model field like the ORM."""
    fields = _fields(model, tuple(names))
    return [f.get_db_prep_save(v, connection) for f, v in zip(fields, values, strict=True)]


def insert(model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
    """Insert rows of already adapted values in one statement; returns their primary keys in
    the order given (both databases return ``RETURNING`` rows of a multi-row VALUES in order,
    which Django's own bulk_create relies on too)."""
    if not rows:
        return []
    sql = insert_sql(connection.vendor, model, tuple(names), len(rows), True)
    params = [value for row in rows for value in row]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def insert_no_return(
    model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows of already adapted values in one statement, reading nothing back."""
    if not rows:
        return
    sql = insert_sql(connection.vendor, model, tuple(names), len(rows), False)
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])


def in_ids(column: str, values: Sequence[int]) -> tuple[str, list[Any]]:
    """``column IN (...)`` for many ids: one array parameter on PostgreSQL (binding 10,000
    separate parameters client-side is slow there), the plain list elsewhere."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def insert_many_sqlite(
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
    statement = insert_sql(connection.vendor, model, tuple(names), 1, False)
    with connection.cursor() as cursor:
        cursor.executemany(statement, rows)
        if not returning:
            return []
        cursor.execute("SELECT last_insert_rowid()")
        (last,) = cursor.fetchone()
    return list(range(int(last) - len(rows) + 1, int(last) + 1))


def batch_rows(columns: int) -> int:
    """How many rows of ``columns`` values one statement may carry on this database."""
    limit = connection.features.max_query_params or 65535
    return max(1, min(1000, limit // columns))


def aware(value: Any) -> datetime | None:
    """A datetime column read on the raw cursor, as the ORM would return it (aware, UTC).

    PostgreSQL already returns aware datetimes; SQLite returns naive ones (or text when the
    column's declared type is lost, as in a derived table)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def run_one(
    statement: str, params: Sequence[Any], using: str = DEFAULT_DB_ALIAS
) -> tuple[int, list[tuple[Any, ...]]]:
    """One prebuilt statement; returns its row count and rows (empty for a write).
    ``using`` names another database (the replica, for a read routed there).

    On PostgreSQL it runs on a server-binding cursor, so psycopg prepares it once it has
    run a few times on the connection (see ``Batch``); elsewhere on Django's cursor."""
    db = connections[using]
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            raw = psycopg.Cursor(cursor.cursor.connection)
            with db.wrap_database_errors:
                raw.execute(statement, params)
            rows = raw.fetchall() if raw.description is not None else []
            return raw.rowcount, rows
        cursor.execute(statement, params)
        rows = cursor.fetchall() if cursor.description is not None else []
        return cursor.rowcount, rows


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

    A statement added with ``fetch=True`` keeps its rows (``rows(index)`` after ``run``);
    no statement may depend on rows read by an earlier one of the same batch.
    """

    def __init__(self) -> None:
        self.statements: list[tuple[str, Sequence[Any]]] = []
        self.expected: dict[int, int] = {}
        self.fetch: set[int] = set()
        self.fetched: dict[int, list[tuple[Any, ...]]] = {}

    def add(
        self,
        statement: str,
        params: Sequence[Any],
        *,
        expect_rows: int | None = None,
        fetch: bool = False,
    ) -> int:
        """Queue a statement; returns its index. With ``expect_rows``, ``run`` raises
        InvalidState unless it changes exactly that many rows (the transaction then rolls
        back); with ``fetch``, its rows are kept for ``rows``."""
        index = len(self.statements)
        if expect_rows is not None:
            self.expected[index] = expect_rows
        if fetch:
            self.fetch.add(index)
        self.statements.append((statement, params))
        return index

    def rows(self, index: int) -> list[tuple[Any, ...]]:
        """The rows of a statement added with ``fetch=True``, after ``run``."""
        return self.fetched[index]

    def run(self) -> list[int]:
        """Run every statement in order; returns their row counts."""
        counts: list[int] = []
        self.fetched = {}
        if not self.statements:
            return counts
        # Django's cursor first: it opens (or health-checks) the connection and maps
        # driver errors to django.db's, as for every other query.
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                conn = cursor.cursor.connection
                cursors = []
                with connection.wrap_database_errors, conn.pipeline():
                    for statement, params in self.statements:
                        raw = psycopg.Cursor(conn)
                        raw.execute(statement, params)
                        cursors.append(raw)
                counts = [raw.rowcount for raw in cursors]
                self.fetched = {i: cursors[i].fetchall() for i in self.fetch}
            else:
                for index, (statement, params) in enumerate(self.statements):
                    cursor.execute(statement, params)
                    counts.append(cursor.rowcount)
                    if index in self.fetch:
                        self.fetched[index] = cursor.fetchall()
        expected, self.statements, self.expected, self.fetch = self.expected, [], {}, set()
        for index, rows in expected.items():
            if counts[index] != rows:  # pragma: no cover - the balance lock prevents it
                raise InvalidState("a row changed concurrently")
        return counts
