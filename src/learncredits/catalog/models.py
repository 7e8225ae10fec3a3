"""The marketplace catalog and the price book, both owned by the operator (not by an org)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Content(models.Model):
    title = models.CharField(max_length=300)
    premium = models.BooleanField()
    # Credits an assignment of this item reserves; fixed on the assignment at assign time.
    credit_cost = models.IntegerField()
    xapi_activity_id = models.CharField(max_length=2000, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "content item"
        verbose_name_plural = "content items"
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(premium=True, credit_cost__gte=1))
                | models.Q(premium=False, credit_cost=0),
                name="content_premium_cost_consistent",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class PriceBook(models.Model):
    """One version of the price book. PUT /pricing appends a version; the newest is in force.

    Versions are never edited, so the price that applied at any moment stays known.
    """

    retail_unit_price_cents = models.IntegerField()
    currency = models.CharField(max_length=3, default="USD")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, default="system")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(retail_unit_price_cents__gte=1), name="pricebook_retail_positive"
            ),
        ]


class PriceTier(models.Model):
    book = models.ForeignKey(PriceBook, on_delete=models.PROTECT, related_name="tiers")
    min_quantity = models.IntegerField()
    unit_price_cents = models.IntegerField()

    class Meta:
        ordering = ["min_quantity"]
        constraints = [
            models.UniqueConstraint(fields=["book", "min_quantity"], name="tier_unique_min_qty"),
            models.CheckConstraint(
                condition=models.Q(min_quantity__gte=1, unit_price_cents__gte=1),
                name="tier_positive",
            ),
        ]
