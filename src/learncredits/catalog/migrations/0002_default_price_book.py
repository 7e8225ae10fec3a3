"""Seed the default price book of docs/product.md section 4 ($10.00 retail, six volume tiers)."""

from django.db import migrations

DEFAULT_TIERS = [(1, 1000), (50, 900), (100, 850), (250, 800), (500, 750), (1000, 700)]


def seed(apps, schema_editor):
    PriceBook = apps.get_model("catalog", "PriceBook")
    PriceTier = apps.get_model("catalog", "PriceTier")
    if PriceBook.objects.exists():
        return
    book = PriceBook.objects.create(retail_unit_price_cents=1000, created_by="migration")
    PriceTier.objects.bulk_create(
        PriceTier(book=book, min_quantity=q, unit_price_cents=p) for q, p in DEFAULT_TIERS
    )


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
