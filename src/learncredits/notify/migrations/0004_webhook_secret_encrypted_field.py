"""The webhook secret's field now encrypts on write and decrypts on read (no column change)."""

from django.db import migrations

import learncredits.secrets_at_rest


class Migration(migrations.Migration):
    dependencies = [
        ("notify", "0003_encrypt_webhook_secrets"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhookendpoint",
            name="secret",
            field=learncredits.secrets_at_rest.EncryptedCharField(editable=False, max_length=255),
        ),
    ]
