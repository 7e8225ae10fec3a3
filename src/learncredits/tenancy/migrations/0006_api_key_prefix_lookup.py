"""API key prefixes are unique across orgs through a lookup table of their own, and unique
with the org on the keys: a table distributed by ``org_id`` (Citus, docs/scaling.md) can only
enforce uniqueness that includes the distribution column, while authentication needs the
prefix unique across orgs. The existing keys' prefixes are copied into the lookup table
before the keys' own rule is relaxed, so no moment allows a duplicate."""

import django.db.models.deletion
from django.db import migrations, models


def _copy_prefixes(apps, editor):
    ApiKey = apps.get_model("tenancy", "ApiKey")
    ApiKeyPrefix = apps.get_model("tenancy", "ApiKeyPrefix")
    ApiKeyPrefix.objects.using(editor.connection.alias).bulk_create(
        [
            ApiKeyPrefix(prefix=prefix, org_id=org_id)
            for prefix, org_id in ApiKey.objects.using(editor.connection.alias).values_list(
                "prefix", "org_id"
            )
        ],
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tenancy", "0005_organization_tax_profile"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiKeyPrefix",
            fields=[
                ("prefix", models.CharField(max_length=16, primary_key=True, serialize=False)),
                (
                    "org",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="tenancy.organization",
                    ),
                ),
            ],
        ),
        migrations.RunPython(_copy_prefixes, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.UniqueConstraint(
                fields=("org", "prefix"), name="apikey_prefix_unique_per_org"
            ),
        ),
        migrations.AlterField(
            model_name="apikey",
            name="prefix",
            field=models.CharField(db_index=True, max_length=16),
        ),
    ]
