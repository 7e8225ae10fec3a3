"""Request and response shapes of the v1 API: every answer's schema lives here.

Inputs are strict: integers must be JSON integers (``1.5``, ``"10"``, ``true`` and ``1e3``
are refused), strings must be strings, and unknown fields are refused, so a typo never
silently does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from ninja import Schema as Schema  # re-exported: route modules' bodies use s.Schema
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from learncredits import ids
from learncredits.billing import tax as billing_tax
from learncredits.billing.invoicing import amount_due_cents, invoice_status
from learncredits.billing.models import Invoice, Refund
from learncredits.billing.reports import UsagePoint
from learncredits.credits import budgets
from learncredits.credits.actions import BulkAssignResult, ReassignResult
from learncredits.credits.models import Assignment, Purchase
from learncredits.domain.pricing import Quote
from learncredits.domain.tax import NOTES, TaxedAmount, TaxProfile, Treatment
from learncredits.notify.models import WebhookDelivery
from learncredits.tenancy import sso
from learncredits.tenancy.models import (
    ApiKey,
    Department,
    Membership,
    Organization,
    ScimToken,
    SsoConfig,
)
from learncredits.tenancy.services import MAX_RELEASE_UNSTARTED_DAYS

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


class AlertRecipientsIn(StrictIn):
    """Who receives the org's alert emails: the billing email or not, owners and admins of
    the org by user id (``usr_N``), and other addresses. The service's rule
    (tenancy/recipients.py) checks them: at most 10 addresses, each a valid one (repeats
    dropped), only the org's owners and admins, at least one recipient."""

    billing_email: StrictBool = False
    user_ids: Annotated[list[PublicId], Field(max_length=100)] = []
    emails: Annotated[list[Annotated[StrictStr, Field(max_length=254)]], Field(max_length=100)] = []


class OrgPatch(StrictIn):
    name: Name | None = None
    billing_email: Email | None = None
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    # A number of credits; setting it alone switches a percentage threshold back to credits.
    alert_threshold: Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)] | None = None
    # A percentage of the credits held (1 to 99, the service's bound, shown here for the
    # docs); null: the threshold is ``alert_threshold`` credits.
    alert_threshold_percent: (
        Annotated[StrictInt, Field(json_schema_extra={"minimum": 1, "maximum": 99})] | None
    ) = None
    # Who receives the alert emails; null: the defaults (billing email, owners and admins).
    alert_recipients: AlertRecipientsIn | None = None
    # The tax profile as a whole; null removes it (no tax is charged without one).
    tax: TaxProfileIn | None = None
    # Days after which assignments nobody started are released; null: never. The bounds are
    # the service's (tenancy.clean_release_unstarted_after_days), shown here for the docs.
    release_unstarted_after_days: (
        Annotated[
            StrictInt,
            Field(json_schema_extra={"minimum": 1, "maximum": MAX_RELEASE_UNSTARTED_DAYS}),
        ]
        | None
    ) = None


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


Role = Literal["owner", "admin", "billing", "manager", "learner"]
KeyRole = Literal["admin", "billing", "manager"]
DepartmentIds = Annotated[list[PublicId], Field(max_length=1000)]


class ApiKeyIn(StrictIn):
    name: Name
    # What the key may do (docs/identity.md, "Roles"); a manager key names its departments.
    role: KeyRole = "admin"
    department_ids: DepartmentIds | None = None


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
    role: Role
    department_ids: DepartmentIds | None = None
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


YearStart = Annotated[StrictStr, Field(min_length=1, max_length=10)]
Budget = Annotated[StrictInt, Field(ge=0, le=1_000_000_000)]


class DepartmentIn(StrictIn):
    name: Name
    # Credits per budget year; null: no limit.
    budget_credits: Budget | None = None
    # MM-DD, the day each budget year begins in the org's time zone.
    budget_year_start: YearStart = "01-01"
    external_id: Annotated[StrictStr, Field(max_length=255)] = ""


class DepartmentPatch(StrictIn):
    name: Name | None = None
    budget_credits: Budget | None = None
    budget_year_start: YearStart | None = None
    external_id: Annotated[StrictStr, Field(max_length=255)] | None = None


class EmployeePatch(StrictIn):
    name: Name | None = None
    # null: in no department.
    department_id: PublicId | None = None


# --- outputs ------------------------------------------------------------------------------
#
# One schema per resource, filled from the object the service returns (a model instance or a
# domain dataclass): routes never build answers by hand. What is stored differently from how
# it is answered is said once, in the field's type (public ids, UTC times, days, blanks
# answered as null) or in a ``resolve_<field>`` method when it is derived from more than one
# attribute. Schemas are ninja Schemas, except those answered by the thousand (assignments,
# ledger entries): plain pydantic models reading the attributes directly, without ninja's
# per-object DjangoGetter, so they have no resolvers and everything they derive is a type.
# Answer schemas carry comments, not docstrings: a docstring would become an OpenAPI
# description, and the document would change.


def _public_id(kind: str) -> Callable[[object], object]:
    """A primary key (or a foreign key's ``..._id``) as the public id of ``kind``."""

    def encode(value: object) -> object:
        return ids.encode(kind, value) if isinstance(value, int) else value

    return encode


def _utc(value: object) -> object:
    """Times are answered in UTC with a ``Z``, whatever zone the database connection used."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def _day(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value


def _blank_is_null(value: object) -> object:
    """Text columns keep "" for "none" (Django's convention); the API answers null."""
    return value or None


OrgId = Annotated[str, BeforeValidator(_public_id("org"))]
EmployeeId = Annotated[str, BeforeValidator(_public_id("employee"))]
ContentId = Annotated[str, BeforeValidator(_public_id("content"))]
AssignmentId = Annotated[str, BeforeValidator(_public_id("assignment"))]
PurchaseId = Annotated[str, BeforeValidator(_public_id("purchase"))]
LedgerId = Annotated[str, BeforeValidator(_public_id("ledger"))]
ApiKeyId = Annotated[str, BeforeValidator(_public_id("api_key"))]
ScimTokenId = Annotated[str, BeforeValidator(_public_id("scim_token"))]
InvoiceId = Annotated[str, BeforeValidator(_public_id("invoice"))]
AlertId = Annotated[str, BeforeValidator(_public_id("alert"))]
WebhookId = Annotated[str, BeforeValidator(_public_id("webhook"))]
DepartmentId = Annotated[str, BeforeValidator(_public_id("department"))]
UtcTime = Annotated[str, BeforeValidator(_utc)]
Day = Annotated[str, BeforeValidator(_day)]
BlankIsNull = Annotated[str | None, BeforeValidator(_blank_is_null)]


class FromAttributes(BaseModel):
    # The base of the schemas answered by the thousand: attributes read by pydantic itself.
    model_config = ConfigDict(from_attributes=True)


class TaxProfileOut(Schema):
    country: str
    region: str | None
    tax_id: BlankIsNull
    exempt: bool


class AlertRecipientsOut(Schema):
    billing_email: bool
    user_ids: list[str]
    emails: list[str]

    @staticmethod
    def resolve_user_ids(chosen: dict[str, Any]) -> list[str]:
        return [str(ids.encode("user", pk)) for pk in chosen.get("user_ids") or ()]


class OrgOut(Schema):
    id: OrgId
    name: str
    billing_email: str
    timezone: str
    alert_threshold: int
    # Set: the threshold is this percentage of the credits held (alert_threshold is then
    # kept for when the org goes back to credits); null: alert_threshold credits.
    alert_threshold_percent: int | None
    # null: nobody chose, the alert emails go to the billing email and every owner and admin.
    alert_recipients: AlertRecipientsOut | None
    # null: no tax profile, and no tax charged.
    tax: TaxProfileOut | None
    # Assignments nobody started this many days after they were made are released (the
    # admins warned seven days before); null: never.
    release_unstarted_after_days: int | None
    created_at: UtcTime

    @staticmethod
    def resolve_tax(org: Organization) -> TaxProfile | None:
        return billing_tax.profile_of(org)


class SellerOut(Schema):
    legal_name: str
    address: str
    country: str
    tax_id: BlankIsNull


class TaxRateOut(Schema):
    country: str
    region: str | None
    name: str
    rate_bps: int
    effective_from: Day


class TaxRatesOut(Schema):
    # The version's number (null before any PUT /tax/rates) and when it was set.
    version: int | None
    created_at: UtcTime | None
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
    # A new key, answered once with its secret: from the pair create_api_key returns.
    id: ApiKeyId
    key: str
    role: KeyRole
    department_ids: list[str]

    @staticmethod
    def resolve_role(created: tuple[ApiKey, str]) -> str:
        return created[0].role

    @staticmethod
    def resolve_department_ids(created: tuple[ApiKey, str]) -> list[str]:
        return [str(ids.encode("department", d.pk)) for d in created[0].departments.all()]

    @staticmethod
    def resolve_id(created: tuple[ApiKey, str]) -> int:
        return created[0].pk

    @staticmethod
    def resolve_key(created: tuple[ApiKey, str]) -> str:
        return created[1]


class ScimTokenIn(StrictIn):
    name: Name


class ScimTokenOut(Schema):
    # A new SCIM token, answered once: from the pair create_scim_token returns.
    id: ScimTokenId
    token: str

    @staticmethod
    def resolve_id(created: tuple[ScimToken, str]) -> int:
        return created[0].pk

    @staticmethod
    def resolve_token(created: tuple[ScimToken, str]) -> str:
        return created[1]


class ApiKeyInfoOut(Schema):
    id: ApiKeyId
    name: str
    prefix: str
    role: KeyRole
    created_at: UtcTime
    last_used_at: UtcTime | None
    revoked_at: UtcTime | None


class BalanceOut(Schema):
    credits: int
    assigned: int
    available: int
    at_risk: bool
    period: str
    overage_credits_this_period: int


class EmployeeOut(Schema):
    id: EmployeeId
    name: str
    email: str
    active: bool
    department_id: DepartmentId | None
    external_id: BlankIsNull


class DepartmentOut(Schema):
    id: DepartmentId
    name: str
    budget_credits: int | None
    budget_year_start: str
    # Assigned (open reservations) plus consumed this budget year by its employees.
    committed_credits: int
    # budget_credits - committed_credits (negative when over); null without a budget.
    remaining_credits: int | None
    external_id: BlankIsNull

    @staticmethod
    def resolve_committed_credits(department: Department) -> int:
        return budgets.committed_credits(department)

    @staticmethod
    def resolve_remaining_credits(department: Department) -> int | None:
        if department.budget_credits is None:
            return None
        return department.budget_credits - budgets.committed_credits(department)


class BudgetWarningOut(FromAttributes):
    # A department budget an admin's assignment went over (a manager's is refused instead).
    department_id: DepartmentId
    name: str
    budget_credits: int
    committed_credits: int
    over_by: int


class ContentOut(Schema):
    id: ContentId
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

    @classmethod
    def with_tax(cls, quote: Quote, taxed: TaxedAmount | None) -> QuoteOut:
        """A quote is a price-book figure; its tax depends on who asks, so it comes apart."""
        answer = cls.from_orm(quote)
        if taxed is None:
            return answer
        return answer.model_copy(
            update={"tax_cents": taxed.tax_cents, "total_with_tax_cents": taxed.total_cents}
        )


class NextAction(Schema):
    type: Literal["authenticate"]
    url: str


class PurchaseOut(Schema):
    id: PurchaseId
    quantity: int
    unit_price_cents: int
    # Net of tax, as the price book; the card is charged total_with_tax_cents.
    total_cents: int
    tax_cents: int
    total_with_tax_cents: int
    currency: str
    status: Literal["pending", "paid", "failed"]
    invoice_id: InvoiceId | None
    # The payment intent at the provider; the decline code of a failed payment.
    provider_reference: BlankIsNull
    decline_code: BlankIsNull
    # While pending on the customer: where they authenticate (3-D Secure).
    next_action: NextAction | None
    # Credits of this purchase refunded so far (POST .../refund).
    refunded_credits: int
    created_at: UtcTime

    @staticmethod
    def resolve_total_with_tax_cents(purchase: Purchase) -> int:
        return purchase.total_cents + purchase.tax_cents

    @staticmethod
    def resolve_invoice_id(purchase: Purchase) -> int | None:
        """The receipt, issued once the purchase is paid (prefetched for lists)."""
        receipts = list(purchase.receipts.all())
        return receipts[0].pk if receipts else None

    @staticmethod
    def resolve_next_action(purchase: Purchase) -> NextAction | None:
        if purchase.status == Purchase.Status.PENDING and purchase.action_url:
            return NextAction(type="authenticate", url=purchase.action_url)
        return None

    @staticmethod
    def resolve_refunded_credits(purchase: Purchase) -> int:
        """Only a paid purchase can have refunds: the others are answered without a query."""
        if purchase.status != Purchase.Status.PAID:
            return 0
        refunds = Refund.objects.filter(purchase_id=purchase.pk)
        return sum(refunds.values_list("credits", flat=True))


class AssignmentOut(FromAttributes):
    # Answered by the thousand (a bulk assign answers up to 10,000): see FromAttributes.
    id: AssignmentId
    content_id: ContentId
    employee_id: EmployeeId
    status: Literal["assigned", "started", "completed", "cancelled"]
    credit_cost: int
    charged_credits: int
    overage_credits: int
    created_at: UtcTime
    started_at: UtcTime | None
    completed_at: UtcTime | None
    cancelled_at: UtcTime | None


class BulkAssignOut(Schema):
    # From assign_bulk's result: the assignments made, the employees skipped, and the
    # department budgets it went over.
    data: list[AssignmentOut]
    skipped: list[EmployeeId]
    budget_warnings: list[BudgetWarningOut]

    @staticmethod
    def resolve_data(result: BulkAssignResult) -> list[Assignment]:
        return result.created

    @staticmethod
    def resolve_skipped(result: BulkAssignResult) -> list[int]:
        return result.skipped_employee_ids


class ReassignOut(AssignmentOut):
    # The assignment moved, and the department budget the move went over, if any.
    budget_warnings: list[BudgetWarningOut] = []

    @model_validator(mode="before")
    @classmethod
    def _from_result(cls, value: object) -> object:
        if isinstance(value, ReassignResult):
            fields = {f: getattr(value.assignment, f) for f in AssignmentOut.model_fields}
            return {**fields, "budget_warnings": value.budget_warnings}
        return value


class LedgerEntryOut(FromAttributes):
    # Answered by the thousand (the CSV download is the whole ledger): see FromAttributes.
    id: LedgerId
    type: str
    credits_delta: int
    assigned_delta: int
    overage_credits: int
    credits_after: int
    assigned_after: int
    assignment_id: AssignmentId | None
    purchase_id: PurchaseId | None
    # The department of the assignment's employee (by name), when there is one.
    department: str | None = None
    actor: str
    reason: str
    created_at: UtcTime


class UserOut(Schema):
    # A user, from their membership of the org (which holds the role).
    id: str
    email: str
    name: str
    role: Role
    department_ids: list[str]

    @staticmethod
    def resolve_id(membership: Membership) -> str | None:
        return ids.encode("user", membership.user.pk)

    @staticmethod
    def resolve_department_ids(membership: Membership) -> list[str]:
        return [str(ids.encode("department", d.pk)) for d in membership.departments.all()]

    @staticmethod
    def resolve_email(membership: Membership) -> str:
        return membership.user.email

    @staticmethod
    def resolve_name(membership: Membership) -> str:
        return membership.user.first_name


class Problem(Schema):
    type: str
    title: str
    status: int
    detail: str
    code: str


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows (model instances) and the cursor of the next page."""

    data: list[Any]
    next_cursor: str | None


def page_of(item: type[BaseModel]) -> type[Schema]:
    """A list answer: ``{"data": [...], "next_cursor": null | "..."}``, from a ``Page``."""
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
DepartmentPage = page_of(DepartmentOut)


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
    assignment_id: AssignmentId | None


class TaxLineOut(Schema):
    name: str
    rate_bps: int
    # The jurisdiction levying it, and the part of the subtotal it taxes.
    country: str
    region: BlankIsNull
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

    @classmethod
    def seller_of(cls, invoice: Invoice) -> PartyOut:
        """From the seller's details the document was issued with (its ``seller`` snapshot)."""
        details = invoice.seller
        return cls(
            name=details.get("legal_name", ""),
            address=details.get("address") or None,
            email=None,
            country=details.get("country") or None,
            region=None,
            tax_id=details.get("tax_id") or None,
            exempt=False,
        )

    @classmethod
    def buyer_of(cls, invoice: Invoice) -> PartyOut:
        """From the buyer's name and email and the tax profile the document was issued with."""
        details = invoice.buyer or {}
        return cls(
            name=invoice.buyer_name,
            address=None,
            email=invoice.buyer_email,
            country=details.get("country"),
            region=details.get("region"),
            tax_id=details.get("tax_id"),
            exempt=bool(details.get("exempt", False)),
        )


class InvoiceOut(Schema):
    # An invoice, receipt or credit note; its status and amount due are derived from its
    # payments and credit notes (read from with_status's annotations when present).
    id: InvoiceId
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
    issued_at: UtcTime
    due_at: UtcTime
    purchase_id: PurchaseId | None
    # A credit note's credited invoice; on an invoice, what is still owed after its
    # payments and credit notes.
    credits_invoice_id: InvoiceId | None
    amount_due_cents: int

    @staticmethod
    def resolve_status(invoice: Invoice) -> str:
        return invoice_status(invoice)

    @staticmethod
    def resolve_seller(invoice: Invoice) -> PartyOut:
        return PartyOut.seller_of(invoice)

    @staticmethod
    def resolve_buyer(invoice: Invoice) -> PartyOut:
        return PartyOut.buyer_of(invoice)

    @staticmethod
    def resolve_subtotal_cents(invoice: Invoice) -> int:
        return invoice.total_cents - invoice.tax_cents

    @staticmethod
    def resolve_reverse_charge(invoice: Invoice) -> bool:
        return invoice.tax_treatment == Treatment.REVERSE_CHARGE

    @staticmethod
    def resolve_tax_note(invoice: Invoice) -> str:
        return NOTES[Treatment(invoice.tax_treatment)]

    @staticmethod
    def resolve_amount_due_cents(invoice: Invoice) -> int:
        return amount_due_cents(invoice)


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
    # From the list of usage points reports.usage returns.
    data: list[UsagePointOut]

    @staticmethod
    def resolve_data(points: list[UsagePoint]) -> list[UsagePoint]:
        return points


class ForecastOut(Schema):
    available: int
    daily_burn: float
    runs_out_on: Day | None
    recommended_quantity: int
    quote: QuoteOut | None


InvoicePage = page_of(InvoiceOut)


# --- alerts, webhooks, auto top-up, payment method ------------------------------------------


class AlertOut(Schema):
    id: AlertId
    kind: Literal["at_risk", "overage"]
    active: bool
    # The month of an overage alert.
    period: BlankIsNull
    created_at: UtcTime
    resolved_at: UtcTime | None


class WebhookIn(StrictIn):
    url: Annotated[StrictStr, Field(min_length=8, max_length=2000)]
    events: Annotated[list[Annotated[StrictStr, Field(max_length=64)]], Field(max_length=20)] = []


class WebhookOut(Schema):
    id: WebhookId
    url: str
    events: list[str]
    active: bool
    created_at: UtcTime


class WebhookCreatedOut(Schema):
    # The endpoint just created: the only answer that shows its signing secret.
    id: WebhookId
    url: str
    events: list[str]
    secret: str


class WebhookDeliveryOut(Schema):
    id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    created_at: UtcTime

    @staticmethod
    def resolve_id(delivery: WebhookDelivery) -> str:
        # Not one of ids.PREFIXES: a delivery's id is shown, never looked up.
        return f"dlv_{delivery.pk}"


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


class PaymentMethodOut(Schema):
    # What identifies the card to a person; the card itself stays at the provider.
    brand: str
    last4: str
    exp_month: int
    exp_year: int


AlertPage = page_of(AlertOut)
WebhookPage = page_of(WebhookOut)
WebhookDeliveryPage = page_of(WebhookDeliveryOut)


# --- single sign-on -----------------------------------------------------------------------------


class SsoIn(StrictIn):
    """The org's OpenID Connect provider. ``client_secret`` may be left out to keep the
    stored one (it must be given the first time)."""

    issuer: Annotated[StrictStr, Field(min_length=1, max_length=500)]
    client_id: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    client_secret: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    email_domains: Annotated[
        list[Annotated[StrictStr, Field(min_length=1, max_length=253)]],
        Field(min_length=1, max_length=50),
    ]
    required: StrictBool = False


class SsoOut(Schema):
    # Never the client secret: it is stored encrypted and only sent to the provider.
    issuer: str
    client_id: str
    email_domains: list[str]
    required: bool
    redirect_uri: str
    created_at: UtcTime
    updated_at: UtcTime

    @staticmethod
    def resolve_email_domains(config: SsoConfig) -> list[str]:
        return sso.domains_of(config)

    @staticmethod
    def resolve_redirect_uri(config: SsoConfig) -> str:
        return sso.redirect_uri()
