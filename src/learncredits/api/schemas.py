"""Request and response shapes of the v1 API.

Inputs are strict: integers must be JSON integers (``1.5``, ``"10"``, ``true`` and ``1e3``
are refused), strings must be strings, and unknown fields are refused, so a typo never
silently does nothing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from ninja import Schema
from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr

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


class OrgPatch(StrictIn):
    name: Name | None = None
    billing_email: Email | None = None
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    alert_threshold: Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)] | None = None


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


class OrgOut(Schema):
    id: str
    name: str
    billing_email: str
    timezone: str
    alert_threshold: int
    created_at: str


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


class NextAction(Schema):
    type: Literal["authenticate"]
    url: str


class PurchaseOut(Schema):
    id: str
    quantity: int
    unit_price_cents: int
    total_cents: int
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


class AssignmentOut(Schema):
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


def page_of(item: type[Schema]) -> type[Schema]:
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


class InvoiceOut(Schema):
    id: str
    number: str
    kind: Literal["purchase", "monthly", "credit_note"]
    period: str
    # credited: unpaid, and cancelled in full by credit notes; a credit note is issued.
    status: Literal["open", "paid", "past_due", "credited", "issued"]
    currency: str
    lines: list[InvoiceLineOut]
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
