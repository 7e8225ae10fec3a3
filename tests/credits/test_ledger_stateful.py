"""A stateful model test of the credits engine (docs/product.md sections 2-6 and 11).

Hypothesis drives the write paths in ``learncredits.credits.actions`` directly, in random
order, against a small pure reference model kept in this file: the two balance counters,
the credit lots (first in, first out), every assignment's status and charge, and which
employees are active. After every step the database must agree with the model, the ledger
must sum to the balance, and ``verify_ledger()`` must find nothing wrong.

Two organizations take part: one whose payments go through, and one whose billing email
carries ``+decline`` so that every purchase is declined (it only gets credits from operator
adjustments). Each Hypothesis example runs inside its own savepoint, rolled back at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

import pytest
from django.db import transaction
from django.db.models import Count, Sum
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from learncredits.billing import purchases
from learncredits.catalog.services import create_content
from learncredits.credits import actions
from learncredits.credits.accounts import create_org
from learncredits.credits.models import (
    Assignment,
    Balance,
    CreditLot,
    LedgerEntry,
    LotDraw,
    Purchase,
)
from learncredits.credits.verify import verify_ledger
from learncredits.domain.errors import (
    EmployeeInactive,
    InsufficientCredits,
    InvalidState,
    NotFound,
    PaymentFailed,
    ValidationFailed,
)
from learncredits.tenancy.models import Employee
from learncredits.tenancy.services import create_employee
from tests.conftest import rolled_back_like_autocommit

ACTOR = "stateful-test"
RETAIL_CENTS = 1000
# docs/product.md section 4, default tiers: (min quantity, unit price in cents), highest first.
TIERS = [(1000, 700), (500, 750), (250, 800), (100, 850), (50, 900), (1, 1000)]
ORG_KEYS = ("paying", "declining")
COSTS = (0, 1, 2, 3)

ASSIGNED, STARTED, COMPLETED, CANCELLED = "assigned", "started", "completed", "cancelled"
OPEN = (ASSIGNED, STARTED)

_emails = count()


def unit_price(quantity: int) -> int:
    return next(price for minimum, price in TIERS if quantity >= minimum)


@dataclass(frozen=True)
class EmpRef:
    org_key: str
    id: int

    def __repr__(self) -> str:
        return f"emp({self.org_key},{self.id})"


@dataclass(frozen=True)
class AsgRef:
    org_key: str
    id: int

    def __repr__(self) -> str:
        return f"asg({self.org_key},{self.id})"


@dataclass
class OrgModel:
    org: object
    declines: bool
    credits: int = 0
    assigned: int = 0
    # [quantity, remaining, unit price in cents], oldest first.
    lots: list[list[int]] = field(default_factory=list)
    paid: int = 0
    failed: int = 0
    last_entry_id: int = 0

    def add_lot(self, quantity: int, price: int) -> None:
        self.lots.append([quantity, quantity, price])
        self.credits += quantity

    def take(self, quantity: int) -> None:
        """Remove ``quantity`` credits, drawing the oldest lots first."""
        assert 0 <= quantity <= self.credits
        self.credits -= quantity
        for lot in self.lots:
            step = min(quantity, lot[1])
            lot[1] -= step
            quantity -= step
        assert quantity == 0


@dataclass
class AsgModel:
    org_key: str
    employee_id: int
    content_id: int
    cost: int
    status: str = ASSIGNED
    charged: int = 0
    overage: int = 0


# (type, credits_delta, assigned_delta, overage_credits, retail price, assignment id)
Expected = tuple[str, int, int, int, int | None, int | None]


class LedgerMachine(RuleBasedStateMachine):
    employees = Bundle("employees")
    assignments = Bundle("assignments")

    def __init__(self) -> None:
        super().__init__()
        # Each example runs in a savepoint inside the test's transaction, rolled back in
        # teardown(), so examples never see each other's rows.
        self._atomic = rolled_back_like_autocommit()
        self._atomic.__enter__()
        self.orgs = {
            "paying": OrgModel(
                create_org(name="Paying", billing_email="billing@example.com"), declines=False
            ),
            "declining": OrgModel(
                create_org(name="Declining", billing_email="billing+decline@example.com"),
                declines=True,
            ),
        }
        self.content = {
            cost: create_content(
                title=f"Course costing {cost}",
                premium=cost > 0,
                credit_cost=cost,
                xapi_activity_id=None,
            ).pk
            for cost in COSTS
        }
        self.active: dict[int, bool] = {}
        self.emp_org: dict[int, str] = {}
        self.asg: dict[int, AsgModel] = {}
        self.expected: dict[str, list[Expected]] = {key: [] for key in ORG_KEYS}

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- model helpers ----------------------------------------------------------------

    def _new_employee(self, org_key: str) -> EmpRef:
        n = next(_emails)
        employee = create_employee(
            self.orgs[org_key].org, name=f"Person {n}", email=f"person{n}@example.com"
        )
        self.active[employee.pk] = True
        self.emp_org[employee.pk] = org_key
        return EmpRef(org_key, employee.pk)

    def _holds_open(self, employee_id: int, content_id: int) -> bool:
        return any(
            a.employee_id == employee_id and a.content_id == content_id and a.status in OPEN
            for a in self.asg.values()
        )

    def _expect(self, org_key: str, *entries: Expected) -> None:
        self.expected[org_key].extend(entries)

    def _consume(self, asg_id: int) -> None:
        m = self.asg[asg_id]
        om = self.orgs[m.org_key]
        from_balance = min(m.cost, om.credits)
        overage = m.cost - from_balance
        om.take(from_balance)
        om.assigned -= m.cost
        m.status, m.charged, m.overage = STARTED, from_balance, overage
        if overage:
            event("start: partial cover" if from_balance else "start: all overage")
        if m.cost:
            retail = RETAIL_CENTS if overage else None
            self._expect(m.org_key, ("consume", -from_balance, -m.cost, overage, retail, asg_id))

    def _release(self, asg_id: int) -> None:
        m = self.asg[asg_id]
        self.orgs[m.org_key].assigned -= m.cost
        m.status = CANCELLED
        if m.cost:
            self._expect(m.org_key, ("release", 0, -m.cost, 0, None, asg_id))

    # --- rules ------------------------------------------------------------------------

    @initialize(target=employees)
    def two_employees_each(self):
        return multiple(*(self._new_employee(key) for key in ORG_KEYS for _ in range(2)))

    @rule(target=employees, org_key=st.sampled_from(ORG_KEYS))
    def add_employee(self, org_key):
        return self._new_employee(org_key)

    @rule(
        org_key=st.sampled_from(ORG_KEYS),
        # Mostly a few credits, so that overage stays likely; sometimes a volume tier.
        quantity=st.one_of(st.integers(1, 4), st.integers(1, 4), st.sampled_from([50, 95, 100])),
    )
    def purchase(self, org_key, quantity):
        om = self.orgs[org_key]
        if om.declines:  # declined: PaymentFailed, the purchase is failed, nothing added
            with pytest.raises(PaymentFailed):
                purchases.purchase_credits(om.org, quantity, actor=ACTOR)
            om.failed += 1
            event("purchase declined")
            return
        result = purchases.purchase_credits(om.org, quantity, actor=ACTOR).purchase
        price = unit_price(quantity)
        assert (result.status, result.quantity) == ("paid", quantity)
        assert (result.unit_price_cents, result.total_cents) == (price, quantity * price)
        om.add_lot(quantity, price)
        om.paid += 1
        self._expect(org_key, ("purchase", quantity, 0, 0, None, None))

    @rule(
        org_key=st.sampled_from(ORG_KEYS),
        delta=st.integers(-8, 7).map(lambda n: n + (n >= 0)),  # -8..-1 and 1..8
        blank_reason=st.integers(0, 5).map(lambda n: n == 5),
    )
    def adjust(self, org_key, delta, blank_reason):
        if blank_reason:  # an operator adjustment needs a reason
            with pytest.raises(ValidationFailed):
                actions.adjust_credits(self.orgs[org_key].org, delta, reason="  ", actor=ACTOR)
            return
        self._adjust(org_key, delta)

    @rule(org_key=st.sampled_from(ORG_KEYS), keep=st.integers(0, 2))
    def adjust_down_to(self, org_key, keep):
        """Remove credits down to a few, so that starts are only partly covered."""
        om = self.orgs[org_key]
        if om.credits > keep:
            self._adjust(org_key, keep - om.credits)

    def _adjust(self, org_key, delta):
        om = self.orgs[org_key]
        if delta < 0 and om.credits + delta < 0:
            with pytest.raises(InsufficientCredits):
                actions.adjust_credits(om.org, delta, reason="support", actor=ACTOR)
            event("adjust: insufficient credits")
            return
        entry = actions.adjust_credits(om.org, delta, reason="support", actor=ACTOR)
        assert (entry.type, entry.credits_delta, entry.reason) == ("adjustment", delta, "support")
        if delta > 0:
            om.add_lot(delta, 0)
        else:
            om.take(-delta)
        self._expect(org_key, ("adjustment", delta, 0, 0, None, None))

    @rule(
        target=assignments,
        cost=st.sampled_from(COSTS),
        emps=st.lists(employees, min_size=1, max_size=3),
        foreign=st.integers(0, 5).map(lambda n: n == 0),
    )
    def assign(self, cost, emps, foreign):
        # Mostly the first employee's own org (others of other orgs are dropped); sometimes
        # the other org, to which the first employee is unknown.
        own = emps[0].org_key
        org_key = next(k for k in ORG_KEYS if (k == own) != foreign)
        ids = list(dict.fromkeys(e.id for e in emps if foreign or e.org_key == own))
        return multiple(*self._assign(org_key, cost, ids))

    def _assign(self, org_key: str, cost: int, ids: list[int]) -> list[AsgRef]:
        om = self.orgs[org_key]
        content_id = self.content[cost]
        refused: list[type[Exception]] = []
        if any(self.emp_org[i] != org_key for i in ids):
            refused.append(NotFound)  # another org's employee counts as unknown
        if any(self.emp_org[i] == org_key and not self.active[i] for i in ids):
            refused.append(EmployeeInactive)
        if refused:
            with pytest.raises(tuple(refused)):
                actions.assign_bulk(om.org, content_id=content_id, employee_ids=ids, actor=ACTOR)
            event(f"assign refused: {', '.join(err.__name__ for err in refused)}")
            return []

        holding = [i for i in ids if self._holds_open(i, content_id)]
        result = actions.assign_bulk(om.org, content_id=content_id, employee_ids=ids, actor=ACTOR)
        assert sorted(result.skipped_employee_ids) == sorted(holding)
        if holding:
            event("assign: skipped holders")
        if om.assigned + cost * (len(ids) - len(holding)) > om.credits:
            event("assign: beyond available")
        expected_new = sorted(i for i in ids if i not in holding)
        assert sorted(a.employee_id for a in result.created) == expected_new
        refs = []
        for a in result.created:
            assert a.pk is not None and a.pk not in self.asg
            assert (a.credit_cost, a.status) == (cost, ASSIGNED)
            self.asg[a.pk] = AsgModel(org_key, a.employee_id, content_id, cost)
            om.assigned += cost
            if cost:
                self._expect(org_key, ("reserve", 0, cost, 0, None, a.pk))
            refs.append(AsgRef(org_key, a.pk))
        return refs

    @rule(a=assignments, twice=st.booleans())
    def start(self, a, twice):
        self._start(a, twice)

    @rule(
        org_key=st.sampled_from(ORG_KEYS),
        cost=st.sampled_from([3, 2, 1, 0]),
        cover=st.sampled_from(["partial", "none", "full"]),
    )
    def hire_assign_and_start(self, org_key, cost, cover):
        """A new employee gets an item and starts it while the org holds one credit (partly
        covered when the cost is 2 or 3), no credits, or exactly the cost."""
        employee = self._new_employee(org_key)
        (ref,) = self._assign(org_key, cost, [employee.id])
        credits_before = {"partial": 1 if cost >= 2 else 0, "none": 0, "full": cost}[cover]
        if self.orgs[org_key].credits != credits_before:
            self._adjust(org_key, credits_before - self.orgs[org_key].credits)
        self._start(ref, twice=False)

    def _start(self, a, twice):
        m = self.asg[a.id]
        org = self.orgs[a.org_key].org
        if m.status == CANCELLED:
            with pytest.raises(InvalidState):
                actions.start_assignment(org, a.id, actor=ACTOR)
            return
        if m.status == ASSIGNED:
            self._consume(a.id)
            event(f"start: cost {m.cost}")
        result = actions.start_assignment(org, a.id, actor=ACTOR)
        if twice:  # starting twice charges once
            result = actions.start_assignment(org, a.id, actor=ACTOR)
        assert result.status == m.status
        assert (result.charged_credits, result.overage_credits) == (m.charged, m.overage)

    @rule(a=assignments)
    def complete(self, a):
        m = self.asg[a.id]
        org = self.orgs[a.org_key].org
        if m.status == CANCELLED:
            with pytest.raises(InvalidState):
                actions.complete_assignment(org, a.id, actor=ACTOR)
            return
        if m.status == ASSIGNED:  # never started: started (and charged) first
            self._consume(a.id)
        m.status = COMPLETED
        result = actions.complete_assignment(org, a.id, actor=ACTOR)
        assert result.status == COMPLETED

    @rule(a=assignments)
    def cancel(self, a):
        m = self.asg[a.id]
        org = self.orgs[a.org_key].org
        if m.status in (STARTED, COMPLETED):
            with pytest.raises(InvalidState):
                actions.cancel_assignment(org, a.id, actor=ACTOR)
            event(f"cancel refused: {m.status}")
            return
        if m.status == ASSIGNED:
            self._release(a.id)
        result = actions.cancel_assignment(org, a.id, actor=ACTOR)
        assert result.status == CANCELLED

    @rule(a=assignments, e=employees)
    def reassign(self, a, e):
        self._reassign(a, e)

    @rule(target=employees, a=assignments)
    def reassign_to_new_employee(self, a):
        e = self._new_employee(a.org_key)
        self._reassign(a, e)
        return e

    @rule(a=assignments)
    def reassign_to_holder(self, a):
        """Reassign to someone already holding an open assignment of the same content."""
        m = self.asg[a.id]
        holders = sorted(
            h.employee_id
            for h in self.asg.values()
            if h.org_key == a.org_key
            and h.content_id == m.content_id
            and h.status in OPEN
            and h.employee_id != m.employee_id
        )
        if holders:
            self._reassign(a, EmpRef(a.org_key, holders[0]))

    def _reassign(self, a, e):
        m = self.asg[a.id]
        org = self.orgs[a.org_key].org
        refused: list[type[Exception]] = []
        if m.status != ASSIGNED:
            refused.append(InvalidState)
        if self.emp_org[e.id] != a.org_key:
            refused.append(NotFound)
        elif not self.active[e.id]:
            refused.append(EmployeeInactive)
        elif e.id != m.employee_id and self._holds_open(e.id, m.content_id):
            refused.append(InvalidState)
            event("reassign: to a holder")
        if refused:
            with pytest.raises(tuple(refused)):
                actions.reassign_assignment(org, a.id, employee_id=e.id, actor=ACTOR)
            event(f"reassign refused: {', '.join(err.__name__ for err in refused)}")
            return
        result = actions.reassign_assignment(org, a.id, employee_id=e.id, actor=ACTOR)
        event("reassign: moved" if e.id != m.employee_id else "reassign: same employee")
        m.employee_id = e.id
        assert (result.employee_id, result.status) == (e.id, ASSIGNED)

    @rule(e=employees, twice=st.booleans())
    def deactivate(self, e, twice):
        org = self.orgs[e.org_key].org
        if self.active[e.id]:
            self.active[e.id] = False
            for asg_id, m in self.asg.items():
                if m.employee_id == e.id and m.status == ASSIGNED:
                    self._release(asg_id)
                    event("deactivate: released an assignment")
        result = actions.deactivate_employee(org, e.id, actor=ACTOR)
        if twice:  # deactivating again changes nothing
            result = actions.deactivate_employee(org, e.id, actor=ACTOR)
        assert result.active is False

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def database_matches_model(self):
        # A few queries over both orgs at once: this runs after every step.
        by_id = {om.org.pk: key for key, om in self.orgs.items()}
        balances = {
            by_id[org_id]: (credits, assigned)
            for org_id, credits, assigned in Balance.objects.filter(org_id__in=by_id).values_list(
                "org_id", "credits", "assigned"
            )
        }
        ledgers: dict[str, list[tuple]] = {key: [] for key in ORG_KEYS}
        for row in (
            LedgerEntry.objects.filter(org_id__in=by_id)
            .order_by("id")
            .values_list(
                "org_id",
                "id",
                "type",
                "credits_delta",
                "assigned_delta",
                "overage_credits",
                "retail_unit_price_cents",
                "assignment_id",
                "credits_after",
                "assigned_after",
            )
        ):
            ledgers[by_id[row[0]]].append(row[1:])
        drawn = dict(
            LotDraw.objects.filter(org_id__in=by_id)
            .values("entry_id")
            .annotate(total=Sum("quantity"))
            .values_list("entry_id", "total")
        )
        lots: dict[str, list[list[int]]] = {key: [] for key in ORG_KEYS}
        for org_id, *lot in (
            CreditLot.objects.filter(org_id__in=by_id)
            .order_by("id")
            .values_list("org_id", "quantity", "remaining", "unit_price_cents")
        ):
            lots[by_id[org_id]].append(lot)
        purchases = {
            (by_id[org_id], status): n
            for org_id, status, n in Purchase.objects.filter(org_id__in=by_id)
            .values("org_id", "status")
            .annotate(n=Count("id"))
            .values_list("org_id", "status", "n")
        }
        assignments = {
            pk: [by_id[org_id], *rest]
            for pk, org_id, *rest in Assignment.objects.filter(org_id__in=by_id).values_list(
                "id",
                "org_id",
                "employee_id",
                "content_id",
                "status",
                "credit_cost",
                "charged_credits",
                "overage_credits",
            )
        }
        active = dict(Employee.objects.filter(org_id__in=by_id).values_list("id", "active"))

        for key, om in self.orgs.items():
            assert om.credits >= 0 and om.assigned >= 0
            assert balances[key] == (om.credits, om.assigned), (key, balances[key])

            # The ledger sums to the balance, and each entry's balances-after run with it.
            credits = assigned = 0
            for _id, _type, dc, da, _o, _r, _a, credits_after, assigned_after in ledgers[key]:
                credits, assigned = credits + dc, assigned + da
                assert (credits_after, assigned_after) == (credits, assigned), (key, _id)
            assert (credits, assigned) == (om.credits, om.assigned), key

            # The entries this step appended are exactly the ones the model expects.
            new = [row for row in ledgers[key] if row[0] > om.last_entry_id]
            if new:
                om.last_entry_id = new[-1][0]
            for row in new:  # a bookkeeping entry for a reassign may exist, but moves nothing
                if row[1] == "reassign":
                    assert row[2:5] == (0, 0, 0), row
            actual = sorted(tuple(row[1:7]) for row in new if row[1] != "reassign")
            expected = sorted(self.expected[key])
            assert actual == expected, (key, actual, expected)
            self.expected[key] = []

            # Every consumed credit has a cost basis: draws add up to what left the balance.
            for entry_id, _type, delta, *_ in ledgers[key]:
                assert drawn.get(entry_id, 0) == max(-delta, 0), (key, entry_id, delta)

            assert lots[key] == om.lots, (key, lots[key], om.lots)
            assert sum(lot[1] for lot in lots[key]) == om.credits

            assert purchases.get((key, "paid"), 0) == om.paid, key
            assert purchases.get((key, "failed"), 0) == om.failed, key
            assert purchases.get((key, "pending"), 0) == 0, key

        model = {
            pk: [m.org_key, m.employee_id, m.content_id, m.status, m.cost, m.charged, m.overage]
            for pk, m in self.asg.items()
        }
        assert assignments == model
        assert active == self.active

        checked, mismatches = verify_ledger()
        assert checked >= len(self.orgs)
        assert mismatches == []


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.django_db
def test_ledger_state_machine():
    run_state_machine_as_test(LedgerMachine, settings=SETTINGS)
