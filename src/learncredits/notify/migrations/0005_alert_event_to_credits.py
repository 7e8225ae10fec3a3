# Alert and Event now belong to credits (credits 0010); the deliveries point at credits.Event.
# State only: the tables and the foreign keys in the database are unchanged.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0010_alert_event_from_notify"),
        ("notify", "0004_webhook_secret_encrypted_field"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="emailmessage",
                    name="event",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        to="credits.event",
                    ),
                ),
                migrations.AlterField(
                    model_name="webhookdelivery",
                    name="event",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="credits.event",
                    ),
                ),
                migrations.DeleteModel(name="Alert"),
                migrations.DeleteModel(name="Event"),
            ],
        ),
    ]
