"""Read models of credits: the balance as the API shows it (docs/api.md), and what an
assignment would do before it is made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils import timezone

from learncredits.catalog.models import Content
from learncredits.catalog.services import current_price_book
from learncredits.credits.models import Assignment, Balance
from learncredits.db import store
from learncredits.domain.balance import AssignOutlook, Counters, assign_outlook, is_at_risk
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
        at_risk=is_at_risk(counters, org.alert_line()),
        period=period,
        overage_credits_this_period=row.overage_credits,
    )


@dataclass(frozen=True)
class AssignPreview:
    balance: BalanceView
    new_count: int
    skipped_count: int
    outlook: AssignOutlook
    # ``outlook.billed_at_retail`` at today's retail price.
    retail_cost_cents: int


def assign_preview(
    org: Organization, content: Content, employee_ids: Sequence[int]
) -> AssignPreview:
    """What ``actions.assign_bulk`` would do with these employees, without doing it: the
    same skip rule (an employee holding an open assignment of the item is skipped) and the
    domain's arithmetic, priced with the price book in force."""
    balance = balance_view(org)
    unique_ids = list(dict.fromkeys(employee_ids))
    holding = set(
        Assignment.objects.filter(
            org=org,
            content=content,
            employee_id__in=unique_ids,
            status__in=[Assignment.Status.ASSIGNED, Assignment.Status.STARTED],
        ).values_list("employee_id", flat=True)
    )
    new_count = sum(1 for pk in unique_ids if pk not in holding)
    outlook = assign_outlook(
        Counters(balance.credits, balance.assigned),
        new_count=new_count,
        credit_cost=content.credit_cost,
    )
    return AssignPreview(
        balance=balance,
        new_count=new_count,
        skipped_count=len(holding),
        outlook=outlook,
        retail_cost_cents=outlook.billed_at_retail * current_price_book().retail_unit_price_cents,
    )
