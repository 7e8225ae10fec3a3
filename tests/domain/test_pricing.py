"""Volume pricing as pure rules (docs/product.md section 4): tiers, quotes, the "buy N for less"
suggestion and the price book's validity rules. No database."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learncredits.domain.errors import ValidationFailed
from learncredits.domain.pricing import (
    DEFAULT_PRICE_BOOK,
    MAX_PURCHASE_QUANTITY,
    MAX_UNIT_PRICE_CENTS,
    PriceBook,
    Tier,
    better_quantity,
    quote,
    total_for,
    unit_price_for,
    validate_price_book,
)

BOOK = DEFAULT_PRICE_BOOK


def brute_better(book: PriceBook, quantity: int) -> int | None:
    """The smallest q' > quantity with total(q') <= total(quantity), by looking at every q'.

    Past the last tier's first quantity the unit price no longer changes, so totals only
    rise there: searching up to max(quantity, last tier) + a margin sees every candidate.
    """
    total = total_for(book, quantity)
    limit = max(quantity, book.tiers[-1].min_quantity) + 25
    for candidate in range(quantity + 1, limit + 1):
        if total_for(book, candidate) <= total:
            return candidate
    return None


# --- the default tiers ----------------------------------------------------------------------


def test_default_price_book_is_the_spec_table():
    assert BOOK.retail_unit_price_cents == 1000
    assert BOOK.currency == "USD"
    assert [(t.min_quantity, t.unit_price_cents) for t in BOOK.tiers] == [
        (1, 1000),
        (50, 900),
        (100, 850),
        (250, 800),
        (500, 750),
        (1000, 700),
    ]
    assert validate_price_book(BOOK.retail_unit_price_cents, BOOK.tiers) == []


@pytest.mark.parametrize(
    ("quantity", "unit_price"),
    [
        (1, 1000),
        (2, 1000),
        (49, 1000),
        (50, 900),
        (51, 900),
        (99, 900),
        (100, 850),
        (101, 850),
        (249, 850),
        (250, 800),
        (499, 800),
        (500, 750),
        (999, 750),
        (1000, 700),
        (1001, 700),
        (5000, 700),
        (MAX_PURCHASE_QUANTITY, 700),
    ],
)
def test_default_tier_boundaries(quantity, unit_price):
    assert unit_price_for(BOOK, quantity).unit_price_cents == unit_price
    assert total_for(BOOK, quantity) == quantity * unit_price
    q = quote(BOOK, quantity)
    assert q.quantity == quantity
    assert q.unit_price_cents == unit_price
    assert q.total_cents == quantity * unit_price


@pytest.mark.parametrize("quantity", [0, -1, -1000])
def test_unit_price_for_refuses_quantities_below_one(quantity):
    with pytest.raises(ValidationFailed):
        unit_price_for(BOOK, quantity)


# --- quotes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "unit", "total", "retail", "savings", "better", "better_total"),
    [
        (1, 1000, 1000, 1000, 0, None, None),
        (10, 1000, 10000, 10000, 0, None, None),
        (45, 1000, 45000, 45000, 0, 50, 45000),
        (49, 1000, 49000, 49000, 0, 50, 45000),
        (50, 900, 45000, 50000, 5000, None, None),
        (94, 900, 84600, 94000, 9400, None, None),
        (95, 900, 85500, 95000, 9500, 100, 85000),
        (99, 900, 89100, 99000, 9900, 100, 85000),
        (100, 850, 85000, 100000, 15000, None, None),
        (240, 850, 204000, 240000, 36000, 250, 200000),
        (250, 800, 200000, 250000, 50000, None, None),
        (480, 800, 384000, 480000, 96000, 500, 375000),
        (500, 750, 375000, 500000, 125000, None, None),
        (950, 750, 712500, 950000, 237500, 1000, 700000),
        (1000, 700, 700000, 1000000, 300000, None, None),
        (1200, 700, 840000, 1200000, 360000, None, None),
    ],
)
def test_quote_fields(quantity, unit, total, retail, savings, better, better_total):
    q = quote(BOOK, quantity)
    assert q.quantity == quantity
    assert q.unit_price_cents == unit
    assert q.total_cents == total
    assert q.retail_total_cents == retail
    assert q.savings_cents == savings
    assert q.savings_cents == q.retail_total_cents - q.total_cents
    assert q.currency == "USD"
    assert q.better_quantity == better
    assert q.better_total_cents == better_total


def test_article_example_95_credits_suggests_100():
    q = quote(BOOK, 95)
    assert q.total_cents == 85500
    assert (q.better_quantity, q.better_total_cents) == (100, 85000)


@pytest.mark.parametrize("quantity", [0, -1, -50, MAX_PURCHASE_QUANTITY + 1, 10**30])
def test_quote_refuses_quantities_out_of_bounds(quantity):
    with pytest.raises(ValidationFailed) as info:
        quote(BOOK, quantity)
    assert info.value.code == "validation_error"


def test_quote_accepts_the_largest_allowed_quantity():
    q = quote(BOOK, MAX_PURCHASE_QUANTITY)
    assert q.total_cents == MAX_PURCHASE_QUANTITY * 700
    assert q.better_quantity is None
    assert q.better_total_cents is None


def test_quote_uses_the_book_currency_and_retail():
    book = PriceBook(retail_unit_price_cents=1200, tiers=(Tier(1, 1100), Tier(10, 1000)))
    q = quote(book, 10)
    assert (q.unit_price_cents, q.total_cents, q.retail_total_cents) == (1000, 10000, 12000)
    assert q.savings_cents == 2000


# --- better_quantity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (95, 100),
        (96, 100),
        (99, 100),
        # equal totals count as "no higher": 45 x $10.00 == 50 x $9.00 == $450.00
        (45, 50),
        (46, 50),
        (49, 50),
        # 236 x $8.50 = $2006 > 250 x $8.00 = $2000; 235 x $8.50 = $1997.50 < $2000
        (236, 250),
        (249, 250),
        (469, 500),
        (499, 500),
        (934, 1000),
        (999, 1000),
    ],
)
def test_better_quantity_exists(quantity, expected):
    assert better_quantity(BOOK, quantity) == expected
    assert total_for(BOOK, expected) <= total_for(BOOK, quantity)


@pytest.mark.parametrize(
    "quantity",
    [
        1,
        44,  # 44 x $10 = $440 < $450
        50,  # the first quantity of a tier never has a cheaper larger quantity
        94,  # $846 < $850
        100,
        235,  # $1997.50 < $2000
        250,
        468,  # $3744 < $3750
        500,
        933,  # $6997.50 < $7000
        1000,
        1001,
        MAX_PURCHASE_QUANTITY,
    ],
)
def test_better_quantity_none(quantity):
    assert better_quantity(BOOK, quantity) is None


@pytest.mark.parametrize("tier_start", [50, 100, 250, 500, 1000])
def test_just_below_each_tier(tier_start):
    below = tier_start - 1
    # one credit short of a tier always costs at least as much as the tier start
    assert total_for(BOOK, below) >= total_for(BOOK, tier_start)
    assert better_quantity(BOOK, below) == tier_start
    q = quote(BOOK, below)
    assert q.better_quantity == tier_start
    assert q.better_total_cents == total_for(BOOK, tier_start)


def test_equal_total_counts_as_no_higher():
    book = PriceBook(retail_unit_price_cents=100, tiers=(Tier(1, 100), Tier(10, 90)))
    # 9 x 100 = 900 == 10 x 90
    assert total_for(book, 9) == total_for(book, 10) == 900
    assert better_quantity(book, 9) == 10
    # 8 x 100 = 800 < 900
    assert better_quantity(book, 8) is None


def test_better_quantity_picks_the_smallest_of_several_cheaper_tiers():
    book = PriceBook(retail_unit_price_cents=100, tiers=(Tier(1, 100), Tier(10, 50), Tier(20, 10)))
    # 9 x 100 = 900: 10 x 50 = 500 and 20 x 10 = 200 both undercut; 10 is the smallest
    assert better_quantity(book, 9) == 10
    # 15 x 50 = 750: only 20 (200) undercuts
    assert better_quantity(book, 15) == 20


def test_better_quantity_single_tier_book_never_suggests():
    book = PriceBook(retail_unit_price_cents=500, tiers=(Tier(1, 500),))
    assert all(better_quantity(book, q) is None for q in range(1, 200))


def test_better_quantity_brute_force_default_book_1_to_1200():
    totals = {q: total_for(BOOK, q) for q in range(1, 1300)}
    mismatches = []
    for quantity in range(1, 1201):
        expected = next(
            (c for c in range(quantity + 1, 1300) if totals[c] <= totals[quantity]), None
        )
        got = better_quantity(BOOK, quantity)
        if got != expected:
            mismatches.append((quantity, got, expected))
        if got is not None:
            assert quote(BOOK, quantity).better_total_cents == totals[got]
    assert mismatches == []


@st.composite
def price_books(draw: st.DrawFn) -> PriceBook:
    retail = draw(st.integers(min_value=1, max_value=2000))
    count = draw(st.integers(min_value=1, max_value=6))
    starts = sorted(draw(st.sets(st.integers(min_value=2, max_value=300), max_size=count - 1)))
    mins = [1, *starts]
    prices = []
    ceiling = retail
    for _ in mins:
        price = draw(st.integers(min_value=1, max_value=ceiling))
        prices.append(price)
        ceiling = price
    return PriceBook(retail, tuple(Tier(m, p) for m, p in zip(mins, prices, strict=True)))


@settings(max_examples=200, deadline=None)
@given(book=price_books(), data=st.data())
def test_better_quantity_matches_brute_force_on_random_books(book, data):
    assert validate_price_book(book.retail_unit_price_cents, book.tiers) == []
    quantity = data.draw(
        st.integers(min_value=1, max_value=book.tiers[-1].min_quantity + 10), label="quantity"
    )
    expected = brute_better(book, quantity)
    assert better_quantity(book, quantity) == expected
    q = quote(book, quantity)
    assert q.better_quantity == expected
    assert q.better_total_cents == (None if expected is None else total_for(book, expected))
    assert q.savings_cents == q.retail_total_cents - q.total_cents >= 0


@settings(max_examples=50, deadline=None)
@given(book=price_books())
def test_every_quantity_just_below_a_tier_matches_brute_force(book):
    for tier in book.tiers[1:]:
        quantity = tier.min_quantity - 1
        assert better_quantity(book, quantity) == brute_better(book, quantity)


# --- validate_price_book --------------------------------------------------------------------

T = Tier


@pytest.mark.parametrize(
    ("retail", "tiers", "problems"),
    [
        pytest.param(1000, [T(1, 1000)], [], id="single-tier-at-retail"),
        pytest.param(1000, [T(1, 1000), T(2, 1000)], [], id="equal-prices-allowed"),
        pytest.param(1, [T(1, 1)], [], id="smallest-prices"),
        pytest.param(MAX_UNIT_PRICE_CENTS, [T(1, MAX_UNIT_PRICE_CENTS)], [], id="largest-retail"),
        pytest.param(1000, [], ["tiers must not be empty"], id="empty"),
        pytest.param(
            1000,
            [T(2, 1000), T(50, 900)],
            ["the first tier must have min_quantity 1"],
            id="first-tier-not-1",
        ),
        pytest.param(
            1000,
            [T(1, 1000), T(100, 850), T(50, 850)],
            ["tiers[2].min_quantity must be greater than the previous"],
            id="unsorted",
        ),
        pytest.param(
            1000,
            [T(1, 1000), T(50, 900), T(50, 850)],
            ["tiers[2].min_quantity must be greater than the previous"],
            id="duplicate-min-quantity",
        ),
        pytest.param(
            1000,
            [T(1, 900), T(50, 950)],
            ["tiers[1].unit_price_cents must not rise above the previous"],
            id="price-rises",
        ),
        pytest.param(
            900,
            [T(1, 1000)],
            ["tiers[0].unit_price_cents must not exceed the retail price"],
            id="above-retail",
        ),
        pytest.param(
            1000,
            [T(1, 1000), T(50, 0)],
            ["tiers[1].unit_price_cents must be at least 1"],
            id="zero-price",
        ),
        pytest.param(
            1000,
            [T(0, 1000)],
            [
                "the first tier must have min_quantity 1",
                "tiers[0].min_quantity must be at least 1",
            ],
            id="min-quantity-zero",
        ),
        pytest.param(
            0,
            [T(1, 1)],
            [
                f"retail_unit_price_cents must be between 1 and {MAX_UNIT_PRICE_CENTS}",
                "tiers[0].unit_price_cents must not exceed the retail price",
            ],
            id="retail-zero",
        ),
        pytest.param(
            MAX_UNIT_PRICE_CENTS + 1,
            [T(1, 1000)],
            [f"retail_unit_price_cents must be between 1 and {MAX_UNIT_PRICE_CENTS}"],
            id="retail-too-high",
        ),
        pytest.param(
            -5,
            [],
            [
                f"retail_unit_price_cents must be between 1 and {MAX_UNIT_PRICE_CENTS}",
                "tiers must not be empty",
            ],
            id="bad-retail-and-empty",
        ),
    ],
)
def test_validate_price_book_rules(retail, tiers, problems):
    assert validate_price_book(retail, tiers) == problems


def test_validate_price_book_reports_every_problem_at_once():
    tiers = [T(5, 1200), T(3, 1100), T(10, 1150), T(20, 0)]
    assert validate_price_book(1000, tiers) == [
        "the first tier must have min_quantity 1",
        "tiers[0].unit_price_cents must not exceed the retail price",
        "tiers[1].unit_price_cents must not exceed the retail price",
        "tiers[1].min_quantity must be greater than the previous",
        "tiers[2].unit_price_cents must not exceed the retail price",
        "tiers[2].unit_price_cents must not rise above the previous",
        "tiers[3].unit_price_cents must be at least 1",
    ]


def test_validate_price_book_accepts_tuples_and_lists_alike():
    assert validate_price_book(1000, list(BOOK.tiers)) == []
    assert validate_price_book(1000, tuple(BOOK.tiers)) == []
