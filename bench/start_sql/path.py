"""The SQL path of the start experiment (docs/decisions/0008): ``start_via_sql`` starts an
assignment with one call of ``learncredits_start`` (start.sql beside this file) and answers
as ``credits.actions.start_assignment`` does: the same Assignment, the same domain errors
for the same refusals.

Called outside a transaction (the service's requests run in autocommit), the call is one
round trip and its own transaction: the function locks, decides, writes and the statement
commits as it returns. Called inside one (a test's), it runs in a savepoint, so that a
failure rolls back what it did and nothing else, as ``start_assignment``'s atomic block
does.

Not wired into the service: this is an experiment for the lead to decide on.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from learncredits.credits import alerts
from learncredits.credits.models import Assignment, Balance
from learncredits.db import store
from learncredits.domain.balance import Counters
from learncredits.domain.errors import InvalidState, NotFound
from learncredits.domain.lifecycle import Action, decide
from learncredits.tenancy.models import Organization

SQL_FILE = Path(__file__).resolve().with_name("start.sql")
# Typed parameters: the prepared statement's types do not depend on the values' sizes.
CALL = "SELECT * FROM learncredits_start(%s::bigint, %s::bigint, %s::text, %s::timestamptz)"
# The function's SQLSTATE for lots that hold less than the balance says (a bug).
LOTS_DISAGREE = "LC001"


def install(cursor: Any = None) -> None:
    """Create (or replace) ``learncredits_start`` in the current database."""
    text = SQL_FILE.read_text()
    if cursor is not None:
        cursor.execute(text)
        return
    with connection.cursor() as own:
        own.execute(text)


def uninstall() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP FUNCTION IF EXISTS learncredits_start(bigint, bigint, text, timestamptz)"
        )


def _run_prepared(statement: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The call on a server-binding cursor, so psycopg prepares it after a few runs on the
    connection, as the service's own hot statements are (db/store.py). The experiment's
    statement stays beside it here: it is not one of the application's."""
    with connection.cursor() as cursor:
        raw = psycopg.Cursor(cursor.cursor.connection)
        with connection.wrap_database_errors:
            raw.execute(statement, params)
        return raw.fetchall()


def _call(params: list[Any]) -> tuple[Any, ...]:
    try:
        rows = _run_prepared(CALL, params)
    except DatabaseError as exc:
        cause = exc.__cause__
        if isinstance(cause, psycopg.Error) and cause.sqlstate == LOTS_DISAGREE:
            # domain/lots.draw_fifo raises ValueError for the same disagreement.
            raise ValueError(cause.diag.message_primary or str(cause)) from None
        raise
    (row,) = rows
    return tuple(row)


def start_via_sql(
    org_id: int, assignment_id: int, actor: str, *, now: datetime | None = None
) -> Assignment:
    """Start the assignment in one round trip; answers like ``start_assignment``.

    Raises ``Balance.DoesNotExist`` for an org without a balance row, ``NotFound`` for an
    unknown assignment (or another org's), ``InvalidState`` for a cancelled one; a second
    start returns the assignment unchanged (starting twice charges once)."""
    params = [org_id, assignment_id, actor, now or timezone.now()]
    if connection.in_atomic_block:
        with transaction.atomic():
            row = _call(params)
    else:
        row = _call(params)
    outcome = row[0]
    if outcome == "no_balance":
        raise Balance.DoesNotExist(f"no balance row for org {org_id}")
    if outcome == "not_found":
        raise NotFound("assignment not found")
    assignment = store.loaded(
        Assignment,
        {
            "id": row[1],
            "org_id": org_id,
            "employee_id": row[2],
            "content_id": row[3],
            "status": row[4],
            "credit_cost": row[5],
            "charged_credits": row[6],
            "overage_credits": row[7],
            "created_at": row[8],
            "started_at": row[9],
            "completed_at": row[10],
            "cancelled_at": row[11],
        },
    )
    if outcome == "refused":
        # The lifecycle table's own refusal (and message) for this status.
        decide(assignment.status, Action.START)
        raise InvalidState(f"cannot start an assignment that is {assignment.status}")
    if outcome == "started":
        before, after, below = row[12], row[13], row[14]
        if below is not None and after is not None:
            # The auto top-up rule, as _write_balance applies it (never met by a start:
            # available does not fall). Only its two fields are read.
            org = Organization(pk=org_id, auto_top_up_below=below)
            after_counters = Counters(credits=after, assigned=0)  # its .available is read
            alerts.auto_top_up_check(org, before, after_counters)
    return assignment
