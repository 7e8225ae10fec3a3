"""Invoice numbers and billed ledger entries are unique per org rather than across all rows:
a table distributed by ``org_id`` (Citus, docs/scaling.md) can only enforce uniqueness that
includes the distribution column. Nothing else changes: an entry belongs to one org, and the
gapless sequences still hand every number out once.

Changing these fields makes SQLite rebuild both tables, which drops their append-only
triggers; they are put back at the end.
"""

import django.db.models.deletion
from django.db import migrations, models

from learncredits.db import append_only

TABLES = ["billing_invoice", "billing_invoiceline"]


_recreate_triggers = append_only.recreated(TABLES)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_invoice_tax_checks"),
        ("credits", "0011_balance_matches_ledger"),
        ("tenancy", "0005_organization_tax_profile"),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, _recreate_triggers),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.UniqueConstraint(
                fields=("org", "number"), name="invoice_number_unique"
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="number",
            field=models.CharField(max_length=32),
        ),
        migrations.AddConstraint(
            model_name="invoiceline",
            constraint=models.UniqueConstraint(
                fields=("org", "ledger_entry"), name="line_bills_entry_once"
            ),
        ),
        migrations.AlterField(
            model_name="invoiceline",
            name="ledger_entry",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="invoice_line",
                to="credits.ledgerentry",
            ),
        ),
        migrations.RunPython(_recreate_triggers, migrations.RunPython.noop),
    ]
