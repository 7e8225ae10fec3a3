"""The tax rules as pure functions (domain/tax.py): which rates apply, how much, and how a
credit note reverses it. No database."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from learncredits.domain import tax
from learncredits.domain.errors import ValidationFailed
from learncredits.domain.tax import Seller, TaxProfile, TaxRate, Treatment

GERMAN_SELLER = Seller("Lernkredite GmbH", "Unter den Linden 1\n10117 Berlin", "DE", "DE136695976")
US_SELLER = Seller("learncredits Inc.", "1 Market Street, San Francisco", "US", "")

RATES = (
    TaxRate("DE", None, "VAT", 1900, date(2020, 1, 1)),
    # A cut in the middle of a month: 16% from 15 January 2027.
    TaxRate("DE", None, "VAT", 1600, date(2027, 1, 15)),
    TaxRate("FR", None, "VAT", 2000, date(2020, 1, 1)),
    TaxRate("US", "NY", "Sales tax", 400, date(2020, 1, 1)),
    TaxRate("US", "NY", "Sales tax", 450, date(2030, 1, 1)),  # not yet in force
    TaxRate("CA", None, "GST", 500, date(2020, 1, 1)),
    TaxRate("CA", "BC", "PST", 700, date(2020, 1, 1)),
    # Ontario's harmonized tax replaces the federal GST there.
    TaxRate("CA", "ON", "GST", 0, date(2020, 1, 1)),
    TaxRate("CA", "ON", "HST", 1300, date(2020, 1, 1)),
    TaxRate("GB", None, "VAT", 2000, date(2020, 1, 1)),
)

DAY = date(2026, 6, 1)


def taxed(
    subtotal: int,
    profile: TaxProfile | None,
    *,
    seller: Seller = GERMAN_SELLER,
    on: date = DAY,
) -> tax.TaxedAmount:
    return tax.compute([(subtotal, on)], seller=seller, profile=profile, rates=RATES)


def summary(result: tax.TaxedAmount) -> tuple[Treatment, list[tuple[str, int, int]], int]:
    return (
        result.treatment,
        [(line.name, line.rate_bps, line.amount_cents) for line in result.lines],
        result.total_cents,
    )


@pytest.mark.parametrize(
    ("case", "profile", "seller", "expected"),
    [
        (
            "domestic business: the seller's own VAT",
            TaxProfile("DE", None, "DE136695976"),
            GERMAN_SELLER,
            (Treatment.TAXED, [("VAT", 1900, 1900)], 11900),
        ),
        (
            "EU business in another member state with a VAT id: reverse charge",
            TaxProfile("FR", None, "FR40303265045"),
            GERMAN_SELLER,
            (Treatment.REVERSE_CHARGE, [], 10000),
        ),
        (
            "EU consumer in another member state: their own country's VAT",
            TaxProfile("FR"),
            GERMAN_SELLER,
            (Treatment.TAXED, [("VAT", 2000, 2000)], 12000),
        ),
        (
            "exempt org: no tax, whatever its country",
            TaxProfile("DE", None, "DE136695976", exempt=True),
            GERMAN_SELLER,
            (Treatment.EXEMPT, [], 10000),
        ),
        (
            "a US state's rate (the later version is not yet in force)",
            TaxProfile("US", "NY"),
            US_SELLER,
            (Treatment.TAXED, [("Sales tax", 400, 400)], 10400),
        ),
        (
            "a US state without a rate: nothing",
            TaxProfile("US", "OR"),
            US_SELLER,
            (Treatment.TAXED, [], 10000),
        ),
        (
            "a province adds its own tax to the country's",
            TaxProfile("CA", "BC"),
            US_SELLER,
            (Treatment.TAXED, [("GST", 500, 500), ("PST", 700, 700)], 11200),
        ),
        (
            "a province's rate of the same name replaces the country's",
            TaxProfile("CA", "ON"),
            US_SELLER,
            (Treatment.TAXED, [("HST", 1300, 1300)], 11300),
        ),
        (
            "a business outside the EU is never reverse-charged",
            TaxProfile("GB", None, "GB980780684"),
            GERMAN_SELLER,
            (Treatment.TAXED, [("VAT", 2000, 2000)], 12000),
        ),
        (
            "an EU business buying from a seller outside the EU is not reverse-charged",
            TaxProfile("FR", None, "FR40303265045"),
            US_SELLER,
            (Treatment.TAXED, [("VAT", 2000, 2000)], 12000),
        ),
        (
            "no tax profile: nothing known, nothing charged",
            None,
            GERMAN_SELLER,
            (Treatment.NO_PROFILE, [], 10000),
        ),
    ],
)
def test_who_pays_what(case, profile, seller, expected):
    assert summary(taxed(10000, profile, seller=seller)) == expected, case


def test_reverse_charge_and_exempt_documents_say_so():
    assert "Reverse charge" in taxed(10000, TaxProfile("FR", None, "FR40303265045")).note
    assert taxed(10000, TaxProfile("FR", None, "FR40303265045")).reverse_charge
    assert "exempt" in taxed(10000, TaxProfile("DE", exempt=True)).note
    assert taxed(10000, TaxProfile("DE")).note == ""


def test_a_rate_change_in_the_middle_of_a_month_taxes_each_line_at_its_own_days_rate():
    lines = [(10000, date(2027, 1, 14)), (5000, date(2027, 1, 15)), (2000, date(2027, 1, 31))]
    result = tax.compute(
        lines, seller=GERMAN_SELLER, profile=TaxProfile("DE", None, "DE136695976"), rates=RATES
    )
    assert [(ln.rate_bps, ln.taxable_cents, ln.amount_cents) for ln in result.lines] == [
        (1900, 10000, 1900),
        (1600, 7000, 1120),
    ]
    assert (result.subtotal_cents, result.tax_cents, result.total_cents) == (17000, 3020, 20020)


def test_a_rate_before_its_effective_day_does_not_apply():
    assert (
        taxed(10000, TaxProfile("US", "NY"), seller=US_SELLER, on=date(2029, 12, 31)).tax_cents
        == 400
    )
    assert (
        taxed(10000, TaxProfile("US", "NY"), seller=US_SELLER, on=date(2030, 1, 1)).tax_cents == 450
    )
    assert taxed(10000, TaxProfile("DE"), on=date(2019, 12, 31)).lines == ()


@pytest.mark.parametrize(
    ("subtotal", "rate_bps", "tax_cents"),
    [
        (1050, 500, 53),  # 52.5 cents: half goes up
        (1030, 500, 52),  # 51.5 cents: half goes up
        (1010, 500, 51),  # 50.5
        (1009, 500, 50),  # 50.45: down
        (25, 1000, 3),  # 2.5
        (15, 1000, 2),  # 1.5
        (5, 1000, 1),  # 0.5
        (4, 1000, 0),  # 0.4
        (1, 5000, 1),  # 0.5
        (0, 1900, 0),
    ],
)
def test_tax_is_rounded_half_up_to_the_cent_on_the_subtotal(subtotal, rate_bps, tax_cents):
    assert tax.tax_on(subtotal, rate_bps) == tax_cents
    # On the subtotal, not per line: three lines of 350 at 5% are 52.5 -> 53, where
    # rounding each line (17.5 -> 18) would give 54.
    if subtotal == 1050:
        rates = (TaxRate("DE", None, "VAT", rate_bps, date(2020, 1, 1)),)
        result = tax.compute(
            [(350, DAY)] * 3, seller=GERMAN_SELLER, profile=TaxProfile("DE"), rates=rates
        )
        assert result.tax_cents == 53


def test_round_half_up_is_symmetric_for_credit_notes():
    assert tax.round_half_up(-5, 10) == -1
    assert tax.round_half_up(-4, 10) == 0
    assert tax.round_half_up(5, 10) == 1


# --- credit notes ----------------------------------------------------------------------------


def reverse_all(original: tax.TaxedAmount, parts: list[int]) -> list[tax.TaxedAmount]:
    """Credit notes for ``parts`` of the original's subtotal, one after the other."""
    notes: list[tax.TaxedAmount] = []
    credited = 0
    reversed_before: dict[tuple[str, int, str, str | None], tuple[int, int]] = {}
    for part in parts:
        note = tax.reverse(original, credited, part, reversed_before)
        notes.append(note)
        credited += part
        for line in note.lines:
            taxable, amount = reversed_before.get(line.key, (0, 0))
            reversed_before[line.key] = (taxable + line.taxable_cents, amount + line.amount_cents)
    return notes


def test_a_credit_note_reverses_the_tax_of_what_it_credits_in_proportion():
    original = taxed(10000, TaxProfile("CA", "BC"), seller=US_SELLER)  # GST 500 + PST 700
    (note,) = reverse_all(original, [2500])
    assert [(ln.name, ln.taxable_cents, ln.amount_cents) for ln in note.lines] == [
        ("GST", -2500, -125),
        ("PST", -2500, -175),
    ]
    assert (note.subtotal_cents, note.total_cents) == (-2500, -2800)


def test_credit_notes_that_add_up_to_the_whole_reverse_all_of_the_tax_despite_rounding():
    original = taxed(1000, TaxProfile("FR"))  # 200 tax
    notes = reverse_all(original, [333, 333, 334])
    assert [n.tax_cents for n in notes] == [-67, -66, -67]
    assert sum(n.total_cents for n in notes) == -original.total_cents


def test_a_credit_note_cannot_credit_more_than_the_subtotal():
    original = taxed(1000, TaxProfile("FR"))
    with pytest.raises(ValidationFailed):
        reverse_all(original, [600, 401])
    with pytest.raises(ValidationFailed):
        reverse_all(original, [0])


def test_reverse_charged_and_exempt_credit_notes_carry_no_tax():
    for profile in (TaxProfile("FR", None, "FR40303265045"), TaxProfile("DE", exempt=True)):
        original = taxed(1000, profile)
        (note,) = reverse_all(original, [500])
        assert (note.lines, note.treatment) == ((), original.treatment)


# --- properties ------------------------------------------------------------------------------

countries = st.sampled_from(["DE", "FR", "US", "CA", "GB", "JP"])
regions = st.sampled_from([None, "NY", "OR", "BC", "ON"])
rate_tables = st.lists(
    st.builds(
        TaxRate,
        country=countries,
        region=regions,
        name=st.sampled_from(["VAT", "GST", "PST", "HST", "Sales tax"]),
        rate_bps=st.integers(0, tax.MAX_RATE_BPS),
        effective_from=st.dates(date(2020, 1, 1), date(2030, 1, 1)),
    ),
    max_size=12,
)
profiles = st.none() | st.builds(
    TaxProfile,
    country=countries,
    region=regions,
    tax_id=st.sampled_from(["", "X123"]),
    exempt=st.booleans(),
)
documents = st.lists(
    st.tuples(st.integers(0, 10_000_000), st.dates(date(2020, 1, 1), date(2030, 12, 31))),
    min_size=1,
    max_size=20,
)


@given(lines=documents, profile=profiles, rates=rate_tables, seller_country=countries)
def test_every_document_totals_its_subtotal_and_its_tax_lines(
    lines, profile, rates, seller_country
):
    seller = Seller("S", "A", seller_country)
    result = tax.compute(lines, seller=seller, profile=profile, rates=rates)
    assert result.subtotal_cents == sum(amount for amount, _ in lines)
    assert result.total_cents == result.subtotal_cents + sum(ln.amount_cents for ln in result.lines)
    for line in result.lines:
        assert 0 <= line.taxable_cents <= result.subtotal_cents
        assert line.amount_cents == tax.tax_on(line.taxable_cents, line.rate_bps)
        assert 0 < line.rate_bps <= tax.MAX_RATE_BPS
    # One line per rate applied: never two lines for the same tax at the same rate.
    assert len({ln.key for ln in result.lines}) == len(result.lines)
    if result.treatment != Treatment.TAXED:
        assert result.lines == ()


@given(
    lines=documents,
    profile=profiles,
    rates=rate_tables,
    cuts=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=8),
)
def test_an_invoice_and_all_its_credit_notes_never_sum_below_zero(lines, profile, rates, cuts):
    original = tax.compute(lines, seller=GERMAN_SELLER, profile=profile, rates=rates)
    if original.subtotal_cents == 0:
        return
    # Split some or all of the subtotal into credit notes of at least a cent each.
    parts: list[int] = []
    left = original.subtotal_cents
    for cut in cuts:
        part = min(left, max(1, int(cut * original.subtotal_cents)))
        if part <= 0:
            break
        parts.append(part)
        left -= part
    notes = reverse_all(original, parts)
    assert original.total_cents + sum(n.total_cents for n in notes) >= 0
    for line in original.lines:
        reversed_tax = sum(ln.amount_cents for n in notes for ln in n.lines if ln.key == line.key)
        assert -line.amount_cents <= reversed_tax <= 0
        if left == 0:
            assert reversed_tax == -line.amount_cents
    if left == 0:
        assert original.total_cents + sum(n.total_cents for n in notes) == 0


# --- rate tables -----------------------------------------------------------------------------


def entry(**overrides):
    base = {
        "country": "DE",
        "region": None,
        "name": "VAT",
        "rate_bps": 1900,
        "effective_from": date(2027, 1, 1),
    }
    return {**base, **overrides}


def test_a_rate_table_is_normalized():
    (rate,) = tax.validate_rates([entry(country="us", region="us-ny", name="  Sales   tax ")])
    assert rate == TaxRate("US", "NY", "Sales tax", 1900, date(2027, 1, 1))


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (entry(country="XX"), "rates[0].country"),
        (entry(country="DEU"), "rates[0].country"),
        (entry(country="US", region="ON"), "rates[0].region"),
        (entry(rate_bps=-1), "rates[0].rate_bps"),
        (entry(rate_bps=10_001), "rates[0].rate_bps"),
        (entry(rate_bps=True), "rates[0].rate_bps"),
        (entry(name=""), "rates[0].name"),
        (entry(effective_from="2027-01-01"), "rates[0].effective_from"),
    ],
)
def test_a_bad_rate_is_refused_naming_it(bad, says):
    with pytest.raises(ValidationFailed) as refused:
        tax.validate_rates([bad])
    assert says in refused.value.detail


def test_two_versions_of_one_tax_from_the_same_day_are_refused():
    with pytest.raises(ValidationFailed) as refused:
        tax.validate_rates([entry(), entry(rate_bps=2000, name="vat")])
    assert "rates[1] repeats rates[0]" in refused.value.detail
    # The same day in another jurisdiction, or another day, is fine.
    assert (
        len(
            tax.validate_rates(
                [entry(), entry(country="FR"), entry(effective_from=date(2028, 1, 1))]
            )
        )
        == 3
    )


def test_one_tax_has_one_spelling_in_a_country():
    """Versions are matched by name: "vat" from 2028 beside "VAT" from 2027 would be a second
    tax charged on top of the first, not its new rate."""
    with pytest.raises(ValidationFailed) as refused:
        tax.validate_rates([entry(), entry(name="vat", effective_from=date(2028, 1, 1))])
    assert "rates[1].name 'vat' is spelled 'VAT' in rates[0]" in refused.value.detail
    with pytest.raises(ValidationFailed):  # a region's tax too: it replaces the country's
        tax.validate_rates(
            [entry(country="CA", name="GST"), entry(country="CA", region="ON", name="gst")]
        )
    # The same spelling in another country, or the same name spelled alike, is fine.
    assert len(tax.validate_rates([entry(), entry(country="AT", name="vat")])) == 2
    assert len(tax.validate_rates([entry(), entry(effective_from=date(2028, 1, 1))])) == 2


def test_every_problem_is_named_at_once():
    with pytest.raises(ValidationFailed) as refused:
        tax.validate_rates([entry(country="XX"), entry(rate_bps=-5)])
    assert len(refused.value.extra["errors"]) == 2
