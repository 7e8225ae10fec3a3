"""Make room for the encrypted webhook secret: a Fernet token of a 50-character ``whsec_``
secret is 164 characters. 0003 encrypts the rows, 0004 switches the field to the encrypting
type; three steps so that 0003 reads and writes the column as plain text, and so that on
PostgreSQL row updates never share a transaction with an ALTER TABLE of the same table."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notify", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhookendpoint",
            name="secret",
            field=models.CharField(max_length=255),
        ),
    ]
