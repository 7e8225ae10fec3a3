"""The ledger as a CSV file: the API's ``format=csv`` and the dashboard's download are this
one writer, so the two files are the same file.

A row is the API's JSON ledger entry (its fields, in its order, with the same public ids and
times), so a row in the file reads exactly as the entry does in the JSON pages.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from learncredits.api.serializers import LEDGER_FIELDS, ledger_entry
from learncredits.credits.models import LedgerEntry
from learncredits.tenancy.models import Organization

# Rows read from the database at a time: the file streams, so a ledger of millions of
# entries is never held in memory.
_CHUNK = 2000


class _Echo:
    """A file that hands back what is written: ``csv.writer`` formats, the response streams."""

    def write(self, value: str) -> str:
        return value


def ledger_csv(org: Organization) -> Iterator[str]:
    """The org's whole ledger, oldest first, one CSV line at a time (header first)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(LEDGER_FIELDS)
    for entry in LedgerEntry.objects.filter(org=org).order_by("pk").iterator(chunk_size=_CHUNK):
        row = ledger_entry(entry)
        yield writer.writerow(["" if row[f] is None else row[f] for f in LEDGER_FIELDS])


def ledger_csv_filename(org: Organization) -> str:
    return f"ledger-org_{org.pk}.csv"
