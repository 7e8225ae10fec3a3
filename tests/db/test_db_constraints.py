"""The database itself refuses rows that break the credit rules (docs/product.md sections 2-6
and 11).

Every write here goes AROUND credits/actions.py (queryset.update(), Model.objects.create(),
instance.save()/delete() and raw SQL) to show that the CHECK constraints, the partial unique
index and the append-only triggers hold even when the application code is bypassed. Each
attempt runs in its own ``transaction.atomic()`` so the test's transaction stays usable, and
each is followed by a check that nothing changed.

Both backends raise django.db.IntegrityError for all of these, the append-only triggers
included (SQLite's RAISE(ABORT) is SQLITE_CONSTRAINT_TRIGGER; the PostgreSQL trigger raises
SQLSTATE 23000), so that is what is asserted.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from learncredits.billing import purchases
from learncredits.billing.models import Invoice
from learncredits.catalog.models import Content
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
from learncredits.tenancy.models import Employee, Organization
from learncredits.tenancy.services import create_employee
from tests.conftest import around_the_balance_check

ACTOR = "constraints-test"


# What each refusal names: the constraint (CHECK constraints are named in the error on both
# backends; SQLite does not name a unique index, so its own wording is accepted for that).
BC = "balance_credits_nonneg"
BA = "balance_assigned_nonneg"
LOT = "lot_remaining_within_quantity"
CONTENT = "content_premium_cost_consistent"
UNIQUE = r"assignment_one_open_per_employee_content|UNIQUE constraint failed: credits_assignment"
CHARGE = "assignment_charge_matches_status"
NONNEG = "assignment_amounts_nonneg"
TOTAL = "purchase_total_consistent"
QTY = "purchase_quantity_pos"
APPEND = "is append-only"
AFTER = "ledger_after_nonneg"
PRICE = "ledger_overage_has_price"
DRAWQ = "lotdraw_quantity_pos"


def refused(constraint: str, write: Callable[[], Any]) -> None:
    """The write must fail with IntegrityError naming ``constraint`` (a regex), and leave the
    test's transaction usable."""
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        write()


def accepted(write: Callable[[], Any]) -> None:
    """A control: the write is allowed (then rolled back, so later checks are unaffected)."""
    with transaction.atomic():
        write()
        transaction.set_rollback(True)


def sql(statement: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def table(model: type) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@dataclass
class World:
    org: Organization
    alice: Employee
    bob: Employee
    course: Content  # premium, 2 credits
    free: Content
    purchase: Purchase
    lot: CreditLot
    assigned: Assignment  # bob, course, not started
    started: Assignment  # alice, course, started and fully covered
    purchase_entry: LedgerEntry
    consume_entry: LedgerEntry
    draw: LotDraw


@pytest.fixture
def world(db: None) -> World:
    """An org built through the service functions: 5 credits bought, one assignment
    started (a consume entry with a lot draw), one still reserved."""
    org = create_org(name="Acme", billing_email="billing@example.com")
    alice = create_employee(org, name="Alice", email="alice@example.com")
    bob = create_employee(org, name="Bob", email="bob@example.com")
    course = create_content(title="Compliance", premium=True, credit_cost=2, xapi_activity_id=None)
    free = create_content(title="Free", premium=False, credit_cost=0, xapi_activity_id=None)
    purchase = purchases.purchase_credits(org, 5, actor=ACTOR).purchase
    created = actions.assign_bulk(
        org, content_id=course.pk, employee_ids=[alice.pk, bob.pk], actor=ACTOR
    ).created
    by_employee = {a.employee_id: a for a in created}
    started = actions.start_assignment(org, by_employee[alice.pk].pk, actor=ACTOR)
    consume_entry = LedgerEntry.objects.get(org=org, type="consume")
    world = World(
        org=org,
        alice=alice,
        bob=bob,
        course=course,
        free=free,
        purchase=purchase,
        lot=CreditLot.objects.get(purchase=purchase),
        assigned=Assignment.objects.get(pk=by_employee[bob.pk].pk),
        started=Assignment.objects.get(pk=started.pk),
        purchase_entry=LedgerEntry.objects.get(org=org, type="purchase"),
        consume_entry=consume_entry,
        draw=LotDraw.objects.get(entry=consume_entry),
    )
    # The starting point is what the service functions promise.
    balance = Balance.objects.get(org=org)
    assert (balance.credits, balance.assigned) == (3, 2)
    assert (world.lot.quantity, world.lot.remaining) == (5, 3)
    assert (world.started.status, world.started.charged_credits) == ("started", 2)
    assert world.draw.quantity == 2
    return world


def balance_of(org: Organization) -> tuple[int, int]:
    row = Balance.objects.get(org=org)
    return row.credits, row.assigned


# --- balance ----------------------------------------------------------------------------


def test_balance_counters_never_negative(world: World) -> None:
    rows = Balance.objects.filter(org=world.org)
    refused(BC, lambda: rows.update(credits=-1))
    refused(BA, lambda: rows.update(assigned=-1))
    refused(BC, lambda: rows.update(credits=F("credits") - 4))
    refused(BA, lambda: rows.update(credits=0, assigned=F("assigned") - 3))
    refused(
        BC,
        lambda: sql(f"UPDATE {table(Balance)} SET credits = -1 WHERE org_id = %s", [world.org.pk]),
    )
    refused(
        BA,
        lambda: sql(f"UPDATE {table(Balance)} SET assigned = -5 WHERE org_id = %s", [world.org.pk]),
    )
    assert balance_of(world.org) == (3, 2)
    # Zero is allowed: available may be anything, the counters just not below 0.
    accepted(lambda: rows.update(credits=0, assigned=0))


def test_balance_row_for_new_org_cannot_start_negative(world: World) -> None:
    other = Organization.objects.create(name="Other", billing_email="o@example.com")
    refused(BC, lambda: Balance.objects.create(org=other, credits=-1))
    refused(BA, lambda: Balance.objects.create(org=other, assigned=-1))
    assert not Balance.objects.filter(org=other).exists()


# --- lots -------------------------------------------------------------------------------


def test_lot_remaining_stays_within_zero_and_quantity(world: World) -> None:
    lot = CreditLot.objects.filter(pk=world.lot.pk)
    refused(LOT, lambda: lot.update(remaining=-1))
    refused(LOT, lambda: lot.update(remaining=F("quantity") + 1))
    refused(LOT, lambda: lot.update(remaining=6))
    refused(LOT, lambda: lot.update(quantity=2))  # below what is still remaining (3)
    refused(
        LOT,
        lambda: sql(f"UPDATE {table(CreditLot)} SET remaining = -1 WHERE id = %s", [world.lot.pk]),
    )
    refused(
        LOT,
        lambda: sql(
            f"UPDATE {table(CreditLot)} SET remaining = quantity + 1 WHERE id = %s", [world.lot.pk]
        ),
    )
    refused(
        LOT,
        lambda: CreditLot.objects.create(
            org=world.org, kind="grant", quantity=1, remaining=2, unit_price_cents=0
        ),
    )
    world.lot.refresh_from_db()
    assert (world.lot.quantity, world.lot.remaining) == (5, 3)
    accepted(lambda: lot.update(remaining=0))
    accepted(lambda: lot.update(remaining=F("quantity")))


# --- catalog ----------------------------------------------------------------------------


def test_premium_content_costs_at_least_one_and_free_content_nothing(world: World) -> None:
    refused(
        CONTENT, lambda: Content.objects.create(title="Premium at 0", premium=True, credit_cost=0)
    )
    refused(
        CONTENT, lambda: Content.objects.create(title="Free at 1", premium=False, credit_cost=1)
    )
    refused(CONTENT, lambda: Content.objects.create(title="Negative", premium=True, credit_cost=-1))
    refused(CONTENT, lambda: Content.objects.filter(pk=world.course.pk).update(credit_cost=0))
    refused(CONTENT, lambda: Content.objects.filter(pk=world.free.pk).update(credit_cost=1))
    refused(CONTENT, lambda: Content.objects.filter(pk=world.free.pk).update(premium=True))
    refused(
        CONTENT,
        lambda: sql(
            f"UPDATE {table(Content)} SET credit_cost = 0 WHERE id = %s", [world.course.pk]
        ),
    )
    costs = dict(
        Content.objects.filter(pk__in=[world.course.pk, world.free.pk]).values_list(
            "pk", "credit_cost"
        )
    )
    assert costs == {world.course.pk: 2, world.free.pk: 0}
    accepted(lambda: Content.objects.filter(pk=world.free.pk).update(premium=True, credit_cost=1))


# --- one open assignment per employee and content --------------------------------------


def _open_copy(world: World, employee: Employee, status: str = "assigned", **extra: Any) -> None:
    charged = 2 if status in ("started", "completed") else 0
    Assignment.objects.create(
        org=world.org,
        content=world.course,
        employee=employee,
        status=status,
        credit_cost=2,
        charged_credits=charged,
        **extra,
    )


def test_second_open_assignment_of_the_same_content_is_refused(world: World) -> None:
    # bob holds an assigned one, alice a started one: both are open.
    for employee in (world.bob, world.alice):
        refused(UNIQUE, lambda employee=employee: _open_copy(world, employee, "assigned"))
        refused(UNIQUE, lambda employee=employee: _open_copy(world, employee, "started"))
    # Moving someone else's open assignment onto a holder is refused the same way.
    refused(
        UNIQUE, lambda: Assignment.objects.filter(pk=world.assigned.pk).update(employee=world.alice)
    )
    refused(
        UNIQUE,
        lambda: sql(
            f"UPDATE {table(Assignment)} SET employee_id = %s WHERE id = %s",
            [world.alice.pk, world.assigned.pk],
        ),
    )
    assert Assignment.objects.filter(org=world.org).count() == 2
    # Another content item, or another employee, is not a duplicate.
    carol = create_employee(world.org, name="Carol", email="carol@example.com")
    accepted(lambda: _open_copy(world, carol))
    accepted(
        lambda: Assignment.objects.create(
            org=world.org, content=world.free, employee=world.bob, credit_cost=0
        )
    )


def test_after_completion_or_cancellation_the_content_can_be_held_again(world: World) -> None:
    actions.complete_assignment(world.org, world.started.pk, actor=ACTOR)
    actions.cancel_assignment(world.org, world.assigned.pk, actor=ACTOR)
    # Yearly training: a completed one (alice) and a cancelled one (bob) plus a new open one.
    _open_copy(world, world.alice)
    _open_copy(world, world.bob)
    _open_copy(world, world.bob, "cancelled")  # closed ones may pile up
    _open_copy(world, world.alice, "completed")
    statuses = sorted(
        Assignment.objects.filter(org=world.org, employee=world.bob).values_list(
            "status", flat=True
        )
    )
    assert statuses == ["assigned", "cancelled", "cancelled"]
    # But still only one open at a time, by insert or by reopening a closed row.
    refused(UNIQUE, lambda: _open_copy(world, world.alice, "started"))
    refused(UNIQUE, lambda: _open_copy(world, world.bob))
    cancelled = Assignment.objects.filter(pk=world.assigned.pk)
    refused(UNIQUE, lambda: cancelled.update(status="assigned"))
    refused(
        UNIQUE,
        lambda: sql(
            f"UPDATE {table(Assignment)} SET status = 'assigned' WHERE id = %s",
            [world.assigned.pk],
        ),
    )
    assert cancelled.get().status == "cancelled"


# --- assignment charge fields ------------------------------------------------------------


def test_assignment_charge_fields_match_status(world: World) -> None:
    assigned = Assignment.objects.filter(pk=world.assigned.pk)  # cost 2, assigned
    started = Assignment.objects.filter(pk=world.started.pk)  # cost 2, started, charged 2
    # Not started: nothing charged, no overage.
    refused(CHARGE, lambda: assigned.update(charged_credits=1))
    refused(CHARGE, lambda: assigned.update(overage_credits=2))
    refused(CHARGE, lambda: assigned.update(status="cancelled", charged_credits=2))
    # Started or completed: charged + overage is exactly the cost.
    refused(CHARGE, lambda: assigned.update(status="started"))  # charged 0 + overage 0 != 2
    refused(CHARGE, lambda: started.update(charged_credits=1))
    refused(CHARGE, lambda: started.update(overage_credits=1))
    refused(
        CHARGE, lambda: started.update(status="completed", charged_credits=0, overage_credits=0)
    )
    refused(CHARGE, lambda: started.update(status="assigned"))  # keeps charged 2
    refused(CHARGE, lambda: started.update(credit_cost=3))
    # Amounts are never negative, even when they add up.
    refused(NONNEG, lambda: started.update(charged_credits=3, overage_credits=-1))
    refused(NONNEG, lambda: started.update(credit_cost=-1, charged_credits=-1, overage_credits=0))
    refused(
        CHARGE,
        lambda: sql(
            f"UPDATE {table(Assignment)} SET charged_credits = 0 WHERE id = %s", [world.started.pk]
        ),
    )
    refused(
        CHARGE,
        lambda: sql(
            f"UPDATE {table(Assignment)} SET overage_credits = 1 WHERE id = %s",
            [world.assigned.pk],
        ),
    )
    rows = {
        pk: rest
        for pk, *rest in Assignment.objects.filter(org=world.org).values_list(
            "pk", "status", "credit_cost", "charged_credits", "overage_credits"
        )
    }
    assert rows == {
        world.assigned.pk: ["assigned", 2, 0, 0],
        world.started.pk: ["started", 2, 2, 0],
    }
    # Controls: consistent charges are accepted, including a partly covered start.
    accepted(lambda: assigned.update(status="started", charged_credits=1, overage_credits=1))
    accepted(lambda: started.update(status="completed"))
    accepted(lambda: assigned.update(status="cancelled"))


# --- purchases --------------------------------------------------------------------------


def test_purchase_total_is_quantity_times_unit_price(world: World) -> None:
    def purchase(**fields: Any) -> Purchase:
        values = {
            "org": world.org,
            "quantity": 10,
            "unit_price_cents": 1000,
            "total_cents": 10_000,
            "retail_unit_price_cents": 1000,
            "provider": "test",
            "actor": ACTOR,
        }
        values.update(fields)
        return Purchase.objects.create(**values)

    refused(TOTAL, lambda: purchase(total_cents=9_999))
    refused(TOTAL, lambda: purchase(unit_price_cents=900))  # total left at the retail total
    refused(QTY, lambda: purchase(quantity=0, total_cents=0))
    paid = Purchase.objects.filter(pk=world.purchase.pk)  # 5 x $10.00
    refused(TOTAL, lambda: paid.update(total_cents=4_999))
    refused(TOTAL, lambda: paid.update(quantity=6))
    refused(TOTAL, lambda: paid.update(unit_price_cents=F("unit_price_cents") - 1))
    refused(
        TOTAL,
        lambda: sql(
            f"UPDATE {table(Purchase)} SET total_cents = total_cents + 1 WHERE id = %s",
            [world.purchase.pk],
        ),
    )
    row = paid.values_list("quantity", "unit_price_cents", "total_cents").get()
    assert row == (5, 1000, 5_000)
    accepted(lambda: purchase(quantity=100, unit_price_cents=850, total_cents=85_000))


def test_tax_follows_the_documents_sign_and_a_known_treatment(world: World) -> None:
    """A purchase's tax is never negative; an invoice's tax has its document's sign (a credit
    note's never positive); its treatment is one the tax rules know."""
    refused(
        "purchase_tax_nonneg",
        lambda: Purchase.objects.filter(pk=world.purchase.pk).update(tax_cents=-1),
    )
    accepted(lambda: Purchase.objects.filter(pk=world.purchase.pk).update(tax_cents=190))
    receipt = Invoice.objects.get(purchase=world.purchase)

    def document(**fields: Any) -> Invoice:
        values: dict[str, Any] = {
            "org": world.org,
            "number": "CN-2099-000001",
            "kind": "credit_note",
            "period": receipt.period,
            "total_cents": -119,
            "tax_cents": -19,
            "tax_treatment": "taxed",
            "buyer_name": "Acme",
            "buyer_email": "billing@example.com",
            "credits_invoice": receipt,
            "due_at": receipt.due_at,
        }
        values.update(fields)
        return Invoice.objects.create(**values)

    refused("invoice_tax_sign", lambda: document(tax_cents=19))
    refused("invoice_tax_treatment_known", lambda: document(tax_treatment="zero_rated"))
    refused(
        "invoice_tax_sign",
        lambda: document(
            number="INV-2099-000001",
            kind="monthly",
            credits_invoice=None,
            total_cents=119,
            tax_cents=-19,
        ),
    )
    accepted(lambda: document())
    accepted(
        lambda: document(
            number="INV-2099-000001",
            kind="monthly",
            credits_invoice=None,
            total_cents=119,
            tax_cents=19,
        )
    )


# --- the append-only ledger --------------------------------------------------------------


def _ledger_rows(org: Organization) -> list[tuple[Any, ...]]:
    return list(
        LedgerEntry.objects.filter(org=org)
        .order_by("id")
        .values_list(
            "id",
            "type",
            "credits_delta",
            "assigned_delta",
            "credits_after",
            "assigned_after",
            "reason",
            "actor",
        )
    )


def test_ledger_entries_cannot_be_updated(world: World) -> None:
    before = _ledger_rows(world.org)
    assert [row[1] for row in before] == ["purchase", "reserve", "reserve", "consume"]
    entries = LedgerEntry.objects.filter(org=world.org)
    one = LedgerEntry.objects.filter(pk=world.purchase_entry.pk)
    refused(APPEND, lambda: one.update(credits_delta=500))
    refused(APPEND, lambda: one.update(reason="edited"))  # even a field that moves no credits
    refused(APPEND, lambda: entries.update(actor="someone else"))
    refused(APPEND, lambda: entries.update(credits_after=F("credits_after") + 1))

    def save_edited() -> None:
        entry = LedgerEntry.objects.get(pk=world.consume_entry.pk)
        entry.credits_delta = 0
        entry.save()

    refused(APPEND, save_edited)
    refused(
        APPEND,
        lambda: sql(
            f"UPDATE {table(LedgerEntry)} SET credits_delta = 500 WHERE id = %s",
            [world.purchase_entry.pk],
        ),
    )
    refused(
        APPEND,
        lambda: sql(
            f"UPDATE {table(LedgerEntry)} SET reason = 'x' WHERE org_id = %s", [world.org.pk]
        ),
    )
    assert _ledger_rows(world.org) == before


def test_ledger_entries_cannot_be_deleted(world: World) -> None:
    before = _ledger_rows(world.org)
    # The purchase entry has no lot draws pointing at it, so Django sends the DELETE.
    refused(APPEND, lambda: LedgerEntry.objects.filter(pk=world.purchase_entry.pk).delete())
    refused(APPEND, lambda: LedgerEntry.objects.get(pk=world.purchase_entry.pk).delete())
    refused(APPEND, lambda: LedgerEntry.objects.filter(org=world.org, type="reserve").delete())
    refused(
        APPEND,
        lambda: sql(f"DELETE FROM {table(LedgerEntry)} WHERE id = %s", [world.purchase_entry.pk]),
    )
    refused(
        APPEND,
        lambda: sql(f"DELETE FROM {table(LedgerEntry)} WHERE id = %s", [world.consume_entry.pk]),
    )
    refused(
        APPEND, lambda: sql(f"DELETE FROM {table(LedgerEntry)} WHERE org_id = %s", [world.org.pk])
    )
    assert _ledger_rows(world.org) == before


def test_ledger_is_append_only_not_read_only(world: World) -> None:
    """A correction is a new entry: inserting is allowed (the control for the two above)."""
    count = LedgerEntry.objects.filter(org=world.org).count()
    LedgerEntry.objects.create(
        org=world.org, type="adjustment", credits_after=3, assigned_after=2, actor=ACTOR
    )
    assert LedgerEntry.objects.filter(org=world.org).count() == count + 1


def test_ledger_entry_checks_on_insert(world: World) -> None:
    def entry(**fields: Any) -> LedgerEntry:
        values = {
            "org": world.org,
            "type": "adjustment",
            "credits_after": 3,
            "assigned_after": 2,
            "actor": ACTOR,
        }
        values.update(fields)
        return LedgerEntry.objects.create(**values)

    refused(AFTER, lambda: entry(credits_after=-1))
    refused(AFTER, lambda: entry(assigned_after=-1))
    refused(AFTER, lambda: entry(type="consume", overage_credits=-1, retail_unit_price_cents=1000))
    # Overage is billed at retail: an overage without the price applied is refused.
    refused(PRICE, lambda: entry(type="consume", overage_credits=1, retail_unit_price_cents=None))
    accepted(lambda: entry(type="consume", overage_credits=1, retail_unit_price_cents=1000))


def test_lot_draws_cannot_be_updated_or_deleted(world: World) -> None:
    draws = LotDraw.objects.filter(pk=world.draw.pk)
    refused(APPEND, lambda: draws.update(quantity=1))
    refused(APPEND, lambda: draws.update(lot=world.lot))  # even a no-op rewrite is an UPDATE
    refused(APPEND, lambda: draws.delete())
    refused(APPEND, lambda: LotDraw.objects.get(pk=world.draw.pk).delete())

    def save_edited() -> None:
        draw = LotDraw.objects.get(pk=world.draw.pk)
        draw.quantity = 3
        draw.save()

    refused(APPEND, save_edited)
    refused(
        APPEND,
        lambda: sql(f"UPDATE {table(LotDraw)} SET quantity = 1 WHERE id = %s", [world.draw.pk]),
    )
    refused(APPEND, lambda: sql(f"DELETE FROM {table(LotDraw)} WHERE id = %s", [world.draw.pk]))
    refused(
        DRAWQ,
        lambda: LotDraw.objects.create(
            org=world.org, entry=world.consume_entry, lot=world.lot, quantity=0
        ),
    )
    assert list(LotDraw.objects.filter(org=world.org).values_list("pk", "quantity")) == [
        (world.draw.pk, 2)
    ]


# --- the balance equals its newest ledger entry, checked by PostgreSQL at commit -----------


def _commit_check() -> None:
    """What COMMIT would do: run the deferred checks of the writes so far (the test's own
    transaction is rolled back, so its commit never comes)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def _fresh_org_with_credits(credits: int) -> int:
    fresh = create_org(name="Fresh", billing_email="fresh@example.com")
    return Balance.objects.filter(org=fresh).update(credits=credits)


def _newest(org: Organization) -> LedgerEntry:
    return LedgerEntry.objects.filter(org=org).latest("id")


BALANCE_AROUND_THE_LEDGER: list[Any] = [
    pytest.param(
        lambda org: Balance.objects.filter(org=org).update(credits=F("credits") + 1),
        id="balance-credits-raised",
    ),
    pytest.param(
        lambda org: Balance.objects.filter(org=org).update(assigned=F("assigned") - 1),
        id="balance-assigned-lowered",
    ),
    pytest.param(
        lambda org: LedgerEntry.objects.create(
            org=org,
            type=LedgerEntry.Type.ADJUSTMENT,
            credits_delta=1,
            credits_after=_newest(org).credits_after + 1,
            assigned_after=_newest(org).assigned_after,
            actor=ACTOR,
            reason="an entry without its balance",
        ),
        id="entry-without-balance",
    ),
    pytest.param(
        lambda org: _fresh_org_with_credits(3),
        id="credits-with-no-entry-at-all",
    ),
]


@pytest.mark.postgres_only
@pytest.mark.parametrize("write", BALANCE_AROUND_THE_LEDGER)
def test_postgres_refuses_to_commit_a_balance_that_differs_from_its_ledger(
    world: World, write: Callable[[Organization], Any]
) -> None:
    _commit_check()  # what the fixture built through the services passes
    before = table_snapshot_of_balances()
    refused = pytest.raises(IntegrityError, match=r"differs from its newest ledger entry")
    with refused, transaction.atomic():
        write(world.org)
        _commit_check()
    assert table_snapshot_of_balances() == before


@pytest.mark.postgres_only
def test_the_balance_check_follows_every_service_write(world: World) -> None:
    """A run of the writes that move the balance, each checked as its commit would be."""
    steps: list[Callable[[], Any]] = [
        lambda: purchases.purchase_credits(world.org, 3, actor=ACTOR),
        lambda: actions.adjust_credits(world.org, -1, reason="correction", actor=ACTOR),
        lambda: actions.cancel_assignment(world.org, world.assigned.pk, actor=ACTOR),
        lambda: actions.deactivate_employee(world.org, world.assigned.employee_id, actor=ACTOR),
    ]
    for step in steps:
        step()
        _commit_check()
    balance = Balance.objects.get(org=world.org)
    newest = _newest(world.org)
    assert (balance.credits, balance.assigned) == (newest.credits_after, newest.assigned_after)


def _balance_row_versions_written() -> int:
    """Balance rows written (updated) in this database so far, as PostgreSQL counts them,
    committed transactions only. The session's pending counts are flushed first."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = %s",
            [Balance._meta.db_table],
        )
        (count,) = cursor.fetchone()
        return int(count)


def _entry_after(org: Organization, credits: int) -> LedgerEntry:
    """An adjustment of ``credits`` whose after-values claim ``credits_after``."""
    newest = _newest(org)
    return LedgerEntry(
        org=org,
        type=LedgerEntry.Type.ADJUSTMENT,
        credits_delta=1,
        credits_after=credits,
        assigned_after=newest.assigned_after,
        actor=ACTOR,
        reason="written by hand",
    )


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_start_writes_its_balance_row_once(world: World) -> None:
    """A start writes the balance before its ledger entry, so the entry's insert does not
    rewrite the row (and queue a second check): one row version per start, not two."""
    before = _balance_row_versions_written()
    actions.start_assignment(world.org, world.assigned.pk, actor=ACTOR)
    assert _balance_row_versions_written() - before == 1


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_entry_after_the_balance_write_is_checked_by_that_write(world: World) -> None:
    """The insert skips the rewrite only because the transaction's own balance write has
    queued the check, which reads the rows as they are at commit: a later entry that
    disagrees is refused all the same, and one that agrees commits."""
    credits = Balance.objects.get(org=world.org).credits
    refused = pytest.raises(IntegrityError, match=r"differs from its newest ledger entry")
    with refused, transaction.atomic():
        Balance.objects.filter(org=world.org).update(credits=credits + 1)
        _entry_after(world.org, credits + 2).save()
    assert Balance.objects.get(org=world.org).credits == credits

    before = _balance_row_versions_written()
    with transaction.atomic():
        Balance.objects.filter(org=world.org).update(credits=credits + 1)
        _entry_after(world.org, credits + 1).save()
    assert _balance_row_versions_written() - before == 1
    assert _newest(world.org).credits_after == credits + 1


def table_snapshot_of_balances() -> list[tuple[int, int, int]]:
    return list(Balance.objects.order_by("org_id").values_list("org_id", "credits", "assigned"))


# --- learncredits verify-ledger ----------------------------------------------------------


def _verify() -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_ledger", stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


@pytest.fixture
def two_orgs(world: World) -> tuple[Organization, Organization]:
    other = create_org(name="Other", billing_email="other@example.com")
    actions.adjust_credits(other, 4, reason="welcome grant", actor=ACTOR)
    return world.org, other


def _around(write: Callable[[], int]) -> int:
    with around_the_balance_check():
        return write()


def _names(org: Organization, text: str) -> bool:
    return re.search(rf"\borg_{org.pk}\b", text) is not None


def test_verify_ledger_exits_0_on_a_consistent_database(two_orgs) -> None:
    code, out, err = _verify()
    assert code == 0, err
    assert "consistent" in out
    assert "MISMATCH" not in err


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda org: _around(
                lambda: Balance.objects.filter(org=org).update(credits=F("credits") + 1)
            ),
            id="balance-credits",
        ),
        pytest.param(
            lambda org: _around(
                lambda: Balance.objects.filter(org=org).update(assigned=F("assigned") - 1)
            ),
            id="balance-assigned",
        ),
        pytest.param(
            lambda org: CreditLot.objects.filter(org=org).update(remaining=F("remaining") - 1),
            id="lot-remaining",
        ),
    ],
)
def test_verify_ledger_exits_1_and_names_the_tampered_org(two_orgs, tamper) -> None:
    tampered, untouched = two_orgs
    assert tamper(tampered) == 1
    code, out, err = _verify()
    assert code == 1, (out, err)
    assert _names(tampered, err), err
    assert not _names(untouched, err), err
    assert "consistent" not in out
