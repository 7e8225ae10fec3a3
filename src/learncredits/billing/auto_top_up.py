"""Auto top-up: buy credits by themselves when available drops below the org's trigger.

A balance write that crosses below the trigger emits the internal event ``auto_top_up.due``
in its own transaction (credits/alerts.py); the worker, draining the outbox after that
commit, queues ``run_auto_top_up`` (billing/tasks.py), and its periodic tick also looks at
every org that is below. Nothing of this runs under the balance lock. The run re-checks
everything under a lock on the rule, respects the monthly limits, and buys through the
normal purchase path at the volume price. A declined payment switches the rule off, tells
the org, and is never retried in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from learncredits.audit import trail as audit
from learncredits.billing.models import AutoTopUp
from learncredits.billing.payments import PaymentOutcome, PaymentStatus, get_provider
from learncredits.billing.purchases import apply_outcome, create_pending, settle_purchase
from learncredits.credits.events import emit
from learncredits.credits.models import Balance, Purchase
from learncredits.domain.errors import PaymentFailed, ValidationFailed
from learncredits.domain.periods import period_bounds, period_of
from learncredits.tenancy.models import Organization

ACTOR = "system:auto_top_up"
MAX_LIMIT = 1_000_000


@dataclass(frozen=True)
class RuleIn:
    enabled: bool
    below_available: int
    quantity: int | None
    target_available: int | None
    max_purchases_per_month: int
    max_credits_per_month: int


def configure(org: Organization, rule: RuleIn, *, actor: str = "system") -> AutoTopUp:
    """Set the org's rule (validated), keeping the org's trigger mirror in step, audited with
    the rule it replaced: it decides what the org is charged without anyone clicking."""
    if (rule.quantity is None) == (rule.target_available is None):
        raise ValidationFailed("give exactly one of quantity and target_available")
    if rule.quantity is not None and not 1 <= rule.quantity <= MAX_LIMIT:
        raise ValidationFailed(f"quantity must be between 1 and {MAX_LIMIT}")
    if rule.target_available is not None and rule.target_available <= rule.below_available:
        raise ValidationFailed("target_available must be above below_available")
    if not 1 <= rule.max_purchases_per_month <= 1000:
        raise ValidationFailed("max_purchases_per_month must be between 1 and 1000")
    if not 1 <= rule.max_credits_per_month <= MAX_LIMIT:
        raise ValidationFailed(f"max_credits_per_month must be between 1 and {MAX_LIMIT}")
    with transaction.atomic():
        previous = AutoTopUp.objects.select_for_update().filter(org=org).first()
        saved, _ = AutoTopUp.objects.update_or_create(
            org=org,
            defaults={
                "enabled": rule.enabled,
                "below_available": rule.below_available,
                "quantity": rule.quantity,
                "target_available": rule.target_available,
                "max_purchases_per_month": rule.max_purchases_per_month,
                "max_credits_per_month": rule.max_credits_per_month,
                "disabled_reason": "",
                "updated_at": timezone.now(),
            },
        )
        org.auto_top_up_below = rule.below_available if rule.enabled else None
        org.save(update_fields=["auto_top_up_below"])
        audit.record(
            actor,
            "auto_top_up.configure",
            org_id=org.pk,
            target=f"org_{org.pk}",
            before=_audited(previous) if previous is not None else None,
            after=_audited(saved),
        )
    return saved


def _audited(rule: Any) -> dict[str, object]:
    return {
        "enabled": rule.enabled,
        "below_available": rule.below_available,
        "quantity": rule.quantity,
        "target_available": rule.target_available,
        "max_purchases_per_month": rule.max_purchases_per_month,
        "max_credits_per_month": rule.max_credits_per_month,
    }


def run_auto_top_up(org_id: int) -> str:
    """Buy if the rule says so; returns what happened (for logs and tests).

    The decision and the pending purchase are committed together under a lock on the rule;
    the charge happens after, outside any transaction. A run that finds a pending auto
    top-up (a crashed or concurrent run's) carries that one on instead of buying again, and
    the database allows only one pending auto top-up per org.
    """
    provider = get_provider()
    with transaction.atomic(durable=True):
        rule = AutoTopUp.objects.select_for_update().filter(org_id=org_id).first()
        if rule is None or not rule.enabled:
            return "no rule"
        purchase = Purchase.objects.filter(
            org_id=org_id, actor=ACTOR, status=Purchase.Status.PENDING
        ).first()
        if purchase is None:
            org = Organization.objects.get(pk=org_id)
            balance = Balance.objects.get(org_id=org_id)
            available = balance.credits - balance.assigned
            if available >= rule.below_available:
                return "not needed"
            start, end = period_bounds(period_of(timezone.now(), org.timezone), org.timezone)
            this_month = Purchase.objects.filter(
                org_id=org_id,
                actor=ACTOR,
                status=Purchase.Status.PAID,
                created_at__gte=start,
                created_at__lt=end,
            ).aggregate(count=Count("pk"), credits=Sum("quantity"))
            bought = int(this_month["credits"] or 0)
            if this_month["count"] >= rule.max_purchases_per_month:
                return "monthly purchase limit reached"
            wanted = rule.quantity or (rule.target_available or 0) - available
            quantity = min(wanted, rule.max_credits_per_month - bought)
            if quantity <= 0:
                return "monthly credit limit reached"
            purchase = create_pending(org, quantity, actor=ACTOR, provider_name=provider.name)
    try:
        purchase = settle_purchase(purchase, provider, off_session=True)
    except PaymentFailed as exc:
        _switch_off(org_id, purchase.quantity, exc.detail)
        return "declined; rule disabled"
    if purchase.status == Purchase.Status.PENDING and purchase.action_url:
        # Nobody is there to authenticate an automatic charge: give it up and say so.
        provider.cancel(purchase.provider_reference)
        reason = "the card needs the cardholder to authenticate; buy once from the dashboard"
        apply_outcome(
            purchase,
            PaymentOutcome(
                intent_id=purchase.provider_reference,
                status=PaymentStatus.FAILED,
                decline_code="authentication_required",
                failure_reason=reason,
            ),
        )
        _switch_off(org_id, purchase.quantity, reason)
        return "needs authentication; rule disabled"
    return f"bought {purchase.quantity}" if purchase.status == "paid" else "payment pending"


def _switch_off(org_id: int, quantity: int, reason: str) -> None:
    """A declined automatic charge is not retried in a loop: the rule goes off, the org is
    told, and an admin turns it on again."""
    with transaction.atomic(durable=True):
        AutoTopUp.objects.filter(org_id=org_id).update(
            enabled=False, disabled_reason=reason[:500], updated_at=timezone.now()
        )
        Organization.objects.filter(pk=org_id).update(auto_top_up_below=None)
        emit(org_id, "auto_top_up.failed", {"quantity": quantity, "reason": reason})


def run_due() -> int:
    """Periodic safety net: run every enabled rule whose org is below its trigger."""
    ran = 0
    for org in Organization.objects.filter(auto_top_up_below__isnull=False):
        balance = Balance.objects.get(org_id=org.pk)
        if balance.credits - balance.assigned < (org.auto_top_up_below or 0):
            run_auto_top_up(org.pk)
            ran += 1
    return ran
