"""Read models of credits: the balance as API.md shows it."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Sum
from django.utils import timezone

from learncredits.credits.models import Balance, LedgerEntry
from learncredits.domain.balance import Counters, is_at_risk
from learncredits.domain.periods import period_bounds, period_of
from learncredits.tenancy.models import Organization


@dataclass(frozen=True)
class BalanceView:
    credits: int
    assigned: int
    available: int
    at_risk: bool
    period: str
    overage_credits_this_period: int


def balance_view(org: Organization) -> BalanceView:
    row = Balance.objects.values_list("credits", "assigned").get(org_id=org.pk)
    counters = Counters(credits=row[0], assigned=row[1])
    period = period_of(timezone.now(), org.timezone)
    start, end = period_bounds(period, org.timezone)
    overage = (
        LedgerEntry.objects.filter(
            org_id=org.pk, created_at__gte=start, created_at__lt=end, overage_credits__gt=0
        ).aggregate(total=Sum("overage_credits"))["total"]
        or 0
    )
    return BalanceView(
        credits=counters.credits,
        assigned=counters.assigned,
        available=counters.available,
        at_risk=is_at_risk(counters, org.alert_threshold),
        period=period,
        overage_credits_this_period=int(overage),
    )
