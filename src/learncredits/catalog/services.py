"""Catalog and price book writes (operator only) and the price book in force."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError, transaction

from learncredits.audit import trail as audit
from learncredits.catalog.models import Content, PriceBook, PriceTier
from learncredits.domain import pricing
from learncredits.domain.errors import NotFound, ValidationFailed


def current_price_book() -> pricing.PriceBook:
    """The newest price book version, as a pure value; the default before any PUT /pricing."""
    book = PriceBook.objects.order_by("-id").first()
    if book is None:
        return pricing.DEFAULT_PRICE_BOOK
    tiers = tuple(
        pricing.Tier(t.min_quantity, t.unit_price_cents)
        for t in PriceTier.objects.filter(book=book).order_by("min_quantity")
    )
    return pricing.PriceBook(book.retail_unit_price_cents, tiers, book.currency)


def set_price_book(
    retail_unit_price_cents: int, tiers: Sequence[pricing.Tier], *, actor: str
) -> pricing.PriceBook:
    """Append a new price book version after checking every rule at once."""
    problems = pricing.validate_price_book(retail_unit_price_cents, tiers)
    if problems:
        raise ValidationFailed("; ".join(problems), errors=problems)
    with transaction.atomic():
        book = PriceBook.objects.create(
            retail_unit_price_cents=retail_unit_price_cents, created_by=actor
        )
        PriceTier.objects.bulk_create(
            PriceTier(book=book, min_quantity=t.min_quantity, unit_price_cents=t.unit_price_cents)
            for t in tiers
        )
        audit.record(
            actor,
            "pricing.set",
            target=f"pricebook_{book.pk}",
            retail_unit_price_cents=retail_unit_price_cents,
            tiers=[[t.min_quantity, t.unit_price_cents] for t in tiers],
        )
    return current_price_book()


def clean_content(
    *, title: str, premium: bool, credit_cost: int, xapi_activity_id: str | None
) -> dict[str, object]:
    """A catalog item's fields as stored, or the refusal; the one rule for creating and
    editing an item, wherever it is done (the API, the console's form and its save)."""
    title = title.strip()
    if not title:
        raise ValidationFailed("title must not be empty")
    if premium and credit_cost < 1:
        raise ValidationFailed("a premium item costs at least 1 credit")
    if not premium and credit_cost != 0:
        raise ValidationFailed("a free item costs 0 credits")
    return {
        "title": title,
        "premium": premium,
        "credit_cost": credit_cost,
        "xapi_activity_id": xapi_activity_id or None,
    }


def create_content(
    *,
    title: str,
    premium: bool,
    credit_cost: int,
    xapi_activity_id: str | None,
    actor: str = "system",
) -> Content:
    values = clean_content(
        title=title, premium=premium, credit_cost=credit_cost, xapi_activity_id=xapi_activity_id
    )
    try:
        with transaction.atomic():
            item = Content.objects.create(**values)
            audit.record(
                actor,
                "content.create",
                target=f"cnt_{item.pk}",
                title=item.title,
                credit_cost=item.credit_cost,
            )
            return item
    except IntegrityError as exc:
        raise ValidationFailed("xapi_activity_id is already used by another item") from exc


def update_content(
    content_id: int,
    *,
    title: str,
    premium: bool,
    credit_cost: int,
    xapi_activity_id: str | None,
    actor: str,
) -> Content:
    """Edit a catalog item, audited with what it was. Existing reservations keep the cost
    they were made at (it is copied onto each assignment), so no assignment is repriced."""
    values = clean_content(
        title=title, premium=premium, credit_cost=credit_cost, xapi_activity_id=xapi_activity_id
    )
    try:
        with transaction.atomic():
            item = Content.objects.select_for_update().filter(pk=content_id).first()
            if item is None:
                raise NotFound("content not found")
            before = {field: getattr(item, field) for field in values}
            for field, value in values.items():
                setattr(item, field, value)
            item.save(update_fields=list(values))
            audit.record(
                actor, "content.update", target=f"cnt_{item.pk}", before=before, after=values
            )
            return item
    except IntegrityError as exc:
        raise ValidationFailed("xapi_activity_id is already used by another item") from exc
