"""Concurrency: many callers at once, on PostgreSQL, through the HTTP API.

Every write path serializes on the org's balance row (SELECT ... FOR UPDATE), and the
idempotency middleware claims its key with a unique insert in the same transaction as the
effect. These tests start many threads together (a barrier), each with its own Django test
client and its own database connection, let them commit for real (transactional tests), and
then check the invariants of the ledger (docs/product.md section 11) against the database:
the balance equals the sum of the ledger, the ledger replays entry by entry, nothing is
charged or released twice, credits never go negative, and no request answers 5xx.

The last test is a negative control: an unlocked read-modify-write of the balance row from
many threads does lose updates, so the harness is able to see a lost update when one happens.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.db.models import Count, F, Q

from learncredits import ids
from learncredits.credits.models import (
    Assignment,
    Balance,
    CreditLot,
    LedgerEntry,
    Purchase,
)
from learncredits.credits.verify import verify_ledger
from tests.conftest import (
    OPERATOR_TOKEN,
    Api,
    OrgHandle,
    Response,
    around_the_balance_check,
    run_threads,
    table_snapshot,
)

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

OPEN = [Assignment.Status.ASSIGNED, Assignment.Status.STARTED]
CHARGED = [Assignment.Status.STARTED, Assignment.Status.COMPLETED]


# --- the harness ---------------------------------------------------------------------------


def server_errors(caplog: pytest.LogCaptureFixture) -> str:
    """The tracebacks the server logged (unhandled exceptions behind 5xx answers)."""
    out = []
    for record in caplog.records:
        if record.levelno >= logging.ERROR:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            out.append(text)
    return "\n---\n".join(out)


def pk(kind: str, public_id: str) -> int:
    value = ids.decode(kind, public_id)
    assert value is not None, public_id
    return value


def org_pk(handle: OrgHandle) -> int:
    return pk("org", handle.id)


def ledger_of(org: int) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(org_id=org).order_by("id"))


def assert_ledger_replays(org: int) -> list[LedgerEntry]:
    """The ledger, in id order, replays to the balance: each entry's balances-after are the
    previous ones plus its deltas, none negative, and the last ones are the balance row."""
    entries = ledger_of(org)
    credits = assigned = 0
    for entry in entries:
        credits += entry.credits_delta
        assigned += entry.assigned_delta
        assert (entry.credits_after, entry.assigned_after) == (credits, assigned), (
            f"ledger entry {entry.pk} ({entry.type}) says after=({entry.credits_after}, "
            f"{entry.assigned_after}) but the entries before it sum to ({credits}, {assigned})"
        )
        assert entry.credits_after >= 0
        assert entry.assigned_after >= 0
    balance = Balance.objects.get(org_id=org)
    assert (balance.credits, balance.assigned) == (credits, assigned), (
        "balance row differs from the sum of the ledger"
    )
    assert balance.credits >= 0
    assert balance.assigned >= 0
    return entries


def assert_verify_clean() -> None:
    checked, mismatches = verify_ledger()
    assert checked > 0
    assert mismatches == [], [str(m) for m in mismatches]


def assert_no_two_open(org: int) -> None:
    doubled = (
        Assignment.objects.filter(org_id=org, status__in=OPEN)
        .values("employee_id", "content_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert list(doubled) == []


# --- 1. many threads, a random mix of every operation ---------------------------------------


@dataclass
class Call:
    op: str
    status: int
    body: Any
    target: str | None = None  # the assignment acted on, if any


# What each operation may answer besides a server error; anything else fails the test.
ALLOWED: dict[str, set[int]] = {
    "purchase": {201},
    "assign": {201},
    "start": {200, 409},  # 409: the assignment was cancelled meanwhile
    "complete": {200, 409},
    "cancel": {200, 409},  # 409: already started
    "reassign": {200, 409},  # 409: started/cancelled, or the employee holds one already
    "adjust": {201, 409},  # 409: a removal larger than the credits held
    "balance": {200},
    "foreign": {404},  # another org's assignment: unknown to this org's key
}
OPS = list(ALLOWED)
WEIGHTS = [9, 14, 16, 9, 11, 11, 10, 14, 0]
WEIGHTS_MULTI_ORG = [9, 14, 16, 9, 11, 11, 10, 12, 4]


@dataclass
class OrgRun:
    handle: OrgHandle
    content_costs: dict[str, int]
    employees: list[str]
    seed_purchases: list[str]
    pool: list[str] = field(default_factory=list)  # every assignment id created so far
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[Call] = field(default_factory=list)

    def pick(self, rng: random.Random) -> str:
        with self.lock:
            recent = self.pool[-12:]
            return rng.choice(recent if rng.random() < 0.6 else self.pool)

    def add(self, assignment_ids: list[str]) -> None:
        with self.lock:
            self.pool.extend(assignment_ids)


def prepare_org(make_org: Any, make_content: Any, name: str, employees: int = 12) -> OrgRun:
    handle = make_org(name)
    costs = {make_content(1, f"{name} one"): 1, make_content(2, f"{name} two"): 2}
    people = [handle.employee(f"{name} Person {i}") for i in range(employees)]
    seed = [handle.buy(5)["id"]]  # scarce: starts run into overage, removals get refused
    run = OrgRun(handle=handle, content_costs=costs, employees=people, seed_purchases=seed)
    for content in costs:
        run.add([a["id"] for a in handle.assign(content, people[:4])["data"]])
    return run


def one_operation(
    run: OrgRun, api: Api, operator: Api, rng: random.Random, others: list[OrgRun], op: str
) -> Call:
    path = run.handle.path
    target = None
    if op == "purchase":
        response = api.post(path("/purchases"), {"quantity": rng.randint(1, 3)})
    elif op == "assign":
        body = {
            "content_id": rng.choice(list(run.content_costs)),
            "employee_ids": rng.sample(run.employees, rng.randint(1, 4)),
        }
        response = api.post(path("/assignments"), body)
        if response.status == 201:
            run.add([a["id"] for a in response.body["data"]])
    elif op in ("start", "complete", "cancel"):
        target = run.pick(rng)
        response = api.post(path(f"/assignments/{target}/{op}"))
    elif op == "reassign":
        target = run.pick(rng)
        body = {"employee_id": rng.choice(run.employees)}
        response = api.post(path(f"/assignments/{target}/reassign"), body)
    elif op == "adjust":
        body = {"credits": rng.choice([-6, -4, -2, -1, 1, 2]), "reason": "concurrency test"}
        response = operator.post(path("/adjustments"), body)
    elif op == "balance":
        response = api.get(path("/balance"))
    else:  # foreign: this org's key on another org's assignment
        target = rng.choice(others).pick(rng)
        response = api.post(path(f"/assignments/{target}/start"))
    return Call(op, response.status, response.body, target)


def hammer(runs: list[OrgRun], threads_per_org: int, ops_per_thread: int, seed: int) -> None:
    weights = WEIGHTS_MULTI_ORG if len(runs) > 1 else WEIGHTS
    n = len(runs) * threads_per_org

    def setup(i: int) -> tuple[OrgRun, Api, Api, random.Random, list[OrgRun]]:
        run = runs[i % len(runs)]
        others = [r for r in runs if r is not run]
        return run, Api(run.handle.key), Api(OPERATOR_TOKEN), random.Random(seed * 1000 + i), others

    def work(i: int, state: tuple[OrgRun, Api, Api, random.Random, list[OrgRun]]) -> None:
        run, api, operator, rng, others = state
        for _ in range(ops_per_thread):
            op = rng.choices(OPS, weights)[0]
            run.calls.append(one_operation(run, api, operator, rng, others, op))

    run_threads(n, work, setup=setup)


def check_org(run: OrgRun) -> Counter[str]:
    """Every invariant of one org after the storm; returns the count of 2xx answers per op."""
    org = org_pk(run.handle)
    bad = [c for c in run.calls if c.status not in ALLOWED[c.op]]
    assert not bad, [(c.op, c.status, c.body) for c in bad[:10]]

    entries = assert_ledger_replays(org)
    by_type: dict[str, Counter[int]] = defaultdict(Counter)
    for entry in entries:
        by_type[entry.type][entry.assignment_id or entry.purchase_id or 0] += 1
    consume = {e.assignment_id: e for e in entries if e.type == LedgerEntry.Type.CONSUME}

    # Purchases: each one answered 201 added its credits once, with one lot.
    bought = [c.body["id"] for c in run.calls if c.op == "purchase" and c.status == 201]
    assert len(set(bought)) == len(bought)
    for public_id in bought:
        purchase = pk("purchase", public_id)
        assert by_type["purchase"][purchase] == 1, public_id
        assert CreditLot.objects.filter(purchase_id=purchase).count() == 1, public_id
    paid = set(Purchase.objects.filter(org_id=org, status="paid").values_list("pk", flat=True))
    assert paid == {pk("purchase", p) for p in [*bought, *run.seed_purchases]}
    assert Purchase.objects.filter(org_id=org).exclude(status="paid").count() == 0

    # Assignments: exactly those the API reported, each reserved once, charged at most once,
    # released only if cancelled.
    assignments = {a.pk: a for a in Assignment.objects.filter(org_id=org)}
    reported = [pk("assignment", a) for a in run.pool]
    assert len(set(reported)) == len(reported), "an assignment was reported created twice"
    assert set(assignments) == set(reported)
    for a in assignments.values():
        assert by_type["reserve"][a.pk] == 1, (a.pk, a.status)
        charged = a.status in CHARGED
        assert by_type["consume"][a.pk] == (1 if charged else 0), (a.pk, a.status)
        assert by_type["release"][a.pk] == (1 if a.status == "cancelled" else 0), (a.pk, a.status)
        if charged:
            entry = consume[a.pk]
            assert -entry.credits_delta == a.charged_credits
            assert entry.overage_credits == a.overage_credits
            assert entry.assigned_delta == -a.credit_cost
            assert a.charged_credits + a.overage_credits == a.credit_cost
    assert_no_two_open(org)
    pending = sum(a.credit_cost for a in assignments.values() if a.status == "assigned")
    assert Balance.objects.get(org_id=org).assigned == pending

    # Every successful start/complete answer shows the one charge the database holds
    # (double starts charge once, and all of them say the same thing).
    answers: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for c in run.calls:
        if c.op in ("start", "complete") and c.status == 200:
            assert c.body["status"] in CHARGED
            answers[pk("assignment", c.target)].add(
                (c.body["charged_credits"], c.body["overage_credits"])
            )
        if c.op == "cancel" and c.status == 200:
            assert assignments[pk("assignment", c.target)].status == "cancelled"
    for assignment, figures in answers.items():
        a = assignments[assignment]
        assert figures == {(a.charged_credits, a.overage_credits)}, (assignment, figures)

    # Reads see committed states only: non-negative, available = credits - assigned, and a
    # (credits, assigned) pair the ledger actually passed through.
    states = {(e.credits_after, e.assigned_after) for e in entries} | {(0, 0)}
    for c in run.calls:
        if c.op == "balance" and c.status == 200:
            b = c.body
            assert b["credits"] >= 0 and b["assigned"] >= 0, b
            assert b["available"] == b["credits"] - b["assigned"], b
            assert (b["credits"], b["assigned"]) in states, b
        if c.op == "adjust" and c.status == 201:
            assert c.body["credits_after"] >= 0
        if c.status == 409:
            expected = "insufficient_credits" if c.op == "adjust" else "invalid_state"
            assert c.body["code"] == expected, (c.op, c.body)
        if c.status == 404:
            assert c.body["code"] == "not_found", c.body
    return Counter(c.op for c in run.calls if 200 <= c.status < 300)


def test_one_org_32_threads_random_mix(make_org, make_content, caplog):
    run = prepare_org(make_org, make_content, "Solo", employees=12)
    threads, per_thread = 32, 15
    hammer([run], threads, per_thread, seed=1)

    assert len(run.calls) == threads * per_thread
    errors = [c for c in run.calls if c.status >= 500]
    assert not errors, f"{len(errors)} answers 5xx, e.g. {errors[0]}\n{server_errors(caplog)}"
    succeeded = check_org(run)
    assert_verify_clean()
    # The storm really did each kind of thing, more than once.
    for op in ("purchase", "assign", "start", "cancel", "adjust", "balance"):
        assert succeeded[op] >= 3, succeeded
    # ...and reached the zero boundary: removals refused, starts billed partly as overage.
    assert any(c.op == "adjust" and c.status == 409 for c in run.calls)
    assert Assignment.objects.filter(overage_credits__gt=0).exists()


def test_four_orgs_do_not_interfere(make_org, make_content, caplog):
    runs = [prepare_org(make_org, make_content, f"Org{i}", employees=8) for i in range(4)]
    hammer(runs, threads_per_org=8, ops_per_thread=15, seed=2)

    calls = [c for r in runs for c in r.calls]
    assert len(calls) == 4 * 8 * 15
    errors = [c for c in calls if c.status >= 500]
    assert not errors, f"{len(errors)} answers 5xx, e.g. {errors[0]}\n{server_errors(caplog)}"
    for run in runs:
        check_org(run)
    assert_verify_clean()
    # No row of one org points at another org's rows.
    crossed = LedgerEntry.objects.filter(
        Q(assignment__isnull=False) & ~Q(assignment__org_id=F("org_id"))
        | Q(purchase__isnull=False) & ~Q(purchase__org_id=F("org_id"))
    )
    assert crossed.count() == 0
    assert Assignment.objects.exclude(employee__org_id=F("org_id")).count() == 0
    assert any(c.op == "foreign" for c in calls)


# --- 2. one Idempotency-Key, twenty requests at once -------------------------------------------


@dataclass
class IdemCase:
    path: str
    body: Any
    other_body: Any
    status: int
    effect: Callable[[], None]


def idem_case(kind: str, org: OrgHandle, make_content: Any) -> IdemCase:
    o = org_pk(org)
    if kind == "purchase":

        def bought_once() -> None:
            assert Purchase.objects.filter(org_id=o).count() == 1
            assert CreditLot.objects.filter(org_id=o).count() == 1
            assert LedgerEntry.objects.filter(org_id=o, type="purchase").count() == 1
            assert Balance.objects.get(org_id=o).credits == 7

        return IdemCase(org.path("/purchases"), {"quantity": 7}, {"quantity": 8}, 201, bought_once)
    if kind == "assign":
        content = make_content(2, "Idempotent course")
        people = [org.employee(f"Idem {i}") for i in range(5)]

        def assigned_once() -> None:
            assert Assignment.objects.filter(org_id=o).count() == 5
            assert LedgerEntry.objects.filter(org_id=o, type="reserve").count() == 5
            assert Balance.objects.get(org_id=o).assigned == 10

        body = {"content_id": content, "employee_ids": people}
        other = {"content_id": content, "employee_ids": people[:4]}
        return IdemCase(org.path("/assignments"), body, other, 201, assigned_once)
    content = make_content(2, "Idempotent start")
    org.buy(10)
    assignment = org.assign(content, [org.employee("Starter")])["data"][0]["id"]

    def started_once() -> None:
        assert LedgerEntry.objects.filter(org_id=o, type="consume").count() == 1
        balance = Balance.objects.get(org_id=o)
        assert (balance.credits, balance.assigned) == (8, 0)

    return IdemCase(
        org.path(f"/assignments/{assignment}/start"), None, {"note": "other"}, 200, started_once
    )


def unchanged_tables() -> dict[str, Any]:
    # API keys record their last use; everything else must not move.
    return {k: v for k, v in table_snapshot().items() if "apikey" not in k}


@pytest.mark.parametrize("kind", ["purchase", "assign", "start"])
def test_twenty_posts_one_idempotency_key(kind, org, make_content, caplog):
    case = idem_case(kind, org, make_content)
    key = f"idem-{kind}"

    def work(i: int, api: Api) -> Response:
        return api.post(case.path, case.body, idem=key)

    answers = run_threads(20, work, setup=lambda i: Api(org.key))
    statuses = Counter(a.status for a in answers)
    assert statuses == {case.status: 20}, (statuses, server_errors(caplog))
    assert len({a.raw for a in answers}) == 1, "the answers differ"
    replays = [a for a in answers if a.headers.get("Idempotent-Replayed") == "true"]
    assert len(replays) == 19
    case.effect()
    assert_ledger_replays(org_pk(org))
    assert_verify_clean()

    before = unchanged_tables()
    reused = Api(org.key).post(case.path, case.other_body, idem=key)
    assert reused.status == 422, reused.body
    assert reused.code == "idempotency_key_reused"
    assert unchanged_tables() == before
    case.effect()


def test_one_key_two_bodies_at_once(org, caplog):
    """Ten callers send quantity 3 and ten quantity 4 under one key, all at once: one
    purchase happens; its body's callers get its answer, the others 422."""
    key = "idem-mixed"

    def work(i: int, api: Api) -> tuple[int, Response]:
        quantity = 3 + i % 2
        return quantity, api.post(org.path("/purchases"), {"quantity": quantity}, idem=key)

    answers = run_threads(20, work, setup=lambda i: Api(org.key))
    assert all(r.status < 500 for _, r in answers), server_errors(caplog)
    purchase = Purchase.objects.get(org_id=org_pk(org))
    winners = [r for q, r in answers if q == purchase.quantity]
    losers = [r for q, r in answers if q != purchase.quantity]
    assert {r.status for r in winners} == {201}
    assert len({r.raw for r in winners}) == 1
    assert {(r.status, r.code) for r in losers} == {(422, "idempotency_key_reused")}
    assert Balance.objects.get(org_id=org_pk(org)).credits == purchase.quantity
    assert_verify_clean()


# --- 3. twenty starts of one assignment, no key ---------------------------------------------
def org_act(api: Api, org: OrgHandle, assignment: str, verb: str) -> Response:
    return api.post(org.path(f"/assignments/{assignment}/{verb}"))


@pytest.mark.parametrize("verbs", [("start",), ("start", "complete")], ids=["start", "mixed"])
def test_twenty_simultaneous_starts_charge_once(verbs, org, make_content, caplog):
    content = make_content(2, "Start race")
    org.buy(1)  # one credit for a cost of two: charged 1, overage 1
    assignment = org.assign(content, [org.employee("Racer")])["data"][0]["id"]

    def work(i: int, api: Api) -> Response:
        return org_act(api, org, assignment, verbs[i % len(verbs)])

    answers = run_threads(20, work, setup=lambda i: Api(org.key))
    assert {a.status for a in answers} == {200}, ([a.body for a in answers], server_errors(caplog))
    assert {(a.body["charged_credits"], a.body["overage_credits"]) for a in answers} == {(1, 1)}
    assert {a.body["status"] for a in answers} <= {"started", "completed"}
    a = pk("assignment", assignment)
    assert LedgerEntry.objects.filter(assignment_id=a, type="consume").count() == 1
    balance = Balance.objects.get(org_id=org_pk(org))
    assert (balance.credits, balance.assigned) == (0, 0)
    assert_ledger_replays(org_pk(org))
    assert_verify_clean()


# --- 4. bulk assigns of one item to overlapping employee sets -------------------------------


def test_overlapping_bulk_assigns(org, make_content, caplog):
    content = make_content(2, "Overlap")
    people = [org.employee(f"Overlap {i}") for i in range(24)]
    threads = 16

    def window(i: int) -> list[str]:
        start = (i * 3) % len(people)
        return [people[(start + k) % len(people)] for k in range(10)]

    def work(i: int, api: Api) -> Response:
        return api.post(
            org.path("/assignments"), {"content_id": content, "employee_ids": window(i)}
        )

    answers = run_threads(threads, work, setup=lambda i: Api(org.key))
    assert [a.status for a in answers] == [201] * threads, server_errors(caplog)
    created = [a for r in answers for a in r.body["data"]]
    assert len({a["id"] for a in created}) == len(created) == len(people)
    assert sorted(a["employee_id"] for a in created) == sorted(people)
    for i, r in enumerate(answers):
        mine = [a["employee_id"] for a in r.body["data"]]
        assert sorted(mine + r.body["skipped"]) == sorted(window(i)), i

    o = org_pk(org)
    assert_no_two_open(o)
    open_per_employee = Counter(
        Assignment.objects.filter(org_id=o, status__in=OPEN).values_list("employee_id", flat=True)
    )
    assert open_per_employee == {pk("employee", p): 1 for p in people}
    assert Balance.objects.get(org_id=o).assigned == 2 * len(people)
    assert LedgerEntry.objects.filter(org_id=o, type="reserve").count() == len(people)
    assert_ledger_replays(o)
    assert_verify_clean()


def test_bulk_assigns_racing_reassigns(org, make_content, caplog):
    """Bulk assigns of an item to a set of employees while other callers reassign existing
    assignments of the same item onto those employees. Each target ends with exactly one
    open assignment, whichever side got there first; the loser of each race is told so
    (skipped, or 409), never a 5xx."""
    o = org_pk(org)
    targets = [org.employee(f"Target {i}") for i in range(12)]
    rounds, movers_per_round, bulk_threads = 3, 12, 12
    all_answers: list[tuple[str, Response]] = []
    for round_no in range(rounds):
        content = make_content(1, f"Race {round_no}")
        holders = [org.employee(f"Holder {round_no}.{i}") for i in range(movers_per_round)]
        movers = [a["id"] for a in org.assign(content, holders)["data"]]

        def work(i: int, api: Api, content: str = content, movers: list[str] = movers) -> Any:
            if i < bulk_threads:
                body = {"content_id": content, "employee_ids": targets[i:] + targets[:i]}
                return "assign", api.post(org.path("/assignments"), body)
            k = i - bulk_threads
            body = {"employee_id": targets[k % len(targets)]}
            return "reassign", api.post(org.path(f"/assignments/{movers[k]}/reassign"), body)

        answers = run_threads(bulk_threads + movers_per_round, work, setup=lambda i: Api(org.key))
        all_answers.extend(answers)

        assert_no_two_open(o)
        open_per_employee = Counter(
            Assignment.objects.filter(
                org_id=o, content_id=pk("content", content), status__in=OPEN
            ).values_list("employee_id", flat=True)
        )
        for target in targets:
            assert open_per_employee[pk("employee", target)] == 1, (round_no, target)

    server = [(op, r.status, r.body) for op, r in all_answers if r.status >= 500]
    assert not server, f"{len(server)} answers 5xx: {server[:3]}\n{server_errors(caplog)}"
    bad = [
        (op, r.status, r.body)
        for op, r in all_answers
        if (op == "assign" and r.status != 201) or (op == "reassign" and r.status not in (200, 409))
    ]
    assert not bad, bad[:5]
    pending = Assignment.objects.filter(org_id=o, status="assigned").count()
    assert Balance.objects.get(org_id=o).assigned == pending  # every item costs 1
    assert_ledger_replays(o)
    assert_verify_clean()


# --- 5. negative control: the harness sees a lost update --------------------------------------


def _increment_all(org: int, threads: int, *, locked: bool) -> int:
    """``threads`` threads each add 1 to the balance's credits by read-modify-write; returns
    the final value. Unlocked: a plain SELECT then an UPDATE. Locked: SELECT ... FOR UPDATE."""
    with around_the_balance_check():  # a read-modify-write of the balance alone, on purpose
        Balance.objects.filter(org_id=org).update(credits=0)

    def work(i: int, _: None) -> None:
        with around_the_balance_check(), transaction.atomic():
            rows = Balance.objects.filter(org_id=org)
            if locked:
                rows = rows.select_for_update()
            credits = rows.values_list("credits", flat=True).get()
            time.sleep(0.002)
            Balance.objects.filter(org_id=org).update(credits=credits + 1)

    run_threads(threads, work)
    return Balance.objects.get(org_id=org).credits


def test_harness_detects_lost_updates(org):
    o = org_pk(org)
    threads, attempts = 32, 5
    finals = []
    for _ in range(attempts):
        finals.append(_increment_all(o, threads, locked=False))
        if finals[-1] < threads:
            break
    assert min(finals) < threads, f"no update was lost in {attempts} attempts: {finals}"
    # The same increments under the row lock the service uses lose nothing.
    assert _increment_all(o, threads, locked=True) == threads
