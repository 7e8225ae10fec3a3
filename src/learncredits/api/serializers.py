"""The ledger as CSV rows, for the API's download and the dashboard's: the columns and the
values are ``LedgerEntryOut``'s, so the CSV says exactly what the JSON says."""

from __future__ import annotations

from typing import Any

from learncredits.api.schemas import LedgerEntryOut
from learncredits.credits.models import LedgerEntry

LEDGER_FIELDS = tuple(LedgerEntryOut.model_fields)


def ledger_entry(entry: LedgerEntry) -> dict[str, Any]:
    return LedgerEntryOut.model_validate(entry).model_dump()
