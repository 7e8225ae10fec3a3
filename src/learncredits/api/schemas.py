"""Request and response shapes of the v1 API.

Inputs are strict: integers must be JSON integers (``1.5``, ``"10"``, ``true`` and ``1e3``
are refused), strings must be strings, and unknown fields are refused, so a typo never
silently does nothing.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from ninja import Schema
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

Name = Annotated[StrictStr, Field(min_length=1, max_length=200)]
Email = Annotated[StrictStr, Field(min_length=3, max_length=254)]
PublicId = Annotated[StrictStr, Field(min_length=1, max_length=40)]


class StrictIn(Schema):
    model_config = ConfigDict(extra="forbid")


# --- inputs -------------------------------------------------------------------------------


class OrgIn(StrictIn):
    name: Name
    billing_email: Email
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] = "UTC"
    alert_threshold: Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)] = 0


class TaxProfileIn(StrictIn):
    """Where the org is for tax. ``country``: ISO 3166-1 alpha-2; ``region``: an ISO 3166-2
    subdivision of it ("NY" or "US-NY"), where one applies; ``tax_id``: validated for the
    country (EU VAT numbers with or without their prefix)."""

    country: Annotated[StrictStr, Field(min_length=1, max_length=8)]
    region: Annotated[StrictStr, Field(max_length=8)] | None = None
    tax_id: Annotated[StrictStr, Field(max_length=60)] | None = None
    exempt: StrictBool = False


class OrgPatch(StrictIn):
    name: Name | None = None
    billing_email: Email | None = None
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    alert_threshold: Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)] | None = None
    # The tax profile as a whole; null removes it (no tax is charged without one).
    tax: TaxProfileIn | None = None


class SellerIn(StrictIn):
    legal_name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    address: Annotated[StrictStr, Field(min_length=1, max_length=1000)]
    country: Annotated[StrictStr, Field(min_length=1, max_length=8)]
    tax_id: Annotated[StrictStr, Field(max_length=60)] | None = None


class TaxRateIn(StrictIn):
    country: Annotated[StrictStr, Field(min_length=1, max_length=8)]
    region: Annotated[StrictStr, Field(max_length=8)] | None = None
    name: Annotated[StrictStr, Field(min_length=1, max_length=60)]
    rate_bps: Annotated[StrictInt, Field(ge=0, le=10_000)]
    effective_from: date


class TaxRatesIn(StrictIn):
    rates: Annotated[list[TaxRateIn], Field(max_length=2000)]


class ApiKeyIn(StrictIn):
    name: Name


class ContentIn(StrictIn):
    title: Annotated[StrictStr, Field(min_length=1, max_length=300)]
    premium: StrictBool
    credit_cost: Annotated[StrictInt, Field(ge=0, le=1_000_000)]
    xapi_activity_id: Annotated[StrictStr, Field(min_length=1, max_length=2000)] | None = None


class TierIn(StrictIn):
    min_quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    unit_price_cents: Annotated[StrictInt, Field(ge=1, le=100_000_000)]


class PriceBookIn(StrictIn):
    retail_unit_price_cents: Annotated[StrictInt, Field(ge=1, le=100_000_000)]
    currency: Literal["USD"] = "USD"
    tiers: Annotated[list[TierIn], Field(min_length=1, max_length=50)]


class AdjustmentIn(StrictIn):
    credits: Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=2000)]


class UserIn(StrictIn):
    email: Email
    name: Name
    role: Literal["admin", "learner"]
    password: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None


class EmployeeIn(StrictIn):
    name: Name
    email: Email


class PurchaseIn(StrictIn):
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)]


class RefundIn(StrictIn):
    credits: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=2000)]


class CreditNoteIn(StrictIn):
    assignment_ids: Annotated[list[PublicId], Field(min_length=1, max_length=10_000)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=2000)]


class AssignIn(StrictIn):
    content_id: PublicId
    employee_ids: Annotated[list[PublicId], Field(min_length=1, max_length=10_000)]


class ReassignIn(StrictIn):
    employee_id: PublicId


# --- outputs ------------------------------------------------------------------------------


class TaxProfileOut(Schema):
    country: str
    region: str | None
    tax_id: str | None
    exempt: bool


class OrgOut(Schema):
    id: str
    name: str
    billing_email: str
    timezone: str
    alert_threshold: int
    # null: no tax profile, and no tax charged.
    tax: TaxProfileOut | None
    created_at: str


class SellerOut(Schema):
    legal_name: str
    address: str
    country: str
    tax_id: str | None


class TaxRateOut(Schema):
    country: str
    region: str | None
    name: str
    rate_bps: int
    effective_from: str


class TaxRatesOut(Schema):
    # The version's number (null before any PUT /tax/rates) and when it was set.
    version: int | None
    created_at: str | None
    rates: list[TaxRateOut]


class TaxReportRowOut(Schema):
    country: str
    region: str | None
    name: str
    rate_bps: int
    taxable_cents: int
    tax_cents: int
    documents: int


class UntaxedRowOut(Schema):
    # reverse_charge, exempt, no_profile, or no_rate (taxed, but no rate in force there).
    treatment: str
    country: str
    net_cents: int
    documents: int


class TaxReportOut(Schema):
    period: str
    currency: str
    tax_cents: int
    rows: list[TaxReportRowOut]
    untaxed: list[UntaxedRowOut]


class ApiKeyOut(Schema):
    id: str
    key: str


class ApiKeyInfoOut(Schema):
    id: str
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class BalanceOut(Schema):
    credits: int
    assigned: int
    available: int
    at_risk: bool
    period: str
    overage_credits_this_period: int


class EmployeeOut(Schema):
    id: str
    name: str
    email: str
    active: bool


class ContentOut(Schema):
    id: str
    title: str
    premium: bool
    credit_cost: int
    xapi_activity_id: str | None


class TierOut(Schema):
    min_quantity: int
    unit_price_cents: int


class PriceBookOut(Schema):
    retail_unit_price_cents: int
    currency: str
    tiers: list[TierOut]


class QuoteOut(Schema):
    quantity: int
    unit_price_cents: int
    total_cents: int
    retail_total_cents: int
    savings_cents: int
    currency: str
    better_quantity: int | None
    better_total_cents: int | None
    # With the caller's org's tax profile (null for the operator and for orgs without one).
    tax_cents: int | None = None
    total_with_tax_cents: int | None = None


class NextAction(Schema):
    type: Literal["authenticate"]
    url: str


class PurchaseOut(Schema):
    id: str
    quantity: int
    unit_price_cents: int
    # Net of tax, as the price book; the card is charged total_with_tax_cents.
    total_cents: int
    tax_cents: int
    total_with_tax_cents: int
    currency: str
    status: Literal["pending", "paid", "failed"]
    invoice_id: str | None
    # The payment intent at the provider; the decline code of a failed payment.
    provider_reference: str | None
    decline_code: str | None
    # While pending on the customer: where they authenticate (3-D Secure).
    next_action: NextAction | None
    # Credits of this purchase refunded so far (POST .../refund).
    refunded_credits: int
    created_at: str


class AssignmentOut(BaseModel):
    # A plain pydantic model: answers are built as dicts (api/serializers.py), so ninja's
    # Schema, which wraps every object in a DjangoGetter to read model attributes, only
    # added cost: 1.75 of the 3.8 s of a 10,000-item bulk answer on a slow machine.
    id: str
    content_id: str
    employee_id: str
    status: Literal["assigned", "started", "completed", "cancelled"]
    credit_cost: int
    charged_credits: int
    overage_credits: int
    created_at: str
    started_at: str | None
    completed_at: str | None
    cancelled_at: str | None


class BulkAssignOut(Schema):
    data: list[AssignmentOut]
    skipped: list[str]


class LedgerEntryOut(Schema):
    id: str
    type: str
    credits_delta: int
    assigned_delta: int
    overage_credits: int
    credits_after: int
    assigned_after: int
    assignment_id: str | None
    purchase_id: str | None
    actor: str
    reason: str
    created_at: str


class UserOut(Schema):
    id: str
    email: str
    name: str
    role: Literal["admin", "learner"]


class Problem(Schema):
    type: str
    title: str
    status: int
    detail: str
    code: str


def page_of(item: type[BaseModel]) -> type[Schema]:
    """A list answer: ``{"data": [...], "next_cursor": null | "..."}``."""
    return type(
        f"{item.__name__.removesuffix('Out')}Page",
        (Schema,),
        {"__annotations__": {"data": list[item], "next_cursor": str | None}},  # type: ignore[valid-type]
    )


OrgPage = page_of(OrgOut)
ApiKeyPage = page_of(ApiKeyInfoOut)
EmployeePage = page_of(EmployeeOut)
ContentPage = page_of(ContentOut)
PurchasePage = page_of(PurchaseOut)
AssignmentPage = page_of(AssignmentOut)
LedgerPage = page_of(LedgerEntryOut)


# --- billing ------------------------------------------------------------------------------


class ClosePeriodIn(StrictIn):
    period: Annotated[StrictStr, Field(pattern=r"^\d{4}-\d{2}$")]


class ClosePeriodOut(Schema):
    period: str
    invoices_issued: int


class InvoiceLineOut(Schema):
    description: str
    quantity: int
    unit_price_cents: int
    amount_cents: int
    assignment_id: str | None


class TaxLineOut(Schema):
    name: str
    rate_bps: int
    # The jurisdiction levying it, and the part of the subtotal it taxes.
    country: str
    region: str | None
    taxable_cents: int
    amount_cents: int


class PartyOut(Schema):
    """The seller or the buyer as printed on the document when it was issued."""

    name: str
    address: str | None
    email: str | None
    country: str | None
    region: str | None
    tax_id: str | None
    exempt: bool


class InvoiceOut(Schema):
    id: str
    number: str
    kind: Literal["purchase", "monthly", "credit_note"]
    period: str
    # credited: unpaid, and cancelled in full by credit notes; a credit note is issued.
    status: Literal["open", "paid", "past_due", "credited", "issued"]
    currency: str
    lines: list[InvoiceLineOut]
    seller: PartyOut
    buyer: PartyOut
    # The lines' sum (net of tax); total_cents = subtotal_cents + the tax lines' amounts.
    subtotal_cents: int
    tax_lines: list[TaxLineOut]
    tax_cents: int
    # taxed, exempt, reverse_charge or no_profile; tax_note is what the document says.
    tax_treatment: str
    reverse_charge: bool
    tax_note: str
    total_cents: int
    issued_at: str
    due_at: str
    purchase_id: str | None
    # A credit note's credited invoice; on an invoice, what is still owed after its
    # payments and credit notes.
    credits_invoice_id: str | None
    amount_due_cents: int


class StatementOut(Schema):
    period: str
    opening_credits: int
    purchased_credits: int
    granted_credits: int
    consumed_credits: int
    closing_credits: int
    purchased_cents: int
    recognized_cents: int
    overage_credits: int
    overage_cents: int
    deferred_opening_cents: int
    deferred_closing_cents: int
    # Credits given back for money, at their lots' prices (not recognized revenue).
    refunded_credits: int
    refunded_cents: int
    # Tax on the documents issued in the period (credit notes netted); not in the money above.
    tax_collected_cents: int
    currency: str


class UsagePointOut(Schema):
    date: str
    consumed_credits: int
    overage_credits: int
    assigned_credits: int
    credits: int


class UsageOut(Schema):
    data: list[UsagePointOut]


class ForecastOut(Schema):
    available: int
    daily_burn: float
    runs_out_on: str | None
    recommended_quantity: int
    quote: QuoteOut | None


InvoicePage = page_of(InvoiceOut)


# --- alerts, webhooks, auto top-up ----------------------------------------------------------


class AlertOut(Schema):
    id: str
    kind: Literal["at_risk", "overage"]
    active: bool
    period: str | None
    created_at: str
    resolved_at: str | None


class WebhookIn(StrictIn):
    url: Annotated[StrictStr, Field(min_length=8, max_length=2000)]
    events: Annotated[list[Annotated[StrictStr, Field(max_length=64)]], Field(max_length=20)] = []


class WebhookOut(Schema):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: str


class WebhookCreatedOut(Schema):
    id: str
    url: str
    events: list[str]
    secret: str


class WebhookDeliveryOut(Schema):
    id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    created_at: str


class AutoTopUpIn(StrictIn):
    enabled: StrictBool
    below_available: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)]
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    target_available: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)] | None = None
    max_purchases_per_month: Annotated[StrictInt, Field(ge=1, le=1000)]
    max_credits_per_month: Annotated[StrictInt, Field(ge=1, le=1_000_000)]


class AutoTopUpOut(Schema):
    enabled: bool
    below_available: int
    quantity: int | None
    target_available: int | None
    max_purchases_per_month: int
    max_credits_per_month: int
    disabled_reason: str


AlertPage = page_of(AlertOut)
WebhookPage = page_of(WebhookOut)
WebhookDeliveryPage = page_of(WebhookDeliveryOut)
