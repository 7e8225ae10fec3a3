"""Tax on a document: which rates apply, to what, and how much, as pure rules.

Prices in the price book are net of tax. A document (a receipt, a monthly invoice, a credit
note) is taxed on its subtotal: every line is taxed by the rates in force on the line's date
in the buyer's jurisdiction, the taxable amounts are summed per rate, and each rate's tax is
rounded half up to the cent once, on that sum. One tax line per rate applied.

Which rates apply to a buyer in country C, region R, on day D:

- every rate of C with no region, and every rate of C's region R;
- of each (scope, name), the version with the latest ``effective_from`` on or before D;
- a region's rate replaces the country's rate of the same name (Ontario's "GST" at 0% with
  an "HST" beside it; most states and provinces simply add a tax of their own name);
- a rate of 0 is not shown.

Who pays none: an exempt org; an org without a tax profile (nothing is known about where it
is, so nothing is charged); and a business in another EU member state than the seller with
a VAT id, which accounts for the VAT itself ("reverse charge": no tax, and the document
says so). An EU consumer (no VAT id) pays the rate of their own country, as the EU's
one-stop-shop rules for digital services ask.

A credit note reverses the tax of what it credits in proportion, cumulatively: after all of
an invoice's credit notes have credited x of its subtotal s, they have reversed exactly
round_half_up(tax x x / s) of each tax line, so the notes never reverse more tax than the
invoice charged, and crediting all of it reverses all of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from learncredits.domain import jurisdictions
from learncredits.domain.errors import ValidationFailed

MAX_RATE_BPS = 10_000  # 100.00%
MAX_RATES = 2_000
MAX_TAX_NAME = 60


class Treatment(StrEnum):
    """How a document is taxed; printed on it when no tax is charged."""

    TAXED = "taxed"
    EXEMPT = "exempt"
    REVERSE_CHARGE = "reverse_charge"
    NO_PROFILE = "no_profile"


NOTES: dict[Treatment, str] = {
    Treatment.EXEMPT: "Tax exempt: no tax charged.",
    Treatment.REVERSE_CHARGE: (
        "Reverse charge: VAT to be accounted for by the recipient "
        "(Article 196, Council Directive 2006/112/EC)."
    ),
    Treatment.TAXED: "",
    Treatment.NO_PROFILE: "",
}


@dataclass(frozen=True)
class TaxRate:
    """One version of one tax in one jurisdiction, from ``effective_from`` (UTC day) on."""

    country: str
    region: str | None
    name: str
    rate_bps: int
    effective_from: date


@dataclass(frozen=True)
class TaxProfile:
    """Where an org is and what it is, for tax: validated on the way in."""

    country: str
    region: str | None = None
    tax_id: str = ""
    exempt: bool = False


@dataclass(frozen=True)
class Seller:
    legal_name: str
    address: str
    country: str
    tax_id: str = ""


@dataclass(frozen=True)
class TaxLine:
    """One tax applied to a document: its rate, the jurisdiction that levies it, the part of
    the subtotal it taxes and the tax (negative on a credit note)."""

    name: str
    rate_bps: int
    country: str
    region: str | None
    taxable_cents: int
    amount_cents: int

    @property
    def key(self) -> tuple[str, int, str, str | None]:
        return (self.name, self.rate_bps, self.country, self.region)


@dataclass(frozen=True)
class TaxedAmount:
    """A document's money: subtotal (net), its tax lines, and the total the buyer pays."""

    subtotal_cents: int
    lines: tuple[TaxLine, ...]
    treatment: Treatment

    @property
    def tax_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents

    @property
    def reverse_charge(self) -> bool:
        return self.treatment == Treatment.REVERSE_CHARGE

    @property
    def note(self) -> str:
        return NOTES[self.treatment]


def format_rate(rate_bps: int) -> str:
    """``2000`` -> ``20%``, ``825`` -> ``8.25%``, ``1`` -> ``0.01%``: as documents print it."""
    whole, rest = divmod(rate_bps, 100)
    return f"{whole}%" if not rest else f"{whole}.{rest:02d}".rstrip("0") + "%"


def label(name: str, rate_bps: int, country: str, region: str | None) -> str:
    """How a tax line is named on a document: ``VAT 19% (DE)``, ``Sales tax 4% (US-NY)``."""
    where = country + (f"-{region}" if region else "")
    return f"{name} {format_rate(rate_bps)} ({where})"


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero, in integers (no floats: a cent
    that lands on exactly half must go up, and 0.5 in binary floating point may not)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


def tax_on(taxable_cents: int, rate_bps: int) -> int:
    """The tax at ``rate_bps`` basis points on an amount, half up to the cent."""
    return round_half_up(taxable_cents * rate_bps, MAX_RATE_BPS)


def treatment(seller_country: str, profile: TaxProfile | None) -> Treatment:
    if profile is None:
        return Treatment.NO_PROFILE
    if profile.exempt:
        return Treatment.EXEMPT
    if (
        profile.tax_id
        and profile.country != seller_country
        and jurisdictions.is_eu(profile.country)
        and jurisdictions.is_eu(seller_country)
    ):
        return Treatment.REVERSE_CHARGE
    return Treatment.TAXED


def rates_in_force(
    rates: Iterable[TaxRate], country: str, region: str | None, on: date
) -> list[TaxRate]:
    """The rates a buyer in ``country``/``region`` pays on day ``on`` (see the module's
    rules), country-wide ones first, each group by name."""
    newest: dict[tuple[str | None, str], TaxRate] = {}
    for rate in rates:
        if rate.country != country or rate.effective_from > on:
            continue
        if rate.region is not None and rate.region != region:
            continue
        scope = (rate.region, rate.name)
        if scope not in newest or newest[scope].effective_from < rate.effective_from:
            newest[scope] = rate
    regional = {name for (scope, name) in newest if scope is not None}
    chosen = [
        rate
        for (scope, name), rate in newest.items()
        if (scope is not None or name not in regional) and rate.rate_bps > 0
    ]
    return sorted(chosen, key=lambda r: (r.region is not None, r.name))


def compute(
    lines: Sequence[tuple[int, date]],
    *,
    seller: Seller,
    profile: TaxProfile | None,
    rates: Sequence[TaxRate],
) -> TaxedAmount:
    """Tax a document whose lines are (net amount in cents, the line's date)."""
    subtotal = sum(amount for amount, _ in lines)
    how = treatment(seller.country, profile)
    if how != Treatment.TAXED or profile is None:
        return TaxedAmount(subtotal, (), how)
    taxable: dict[tuple[str, int, str, str | None], int] = {}
    for amount, day in lines:
        for rate in rates_in_force(rates, profile.country, profile.region, day):
            key = (rate.name, rate.rate_bps, rate.country, rate.region)
            taxable[key] = taxable.get(key, 0) + amount
    tax_lines = tuple(
        TaxLine(name, bps, country, region, base, tax_on(base, bps))
        for (name, bps, country, region), base in taxable.items()
    )
    return TaxedAmount(subtotal, tax_lines, how)


def reverse(
    original: TaxedAmount,
    credited_before_cents: int,
    crediting_cents: int,
    reversed_before: Mapping[tuple[str, int, str, str | None], tuple[int, int]],
) -> TaxedAmount:
    """The tax part of a credit note crediting ``crediting_cents`` (positive, net) of a
    document whose earlier credit notes credited ``credited_before_cents`` and reversed
    ``reversed_before[key] = (taxable, tax)`` (both <= 0) of each tax line.

    Returns a negative subtotal and negative tax lines. Refuses to credit more than the
    document's subtotal in all."""
    if crediting_cents <= 0:
        raise ValidationFailed("a credit note credits a positive amount")
    credited = credited_before_cents + crediting_cents
    if credited > original.subtotal_cents:
        raise ValidationFailed("credit notes cannot credit more than the document's subtotal")
    lines = []
    for line in original.lines:
        taxable_so_far, tax_so_far = reversed_before.get(line.key, (0, 0))
        taxable_target = round_half_up(line.taxable_cents * credited, original.subtotal_cents)
        tax_target = round_half_up(line.amount_cents * credited, original.subtotal_cents)
        lines.append(
            TaxLine(
                line.name,
                line.rate_bps,
                line.country,
                line.region,
                -(taxable_target + taxable_so_far),
                -(tax_target + tax_so_far),
            )
        )
    return TaxedAmount(-crediting_cents, tuple(lines), original.treatment)


# --- rate tables --------------------------------------------------------------------------


def validate_rates(entries: Sequence[Mapping[str, object]]) -> list[TaxRate]:
    """A proposed table of rates, each checked, or every problem at once (422).

    The table is a whole schedule: past, present and future versions of every tax. Two
    versions of one tax (country, region, name) with the same ``effective_from`` would make
    "the rate in force" ambiguous and are refused. So are two spellings of one name in a
    country ("VAT" and "vat"): versions are matched by name, and "vat" from next year would
    otherwise be a second tax charged beside "VAT" instead of its new rate."""
    if len(entries) > MAX_RATES:
        raise ValidationFailed(f"at most {MAX_RATES} rates")
    problems: list[str] = []
    rates: list[TaxRate] = []
    seen: dict[tuple[str, str | None, str, date], int] = {}
    spellings: dict[tuple[str, str], tuple[str, int]] = {}
    for index, entry in enumerate(entries):
        where = f"rates[{index}]"
        try:
            country = jurisdictions.normalize_country(
                entry.get("country"), field=f"{where}.country"
            )
            region = jurisdictions.normalize_region(
                country, entry.get("region"), field=f"{where}.region"
            )
        except ValidationFailed as exc:
            problems.append(exc.detail)
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_TAX_NAME:
            problems.append(f"{where}.name must be 1 to {MAX_TAX_NAME} characters")
            continue
        name = " ".join(name.split())
        bps = entry.get("rate_bps")
        if isinstance(bps, bool) or not isinstance(bps, int) or not 0 <= bps <= MAX_RATE_BPS:
            problems.append(f"{where}.rate_bps must be a whole number from 0 to {MAX_RATE_BPS}")
            continue
        effective = entry.get("effective_from")
        if not isinstance(effective, date):
            problems.append(f"{where}.effective_from must be a date (YYYY-MM-DD)")
            continue
        key = (country, region, name.casefold(), effective)
        if key in seen:
            problems.append(
                f"{where} repeats rates[{seen[key]}]: two versions of {name} in "
                f"{country}{'-' + region if region else ''} from {effective.isoformat()}"
            )
            continue
        spelled = spellings.setdefault((country, name.casefold()), (name, index))
        if spelled[0] != name:
            problems.append(
                f"{where}.name {name!r} is spelled {spelled[0]!r} in rates[{spelled[1]}]: "
                f"one tax of {country} has one spelling (the versions of a tax, and a "
                "region's tax replacing the country's, are matched by name)"
            )
            continue
        seen[key] = index
        rates.append(TaxRate(country, region, name, bps, effective))
    if problems:
        raise ValidationFailed("; ".join(problems), errors=problems)
    return rates
