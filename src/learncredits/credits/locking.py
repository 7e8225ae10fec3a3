"""The one lock every write to an org's credits or billing takes first: its balance row.

On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite every transaction is already
``BEGIN IMMEDIATE`` (one writer at a time), and Django omits FOR UPDATE there. Taking this
lock first, always, is what keeps the write paths free of deadlocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from learncredits.credits.models import Balance


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


def lock_balance(org_id: int) -> LockedBalance:
    """Lock the org's balance row for the rest of the transaction and read it."""
    row = (
        Balance.objects.select_for_update()
        .values_list("credits", "assigned", "at_risk")
        .get(org_id=org_id)
    )
    return LockedBalance(org_id, row[0], row[1], row[2])
