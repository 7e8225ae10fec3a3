"""On PostgreSQL, every commit checks that each org's balance equals its newest ledger entry.

Why: the balance row is a cache of the ledger's running totals, written by the same
transaction as the entries (and by bulk paths that compute the after-values in Python).
``verify-ledger`` finds a divergence only when somebody runs it; this constraint trigger,
deferred to the commit (the pattern of django-hordak's double-entry check), refuses the
transaction that would create one, whichever code or hand-written statement wrote it.

It fires once per ledger entry inserted and once per balance row written, at commit, when
every row of the transaction is in place. A ledger entry that is not its org's newest in that
moment is skipped with one index probe, so a bulk assign of many entries pays one probe each
and one full comparison. An org without entries must have a zero balance.

SQLite has no deferred triggers; there the check stays offline (``verify-ledger``) and in the
tests' reference model.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION credits_balance_matches_ledger() RETURNS trigger AS $$
DECLARE
    balance_credits bigint;
    balance_assigned bigint;
    newest_credits bigint := 0;
    newest_assigned bigint := 0;
BEGIN
    IF TG_TABLE_NAME = 'credits_ledgerentry' THEN
        -- (nested: a balance row has no id field, and PL/pgSQL does not short-circuit)
        IF EXISTS (
            SELECT 1 FROM credits_ledgerentry WHERE org_id = NEW.org_id AND id > NEW.id
        ) THEN
            RETURN NULL;  -- a newer entry of this org is checked by its own event
        END IF;
    END IF;
    SELECT credits, assigned INTO balance_credits, balance_assigned
        FROM credits_balance WHERE org_id = NEW.org_id;
    IF NOT FOUND THEN
        RETURN NULL;  -- no balance row yet: nothing cached to disagree
    END IF;
    SELECT credits_after, assigned_after INTO newest_credits, newest_assigned
        FROM credits_ledgerentry WHERE org_id = NEW.org_id ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        newest_credits := 0;
        newest_assigned := 0;
    END IF;
    IF balance_credits <> newest_credits OR balance_assigned <> newest_assigned THEN
        RAISE EXCEPTION 'balance of org % (credits %, assigned %) differs from its newest '
            'ledger entry (credits_after %, assigned_after %)', NEW.org_id, balance_credits,
            balance_assigned, newest_credits, newest_assigned
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'balance_matches_ledger';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

TRIGGERS = """
CREATE CONSTRAINT TRIGGER balance_matches_ledger_on_entry
    AFTER INSERT ON credits_ledgerentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION credits_balance_matches_ledger();
CREATE CONSTRAINT TRIGGER balance_matches_ledger_on_balance
    AFTER INSERT OR UPDATE OF credits, assigned ON credits_balance
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION credits_balance_matches_ledger();
"""

DROP = """
DROP TRIGGER IF EXISTS balance_matches_ledger_on_entry ON credits_ledgerentry;
DROP TRIGGER IF EXISTS balance_matches_ledger_on_balance ON credits_balance;
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
    dependencies = [("credits", "0009_purchase_tax_check")]
    operations = [migrations.RunPython(create, drop)]
