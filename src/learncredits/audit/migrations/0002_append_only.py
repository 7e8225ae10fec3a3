"""The audit trail can never be changed or deleted."""

from django.db import migrations

from learncredits.db import append_only

TABLES = ["audit_auditevent"]


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [
        migrations.RunPython(
            lambda apps, editor: append_only.create(editor, TABLES),
            lambda apps, editor: append_only.drop(editor, TABLES),
        )
    ]
