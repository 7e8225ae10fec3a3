"""Invoices: receipts for purchases and monthly overage invoices, immutable once issued.

An invoice and its lines are never updated or deleted (database triggers refuse it, see
migration 0002); what changes over an invoice's life, its payment, is a separate append-only
``InvoicePayment`` row per collection attempt, and the status is derived from those rows.
Each overage ledger entry is invoiced at most once: a line's ``(org, ledger_entry)`` is unique.

Uniqueness rules start with ``org_id`` (docs/scaling.md: a table distributed by org can only
enforce those); an entry belongs to one org, so unique per org is unique.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from learncredits.credits.models import Assignment, LedgerEntry, Purchase
from learncredits.domain.tax import Treatment
from learncredits.tenancy.models import Organization


class InvoiceSequence(models.Model):
    """The last number issued in a year. Locked and advanced in the transaction that issues
    the invoice, so numbers have no gaps: a rolled-back invoice rolls its number back too."""

    year = models.IntegerField(primary_key=True)
    last_number = models.IntegerField(default=0)


class CreditNoteSequence(models.Model):
    """The last credit note number issued in a year: credit notes have a gapless series of
    their own (``CN-YYYY-NNNNNN``), advanced like ``InvoiceSequence``."""

    year = models.IntegerField(primary_key=True)
    last_number = models.IntegerField(default=0)


class Invoice(models.Model):
    class Kind(models.TextChoices):
        PURCHASE = "purchase"
        MONTHLY = "monthly"
        # Negative lines that cancel (part of) another invoice: a refund or a disputed line.
        CREDIT_NOTE = "credit_note"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="invoices")
    # Unique per org in the schema; across orgs the gapless yearly sequence (InvoiceSequence,
    # CreditNoteSequence) hands each number out once, so it is unique overall too.
    number = models.CharField(max_length=32)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The billing period (YYYY-MM, org time zone): the overage month, or the purchase's month.
    period = models.CharField(max_length=7)
    currency = models.CharField(max_length=3, default="USD")
    # What the buyer pays: the subtotal (net of tax) plus ``tax_cents``, the sum of its tax
    # lines (``InvoiceTaxLine``). The subtotal is derived: total - tax.
    total_cents = models.BigIntegerField()
    tax_cents = models.BigIntegerField(default=0)
    # domain.tax.Treatment: taxed, exempt, reverse_charge, or no_profile (nothing known).
    tax_treatment = models.CharField(max_length=16, default="no_profile")
    # Buyer as it was at issue: an invoice does not change when the org is renamed.
    buyer_name = models.CharField(max_length=200)
    buyer_email = models.EmailField(max_length=254)
    # The seller's and the buyer's tax details as they were at issue (billing/tax.py):
    # ``{"legal_name", "address", "country", "tax_id"}`` and
    # ``{"country", "region", "tax_id", "exempt"}`` (empty when the org had no tax profile).
    seller = models.JSONField(default=dict)
    buyer = models.JSONField(default=dict)
    # One receipt per purchase (``receipt_per_purchase``, unique with the org: a table
    # distributed by org_id can only enforce that, and a receipt shares its purchase's org).
    purchase = models.ForeignKey(
        Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="receipts"
    )
    # A credit note's credited invoice (a receipt or a monthly invoice); None otherwise.
    credits_invoice = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="credit_notes"
    )
    issued_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["org", "-id"], name="invoice_org_id")]
        constraints = [
            models.UniqueConstraint(fields=["org", "number"], name="invoice_number_unique"),
            models.UniqueConstraint(fields=["org", "purchase"], name="receipt_per_purchase"),
            # Invoices are never negative; credit notes never positive.
            models.CheckConstraint(
                condition=Q(kind="credit_note", total_cents__lte=0)
                | (~Q(kind="credit_note") & Q(total_cents__gte=0)),
                name="invoice_total_sign",
            ),
            # Tax follows the document's sign, and the treatment is one the domain knows.
            models.CheckConstraint(
                condition=Q(kind="credit_note", tax_cents__lte=0)
                | (~Q(kind="credit_note") & Q(tax_cents__gte=0)),
                name="invoice_tax_sign",
            ),
            models.CheckConstraint(
                condition=Q(tax_treatment__in=[t.value for t in Treatment]),
                name="invoice_tax_treatment_known",
            ),
            models.CheckConstraint(
                condition=Q(kind="purchase", purchase__isnull=False, credits_invoice__isnull=True)
                | Q(kind="monthly", purchase__isnull=True, credits_invoice__isnull=True)
                | Q(kind="credit_note", purchase__isnull=True, credits_invoice__isnull=False),
                name="invoice_kind_matches_links",
            ),
        ]

    def __str__(self) -> str:
        return self.number


class CreditNote(Invoice):
    """The credit notes among the invoices (``kind`` credit_note), as their own list in the
    operator console. No table of its own: the rows are invoices, issued by the refund and
    credit note services only (billing/refunds.py)."""

    class Meta:
        proxy = True
        verbose_name = "credit note"
        verbose_name_plural = "credit notes"


class InvoiceLine(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.IntegerField()
    description = models.CharField(max_length=500)
    quantity = models.BigIntegerField()
    unit_price_cents = models.BigIntegerField()
    amount_cents = models.BigIntegerField()
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The overage entry this line bills; unique with the org (``line_bills_entry_once``), so
    # no overage is ever billed twice.
    ledger_entry = models.ForeignKey(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="invoice_line"
    )
    # On a credit note: the line it credits. An overage line (one with an assignment) can be
    # credited once only (``line_credited_once``); a receipt's line may be credited by
    # several partial refunds, bounded by what is left of the purchase's lot.
    credits_line = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="credited_by"
    )

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "invoice", "position"], name="line_position_unique"
            ),
            models.UniqueConstraint(fields=["org", "ledger_entry"], name="line_bills_entry_once"),
            models.UniqueConstraint(
                fields=["org", "credits_line"],
                condition=Q(assignment__isnull=False, credits_line__isnull=False),
                name="line_credited_once",
            ),
            models.CheckConstraint(
                condition=Q(amount_cents=models.F("quantity") * models.F("unit_price_cents")),
                name="line_amount_consistent",
            ),
        ]


class InvoiceTaxLine(models.Model):
    """One tax applied to an invoice: the rate, the jurisdiction levying it, the part of the
    subtotal it taxes and the tax (negative on a credit note). Append-only like the lines."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="tax_lines")
    position = models.IntegerField()
    name = models.CharField(max_length=60)
    rate_bps = models.IntegerField()
    country = models.CharField(max_length=2)
    region = models.CharField(max_length=3, blank=True, default="")
    taxable_cents = models.BigIntegerField()
    amount_cents = models.BigIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "invoice", "position"], name="tax_line_position_unique"
            ),
            models.CheckConstraint(
                condition=Q(rate_bps__gte=0, rate_bps__lte=10_000), name="tax_line_rate_range"
            ),
        ]


class SellerDetails(models.Model):
    """The seller's legal details, kept by the operator: one row (pk 1), printed on every
    document issued after it changes (documents keep the details they were issued with)."""

    legal_name = models.CharField(max_length=200)
    address = models.TextField(max_length=1000)
    country = models.CharField(max_length=2)
    tax_id = models.CharField(max_length=40, blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.CharField(max_length=200, default="system")

    class Meta:
        verbose_name = "seller details"
        verbose_name_plural = "seller details"


class TaxRateTable(models.Model):
    """One version of the whole tax rate schedule (``PUT /tax/rates``). The newest is in
    force; each of its rates applies from its own effective date. Older versions are kept:
    they say what was in force when a document was issued."""

    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)

    class Meta:
        verbose_name = "tax rate table"
        verbose_name_plural = "tax rate tables"


class TaxRateEntry(models.Model):
    table = models.ForeignKey(TaxRateTable, on_delete=models.PROTECT, related_name="rates")
    country = models.CharField(max_length=2)
    region = models.CharField(max_length=3, blank=True, default="")  # "" = the whole country
    name = models.CharField(max_length=60)
    rate_bps = models.IntegerField()
    effective_from = models.DateField()

    class Meta:
        verbose_name = "tax rate"
        verbose_name_plural = "tax rates"
        constraints = [
            models.UniqueConstraint(
                fields=["table", "country", "region", "name", "effective_from"],
                name="tax_rate_version_unique",
            ),
            models.CheckConstraint(
                condition=Q(rate_bps__gte=0, rate_bps__lte=10_000), name="tax_rate_range"
            ),
        ]


class InvoicePayment(models.Model):
    """One collection attempt of an invoice (append-only). A receipt has one, approved."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    attempt = models.IntegerField()
    approved = models.BooleanField()
    amount_cents = models.BigIntegerField()
    reference = models.CharField(max_length=200, blank=True, default="")
    failure_reason = models.CharField(max_length=500, blank=True, default="")
    attempted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["org", "invoice", "attempt"], name="payment_attempt_unique"
            ),
            models.UniqueConstraint(
                fields=["org", "invoice"], condition=Q(approved=True), name="payment_one_approval"
            ),
        ]


class PeriodClose(models.Model):
    """The automatic close of one org's month has run (it runs once per org and period)."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    period = models.CharField(max_length=7)
    closed_at = models.DateTimeField(default=timezone.now)
    invoices_issued = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "period"], name="period_close_once"),
        ]


class AutoTopUp(models.Model):
    """An org's auto top-up rule: when available drops below ``below_available``, buy
    ``quantity`` credits (or enough to reach ``target_available``), at most
    ``max_purchases_per_month`` times and ``max_credits_per_month`` credits a month."""

    org = models.OneToOneField(
        Organization, primary_key=True, on_delete=models.PROTECT, related_name="auto_top_up"
    )
    enabled = models.BooleanField(default=False)
    below_available = models.IntegerField()
    quantity = models.IntegerField(null=True, blank=True)
    target_available = models.IntegerField(null=True, blank=True)
    max_purchases_per_month = models.IntegerField()
    max_credits_per_month = models.IntegerField()
    # Why the rule stopped by itself (a declined payment); cleared when it is set again.
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "auto top-up rule"
        verbose_name_plural = "auto top-up rules"
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__isnull=False, quantity__gte=1, target_available__isnull=True)
                | Q(quantity__isnull=True, target_available__isnull=False),
                name="autotopup_quantity_or_target",
            ),
            models.CheckConstraint(
                condition=Q(max_purchases_per_month__gte=1, max_credits_per_month__gte=1),
                name="autotopup_limits_positive",
            ),
        ]


class TestPaymentIntent(models.Model):
    """The built-in test provider's own record of a payment intent (billing/payments.py).

    It plays the provider's side: a real provider keeps intents on its servers, and so that
    tests can count charges and fault tests can find double charges, this one keeps them
    here. Nothing of ours refers to these rows except by the id the provider handed out.
    """

    __test__ = False  # not a test class, whatever its name says

    reference = models.CharField(max_length=100)  # ours, as a provider keeps it in metadata
    org_id = models.BigIntegerField()
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    # "open", "requires_action", "succeeded", "failed", "canceled" (payments.PaymentStatus)
    status = models.CharField(max_length=20, default="open")
    # The test card this intent charges: "" approves, a trigger declines or asks to authenticate.
    card = models.CharField(max_length=20, blank=True, default="")
    decline_code = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)


class InvoiceCharge(models.Model):
    """A collection attempt while it runs: committed before the provider is called, with the
    provider's intent id stored before that intent is confirmed, so a crash or a concurrent
    run carries the same attempt on instead of charging again. Its result is written once,
    as the attempt's append-only ``InvoicePayment``."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="charges")
    attempt = models.IntegerField()
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    provider = models.CharField(max_length=32)
    provider_reference = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["org", "invoice", "attempt"], name="charge_attempt_unique"
            ),
            models.UniqueConstraint(
                fields=["org", "invoice"], condition=Q(status="pending"), name="charge_one_pending"
            ),
        ]


class TestRefund(models.Model):
    """The built-in test provider's own record of a refund (billing/payments.py), so tests
    count money returned on the provider's side. One row per ``reference``: a retried refund
    with the same reference is the same refund, as with a provider's idempotency key."""

    __test__ = False  # not a test class, whatever its name says

    intent_id = models.CharField(max_length=100)
    amount_cents = models.BigIntegerField()
    reference = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)


class Refund(models.Model):
    """Money going back to the customer while it goes: committed (pending) before the
    provider is called, marked done once by a conditional pending -> done. The credit side
    (credits leaving, the credit note) is written in the same transaction as the pending
    row, so a crash after the provider call leaves a pending row that a retry or the
    worker carries on with the same reference, and the money goes back once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    purchase = models.ForeignKey(
        Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="refunds"
    )
    # One refund per credit note (``refund_per_credit_note``, unique with the org).
    credit_note = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="refunds")
    credits = models.BigIntegerField(default=0)  # credits taken back (purchase refunds)
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="USD")
    # The payment intent the money came from, at the provider.
    payment_reference = models.CharField(max_length=200)
    provider = models.CharField(max_length=32)
    provider_reference = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField()
    actor = models.CharField(max_length=200)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["org", "idempotency_key"], name="refund_idempotency_key_unique"
            ),
            models.UniqueConstraint(fields=["org", "credit_note"], name="refund_per_credit_note"),
            models.CheckConstraint(
                condition=Q(amount_cents__gte=0, credits__gte=0), name="refund_amounts_nonneg"
            ),
        ]
