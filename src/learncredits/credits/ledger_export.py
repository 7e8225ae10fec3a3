"""The ledger as a CSV export, one writer for the API's and the dashboard's download.

The JSON form of an entry is the API's schema (``LedgerEntryOut``), which this layer may not
import (credits depends on nothing above it); the API's tests hold the CSV's columns to that
schema's fields, in the same order, and each cell to the JSON value."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.db.models import F, QuerySet

from learncredits import ids
from learncredits.credits.models import LedgerEntry
from learncredits.ids import iso
from learncredits.tenancy.models import Organization

LEDGER_FIELDS = (
    "id",
    "type",
    "credits_delta",
    "assigned_delta",
    "overage_credits",
    "credits_after",
    "assigned_after",
    "assignment_id",
    "purchase_id",
    "department",
    "actor",
    "reason",
    "created_at",
)


def _csv_row(e: LedgerEntry) -> list[Any]:
    """The entry's cells, in ``LEDGER_FIELDS`` order (the csv module writes None as an
    empty cell)."""
    return [
        ids.encode("ledger", e.pk),
        e.type,
        e.credits_delta,
        e.assigned_delta,
        e.overage_credits,
        e.credits_after,
        e.assigned_after,
        ids.encode("assignment", e.assignment_id),
        ids.encode("purchase", e.purchase_id),
        getattr(e, "department", None),
        e.actor,
        e.reason,
        iso(e.created_at),
    ]


class _Echo:
    """A file for csv.writer that hands each written line back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def ledger_entries(org: Organization, department_id: int | None = None) -> QuerySet[LedgerEntry]:
    """The org's ledger entries, each with ``department``: the name of the department of the
    employee whose assignment the entry belongs to (None for purchases, adjustments and
    employees in no department). With ``department_id``, only that department's entries."""
    queryset = LedgerEntry.objects.filter(org=org).annotate(
        department=F("assignment__employee__department__name")
    )
    if department_id is not None:
        queryset = queryset.filter(assignment__employee__department_id=department_id)
    return queryset


def ledger_csv(org: Organization, department_id: int | None = None) -> Iterator[str]:
    """The org's whole ledger (or one department's part of it) as CSV lines, oldest first,
    read in chunks so that a streamed response of any length holds little in memory."""
    writer = csv.writer(_Echo())
    yield writer.writerow(LEDGER_FIELDS)
    entries = ledger_entries(org, department_id).order_by("pk").iterator(chunk_size=2000)
    for entry in entries:
        yield writer.writerow(_csv_row(entry))


def ledger_csv_filename(org: Organization, department_id: int | None = None) -> str:
    """The download's name, the same from the API and the dashboard."""
    if department_id is not None:
        return f"ledger-org_{org.pk}-dep_{department_id}.csv"
    return f"ledger-org_{org.pk}.csv"
