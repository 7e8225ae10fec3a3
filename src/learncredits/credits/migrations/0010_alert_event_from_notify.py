# Alert and Event move from the notify app to credits, which writes them. State only: the
# tables (notify_alert, notify_event), their indexes and constraints stay as they are.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0009_purchase_tax_check"),
        ("notify", "0004_webhook_secret_encrypted_field"),
        ("tenancy", "0005_organization_tax_profile"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Alert",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "kind",
                            models.CharField(
                                choices=[("at_risk", "At Risk"), ("overage", "Overage")],
                                max_length=16,
                            ),
                        ),
                        ("period", models.CharField(blank=True, default="", max_length=7)),
                        ("active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("resolved_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "org",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="alerts",
                                to="tenancy.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "notify_alert",
                        "indexes": [models.Index(fields=["org", "-id"], name="alert_org_id")],
                        "constraints": [
                            models.UniqueConstraint(
                                condition=models.Q(("active", True), ("kind", "at_risk")),
                                fields=("org",),
                                name="alert_one_active_at_risk",
                            ),
                            models.UniqueConstraint(
                                condition=models.Q(("kind", "overage")),
                                fields=("org", "period"),
                                name="alert_one_overage_per_period",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="Event",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("type", models.CharField(max_length=64)),
                        ("data", models.JSONField()),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("dispatched_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "org",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="events",
                                to="tenancy.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "notify_event",
                        "indexes": [
                            models.Index(
                                condition=models.Q(("dispatched_at__isnull", True)),
                                fields=["id"],
                                name="event_undispatched",
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
