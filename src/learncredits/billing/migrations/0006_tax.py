"""Tax: the seller's details, versioned tax rate tables, and each invoice's tax.

Adding columns with defaults makes SQLite rebuild the invoice table, which drops its
append-only triggers; they are put back at the end, and the new tax lines get their own.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

from learncredits.db import append_only

TABLES = ["billing_invoice", "billing_invoiceline"]


_recreate_triggers = append_only.recreated(TABLES)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0005_refunds_credit_notes"),
        ("tenancy", "0005_organization_tax_profile"),
    ]

    operations = [
        # Undone last when migrating back: the rebuilt tables get their triggers again.
        migrations.RunPython(migrations.RunPython.noop, _recreate_triggers),
        migrations.CreateModel(
            name="SellerDetails",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("legal_name", models.CharField(max_length=200)),
                ("address", models.TextField(max_length=1000)),
                ("country", models.CharField(max_length=2)),
                ("tax_id", models.CharField(blank=True, default="", max_length=40)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("updated_by", models.CharField(default="system", max_length=200)),
            ],
        ),
        migrations.CreateModel(
            name="TaxRateTable",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("created_by", models.CharField(max_length=200)),
            ],
        ),
        migrations.AddField(
            model_name="invoice",
            name="buyer",
            field=models.JSONField(default=dict),
        ),
        migrations.AddField(
            model_name="invoice",
            name="seller",
            field=models.JSONField(default=dict),
        ),
        migrations.AddField(
            model_name="invoice",
            name="tax_cents",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="invoice",
            name="tax_treatment",
            field=models.CharField(default="no_profile", max_length=16),
        ),
        migrations.CreateModel(
            name="InvoiceTaxLine",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("position", models.IntegerField()),
                ("name", models.CharField(max_length=60)),
                ("rate_bps", models.IntegerField()),
                ("country", models.CharField(max_length=2)),
                ("region", models.CharField(blank=True, default="", max_length=3)),
                ("taxable_cents", models.BigIntegerField()),
                ("amount_cents", models.BigIntegerField()),
                (
                    "invoice",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="tax_lines",
                        to="billing.invoice",
                    ),
                ),
                (
                    "org",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="tenancy.organization",
                    ),
                ),
            ],
            options={
                "ordering": ["position"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("invoice", "position"), name="tax_line_position_unique"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("rate_bps__gte", 0), ("rate_bps__lte", 10000)),
                        name="tax_line_rate_range",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="TaxRateEntry",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("country", models.CharField(max_length=2)),
                ("region", models.CharField(blank=True, default="", max_length=3)),
                ("name", models.CharField(max_length=60)),
                ("rate_bps", models.IntegerField()),
                ("effective_from", models.DateField()),
                (
                    "table",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="rates",
                        to="billing.taxratetable",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("table", "country", "region", "name", "effective_from"),
                        name="tax_rate_version_unique",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("rate_bps__gte", 0), ("rate_bps__lte", 10000)),
                        name="tax_rate_range",
                    ),
                ],
            },
        ),
        migrations.RunPython(_recreate_triggers, migrations.RunPython.noop),
        migrations.RunPython(
            lambda apps, editor: append_only.create(editor, ["billing_invoicetaxline"]),
            lambda apps, editor: append_only.drop(editor, ["billing_invoicetaxline"]),
        ),
    ]
