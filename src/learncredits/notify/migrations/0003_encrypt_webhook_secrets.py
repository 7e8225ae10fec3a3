"""Encrypt the webhook secrets already stored in clear (and, going back, decrypt them).

In this migration's model state the column is still a plain CharField, so the rows are read
and written exactly as stored; 0004 then makes the field encrypt and decrypt by itself.
"""

from typing import Any

from django.db import migrations

from learncredits.secrets_at_rest import decrypt_text, encrypt_text


def _is_plain(value: str) -> bool:
    # Every secret starts with whsec_, and a Fernet token never does.
    return value.startswith("whsec_")


def encrypt_secrets(apps: Any, schema_editor: Any) -> None:
    endpoint_model = apps.get_model("notify", "WebhookEndpoint")
    for endpoint in endpoint_model.objects.only("pk", "secret").iterator():
        if _is_plain(endpoint.secret):
            endpoint.secret = encrypt_text(endpoint.secret)
            endpoint.save(update_fields=["secret"])


def decrypt_secrets(apps: Any, schema_editor: Any) -> None:
    endpoint_model = apps.get_model("notify", "WebhookEndpoint")
    for endpoint in endpoint_model.objects.only("pk", "secret").iterator():
        if not _is_plain(endpoint.secret):
            endpoint.secret = decrypt_text(endpoint.secret)
            endpoint.save(update_fields=["secret"])


class Migration(migrations.Migration):
    dependencies = [
        ("notify", "0002_widen_webhook_secret"),
    ]

    operations = [
        migrations.RunPython(encrypt_secrets, decrypt_secrets, elidable=False),
    ]
