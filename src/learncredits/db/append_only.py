"""Triggers that make a table append-only: the database refuses UPDATE and DELETE of its rows.

Used by migrations for the ledger, lot draws, and issued invoices. PostgreSQL and SQLite get
their own trigger syntax. PostgreSQL's TRUNCATE is not a row event, so test teardown can
still empty the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def create(schema_editor: Any, tables: list[str]) -> None:
    vendor = schema_editor.connection.vendor
    for table in tables:
        if vendor == "postgresql":
            schema_editor.execute(
                f"""
                CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
                BEGIN
                    RAISE EXCEPTION '{table} is append-only: % refused', TG_OP
                        USING ERRCODE = 'integrity_constraint_violation';
                END;
                $$ LANGUAGE plpgsql;
                """,
                params=None,
            )
            schema_editor.execute(
                f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only();",
                params=None,
            )
        elif vendor == "sqlite":
            for op in ("UPDATE", "DELETE"):
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END;",
                    params=None,
                )


def drop(schema_editor: Any, tables: list[str]) -> None:
    vendor = schema_editor.connection.vendor
    for table in tables:
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table};")
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {table}_append_only();")
        elif vendor == "sqlite":
            for op in ("update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op};")


def recreated(tables: list[str]) -> Callable[[Any, Any], None]:
    """A migration step (for ``RunPython``) that puts the tables' triggers back: Django's
    SQLite editor rebuilds a table for many changes and silently drops its triggers, so a
    migration that changes an append-only table runs this after (and, reversed, before)."""

    def recreate(apps: Any, schema_editor: Any) -> None:
        drop(schema_editor, tables)
        create(schema_editor, tables)

    return recreate
