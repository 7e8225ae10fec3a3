"""On PostgreSQL, every commit checks that each org's balance equals its newest ledger entry.

Why: the balance row is a cache of the ledger's running totals, written by the same
transaction as the entries (and by bulk paths that compute the after-values in Python).
``verify-ledger`` finds a divergence only when somebody runs it; this constraint trigger,
deferred to the commit (the pattern of django-hordak's double-entry check), refuses the
transaction that would create one, whichever code or hand-written statement wrote it.

The check is a constraint trigger on the balance row, queued by every write of it and run
at commit, when every row of the transaction is in place. A statement that inserts ledger
entries queues it too, for each org it touched, by rewriting those balance rows unchanged
(a statement-level trigger: a bulk assign of 10,000 entries queues one check, not 10,000;
measured in bench/balance_check.py). An org without entries must have a zero balance.

SQLite has no deferred triggers; there the check stays offline (``verify-ledger``) and in the
tests' reference model.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION credits_balance_matches_ledger() RETURNS trigger AS $$
DECLARE
    newest_credits bigint := 0;
    newest_assigned bigint := 0;
BEGIN
    SELECT credits_after, assigned_after INTO newest_credits, newest_assigned
        FROM credits_ledgerentry WHERE org_id = NEW.org_id ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        newest_credits := 0;
        newest_assigned := 0;
    END IF;
    -- The row as it is at commit, not as this event saw it: later writes count.
    PERFORM 1 FROM credits_balance
        WHERE org_id = NEW.org_id AND credits = newest_credits AND assigned = newest_assigned;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'balance of org % differs from its newest ledger entry '
            '(credits_after %, assigned_after %)', NEW.org_id, newest_credits, newest_assigned
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'balance_matches_ledger';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION credits_ledger_entries_recheck_balance() RETURNS trigger AS $$
BEGIN
    UPDATE credits_balance SET credits = credits
        WHERE org_id IN (SELECT DISTINCT org_id FROM new_entries);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

TRIGGERS = """
CREATE CONSTRAINT TRIGGER balance_matches_ledger
    AFTER INSERT OR UPDATE OF credits, assigned ON credits_balance
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION credits_balance_matches_ledger();
CREATE TRIGGER ledger_entries_recheck_balance
    AFTER INSERT ON credits_ledgerentry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION credits_ledger_entries_recheck_balance();
"""

DROP = """
DROP TRIGGER IF EXISTS ledger_entries_recheck_balance ON credits_ledgerentry;
DROP TRIGGER IF EXISTS balance_matches_ledger ON credits_balance;
DROP FUNCTION IF EXISTS credits_ledger_entries_recheck_balance();
DROP FUNCTION IF EXISTS credits_balance_matches_ledger();
"""


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)
        schema_editor.execute(TRIGGERS, params=None)


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("credits", "0010_alert_event_from_notify")]
    operations = [migrations.RunPython(create, drop)]
