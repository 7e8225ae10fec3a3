"""Volume pricing: tiers, quotes and the "buy N for less" suggestion (docs/product.md section 4).

A purchase of q credits is priced entirely at the unit price of the highest tier whose
min_quantity <= q. Because a bigger tier can make a bigger purchase cheaper in total
(95 x $9.00 = $855 > 100 x $8.50 = $850), a quote also names the smallest larger quantity
whose total is no higher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from learncredits.domain.errors import ValidationFailed

MAX_PURCHASE_QUANTITY = 1_000_000
MAX_UNIT_PRICE_CENTS = 100_000_000


@dataclass(frozen=True)
class Tier:
    min_quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class PriceBook:
    retail_unit_price_cents: int
    tiers: tuple[Tier, ...]
    currency: str = "USD"


@dataclass(frozen=True)
class Quote:
    quantity: int
    unit_price_cents: int
    total_cents: int
    retail_total_cents: int
    savings_cents: int
    currency: str
    better_quantity: int | None
    better_total_cents: int | None


DEFAULT_PRICE_BOOK = PriceBook(
    retail_unit_price_cents=1000,
    tiers=(
        Tier(1, 1000),
        Tier(50, 900),
        Tier(100, 850),
        Tier(250, 800),
        Tier(500, 750),
        Tier(1000, 700),
    ),
)


def validate_price_book(retail_unit_price_cents: int, tiers: Sequence[Tier]) -> list[str]:
    """Every problem with a proposed price book, all at once (empty when it is valid)."""
    problems: list[str] = []
    if not 1 <= retail_unit_price_cents <= MAX_UNIT_PRICE_CENTS:
        problems.append(f"retail_unit_price_cents must be between 1 and {MAX_UNIT_PRICE_CENTS}")
    if not tiers:
        problems.append("tiers must not be empty")
        return problems
    if tiers[0].min_quantity != 1:
        problems.append("the first tier must have min_quantity 1")
    for index, tier in enumerate(tiers):
        if tier.min_quantity < 1:
            problems.append(f"tiers[{index}].min_quantity must be at least 1")
        if tier.unit_price_cents < 1:
            problems.append(f"tiers[{index}].unit_price_cents must be at least 1")
        if tier.unit_price_cents > retail_unit_price_cents:
            problems.append(f"tiers[{index}].unit_price_cents must not exceed the retail price")
        if index:
            previous = tiers[index - 1]
            if tier.min_quantity <= previous.min_quantity:
                problems.append(f"tiers[{index}].min_quantity must be greater than the previous")
            if tier.unit_price_cents > previous.unit_price_cents:
                problems.append(f"tiers[{index}].unit_price_cents must not rise above the previous")
    return problems


def unit_price_for(book: PriceBook, quantity: int) -> Tier:
    """The tier that prices a purchase of ``quantity`` credits."""
    if quantity < 1:
        raise ValidationFailed("quantity must be at least 1")
    chosen = book.tiers[0]
    for tier in book.tiers:
        if tier.min_quantity <= quantity:
            chosen = tier
        else:
            break
    return chosen


def total_for(book: PriceBook, quantity: int) -> int:
    return quantity * unit_price_for(book, quantity).unit_price_cents


def better_quantity(book: PriceBook, quantity: int) -> int | None:
    """The smallest quantity above ``quantity`` whose total is no higher, if any.

    Within one tier the total rises with quantity, so only each higher tier's first
    quantity can undercut; the smallest qualifying one is the answer.
    """
    total = total_for(book, quantity)
    for tier in book.tiers:
        if tier.min_quantity > quantity and tier.min_quantity * tier.unit_price_cents <= total:
            return tier.min_quantity
    return None


def quote(book: PriceBook, quantity: int) -> Quote:
    if not 1 <= quantity <= MAX_PURCHASE_QUANTITY:
        raise ValidationFailed(f"quantity must be between 1 and {MAX_PURCHASE_QUANTITY}")
    tier = unit_price_for(book, quantity)
    total = quantity * tier.unit_price_cents
    retail = quantity * book.retail_unit_price_cents
    better = better_quantity(book, quantity)
    return Quote(
        quantity=quantity,
        unit_price_cents=tier.unit_price_cents,
        total_cents=total,
        retail_total_cents=retail,
        savings_cents=retail - total,
        currency=book.currency,
        better_quantity=better,
        better_total_cents=None if better is None else total_for(book, better),
    )
