"""The database keeps the tax rules it can: a document's tax has its sign (a credit note's
is never positive, another document's never negative) and its treatment is a known one.

Adding CHECK constraints makes SQLite rebuild the invoice table, which drops its append-only
triggers; they are put back at the end.
"""

from django.db import migrations, models

from learncredits.db import append_only

TABLES = ["billing_invoice", "billing_invoiceline"]


_recreate_triggers = append_only.recreated(TABLES)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_tax"),
        ("credits", "0008_purchase_tax"),
        ("tenancy", "0005_organization_tax_profile"),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, _recreate_triggers),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("kind", "credit_note"), ("tax_cents__lte", 0)),
                    models.Q(
                        models.Q(("kind", "credit_note"), _negated=True), ("tax_cents__gte", 0)
                    ),
                    _connector="OR",
                ),
                name="invoice_tax_sign",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("tax_treatment__in", ["taxed", "exempt", "reverse_charge", "no_profile"])
                ),
                name="invoice_tax_treatment_known",
            ),
        ),
        migrations.RunPython(_recreate_triggers, migrations.RunPython.noop),
    ]
