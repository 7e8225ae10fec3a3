"""The one lock every write to an org's credits or billing takes first: its balance row.

On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite every transaction is already
``BEGIN IMMEDIATE`` (one writer at a time), and FOR UPDATE is left out there (as Django
does). Taking this lock first, always, is what keeps the write paths free of deadlocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.db import connection
from django.db.transaction import TransactionManagementError

from learncredits.credits.models import Balance
from learncredits.db import sql
from learncredits.db.sql import quote


@dataclass
class LockedBalance:
    """The org's balance as read under its lock, advanced as ledger entries are appended."""

    org_id: int
    credits: int
    assigned: int
    at_risk: bool
    entries: int = 0
    available_before: int = 0

    def __post_init__(self) -> None:
        self.available_before = self.credits - self.assigned


@cache
def _lock_sql(vendor: str, for_update: bool) -> str:
    table = quote(Balance._meta.db_table)
    sql = f"SELECT credits, assigned, at_risk FROM {table} WHERE org_id = %s"
    return sql + " FOR UPDATE" if for_update else sql


def lock_statement(org_id: int) -> tuple[str, list[int]]:
    """The statement that locks the org's balance row and reads it, for a caller that sends
    it together with the reads that must follow it (``sql.Batch``); ``locked_from`` turns
    its rows into the LockedBalance. ``lock_balance`` is the usual way."""
    for_update = bool(connection.features.has_select_for_update)
    if for_update and connection.get_autocommit():
        # As the ORM's select_for_update(): a lock outside a transaction would be released
        # at once, which is always a bug in the caller.
        raise TransactionManagementError("lock_balance cannot be used outside a transaction")
    return _lock_sql(connection.vendor, for_update), [org_id]


def locked_from(org_id: int, rows: list[tuple[object, ...]]) -> LockedBalance:
    """The LockedBalance from the rows of ``lock_statement``.

    Raises ``Balance.DoesNotExist`` for an org without a balance row, as ``.get()`` did."""
    if not rows:
        raise Balance.DoesNotExist(f"no balance row for org {org_id}")
    credits, assigned, at_risk = rows[0]
    return LockedBalance(org_id, int(credits), int(assigned), bool(at_risk))  # type: ignore[call-overload]


def lock_balance(org_id: int) -> LockedBalance:
    """Lock the org's balance row for the rest of the transaction and read it.

    One prebuilt statement on the cursor: every action runs it, and on the hot path the
    ORM's per-query overhead was a large share of the time the lock is held.
    Raises ``Balance.DoesNotExist`` for an org without a balance row, as ``.get()`` did.
    """
    _, rows = sql.run_one(*lock_statement(org_id))
    return locked_from(org_id, rows)
