"""At-risk and overage alerts (docs/product.md section 9) and the auto top-up trigger,
evaluated inside the changing transaction.

The balance row carries ``at_risk`` as of its last write, so a change that does not cross the
line costs nothing extra; crossing it opens or resolves the alert and emits the event that
sends the one email (and the webhook). The overage alert opens at the first overage of a
billing period, once (a partial unique index makes a second one impossible). Falling below
the auto top-up trigger only emits an internal event: the buying is billing's, done by the
worker after the change committed, never under the balance lock.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from learncredits.credits.events import emit
from learncredits.credits.models import Alert
from learncredits.domain.balance import AlertThreshold, Counters, falls_below_trigger
from learncredits.tenancy.models import Organization


def at_risk_changed(
    org_id: int, counters: Counters, at_risk: bool, threshold: AlertThreshold
) -> None:
    """The org just crossed the at-risk line (in either direction). The alert row keeps
    the numbers of the crossing (the history on Settings > Billing says why from them), and
    the event carries them too; ``alert_threshold`` is the line in credits at that moment,
    with ``alert_threshold_percent`` when the line is a percentage of the credits held."""
    data: dict[str, object] = {
        "credits": counters.credits,
        "assigned": counters.assigned,
        "available": counters.available,
        "alert_threshold": threshold.line(counters.credits),
    }
    if threshold.percent is not None:
        data["alert_threshold_percent"] = threshold.percent
    if at_risk:
        Alert.objects.create(org_id=org_id, kind=Alert.Kind.AT_RISK, data=data)
        emit(org_id, "balance.at_risk", data)
    else:
        Alert.objects.filter(org_id=org_id, kind=Alert.Kind.AT_RISK, active=True).update(
            active=False, resolved_at=timezone.now(), resolved_data=data
        )
        emit(org_id, "balance.recovered", data)


def overage_incurred(org_id: int, period: str, data: dict[str, object]) -> None:
    """Every overage emits ``overage.incurred``; the first of a period also opens the alert
    (and only that one is emailed)."""
    first = False
    if not Alert.objects.filter(org_id=org_id, kind=Alert.Kind.OVERAGE, period=period).exists():
        try:
            with transaction.atomic():
                Alert.objects.create(
                    org_id=org_id, kind=Alert.Kind.OVERAGE, period=period, data=dict(data)
                )
            first = True
        except IntegrityError:  # pragma: no cover - the balance lock serializes this
            first = False
    emit(org_id, "overage.incurred", {**data, "period": period, "first_of_period": first})


def auto_top_up_check(org: Organization, available_before: int, counters: Counters) -> None:
    """Called by every balance write: when available falls below the org's auto top-up
    trigger, emit ``auto_top_up.due`` in the same transaction. The worker reacts to it once
    the change has committed (billing/tasks.py), so a rolled-back change buys nothing."""
    trigger = org.auto_top_up_below
    if falls_below_trigger(available_before, counters.available, trigger):
        emit(
            org.pk,
            "auto_top_up.due",
            {"available": counters.available, "below_available": trigger},
        )
