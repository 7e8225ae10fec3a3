"""Read models of credits: the balance as the API shows it (docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.db import connection
from django.utils import timezone

from learncredits.credits.models import Balance, LedgerEntry
from learncredits.db import sql
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


@cache
def _balance_sql(vendor: str) -> str:
    balance = sql.quote(Balance._meta.db_table)
    ledger = sql.quote(LedgerEntry._meta.db_table)
    return (
        f"SELECT b.credits, b.assigned, (SELECT COALESCE(SUM(e.overage_credits), 0) "
        f"FROM {ledger} e WHERE e.org_id = b.org_id AND e.created_at >= %s "
        f"AND e.created_at < %s AND e.overage_credits > 0) "
        f"FROM {balance} b WHERE b.org_id = %s"
    )


def balance_view(org: Organization) -> BalanceView:
    """The org's balance and this period's overage, in one prebuilt query (the balance read
    is one of the most frequent requests; two ORM queries cost more in Python than in the
    database), prepared on PostgreSQL (``sql.run_one``).
    Raises ``Balance.DoesNotExist`` for an org without a balance row."""
    period = period_of(timezone.now(), org.timezone)
    start, end = period_bounds(period, org.timezone)
    params = [*sql.adapt(LedgerEntry, ("created_at", "created_at"), (start, end)), org.pk]
    _, rows = sql.run_one(_balance_sql(connection.vendor), params)
    row = rows[0] if rows else None
    if row is None:
        raise Balance.DoesNotExist(f"no balance row for org {org.pk}")
    counters = Counters(credits=int(row[0]), assigned=int(row[1]))
    return BalanceView(
        credits=counters.credits,
        assigned=counters.assigned,
        available=counters.available,
        at_risk=is_at_risk(counters, org.alert_threshold),
        period=period,
        overage_credits_this_period=int(row[2] or 0),
    )
