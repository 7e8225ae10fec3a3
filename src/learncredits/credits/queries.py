"""Read models of credits: the balance as the API shows it (docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from learncredits.credits.models import Balance
from learncredits.db import store
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
    """The org's balance and this period's overage, in one prebuilt query (the balance read
    is one of the most frequent requests; two ORM queries cost more in Python than in the
    database), prepared on PostgreSQL (``store.balance_with_overage``).
    Raises ``Balance.DoesNotExist`` for an org without a balance row."""
    period = period_of(timezone.now(), org.timezone)
    start, end = period_bounds(period, org.timezone)
    row = store.balance_with_overage(org.pk, start, end)
    if row is None:
        raise Balance.DoesNotExist(f"no balance row for org {org.pk}")
    counters = Counters(credits=row.credits, assigned=row.assigned)
    return BalanceView(
        credits=counters.credits,
        assigned=counters.assigned,
        available=counters.available,
        at_risk=is_at_risk(counters, org.alert_threshold),
        period=period,
        overage_credits_this_period=row.overage_credits,
    )
