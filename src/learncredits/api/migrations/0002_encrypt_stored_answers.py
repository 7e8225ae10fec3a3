"""Encrypt the idempotency answers already stored in clear (and, going back, decrypt them):
an answer may show a new API key or webhook secret. Their request fingerprints stay bare
SHA-256 until they expire; the middleware still matches those."""

from typing import Any

from django.db import migrations

from learncredits.secrets_at_rest import decrypt, encrypt

BATCH = 500


def _rewrite(apps: Any, change: Any) -> None:
    record_model = apps.get_model("api", "IdempotencyRecord")
    batch = []
    for record in record_model.objects.only("pk", "body").iterator(chunk_size=BATCH):
        record.body = change(bytes(record.body))
        batch.append(record)
        if len(batch) == BATCH:
            record_model.objects.bulk_update(batch, ["body"])
            batch = []
    if batch:
        record_model.objects.bulk_update(batch, ["body"])


def encrypt_answers(apps: Any, schema_editor: Any) -> None:
    _rewrite(apps, encrypt)


def decrypt_answers(apps: Any, schema_editor: Any) -> None:
    _rewrite(apps, decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(encrypt_answers, decrypt_answers, elidable=False),
    ]
