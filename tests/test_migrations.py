"""The migrations match the models, and changing indexes kept the ledger append-only."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction

from learncredits.credits.models import LedgerEntry


@pytest.mark.django_db
def test_no_model_change_is_missing_a_migration() -> None:
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit:  # pragma: no cover - the failure being tested for
        pytest.fail(f"models and migrations differ:\n{out.getvalue()}")


@pytest.mark.django_db
def test_ledger_indexes_are_the_lean_ones_and_its_triggers_survive(org) -> None:
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, LedgerEntry._meta.db_table)
    names = {name for name, info in indexes.items() if info["index"] and not info["primary_key"]}
    assert {"ledger_org_id", "ledger_org_created", "ledger_purchase", "ledger_lot"} <= names
    single_org = [n for n, i in indexes.items() if i["index"] and i["columns"] == ["org_id"]]
    assert single_org == []  # covered by the composite indexes that start with org_id
    org.buy(5)
    with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
        LedgerEntry.objects.update(reason="rewritten")
