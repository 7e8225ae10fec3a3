"""The store's hand-written statements against the ORM: each question asked of the store is
answered again with the Django ORM (what a write left behind is read back with the ORM; what
a read answers is compared with the same rows selected by the ORM). The suite runs on SQLite
and on PostgreSQL, and the store's vendor branches are exercised by whichever runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import DatabaseError, transaction
from django.db.models import Sum
from django.forms.models import model_to_dict

from learncredits.billing.models import CreditNoteSequence, Invoice, InvoiceLine, InvoiceSequence
from learncredits.catalog.models import Content
from learncredits.catalog.services import create_content
from learncredits.credits.accounts import create_org
from learncredits.credits.models import (
    Assignment,
    Balance,
    CreditLot,
    Event,
    LedgerEntry,
    LotDraw,
)
from learncredits.db import store
from learncredits.domain.errors import InvalidState
from learncredits.tenancy.models import ApiKey, Department, Employee, Organization
from learncredits.tenancy.services import create_api_key, create_employee
from tests.conftest import around_the_balance_check

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
ASSIGNMENT_COLUMNS = store.AssignmentRow._fields


# --- ORM builders -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _rows_written_one_table_at_a_time(db: None) -> Iterator[None]:
    """Each test checks one statement, so it writes balances and ledger entries that are not
    each other's (a balance with no entry, an entry with no balance update): what PostgreSQL's
    commit-time balance check refuses. These tests step around it; the services' own writes
    are held to it everywhere else."""
    with around_the_balance_check():
        yield


def _org(name: str = "Acme") -> Organization:
    return create_org(name=name, billing_email=f"billing@{name.lower()}.example")


def _employees(org: Organization, count: int, *, prefix: str = "e") -> list[Employee]:
    return [
        create_employee(org, name=f"Person {i}", email=f"{prefix}{i}@{org.pk}.example")
        for i in range(count)
    ]


def _content(credit_cost: int = 2, title: str = "Course") -> Content:
    return create_content(
        title=title, premium=credit_cost > 0, credit_cost=credit_cost, xapi_activity_id=None
    )


def _lot(org: Organization, quantity: int, remaining: int | None = None) -> CreditLot:
    return CreditLot.objects.create(
        org=org,
        kind=CreditLot.Kind.GRANT,
        quantity=quantity,
        remaining=quantity if remaining is None else remaining,
        unit_price_cents=0,
    )


def _entry(org: Organization, **fields: Any) -> LedgerEntry:
    values: dict[str, Any] = {
        "type": LedgerEntry.Type.ADJUSTMENT,
        "credits_after": 0,
        "assigned_after": 0,
        "actor": "test",
        "created_at": T0,
    }
    values.update(fields)
    return LedgerEntry.objects.create(org=org, **values)


def _assignment(
    org: Organization, content: Content, employee: Employee, **fields: Any
) -> Assignment:
    return Assignment.objects.create(
        org=org, content=content, employee=employee, credit_cost=content.credit_cost, **fields
    )


def _row_of(assignment_id: int) -> tuple[Any, ...]:
    return tuple(Assignment.objects.filter(pk=assignment_id).values_list(*ASSIGNMENT_COLUMNS).get())


# --- machinery ----------------------------------------------------------------------------------


def test_ping_answers() -> None:
    assert store.ping() is None


@pytest.mark.postgres_only
def test_a_primary_is_no_replica_and_lags_nothing() -> None:
    """The replica's lag on the primary itself (not replaying): 0. The replica's own cases,
    current, behind and restarted, are tests/db/test_replica.py's, on a real standby."""
    assert store.replica_lag_seconds("default") == 0.0


def test_a_loaded_instance_is_the_orm_instance() -> None:
    org = _org()
    (employee,) = _employees(org, 1)
    content = _content()
    assignment = _assignment(org, content, employee)
    fetched = Assignment.objects.get(pk=assignment.pk)
    values = {f.attname: getattr(fetched, f.attname) for f in Assignment._meta.concrete_fields}
    built = store.loaded(Assignment, values)
    assert model_to_dict(built) == model_to_dict(fetched)
    assert not built._state.adding and built._state.db == fetched._state.db
    with pytest.raises(ValueError, match="exactly the concrete fields"):
        store.loaded(Assignment, {"id": 1})


def test_an_empty_batch_runs_nothing() -> None:
    batch = store.Batch()
    batch.run()
    assert batch  # callers write ``batch or Batch()``: an empty batch must stay truthy


# --- the balance row ----------------------------------------------------------------------------


def test_lock_balance_reads_the_balance_row() -> None:
    org = _org()
    Balance.objects.filter(org=org).update(credits=7, assigned=3, at_risk=True)
    expected = Balance.objects.filter(org=org).values_list("credits", "assigned", "at_risk").get()
    assert tuple(store.lock_balance(org.pk)) == expected
    batch = store.Batch()
    pending = store.lock_balance_in(batch, org.pk)
    batch.run()
    assert pending.result() == store.BalanceRow(7, 3, True)


def test_lock_balance_of_an_org_without_a_balance_row_is_none() -> None:
    org = Organization.objects.create(name="Bare", billing_email="billing@bare.example")
    assert not Balance.objects.filter(org=org).exists()
    assert store.lock_balance(org.pk) is None
    batch = store.Batch()
    pending = store.lock_balance_in(batch, org.pk)
    batch.run()
    assert pending.result() is None


def test_the_balance_update_runs_first_of_its_batch_and_reads_keep_their_rows() -> None:
    """update_balance_in leads its batch (a ledger insert after it then queues no second
    balance check); statements queued before it keep their rows and row counts."""
    org = _org()
    Balance.objects.filter(org=org).update(credits=5)
    batch = store.Batch()
    before = store.lock_balance_in(batch, org.pk)  # queued first, runs second
    store.update_balance_in(batch, org.pk, credits=12, assigned=5, at_risk=False)
    after = store.lock_balance_in(batch, org.pk)
    batch.run()
    assert before.result() == after.result() == store.BalanceRow(12, 5, False)
    with pytest.raises(ValueError, match="one leading statement"):
        store.update_balance_in(batch, org.pk, credits=1, assigned=0, at_risk=False)
        store.update_balance_in(batch, org.pk, credits=2, assigned=0, at_risk=False)


def test_update_balance_writes_what_the_orm_reads() -> None:
    org, other = _org(), _org("Other")
    batch = store.Batch()
    store.update_balance_in(batch, org.pk, credits=12, assigned=5, at_risk=True)
    assert Balance.objects.get(org=org).credits == 0  # queued, not sent
    batch.run()
    got = Balance.objects.filter(org=org).values_list("credits", "assigned", "at_risk").get()
    assert got == (12, 5, True)
    untouched = Balance.objects.filter(org=other).values_list("credits", "assigned", "at_risk")
    assert untouched.get() == (0, 0, False)


def test_balance_with_overage_sums_the_window_like_the_orm() -> None:
    org, other = _org(), _org("Other")
    Balance.objects.filter(org=org).update(credits=9, assigned=4)
    start, end = T0, T0 + timedelta(days=31)
    for moment, overage in [
        (start - timedelta(microseconds=1), 5),  # before the window
        (start, 2),
        (start + timedelta(days=3), 3),
        (start + timedelta(days=4), 0),
        (end - timedelta(microseconds=1), 4),
        (end, 6),  # the window's end is excluded
    ]:
        _entry(
            org,
            type=LedgerEntry.Type.CONSUME,
            overage_credits=overage,
            retail_unit_price_cents=100 if overage else None,
            created_at=moment,
        )
    _entry(other, overage_credits=8, retail_unit_price_cents=100, created_at=start)
    oracle = LedgerEntry.objects.filter(
        org=org, created_at__gte=start, created_at__lt=end, overage_credits__gt=0
    ).aggregate(total=Sum("overage_credits"))["total"]
    row = store.balance_with_overage(org.pk, start, end)
    assert row == store.BalanceWithOverageRow(9, 4, oracle)
    assert oracle == 9
    # No entry in the window: 0, not NULL.
    later = store.balance_with_overage(org.pk, end + timedelta(days=1), end + timedelta(days=2))
    assert later == store.BalanceWithOverageRow(9, 4, 0)
    bare = Organization.objects.create(name="Bare", billing_email="billing@bare.example")
    assert store.balance_with_overage(bare.pk, start, end) is None


# --- lots -----------------------------------------------------------------------------------------


def test_open_lots_are_the_orms_open_lots_oldest_first() -> None:
    org, other = _org(), _org("Other")
    assert store.open_lots(org.pk) == []
    for i in range(25):
        _lot(org, 30, remaining=0 if i % 4 == 0 else i)
    _lot(other, 10)
    oracle = [
        store.LotRow(pk, remaining)
        for pk, remaining in CreditLot.objects.filter(org=org, remaining__gt=0)
        .order_by("id")
        .values_list("id", "remaining")
    ]
    assert store.open_lots(org.pk) == oracle
    assert store.open_lots(org.pk, limit=store.LOTS_READ_WITH_START) == oracle[:16]
    assert store.open_lots(org.pk, limit=1) == oracle[:1]


def test_draw_from_lot_now_and_in_a_batch() -> None:
    org = _org()
    first, second = _lot(org, 10), _lot(org, 5)
    store.draw_from_lot(first.pk, 3)
    batch = store.Batch()
    store.draw_from_lot_in(batch, second.pk, 5)
    store.draw_from_lot_in(batch, first.pk, 1)
    assert CreditLot.objects.get(pk=second.pk).remaining == 5
    batch.run()
    remaining = dict(CreditLot.objects.filter(org=org).values_list("id", "remaining"))
    assert remaining == {first.pk: 6, second.pk: 0}


def test_insert_lot_draws_writes_one_row_per_draw() -> None:
    org = _org()
    lots = [_lot(org, 10) for _ in range(3)]
    entry = _entry(org)
    store.insert_lot_draws(org.pk, entry.pk, [])
    assert not LotDraw.objects.exists()
    draws = [(lots[0].pk, 4), (lots[2].pk, 1), (lots[1].pk, 10)]
    store.insert_lot_draws(org.pk, entry.pk, draws)
    got = list(
        LotDraw.objects.order_by("id").values_list("org_id", "entry_id", "lot_id", "quantity")
    )
    assert got == [(org.pk, entry.pk, lot_id, qty) for lot_id, qty in draws]


# --- assignments ----------------------------------------------------------------------------------


def test_assignment_with_open_lots_is_the_orms_row_and_oldest_lots() -> None:
    org, other = _org(), _org("Other")
    employees = _employees(org, 2)
    content = _content(credit_cost=3)
    assigned = _assignment(org, content, employees[0])
    completed = _assignment(
        org,
        content,
        employees[1],
        status=Assignment.Status.COMPLETED,
        charged_credits=2,
        overage_credits=1,
        started_at=T0,
        completed_at=T0 + timedelta(hours=1),
    )
    for i in range(20):
        _lot(org, 30, remaining=0 if i == 3 else i + 1)
    _lot(other, 10)
    oracle_lots = [
        store.LotRow(pk, remaining)
        for pk, remaining in CreditLot.objects.filter(org=org, remaining__gt=0)
        .order_by("id")
        .values_list("id", "remaining")[: store.LOTS_READ_WITH_START]
    ]
    batch = store.Batch()
    reads = [store.assignment_with_open_lots_in(batch, org.pk, a.pk) for a in (assigned, completed)]
    missing = store.assignment_with_open_lots_in(batch, org.pk, completed.pk + 1000)
    foreign = store.assignment_with_open_lots_in(batch, other.pk, assigned.pk)
    batch.run()
    for read, a in zip(reads, (assigned, completed), strict=True):
        found = read.result()
        assert found is not None
        assert tuple(found.assignment) == _row_of(a.pk)
        assert found.assignment.started_at is None or found.assignment.started_at.tzinfo
        assert found.lots == oracle_lots
    assert missing.result() is None
    assert foreign.result() is None


def test_assignment_of_an_org_without_open_lots_has_no_lots() -> None:
    org = _org()
    (employee,) = _employees(org, 1)
    assignment = _assignment(org, _content(), employee)
    _lot(org, 5, remaining=0)
    batch = store.Batch()
    read = store.assignment_with_open_lots_in(batch, org.pk, assignment.pk)
    batch.run()
    found = read.result()
    assert found is not None and found.lots == []
    assert tuple(found.assignment) == _row_of(assignment.pk)


def test_mark_assignment_started_changes_an_assigned_row_only() -> None:
    org = _org()
    employees = _employees(org, 2)
    content = _content(credit_cost=3)
    assignment = _assignment(org, content, employees[0])
    batch = store.Batch()
    store.mark_assignment_started_in(
        batch, org.pk, assignment.pk, started_at=T0, charged_credits=2, overage_credits=1
    )
    batch.run()
    got = Assignment.objects.filter(pk=assignment.pk).values_list(
        "status", "started_at", "charged_credits", "overage_credits"
    )
    assert got.get() == ("started", T0, 2, 1)
    cancelled = _assignment(
        org, content, employees[1], status=Assignment.Status.CANCELLED, cancelled_at=T0
    )
    for target in (assignment, cancelled):  # started already / not assigned
        with transaction.atomic():
            batch = store.Batch()
            store.mark_assignment_started_in(
                batch, org.pk, target.pk, started_at=T0, charged_credits=3, overage_credits=0
            )
            with pytest.raises(InvalidState):
                batch.run()
    assert Assignment.objects.get(pk=cancelled.pk).status == "cancelled"


def test_insert_assignments_returns_ids_in_the_order_given() -> None:
    org = _org()
    employees = _employees(org, 150)
    content = _content(credit_cost=2)
    order = [e.pk for e in employees[::2]] + [e.pk for e in employees[1::2]][::-1]
    assert (
        store.insert_assignments(
            org.pk, content.pk, [], status="assigned", credit_cost=2, created_at=T0
        )
        == []
    )
    with transaction.atomic():
        pks = store.insert_assignments(
            org.pk, content.pk, order, status="assigned", credit_cost=2, created_at=T0
        )
    assert len(pks) == len(order) == len(set(pks))
    rows = {
        a["id"]: a
        for a in Assignment.objects.filter(org=org).values(
            "id", "org_id", "employee_id", "content_id", *ASSIGNMENT_COLUMNS[3:]
        )
    }
    assert set(rows) == set(pks)
    for pk, employee_id in zip(pks, order, strict=True):
        assert rows[pk] == {
            "id": pk,
            "org_id": org.pk,
            "employee_id": employee_id,
            "content_id": content.pk,
            "status": "assigned",
            "credit_cost": 2,
            "charged_credits": 0,
            "overage_credits": 0,
            "created_at": T0,
            "started_at": None,
            "completed_at": None,
            "cancelled_at": None,
        }


def test_employees_active_is_the_orms_answer() -> None:
    org, other = _org(), _org("Other")
    employees = _employees(org, 30)
    for e in employees[::3]:
        e.active = False
        e.save(update_fields=["active"])
    foreign = _employees(other, 2, prefix="f")
    asked = [e.pk for e in employees] + [f.pk for f in foreign] + [10**9]
    department = Department.objects.create(org=org, name="Sales")
    for e in employees[::2]:
        e.department = department
        e.save(update_fields=["department"])
    oracle = set(
        Employee.objects.filter(org=org, pk__in=asked).values_list("id", "active", "department_id")
    )
    got = store.employees_active(org.pk, asked)
    assert all(isinstance(row, store.EmployeeActiveRow) for row in got)
    assert {tuple(row) for row in got} == oracle
    assert len(got) == 30
    assert store.employees_active(org.pk, []) == []


def test_employees_holding_is_the_orms_answer() -> None:
    org = _org()
    employees = _employees(org, 8)
    content, other_content = _content(title="A"), _content(title="B")
    statuses = {
        0: {"status": "assigned"},
        1: {"status": "started", "charged_credits": 2, "started_at": T0},
        2: {"status": "completed", "charged_credits": 2, "started_at": T0, "completed_at": T0},
        3: {"status": "cancelled", "cancelled_at": T0},
    }
    for i, fields in statuses.items():
        _assignment(org, content, employees[i], **fields)
    _assignment(org, other_content, employees[4])
    asked = [e.pk for e in employees]
    open_statuses = ("assigned", "started")
    oracle = set(
        Assignment.objects.filter(
            org=org, content=content, status__in=open_statuses, employee_id__in=asked
        ).values_list("employee_id", flat=True)
    )
    assert oracle == {employees[0].pk, employees[1].pk}
    got = store.employees_holding(org.pk, content.pk, asked, statuses=open_statuses)
    assert got == oracle
    assert store.employees_holding(org.pk, content.pk, [], statuses=open_statuses) == set()
    only_done = store.employees_holding(org.pk, content.pk, asked, statuses=("completed",))
    assert only_done == {employees[2].pk}


# --- ledger entries -------------------------------------------------------------------------------


_LEDGER_FIELDS = (
    "org_id",
    "type",
    "credits_delta",
    "assigned_delta",
    "overage_credits",
    "retail_unit_price_cents",
    "credits_after",
    "assigned_after",
    "assignment_id",
    "purchase_id",
    "lot_id",
    "actor",
    "reason",
    "created_at",
)


@pytest.mark.parametrize("with_draws", [True, False])
def test_insert_ledger_entry_writes_the_entry_and_its_draws(with_draws: bool) -> None:
    org = _org()
    (employee,) = _employees(org, 1)
    assignment = _assignment(org, _content(credit_cost=5), employee)
    lots = [_lot(org, 10), _lot(org, 10)]
    draws = [(lots[0].pk, 2), (lots[1].pk, 1)] if with_draws else []
    entry = LedgerEntry(
        org_id=org.pk,
        type=LedgerEntry.Type.CONSUME,
        credits_delta=-3,
        assigned_delta=-5,
        overage_credits=2 if with_draws else 0,
        retail_unit_price_cents=150 if with_draws else None,
        credits_after=17,
        assigned_after=0,
        assignment_id=assignment.pk,
        actor="api_key:key_1",
        reason="",
        created_at=T0,
    )
    with transaction.atomic():
        batch = store.Batch()
        store.draw_from_lot_in(batch, lots[0].pk, 2)
        store.insert_ledger_entry_in(batch, entry, draws)
        batch.run()
    assert entry.pk is None
    (saved,) = LedgerEntry.objects.filter(org=org).values(*_LEDGER_FIELDS, "id")
    assert {k: saved[k] for k in _LEDGER_FIELDS} == {k: getattr(entry, k) for k in _LEDGER_FIELDS}
    got = list(
        LotDraw.objects.order_by("id").values_list("org_id", "entry_id", "lot_id", "quantity")
    )
    assert got == [(org.pk, saved["id"], lot_id, qty) for lot_id, qty in draws]
    assert CreditLot.objects.get(pk=lots[0].pk).remaining == 8


def test_insert_reserve_entries_writes_one_entry_per_assignment_in_order() -> None:
    org = _org()
    employees = _employees(org, 120)
    content = _content(credit_cost=3)
    assignments = [_assignment(org, content, e) for e in employees]
    ids = [a.pk for a in assignments][::-1]
    afters = [10 + 3 * (n + 1) for n in range(len(ids))]
    store.insert_reserve_entries(
        org.pk,
        entry_type="reserve",
        assigned_delta=3,
        credits_after=40,
        assignment_ids=[],
        assigned_afters=[],
        actor="a",
        created_at=T0,
    )
    assert not LedgerEntry.objects.exists()
    with transaction.atomic():
        store.insert_reserve_entries(
            org.pk,
            entry_type="reserve",
            assigned_delta=3,
            credits_after=40,
            assignment_ids=ids,
            assigned_afters=afters,
            actor="api_key:key_9",
            created_at=T0,
        )
    got = list(LedgerEntry.objects.filter(org=org).order_by("id").values(*_LEDGER_FIELDS))
    assert got == [
        {
            "org_id": org.pk,
            "type": "reserve",
            "credits_delta": 0,
            "assigned_delta": 3,
            "overage_credits": 0,
            "retail_unit_price_cents": None,
            "credits_after": 40,
            "assigned_after": after,
            "assignment_id": pk,
            "purchase_id": None,
            "lot_id": None,
            "actor": "api_key:key_9",
            "reason": "",
            "created_at": T0,
        }
        for pk, after in zip(ids, afters, strict=True)
    ]


# --- events ---------------------------------------------------------------------------------------


_EVENT_FIELDS = ("org_id", "type", "data", "created_at", "dispatched_at")


def test_insert_event_now_and_in_a_batch() -> None:
    org = _org()
    data = {"id": "asg_x", "nested": {"list": [1, 2.5, None, "é"]}, "flag": True}
    pk = store.insert_event(org.pk, "assignment.started", data, T0)
    batch = store.Batch()
    store.insert_event_in(batch, org.pk, "assignment.completed", {}, T0 + timedelta(seconds=1))
    batch.run()
    got = list(Event.objects.filter(org=org).order_by("id").values("id", *_EVENT_FIELDS))
    assert got == [
        {
            "id": pk,
            "org_id": org.pk,
            "type": "assignment.started",
            "data": data,
            "created_at": T0,
            "dispatched_at": None,
        },
        {
            "id": got[1]["id"],
            "org_id": org.pk,
            "type": "assignment.completed",
            "data": {},
            "created_at": T0 + timedelta(seconds=1),
            "dispatched_at": None,
        },
    ]


def test_insert_events_writes_many_in_chunks() -> None:
    orgs = [_org(f"Org{i}") for i in range(3)]
    store.insert_events([], T0)
    assert not Event.objects.exists()
    events = [
        store.NewEvent(orgs[n % 3].pk, "invoice.issued", {"n": n, "text": "x" * (n % 7)})
        for n in range(450)  # several statements on SQLite (999 parameters each)
    ]
    store.insert_events(events, T0)
    got = list(Event.objects.order_by("id").values_list(*_EVENT_FIELDS))
    assert got == [(e.org_id, e.type, e.data, T0, None) for e in events]


# --- API keys ---------------------------------------------------------------------------------


def test_active_api_key_is_the_key_and_its_org() -> None:
    org = _org()
    key, _ = create_api_key(org, name="ci")
    found = store.active_api_key(key.prefix)
    assert found is not None
    assert (found.id, found.secret_hash, found.last_used_at) == (key.pk, key.secret_hash, None)
    assert model_to_dict(found.org) == model_to_dict(Organization.objects.get(pk=org.pk))
    assert found.org.created_at == Organization.objects.get(pk=org.pk).created_at
    assert found.org.created_at.tzinfo is not None
    assert store.active_api_key("nobody") is None
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=T0)
    assert store.active_api_key(key.prefix) is None


@pytest.mark.parametrize("tax_exempt", [True, False])
def test_active_api_key_decodes_the_org_as_the_orm_does(tax_exempt: bool) -> None:
    """Same values and same types (1 == True, so equality alone would not see SQLite's 0/1
    left where the ORM gives a bool, or a JSON column left as text)."""
    org = _org()
    Organization.objects.filter(pk=org.pk).update(
        tax_exempt=tax_exempt, alert_recipients=["a@example.com"]
    )
    key, _ = create_api_key(org, name="ci")
    found = store.active_api_key(key.prefix)
    assert found is not None
    by_orm = Organization.objects.get(pk=org.pk)
    typed = lambda o: {  # noqa: E731
        f.attname: (type(getattr(o, f.attname)), getattr(o, f.attname))
        for f in Organization._meta.concrete_fields
    }
    assert typed(found.org) == typed(by_orm)


def test_touch_api_key_records_the_moment() -> None:
    org = _org()
    key, _ = create_api_key(org, name="ci")
    other, _ = create_api_key(org, name="other")
    store.touch_api_key(key.pk, T0)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == T0
    assert ApiKey.objects.get(pk=other.pk).last_used_at is None
    found = store.active_api_key(key.prefix)
    assert found is not None and found.last_used_at == T0


# --- invoices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sequence", [InvoiceSequence, CreditNoteSequence])
def test_advance_number_sequence_counts_per_year(sequence: Any) -> None:
    with transaction.atomic():
        assert store.advance_number_sequence(sequence, 2026, 1) == 1
        assert store.advance_number_sequence(sequence, 2026, 5) == 6
        assert store.advance_number_sequence(sequence, 2027, 2) == 2
    rows = dict(sequence.objects.values_list("year", "last_number"))
    assert rows == {2026: 6, 2027: 2}
    others = CreditNoteSequence if sequence is InvoiceSequence else InvoiceSequence
    assert not others.objects.exists()


def _invoice_values(org: Organization, number: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "org_id": org.pk,
        "number": number,
        "kind": Invoice.Kind.MONTHLY.value,
        "period": "2026-02",
        "currency": "USD",
        "total_cents": 1200,
        "tax_cents": 0,
        "tax_treatment": "no_profile",
        "buyer_name": org.name,
        "buyer_email": org.billing_email,
        "seller": {"legal_name": "Seller", "country": "US"},
        "buyer": {},
        "purchase_id": None,
        "credits_invoice_id": None,
    }
    values.update(fields)
    return values


def test_insert_invoices_writes_what_the_orm_reads() -> None:
    orgs = [_org(f"Org{i}") for i in range(4)]
    due = T0 + timedelta(days=14)
    assert store.insert_invoices([], issued_at=T0, due_at=due) == []
    values = [
        _invoice_values(org, f"INV-2026-{n:06d}", total_cents=100 * n, buyer={"tax_id": None})
        for n, org in enumerate(orgs, start=1)
    ]
    pks = store.insert_invoices(values, issued_at=T0, due_at=due)
    assert pks == sorted(pks) and len(set(pks)) == 4
    columns = [*values[0], "issued_at", "due_at"]
    for pk, value in zip(pks, values, strict=True):
        got = Invoice.objects.filter(pk=pk).values(*columns).get()
        assert got == {**value, "issued_at": T0, "due_at": due}


def test_uninvoiced_overages_are_the_orms_answer() -> None:
    org = _org("Solo")
    (employee,) = _employees(org, 1)
    content = _content(credit_cost=4, title="Solo course")
    start, end = T0, T0 + timedelta(days=28)
    assert store.uninvoiced_overages([], start, end) == []
    assert store.uninvoiced_overages([org.pk], start, end) == []
    others = [_org("Alpha"), _org("Beta")]
    for n, owner in enumerate([org, *others, org]):
        staff = employee if owner is org else _employees(owner, 1, prefix=f"o{n}")[0]
        course = content if owner is org else _content(credit_cost=4, title=f"Course {n}")
        assignment = (
            None  # an overage without an assignment: its joined columns are NULL
            if n == 3
            else _assignment(
                owner,
                course,
                staff,
                status=Assignment.Status.STARTED,
                charged_credits=1,
                overage_credits=3,
                started_at=start,
            )
        )
        for day in (0, 13, 27, 28):  # the last is past the window
            _entry(
                owner,
                type=LedgerEntry.Type.CONSUME,
                overage_credits=3,
                retail_unit_price_cents=250,
                assignment=assignment,
                created_at=start + timedelta(days=day),
            )
        _entry(owner, type=LedgerEntry.Type.CONSUME, created_at=start + timedelta(days=1))
    # One overage billed already: its line takes it out.
    billed = LedgerEntry.objects.filter(org=others[0], overage_credits__gt=0).order_by("id")[0]
    invoice_id = store.insert_invoices(
        [_invoice_values(others[0], "INV-2026-000001", total_cents=750)],
        issued_at=T0,
        due_at=T0,
    )[0]
    InvoiceLine.objects.create(
        org=others[0],
        invoice_id=invoice_id,
        position=1,
        description="billed",
        quantity=3,
        unit_price_cents=250,
        amount_cents=750,
        assignment=billed.assignment,
        ledger_entry=billed,
    )
    asked = [org.pk, others[0].pk]
    oracle = [
        store.OverageRow(
            e.pk,
            e.org_id,
            e.created_at,
            e.overage_credits,
            e.retail_unit_price_cents,
            e.assignment_id,
            e.assignment.credit_cost if e.assignment else None,
            e.assignment.content.title if e.assignment else None,
            e.assignment.employee.name if e.assignment else None,
        )
        for e in LedgerEntry.objects.filter(
            org_id__in=asked,
            overage_credits__gt=0,
            created_at__gte=start,
            created_at__lt=end,
            invoice_line__isnull=True,
        )
        .select_related("assignment__content", "assignment__employee")
        .order_by("id")
    ]
    got = store.uninvoiced_overages(asked, start, end)
    assert got == oracle
    assert len(got) == 3 + 3 + 2  # Solo: with and without an assignment; Alpha: one billed
    assert any(row.assignment_id is None and row.content_title is None for row in got)
    assert all(row.created_at.tzinfo is not None for row in got)


def test_insert_invoice_lines_writes_what_the_orm_reads() -> None:
    org = _org()
    (employee,) = _employees(org, 1)
    assignment = _assignment(org, _content(credit_cost=2), employee)
    entries = [
        _entry(
            org,
            type=LedgerEntry.Type.CONSUME,
            overage_credits=1,
            retail_unit_price_cents=300,
            assignment=assignment,
        )
        for _ in range(3)
    ]
    (invoice_id,) = store.insert_invoices(
        [_invoice_values(org, "INV-2026-000009")], issued_at=T0, due_at=T0
    )
    store.insert_invoice_lines([])
    assert not InvoiceLine.objects.exists()
    lines = [
        store.NewInvoiceLine(
            org_id=org.pk,
            invoice_id=invoice_id,
            position=n,
            description=f"Line {n} " + "é" * (n % 5),
            quantity=n,
            unit_price_cents=300,
            amount_cents=300 * n,
            assignment_id=assignment.pk if n <= len(entries) else None,
            ledger_entry_id=entries[n - 1].pk if n <= len(entries) else None,
        )
        for n in range(1, 251)  # several statements on SQLite
    ]
    store.insert_invoice_lines(lines)
    got = list(
        InvoiceLine.objects.filter(invoice_id=invoice_id)
        .order_by("position")
        .values_list(*store.NewInvoiceLine._fields)
    )
    assert got == [tuple(line) for line in lines]
    assert InvoiceLine.objects.filter(credits_line__isnull=False).count() == 0


def test_a_failed_statement_is_a_django_database_error() -> None:
    """Driver errors come out as django.db's, on the raw cursors as on Django's."""
    org = _org()
    entry, lot = _entry(org), _lot(org, 5)
    with pytest.raises(DatabaseError), transaction.atomic():
        store.insert_lot_draws(org.pk, entry.pk, [(lot.pk, 0)])  # lotdraw_quantity_pos
