"""Tax: the seller's details, the rate schedule, and what each document is taxed.

The rules are pure (domain/tax.py); this module keeps their inputs (the seller row, the
newest rate table, the org's tax profile) and their outputs on issued documents: an
invoice's tax lines and the seller and buyer details it was issued with, so that a new
rate, a new seller address or a changed profile never changes a document already issued.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Sum
from django.utils import timezone

from learncredits.audit import trail as audit
from learncredits.billing.models import (
    Invoice,
    InvoiceTaxLine,
    SellerDetails,
    TaxRateEntry,
    TaxRateTable,
)
from learncredits.domain import jurisdictions, tax
from learncredits.domain.errors import ValidationFailed
from learncredits.domain.periods import period_bounds
from learncredits.domain.pricing import Quote
from learncredits.tenancy.models import Organization

MAX_ADDRESS = 1000
MAX_LEGAL_NAME = 200

# --- the seller ------------------------------------------------------------------------------


def current_seller() -> tax.Seller:
    """The seller's details in force: the operator's, or the configured defaults before the
    operator ever set them (so a fresh install prints something sensible)."""
    row = SellerDetails.objects.filter(pk=1).first()
    if row is None:
        return tax.Seller(
            legal_name=settings.LEARNCREDITS_SELLER,
            address=settings.LEARNCREDITS_SELLER_ADDRESS,
            country=settings.LEARNCREDITS_SELLER_COUNTRY,
            tax_id="",
        )
    return tax.Seller(row.legal_name, row.address, row.country, row.tax_id)


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(f"{field} must not be empty", field=field)
    value = value.strip()
    if len(value) > limit:
        raise ValidationFailed(f"{field} must be at most {limit} characters", field=field)
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in value) or "\x7f" in value:
        raise ValidationFailed(f"{field} must not contain control characters", field=field)
    return value


def set_seller(
    *, legal_name: object, address: object, country: object, tax_id: object, actor: str
) -> tax.Seller:
    """Replace the seller's details (all four at once), audited; later documents print them."""
    name = _text(legal_name, "legal_name", MAX_LEGAL_NAME)
    where = _text(address, "address", MAX_ADDRESS)
    code = jurisdictions.normalize_country(country)
    number = "" if tax_id in (None, "") else jurisdictions.normalize_tax_id(code, tax_id)
    with transaction.atomic():
        before = current_seller()
        SellerDetails.objects.update_or_create(
            pk=1,
            defaults={
                "legal_name": name,
                "address": where,
                "country": code,
                "tax_id": number,
                "updated_at": timezone.now(),
                "updated_by": actor,
            },
        )
        after = current_seller()
        audit.record(
            actor, "seller.set", target="seller", before=asdict(before), after=asdict(after)
        )
    return after


# --- the rate schedule -------------------------------------------------------------------------


@dataclass(frozen=True)
class RateTable:
    version: int | None  # None before the operator ever set one
    created_at: datetime | None
    rates: tuple[tax.TaxRate, ...]


def current_rates() -> RateTable:
    table = TaxRateTable.objects.order_by("-pk").first()
    if table is None:
        return RateTable(None, None, ())
    rates = tuple(
        tax.TaxRate(r.country, r.region or None, r.name, r.rate_bps, r.effective_from)
        for r in TaxRateEntry.objects.filter(table=table).order_by(
            "country", "region", "name", "effective_from"
        )
    )
    return RateTable(table.pk, table.created_at, rates)


def set_rates(entries: Sequence[Mapping[str, object]], *, actor: str) -> RateTable:
    """A new version of the whole schedule, checked first (every problem at once, 422,
    nothing written). Documents already issued keep the tax they were issued with."""
    rates = tax.validate_rates(entries)
    with transaction.atomic():
        table = TaxRateTable.objects.create(created_by=actor)
        TaxRateEntry.objects.bulk_create(
            TaxRateEntry(
                table=table,
                country=r.country,
                region=r.region or "",
                name=r.name,
                rate_bps=r.rate_bps,
                effective_from=r.effective_from,
            )
            for r in rates
        )
        audit.record(
            actor,
            "tax_rates.set",
            target=f"taxrates_{table.pk}",
            rates=[rate_dict(r) for r in rates],
        )
    return current_rates()


def rate_dict(rate: tax.TaxRate) -> dict[str, Any]:
    return {
        "country": rate.country,
        "region": rate.region,
        "name": rate.name,
        "rate_bps": rate.rate_bps,
        "effective_from": rate.effective_from.isoformat(),
    }


# --- the buyer ---------------------------------------------------------------------------------


def profile_of(org: Organization) -> tax.TaxProfile | None:
    if not org.tax_country:
        return None
    return tax.TaxProfile(
        country=org.tax_country,
        region=org.tax_region or None,
        tax_id=org.tax_id,
        exempt=org.tax_exempt,
    )


def profile_dict(org: Organization) -> dict[str, Any] | None:
    profile = profile_of(org)
    if profile is None:
        return None
    return {
        "country": profile.country,
        "region": profile.region,
        "tax_id": profile.tax_id or None,
        "exempt": profile.exempt,
    }


# --- taxing a document -------------------------------------------------------------------------


def utc_day(moment: datetime) -> date:
    """The day a line is taxed on: rates take effect at 00:00 UTC of their effective date."""
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class TaxContext:
    """What taxing documents needs, read once (a month-end close taxes many orgs' invoices
    with one read of the seller and the rates)."""

    seller: tax.Seller
    rates: tuple[tax.TaxRate, ...]

    @classmethod
    def load(cls) -> TaxContext:
        return cls(current_seller(), current_rates().rates)

    def tax(self, org: Organization, lines: Sequence[tuple[int, date]]) -> tax.TaxedAmount:
        return tax.compute(lines, seller=self.seller, profile=profile_of(org), rates=self.rates)

    def seller_snapshot(self) -> dict[str, Any]:
        return asdict(self.seller)


def quote_tax(org: Organization, quote: Quote) -> tax.TaxedAmount | None:
    """What an org with a tax profile would pay on a quote today (None without a profile:
    no tax is charged, and the quote says nothing about tax)."""
    if profile_of(org) is None:
        return None
    return TaxContext.load().tax(org, [(quote.total_cents, utc_day(timezone.now()))])


def buyer_snapshot(org: Organization) -> dict[str, Any]:
    """The buyer's tax details as printed on a document ({} without a profile)."""
    return profile_dict(org) or {}


def line_dict(line: tax.TaxLine) -> dict[str, Any]:
    return asdict(line)


def purchase_tax(
    org: Organization, subtotal_cents: int, on: datetime
) -> tuple[int, dict[str, Any]]:
    """The tax of a purchase being opened, and how the purchase keeps it until its receipt
    is issued (``Purchase.tax``): the treatment, the tax lines, and the seller and buyer
    as they were, so that the receipt says exactly what was charged."""
    context = TaxContext.load()
    taxed = context.tax(org, [(subtotal_cents, utc_day(on))])
    return taxed.tax_cents, {
        "treatment": taxed.treatment.value,
        "lines": [line_dict(line) for line in taxed.lines],
        "seller": context.seller_snapshot(),
        "buyer": buyer_snapshot(org),
    }


def taxed_from_json(subtotal_cents: int, data: Mapping[str, Any]) -> tax.TaxedAmount:
    lines = tuple(tax.TaxLine(**line) for line in data.get("lines", ()))
    treatment = tax.Treatment(data.get("treatment", tax.Treatment.NO_PROFILE.value))
    return tax.TaxedAmount(subtotal_cents, lines, treatment)


def tax_line_rows(org_id: int, invoice: Invoice, taxed: tax.TaxedAmount) -> list[InvoiceTaxLine]:
    return [
        InvoiceTaxLine(
            org_id=org_id,
            invoice=invoice,
            position=position,
            name=line.name,
            rate_bps=line.rate_bps,
            country=line.country,
            region=line.region or "",
            taxable_cents=line.taxable_cents,
            amount_cents=line.amount_cents,
        )
        for position, line in enumerate(taxed.lines, start=1)
    ]


def record_tax_lines(invoice: Invoice, taxed: tax.TaxedAmount) -> None:
    """The invoice's tax lines, in the issuing transaction."""
    if taxed.lines:
        InvoiceTaxLine.objects.bulk_create(tax_line_rows(invoice.org_id, invoice, taxed))


def _line_of(row: InvoiceTaxLine) -> tax.TaxLine:
    return tax.TaxLine(
        row.name, row.rate_bps, row.country, row.region or None, row.taxable_cents, row.amount_cents
    )


def taxed_of(invoice: Invoice) -> tax.TaxedAmount:
    """An issued invoice's money as the domain sees it, from its stored tax lines."""
    lines = tuple(_line_of(row) for row in invoice.tax_lines.all())
    return tax.TaxedAmount(
        invoice.total_cents - invoice.tax_cents, lines, tax.Treatment(invoice.tax_treatment)
    )


def credit_note_tax(credited: Invoice, crediting_cents: int) -> tax.TaxedAmount:
    """The tax part of a new credit note on ``credited`` for ``crediting_cents`` of its
    subtotal: in proportion, counting what its earlier credit notes reversed. Call under
    the lock that serialises the invoice's credit notes (the org's balance lock)."""
    original = taxed_of(credited)
    notes = list(credited.credit_notes.all())
    credited_before = -sum(n.total_cents - n.tax_cents for n in notes)
    reversed_before: dict[tuple[str, int, str, str | None], tuple[int, int]] = {}
    for row in InvoiceTaxLine.objects.filter(invoice__in=notes):
        key = _line_of(row).key
        taxable, amount = reversed_before.get(key, (0, 0))
        reversed_before[key] = (taxable + row.taxable_cents, amount + row.amount_cents)
    return tax.reverse(original, credited_before, crediting_cents, reversed_before)


# --- reports -----------------------------------------------------------------------------------


def tax_collected_cents(documents: QuerySet[Invoice]) -> int:
    """Tax on these documents (credit notes count negative)."""
    return int(documents.aggregate(total=Sum("tax_cents"))["total"] or 0)


@dataclass(frozen=True)
class TaxReportRow:
    country: str
    region: str | None
    name: str
    rate_bps: int
    taxable_cents: int
    tax_cents: int
    documents: int


@dataclass(frozen=True)
class UntaxedRow:
    """Sales on which no tax was charged, by why and where the buyer is."""

    treatment: str
    country: str
    net_cents: int
    documents: int


@dataclass(frozen=True)
class TaxReport:
    period: str
    rows: tuple[TaxReportRow, ...]
    untaxed: tuple[UntaxedRow, ...]
    tax_cents: int
    currency: str = "USD"


def tax_report(period: str) -> TaxReport:
    """Tax charged per jurisdiction and rate on documents issued in ``period`` (a UTC
    month), credit notes netted; and the sales with no tax (reverse charge, exempt,
    without a profile) per buyer country, for the return's boxes that ask for them."""
    start, end = period_bounds(period, "UTC")
    issued = Invoice.objects.filter(issued_at__gte=start, issued_at__lt=end)
    totals: dict[tuple[str, str, str, int], list[int]] = {}
    documents: dict[tuple[str, str, str, int], set[int]] = {}
    for row in InvoiceTaxLine.objects.filter(
        invoice__issued_at__gte=start, invoice__issued_at__lt=end
    ).values_list(
        "country", "region", "name", "rate_bps", "taxable_cents", "amount_cents", "invoice_id"
    ):
        country, region, name, bps, taxable, amount, invoice_id = row
        key = (country, region, name, bps)
        bucket = totals.setdefault(key, [0, 0])
        bucket[0] += taxable
        bucket[1] += amount
        documents.setdefault(key, set()).add(invoice_id)
    rows = tuple(
        TaxReportRow(c, r or None, n, b, v[0], v[1], len(documents[(c, r, n, b)]))
        for (c, r, n, b), v in sorted(totals.items())
    )
    untaxed: dict[tuple[str, str], list[int]] = {}
    # Untaxed: no tax line at all. A document whose tax rounded to nothing (a few cents
    # taxed) has its zero line in the rows above, and must not be counted again here.
    untaxed_documents = issued.filter(
        ~Exists(InvoiceTaxLine.objects.filter(invoice_id=OuterRef("pk")))
    )
    for treatment, buyer, total, tax_cents in untaxed_documents.values_list(
        "tax_treatment", "buyer", "total_cents", "tax_cents"
    ):
        # Taxed, but no rate was in force where the buyer is: said apart from the others.
        why = "no_rate" if treatment == tax.Treatment.TAXED else treatment
        country = (buyer or {}).get("country", "") or ""
        bucket = untaxed.setdefault((why, country), [0, 0])
        bucket[0] += total - tax_cents
        bucket[1] += 1
    return TaxReport(
        period=period,
        rows=rows,
        untaxed=tuple(UntaxedRow(t, c, v[0], v[1]) for (t, c), v in sorted(untaxed.items())),
        tax_cents=sum(r.tax_cents for r in rows),
    )
