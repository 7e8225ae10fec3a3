"""Balances, the append-only ledger, credit lots, assignments and purchases.

The models are thin: every change goes through credits/actions.py. The invariants live in
the database as CHECK constraints, a partial unique index, and triggers that refuse any
UPDATE or DELETE of a ledger entry or a lot draw (see migration 0002).
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from learncredits.catalog.models import Content
from learncredits.tenancy.models import Employee, Organization


class Balance(models.Model):
    """One row per org; the row every write path locks, so writes to one org serialize."""

    org = models.OneToOneField(
        Organization, primary_key=True, on_delete=models.PROTECT, related_name="balance"
    )
    credits = models.BigIntegerField(default=0)
    assigned = models.BigIntegerField(default=0)
    # Whether the org was at risk as of this row's last write (docs/product.md section 9); kept here
    # so that only a change that crosses the line costs an alert row and an event.
    at_risk = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(credits__gte=0), name="balance_credits_nonneg"),
            models.CheckConstraint(condition=Q(assigned__gte=0), name="balance_assigned_nonneg"),
        ]


class Purchase(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PAID = "paid"
        FAILED = "failed"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="purchases")
    quantity = models.IntegerField()
    unit_price_cents = models.BigIntegerField()
    total_cents = models.BigIntegerField()
    retail_unit_price_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="USD")
    # Tax on the purchase, decided when it is opened (billing/tax.py): the amount charged is
    # total_cents + tax_cents. ``tax`` keeps how (treatment, tax lines, seller and buyer),
    # so the receipt says exactly what was charged.
    tax_cents = models.BigIntegerField(default=0)
    tax = models.JSONField(default=dict)
    # pending until the provider answers; paid adds the credits (exactly once); failed adds none.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    provider = models.CharField(max_length=32)
    provider_reference = models.CharField(max_length=200, blank=True, default="")
    failure_reason = models.CharField(max_length=500, blank=True, default="")
    # The provider's reason code for a decline ("card_declined", "insufficient_funds").
    decline_code = models.CharField(max_length=60, blank=True, default="")
    # While the payment waits for the customer to authenticate (3-D Secure): where they do.
    action_url = models.CharField(max_length=500, blank=True, default="")
    actor = models.CharField(max_length=200)
    # The client's Idempotency-Key (or one of ours, as auto top-up's): a retry after any crash
    # finds this purchase and carries it on, instead of buying again.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["org", "-id"], name="purchase_org_id")]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "idempotency_key"], name="purchase_idempotency_key_unique"
            ),
            # Auto top-up carries a pending purchase on instead of opening a second one.
            models.UniqueConstraint(
                fields=["org"],
                condition=Q(actor="system:auto_top_up", status="pending"),
                name="purchase_one_pending_auto_top_up",
            ),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="purchase_quantity_pos"),
            models.CheckConstraint(condition=Q(tax_cents__gte=0), name="purchase_tax_nonneg"),
            models.CheckConstraint(
                condition=Q(total_cents=F("quantity") * F("unit_price_cents")),
                name="purchase_total_consistent",
            ),
        ]


class CreditLot(models.Model):
    """Credits added together at one unit price (a purchase, or a grant at 0).

    Consumption draws lots first in, first out; ``remaining`` is what is left of this lot.
    """

    class Kind(models.TextChoices):
        PURCHASE = "purchase"
        GRANT = "grant"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="lots")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # A purchase makes one lot (``lot_per_purchase``, unique with the org).
    purchase = models.ForeignKey(
        Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="lots"
    )
    quantity = models.BigIntegerField()
    remaining = models.BigIntegerField()
    unit_price_cents = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["org", "id"], name="lot_open_fifo", condition=Q(remaining__gt=0)),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="lot_quantity_pos"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0, remaining__lte=F("quantity")),
                name="lot_remaining_within_quantity",
            ),
            models.CheckConstraint(condition=Q(unit_price_cents__gte=0), name="lot_price_nonneg"),
            models.UniqueConstraint(fields=["org", "purchase"], name="lot_per_purchase"),
        ]


class Assignment(models.Model):
    class Status(models.TextChoices):
        ASSIGNED = "assigned"
        STARTED = "started"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    # Indexed by the composite indexes below, which start with it (a plain one more would
    # only cost every insert and every start's update).
    org = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="assignments", db_index=False
    )
    content = models.ForeignKey(Content, on_delete=models.PROTECT)
    employee = models.ForeignKey(Employee, on_delete=models.PROTECT)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ASSIGNED)
    # Fixed at assign time: a later change of the catalog does not reprice a reservation.
    credit_cost = models.IntegerField()
    # Set at start: paid from the balance, and billed at retail on the monthly invoice.
    charged_credits = models.IntegerField(default=0)
    overage_credits = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["org", "-id"], name="assignment_org_id"),
            models.Index(fields=["org", "employee", "status"], name="assignment_org_emp_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "employee", "content"],
                condition=Q(status__in=["assigned", "started"]),
                name="assignment_one_open_per_employee_content",
            ),
            models.CheckConstraint(
                condition=Q(credit_cost__gte=0, charged_credits__gte=0, overage_credits__gte=0),
                name="assignment_amounts_nonneg",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=["assigned", "cancelled"], charged_credits=0, overage_credits=0
                )
                | Q(
                    status__in=["started", "completed"],
                    credit_cost=F("charged_credits") + F("overage_credits"),
                ),
                name="assignment_charge_matches_status",
            ),
        ]


class LedgerEntry(models.Model):
    """One change to an org's balance, append-only: corrections are new entries.

    ``credits_after``/``assigned_after`` are the balance right after this entry, so the
    balance at any point in history is one row away.
    """

    class Type(models.TextChoices):
        PURCHASE = "purchase"
        GRANT = "grant"
        ADJUSTMENT = "adjustment"
        RESERVE = "reserve"
        RELEASE = "release"
        CONSUME = "consume"
        REASSIGN = "reassign"
        # Unconsumed credits of a purchase given back for money (drawn from its own lot).
        REFUND = "refund"

    # Indexed by ledger_org_id and ledger_org_created, which start with it.
    org = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="ledger", db_index=False
    )
    type = models.CharField(max_length=16, choices=Type.choices)
    credits_delta = models.BigIntegerField(default=0)
    assigned_delta = models.BigIntegerField(default=0)
    # Credits of a consume entry not covered by the balance, billed at the retail price below.
    overage_credits = models.BigIntegerField(default=0)
    retail_unit_price_cents = models.BigIntegerField(null=True, blank=True)
    credits_after = models.BigIntegerField()
    assigned_after = models.BigIntegerField()
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger"
    )
    # Set on purchase and grant entries only: indexed where set (ledger_purchase,
    # ledger_lot), so the consumes, reserves and releases that make up most of the ledger
    # add no entry to these indexes.
    purchase = models.ForeignKey(
        Purchase,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger",
        db_index=False,
    )
    lot = models.ForeignKey(
        CreditLot,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="created_by",
        db_index=False,
    )
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["org", "-id"], name="ledger_org_id"),
            models.Index(fields=["org", "created_at"], name="ledger_org_created"),
            models.Index(
                fields=["purchase"], name="ledger_purchase", condition=Q(purchase__isnull=False)
            ),
            models.Index(fields=["lot"], name="ledger_lot", condition=Q(lot__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(credits_after__gte=0, assigned_after__gte=0, overage_credits__gte=0),
                name="ledger_after_nonneg",
            ),
            models.CheckConstraint(
                condition=Q(overage_credits=0) | Q(retail_unit_price_cents__isnull=False),
                name="ledger_overage_has_price",
            ),
        ]


class LotDraw(models.Model):
    """Which lot paid for how many credits of one ledger entry: the cost basis. Append-only."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="draws")
    lot = models.ForeignKey(CreditLot, on_delete=models.PROTECT, related_name="draws")
    quantity = models.BigIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="lotdraw_quantity_pos"),
        ]


# --- what balance changes announce -----------------------------------------------------------
# Both tables were created by the notify app and keep their names: they moved here (state
# only, no data touched) so that the write paths that fill them need not import notify,
# which only reads them.


class Alert(models.Model):
    """An open or resolved at-risk alert, or a period's overage alert (credits/alerts.py)."""

    class Kind(models.TextChoices):
        AT_RISK = "at_risk"
        OVERAGE = "overage"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="alerts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The billing period of an overage alert (one per period); empty for at_risk.
    period = models.CharField(max_length=7, blank=True, default="")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # What the numbers were when it opened and when it resolved (credits, assigned,
    # available and the threshold in credits for at_risk; the first overage for overage),
    # written by credits/alerts.py in the transaction that crossed the line, so the history
    # says why without replaying the ledger. Empty for alerts opened before they were kept.
    data = models.JSONField(default=dict, blank=True)
    resolved_data = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "notify_alert"
        indexes = [models.Index(fields=["org", "-id"], name="alert_org_id")]
        constraints = [
            models.UniqueConstraint(
                fields=["org"],
                condition=Q(kind="at_risk", active=True),
                name="alert_one_active_at_risk",
            ),
            models.UniqueConstraint(
                fields=["org", "period"],
                condition=Q(kind="overage"),
                name="alert_one_overage_per_period",
            ),
        ]


# Events that are one-off notices to the org (each emailed), listed with its alerts on
# Settings > Billing (credits/alert_history.py); a partial index finds an org's newest.
NOTICE_EVENT_TYPES = (
    "assignment.release_warning",
    "invoice.payment_failed",
    "auto_top_up.failed",
    "webhook.endpoint_disabled",
)


class Event(models.Model):
    """The transactional outbox (credits/events.py): something that happened to an org, for
    email, webhooks and the worker's own reactions. Written in the causing transaction;
    ``dispatched_at`` is set when the worker has fanned it out (notify/delivery.py)."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="events")
    type = models.CharField(max_length=64)
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "notify_event"
        indexes = [
            models.Index(
                fields=["id"], name="event_undispatched", condition=Q(dispatched_at__isnull=True)
            ),
            models.Index(
                fields=["org", "-id"],
                name="event_notice_org",
                condition=Q(type__in=NOTICE_EVENT_TYPES),
            ),
        ]


class ReleaseWarning(models.Model):
    """An open assignment whose admins were told it will be released for not being started
    (credits/aging.py). One row per assignment, ever: the unique (org, assignment) is what
    makes the warning go out once, and ``warned_at`` is what the release waits seven days after."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    # One warning per assignment (``release_warning_once``, unique with the org).
    assignment = models.ForeignKey(
        Assignment, on_delete=models.PROTECT, related_name="release_warnings", db_index=False
    )
    warned_at = models.DateTimeField()
    # The day it was announced for (the org's setting may change after the warning).
    release_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["org", "warned_at"], name="release_warning_org")]
        constraints = [
            models.UniqueConstraint(fields=["org", "assignment"], name="release_warning_once"),
        ]
