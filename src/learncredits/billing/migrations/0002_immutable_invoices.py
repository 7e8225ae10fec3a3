"""Issued invoices, their lines and payment attempts can never be changed or deleted."""

from django.db import migrations

from learncredits.db import append_only

TABLES = ["billing_invoice", "billing_invoiceline", "billing_invoicepayment"]


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [
        migrations.RunPython(
            lambda apps, editor: append_only.create(editor, TABLES),
            lambda apps, editor: append_only.drop(editor, TABLES),
        )
    ]
