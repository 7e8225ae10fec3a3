"""Refunds and credit notes: the credit note kind and its number series, the pending refund
row, and the test provider's refunds.

Changing the invoice's CHECK constraints makes SQLite rebuild the invoice table, which drops
its append-only triggers; they are put back at the end (on both databases, for symmetry).
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

from learncredits.db import append_only

TABLES = ["billing_invoice", "billing_invoiceline"]


_recreate_triggers = append_only.recreated(TABLES)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_payment_intents"),
        ("credits", "0007_ledger_refund"),
        ("tenancy", "0003_signinthrottle"),
    ]

    operations = [
        # Undone last when migrating back: the rebuilt tables get their triggers again.
        migrations.RunPython(migrations.RunPython.noop, _recreate_triggers),
        migrations.CreateModel(
            name="CreditNoteSequence",
            fields=[
                ("year", models.IntegerField(primary_key=True, serialize=False)),
                ("last_number", models.IntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="Refund",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("credits", models.BigIntegerField(default=0)),
                ("amount_cents", models.BigIntegerField()),
                ("currency", models.CharField(default="USD", max_length=3)),
                ("payment_reference", models.CharField(max_length=200)),
                ("provider", models.CharField(max_length=32)),
                ("provider_reference", models.CharField(blank=True, default="", max_length=200)),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "Pending"), ("done", "Done")],
                        default="pending",
                        max_length=16,
                    ),
                ),
                ("reason", models.TextField()),
                ("actor", models.CharField(max_length=200)),
                ("idempotency_key", models.CharField(blank=True, max_length=255, null=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("done_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="TestRefund",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("intent_id", models.CharField(max_length=100)),
                ("amount_cents", models.BigIntegerField()),
                ("reference", models.CharField(max_length=100, unique=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.RemoveConstraint(
            model_name="invoice",
            name="invoice_total_nonneg",
        ),
        migrations.RemoveConstraint(
            model_name="invoice",
            name="invoice_kind_matches_purchase",
        ),
        migrations.AddField(
            model_name="invoice",
            name="credits_invoice",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_notes",
                to="billing.invoice",
            ),
        ),
        migrations.AddField(
            model_name="invoiceline",
            name="credits_line",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credited_by",
                to="billing.invoiceline",
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="kind",
            field=models.CharField(
                choices=[
                    ("purchase", "Purchase"),
                    ("monthly", "Monthly"),
                    ("credit_note", "Credit Note"),
                ],
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("kind", "credit_note"), ("total_cents__lte", 0)),
                    models.Q(
                        models.Q(("kind", "credit_note"), _negated=True), ("total_cents__gte", 0)
                    ),
                    _connector="OR",
                ),
                name="invoice_total_sign",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("credits_invoice__isnull", True),
                        ("kind", "purchase"),
                        ("purchase__isnull", False),
                    ),
                    models.Q(
                        ("credits_invoice__isnull", True),
                        ("kind", "monthly"),
                        ("purchase__isnull", True),
                    ),
                    models.Q(
                        ("credits_invoice__isnull", False),
                        ("kind", "credit_note"),
                        ("purchase__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="invoice_kind_matches_links",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoiceline",
            constraint=models.UniqueConstraint(
                condition=models.Q(("assignment__isnull", False), ("credits_line__isnull", False)),
                fields=("credits_line",),
                name="line_credited_once",
            ),
        ),
        migrations.AddField(
            model_name="refund",
            name="credit_note",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="refund",
                to="billing.invoice",
            ),
        ),
        migrations.AddField(
            model_name="refund",
            name="org",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="tenancy.organization",
            ),
        ),
        migrations.AddField(
            model_name="refund",
            name="purchase",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="refunds",
                to="credits.purchase",
            ),
        ),
        migrations.AddConstraint(
            model_name="refund",
            constraint=models.UniqueConstraint(
                fields=("org", "idempotency_key"), name="refund_idempotency_key_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="refund",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount_cents__gte", 0), ("credits__gte", 0)),
                name="refund_amounts_nonneg",
            ),
        ),
        migrations.RunPython(_recreate_triggers, migrations.RunPython.noop),
    ]
