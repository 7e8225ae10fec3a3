"""Managers racing against one department budget, on PostgreSQL: many assignments at once,
each alone within the budget, never together over it.

The budget check runs in the assign path under the org's balance lock (SELECT ... FOR
UPDATE), reading the committed credits after the lock is granted; so the assignments are
decided one after another and each sees the ones committed before it. Real threads, real
connections, real commits (a transactional test).
"""

from __future__ import annotations

import pytest

from learncredits import ids
from learncredits.credits import actions, budgets
from learncredits.credits.models import Assignment, Balance
from learncredits.credits.verify import verify_ledger
from learncredits.domain.errors import BudgetExceeded
from learncredits.tenancy.models import Department, Organization
from tests.conftest import ok, run_threads

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

MANAGERS = 12
COST = 3
BUDGET = 10  # room for three assignments of 3, not four


def _pk(kind: str, public_id: str) -> int:
    value = ids.decode(kind, public_id)
    assert value is not None
    return value


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_manager_assignments_never_exceed_the_budget(make_org, make_content, round_):
    handle = make_org(f"Race {round_}")
    course = _pk("content", make_content(COST, title=f"Race course {round_}"))
    sales = ok(
        handle.api.post(handle.path("/departments"), {"name": "Sales", "budget_credits": BUDGET}),
        201,
    )
    people = []
    for n in range(MANAGERS):
        employee = handle.employee(f"P{n}")
        ok(handle.api.patch(handle.path(f"/employees/{employee}"), {"department_id": sales["id"]}))
        people.append(_pk("employee", employee))
    handle.buy(100)
    org = Organization.objects.get(pk=_pk("org", handle.id))
    scope = frozenset({_pk("department", sales["id"])})

    def work(i: int, _: object) -> str:
        try:
            actions.assign_bulk(
                Organization.objects.get(pk=org.pk),
                content_id=course,
                employee_ids=[people[i]],
                actor=f"manager:{i}",
                manager_of=scope,
            )
        except BudgetExceeded:
            return "refused"
        return "assigned"

    outcomes = run_threads(MANAGERS, work)

    department = Department.objects.get(pk=_pk("department", sales["id"]))
    committed = budgets.committed_credits(department)
    assert outcomes.count("assigned") == BUDGET // COST, outcomes
    assert outcomes.count("refused") == MANAGERS - BUDGET // COST
    assert committed == COST * (BUDGET // COST) <= BUDGET
    made = Assignment.objects.filter(org=org)
    assert made.count() == BUDGET // COST
    assert Balance.objects.get(org=org).assigned == committed
    _, mismatches = verify_ledger()
    assert mismatches == []
