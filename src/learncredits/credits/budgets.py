"""What each department has committed of its budget, and the check an assignment passes.

Committed credits of a department = the costs of its employees' open reservations
(``assigned``, whenever made) + the costs of their assignments started in the current budget
year (consumed, whether from the balance or as overage). The assignments are the truth: a
reservation released or cancelled no longer counts, and a start counts once, for the budget
year it happened in. An employee's assignments count for the department they are in now.

``check`` runs inside the assign and reassign paths, under the org's balance lock
(credits/actions.py), so two managers assigning at once are decided one after the other and
cannot together go over a budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from zoneinfo import ZoneInfo

from django.db.models import Q, Sum
from django.utils import timezone

from learncredits import ids
from learncredits.credits.models import Assignment
from learncredits.domain.budgets import BudgetOutlook, budget_year_start
from learncredits.domain.errors import BudgetExceeded
from learncredits.tenancy.models import Department, Organization


def org_today(org: Organization) -> date:
    """Today in the org's time zone: the day budget years are counted from."""
    return timezone.now().astimezone(ZoneInfo(org.timezone)).date()


def year_began(department: Department, tz_name: str, today: date) -> datetime:
    """The instant the department's current budget year began, in the org's time zone."""
    start = budget_year_start(today, department.budget_year_start)
    return datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(tz_name))


def _committed_filter(department: Department, tz_name: str, today: date) -> Q:
    return Q(status=Assignment.Status.ASSIGNED) | Q(
        status__in=[Assignment.Status.STARTED, Assignment.Status.COMPLETED],
        started_at__gte=year_began(department, tz_name, today),
    )


def committed_credits(department: Department, today: date | None = None) -> int:
    """The department's committed credits in the budget year ``today`` (org's time zone;
    default: now) is in."""
    org = department.org
    today = today or org_today(org)
    total = Assignment.objects.filter(
        _committed_filter(department, org.timezone, today),
        org_id=department.org_id,
        employee__department_id=department.pk,
    ).aggregate(total=Sum("credit_cost"))["total"]
    return int(total or 0)


def committed_by_department(
    org: Organization, departments: Iterable[Department], today: date | None = None
) -> dict[int, int]:
    """Committed credits of each of the org's ``departments`` (one query each: a budget
    year may begin on a different day for each)."""
    today = today or org_today(org)
    answer: dict[int, int] = {}
    for department in departments:
        department.org = org  # known already: spares committed_credits a query
        answer[department.pk] = committed_credits(department, today)
    return answer


def check(org: Organization, adding: Mapping[int, int], *, enforce: bool) -> list[BudgetOutlook]:
    """The budgets that ``adding`` (credits newly committed, by department id) would take
    over. With ``enforce`` (a manager's action) that is a refusal, ``budget_exceeded``;
    otherwise (an admin's) the answer lists them, to be told. Call under the balance lock."""
    wanted = {pk: credits for pk, credits in adding.items() if credits > 0}
    if not wanted:
        return []
    today = org_today(org)
    over: list[BudgetOutlook] = []
    budgeted = Department.objects.filter(
        org=org, pk__in=list(wanted), budget_credits__isnull=False
    ).order_by("name", "pk")
    for department in budgeted:
        department.org = org
        assert department.budget_credits is not None
        outlook = BudgetOutlook(
            department_id=department.pk,
            name=department.name,
            budget_credits=department.budget_credits,
            committed_credits=committed_credits(department, today) + wanted[department.pk],
        )
        if outlook.exceeded:
            over.append(outlook)
    if over and enforce:
        first = over[0]
        raise BudgetExceeded(
            f"this would take department {first.name!r} over its budget: "
            f"{first.committed_credits} of {first.budget_credits} credits committed "
            f"({first.over_by} over)",
            departments=[
                {
                    "department_id": ids.encode("department", o.department_id),
                    "name": o.name,
                    "budget_credits": o.budget_credits,
                    "committed_credits": o.committed_credits,
                    "over_by": o.over_by,
                }
                for o in over
            ],
        )
    return over
