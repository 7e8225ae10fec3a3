"""The database itself refuses any UPDATE or DELETE of a ledger entry or a lot draw.

Corrections are new entries (see learncredits/db/append_only.py for the triggers).
"""

from django.db import migrations

from learncredits.db import append_only

TABLES = ["credits_ledgerentry", "credits_lotdraw"]


class Migration(migrations.Migration):
    dependencies = [("credits", "0001_initial")]
    operations = [
        migrations.RunPython(
            lambda apps, editor: append_only.create(editor, TABLES),
            lambda apps, editor: append_only.drop(editor, TABLES),
        )
    ]
