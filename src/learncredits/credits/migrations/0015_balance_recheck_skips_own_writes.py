"""A statement inserting ledger entries no longer rewrites a balance row that its own
transaction has already written, and finds the rows it does rewrite by their index.

Migration 0011 queues the commit-time balance check for every org a ledger insert touched by
rewriting that org's balance row unchanged. When the transaction has already written the row
(its current version has this transaction's id as ``xmin``), that write queued the check
already, and the check reads the rows as they are at commit, so the rewrite only added a row
version, its WAL and a second identical check. A start writes its balance row before its
ledger entry for this reason (store.update_balance_in).

The touched orgs are now looked up as ``org_id = ANY (ARRAY(...))``: an index scan
whatever the planner guesses of the transition table's size, where ``org_id IN (SELECT
...)`` may be planned as a hash join over a scan of every org's balance row (it is, for a
table of the transition's size without statistics).

Not skipped: a row written inside a savepoint (its ``xmin`` is the subtransaction's), which
is rewritten as before. One case is no longer covered: a transaction that writes the balance
row, runs its pending checks early (``SET CONSTRAINTS ... IMMEDIATE``), switches back to
deferred and then inserts ledger entries without writing the balance again. Nothing in the
service does that; ``verify-ledger`` still would find the result.
"""

from django.db import migrations

SKIPPING = """
CREATE OR REPLACE FUNCTION credits_ledger_entries_recheck_balance() RETURNS trigger AS $$
BEGIN
    UPDATE credits_balance SET credits = credits
        WHERE org_id = ANY (ARRAY(SELECT DISTINCT org_id FROM new_entries))
          AND NOT xmin = pg_current_xact_id()::xid;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

REWRITING = """
CREATE OR REPLACE FUNCTION credits_ledger_entries_recheck_balance() RETURNS trigger AS $$
BEGIN
    UPDATE credits_balance SET credits = credits
        WHERE org_id IN (SELECT DISTINCT org_id FROM new_entries);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""


def skip_own_writes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(SKIPPING, params=None)


def rewrite_always(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REWRITING, params=None)


class Migration(migrations.Migration):
    dependencies = [("credits", "0014_alert_numbers")]
    operations = [migrations.RunPython(skip_own_writes, rewrite_always)]
