"""The one lock every write to an org's credits or billing takes first: its balance row.

On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite every transaction is already
``BEGIN IMMEDIATE`` (one writer at a time), and FOR UPDATE is left out there (as Django
does). Taking this lock first, always, is what keeps the write paths free of deadlocks.
The statement itself is the store's (``db/store.py``: ``lock_balance``).
"""

from __future__ import annotations

from dataclasses import dataclass

from learncredits.credits.models import Balance
from learncredits.db import store


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


def locked_from(org_id: int, row: store.BalanceRow | None) -> LockedBalance:
    """The LockedBalance from the store's answer to ``lock_balance`` (or ``lock_balance_in``
    once its batch has run).

    Raises ``Balance.DoesNotExist`` for an org without a balance row, as ``.get()`` did."""
    if row is None:
        raise Balance.DoesNotExist(f"no balance row for org {org_id}")
    return LockedBalance(org_id, row.credits, row.assigned, row.at_risk)


def lock_balance(org_id: int) -> LockedBalance:
    """Lock the org's balance row for the rest of the transaction and read it.

    One prebuilt statement on the cursor: every action runs it, and on the hot path the
    ORM's per-query overhead was a large share of the time the lock is held.
    Raises ``Balance.DoesNotExist`` for an org without a balance row, as ``.get()`` did,
    and TransactionManagementError outside a transaction on PostgreSQL.
    """
    return locked_from(org_id, store.lock_balance(org_id))
