"""Scenarios of the product's rules (docs/product.md), one rule each, through the HTTP API.

Each test reads as a story: set an org up, act, then check the balance, the assignment and
the ledger entries the action wrote.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Any

import pytest
from django.urls import Resolver404, resolve

from learncredits import ids
from learncredits.credits.models import Assignment, LedgerEntry
from learncredits.tenancy.models import ApiKey, Membership
from tests.conftest import Api, OrgHandle, ok

# --- helpers -------------------------------------------------------------------------------


def ledger(org: OrgHandle) -> list[dict[str, Any]]:
    """The org's whole ledger, oldest first (the API lists newest first)."""
    body = ok(org.api.get(org.path("/ledger"), limit=500))
    assert body["next_cursor"] is None
    return list(reversed(body["data"]))


def figures(entry: dict[str, Any]) -> tuple[Any, ...]:
    """(type, credits_delta, assigned_delta, overage_credits, credits_after, assigned_after)."""
    return (
        entry["type"],
        entry["credits_delta"],
        entry["assigned_delta"],
        entry["overage_credits"],
        entry["credits_after"],
        entry["assigned_after"],
    )


def counters(org: OrgHandle) -> tuple[int, int, int]:
    balance = org.balance()
    assert balance["available"] == balance["credits"] - balance["assigned"]
    return balance["credits"], balance["assigned"], balance["available"]


def assignment(org: OrgHandle, assignment_id: str) -> dict[str, Any]:
    return ok(org.api.get(org.path(f"/assignments/{assignment_id}")))


def assign_one(org: OrgHandle, content_id: str, employee_id: str) -> dict[str, Any]:
    created = org.assign(content_id, [employee_id])
    assert created["skipped"] == []
    assert len(created["data"]) == 1
    return created["data"][0]


def is_utc_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0


def charge(assignment: dict[str, Any]) -> tuple[int, int, int]:
    """(credit_cost, charged_credits, overage_credits) of an assignment."""
    return assignment["credit_cost"], assignment["charged_credits"], assignment["overage_credits"]


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert (response.status, response.code) == (status, code), (response.status, response.body)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return response.body


def api_key_id(org: OrgHandle) -> str:
    """The public id of the org's test key, as the ledger's actor names it."""
    key_prefix = org.key.split("_")[1]
    return f"key_{ApiKey.objects.get(prefix=key_prefix).pk}"


# --- assignment lifecycle --------------------------------------------------------------------


def test_start_with_zero_credits_is_all_overage_and_credits_stay_at_zero(org, make_content):
    course = make_content(3, "Anti-Bribery")
    ada, bob = org.employee("Ada"), org.employee("Bob")
    first = assign_one(org, course, ada)
    assert counters(org) == (0, 3, -3)  # assigning beyond the credits warns, never blocks

    started = ok(org.act(first["id"], "start"))
    assert started["status"] == "started"
    assert charge(started) == (3, 0, 3)
    assert is_utc_time(started["started_at"])
    assert started["completed_at"] is None and started["cancelled_at"] is None
    assert counters(org) == (0, 0, 0)
    assert org.balance()["overage_credits_this_period"] == 3

    second = assign_one(org, course, bob)
    ok(org.act(second["id"], "start"))
    assert counters(org) == (0, 0, 0)
    assert org.balance()["overage_credits_this_period"] == 6

    entries = ledger(org)
    assert [figures(e) for e in entries] == [
        ("reserve", 0, 3, 0, 0, 3),
        ("consume", 0, -3, 3, 0, 0),
        ("reserve", 0, 3, 0, 0, 3),
        ("consume", 0, -3, 3, 0, 0),
    ]
    assert [e["assignment_id"] for e in entries] == [first["id"]] * 2 + [second["id"]] * 2
    assert all(e["purchase_id"] is None for e in entries)
    assert all(api_key_id(org) in e["actor"] for e in entries)


def test_start_partly_covered_charges_what_is_left_and_the_rest_is_overage(org, make_content):
    course = make_content(2, "Data Privacy")
    purchase = org.buy(1)
    ada = org.employee("Ada")
    created = assign_one(org, course, ada)
    assert counters(org) == (1, 2, -1)

    started = ok(org.act(created["id"], "start"))
    assert charge(started) == (2, 1, 1)
    assert counters(org) == (0, 0, 0)
    assert org.balance()["overage_credits_this_period"] == 1

    entries = ledger(org)
    assert [figures(e) for e in entries] == [
        ("purchase", 1, 0, 0, 1, 0),
        ("reserve", 0, 2, 0, 1, 2),
        ("consume", -1, -2, 1, 0, 0),
    ]
    assert entries[0]["purchase_id"] == purchase["id"]
    assert entries[0]["assignment_id"] is None
    assert entries[2]["assignment_id"] == created["id"]


def test_starting_twice_charges_once(org, make_content):
    course = make_content(1)
    org.buy(10)
    created = assign_one(org, course, org.employee("Ada"))

    first = ok(org.act(created["id"], "start"))
    second = ok(org.act(created["id"], "start"))

    assert second == first
    assert counters(org) == (9, 0, 9)
    consumes = [e for e in ledger(org) if e["type"] == "consume"]
    assert [figures(e) for e in consumes] == [("consume", -1, -1, 0, 9, 0)]


def test_completing_a_never_started_assignment_starts_and_charges_it_first(org, make_content):
    course = make_content(2)
    org.buy(10)
    created = assign_one(org, course, org.employee("Ada"))
    assert created["status"] == "assigned"
    assert created["started_at"] is None and created["completed_at"] is None

    done = ok(org.act(created["id"], "complete"))

    assert done["status"] == "completed"
    assert charge(done) == (2, 2, 0)
    assert is_utc_time(done["started_at"]) and is_utc_time(done["completed_at"])
    assert done["cancelled_at"] is None
    assert assignment(org, created["id"]) == done
    assert counters(org) == (8, 0, 8)
    assert [figures(e) for e in ledger(org)][1:] == [
        ("reserve", 0, 2, 0, 10, 2),
        ("consume", -2, -2, 0, 8, 0),
    ]


def test_completing_twice_is_harmless(org, make_content):
    course = make_content(1)
    org.buy(5)
    created = assign_one(org, course, org.employee("Ada"))
    ok(org.act(created["id"], "start"))
    done = ok(org.act(created["id"], "complete"))
    entries_before = ledger(org)

    again = ok(org.act(created["id"], "complete"))

    assert again == done
    assert again["status"] == "completed"
    assert counters(org) == (4, 0, 4)
    assert ledger(org) == entries_before


def test_cancel_releases_the_reservation(org, make_content):
    course = make_content(2)
    org.buy(5)
    created = assign_one(org, course, org.employee("Ada"))
    assert counters(org) == (5, 2, 3)

    cancelled = ok(org.act(created["id"], "cancel"))

    assert cancelled["status"] == "cancelled"
    assert is_utc_time(cancelled["cancelled_at"])
    assert cancelled["started_at"] is None and cancelled["completed_at"] is None
    assert charge(cancelled) == (2, 0, 0)
    assert counters(org) == (5, 0, 5)
    release = ledger(org)[-1]
    assert figures(release) == ("release", 0, -2, 0, 5, 0)
    assert release["assignment_id"] == created["id"]


def test_cancelling_a_started_assignment_is_an_invalid_state(org, make_content, snapshot):
    course = make_content(1)
    org.buy(5)
    created = assign_one(org, course, org.employee("Ada"))
    ok(org.act(created["id"], "start"))
    before = snapshot()

    refused(org.act(created["id"], "cancel"), 409, "invalid_state")

    assert snapshot() == before
    assert assignment(org, created["id"])["status"] == "started"


def test_starting_a_cancelled_assignment_is_an_invalid_state(org, make_content, snapshot):
    course = make_content(1)
    org.buy(5)
    created = assign_one(org, course, org.employee("Ada"))
    ok(org.act(created["id"], "cancel"))
    before = snapshot()

    refused(org.act(created["id"], "start"), 409, "invalid_state")
    refused(org.act(created["id"], "complete"), 409, "invalid_state")

    assert snapshot() == before
    assert counters(org) == (5, 0, 5)


def test_after_cancel_the_same_content_can_be_assigned_again(org, make_content):
    course = make_content(1)
    ada = org.employee("Ada")
    first = assign_one(org, course, ada)
    ok(org.act(first["id"], "cancel"))

    second = assign_one(org, course, ada)

    assert second["id"] != first["id"]
    assert second["status"] == "assigned"
    assert counters(org) == (0, 1, -1)


def test_after_completion_the_same_content_can_be_assigned_again(org, make_content):
    course = make_content(1)
    org.buy(5)
    ada = org.employee("Ada")
    first = assign_one(org, course, ada)
    ok(org.act(first["id"], "complete"))

    second = assign_one(org, course, ada)  # yearly compliance training

    assert second["id"] != first["id"]
    assert counters(org) == (4, 1, 3)


# --- reassign --------------------------------------------------------------------------------


def test_reassign_moves_the_reservation_and_leaves_balances_alone(org, make_content):
    course = make_content(2)
    org.buy(5)
    ada, bob = org.employee("Ada"), org.employee("Bob")
    created = assign_one(org, course, ada)
    before = counters(org)
    entries_before = ledger(org)

    moved = ok(org.act(created["id"], "reassign", {"employee_id": bob}))

    assert moved["id"] == created["id"]
    assert moved["employee_id"] == bob
    assert moved["status"] == "assigned"
    assert moved["credit_cost"] == 2
    assert counters(org) == before == (5, 2, 3)
    new_entries = ledger(org)[len(entries_before) :]
    assert all((e["credits_delta"], e["assigned_delta"]) == (0, 0) for e in new_entries)
    bobs = ok(org.api.get(org.path("/assignments"), employee_id=bob))["data"]
    adas = ok(org.api.get(org.path("/assignments"), employee_id=ada))["data"]
    assert [a["id"] for a in bobs] == [created["id"]] and adas == []

    # Ada no longer holds it, so she can be given the course again; Bob's start charges.
    assign_one(org, course, ada)
    started = ok(org.act(created["id"], "start"))
    assert started["employee_id"] == bob
    assert counters(org) == (3, 2, 1)


def test_reassign_to_an_inactive_employee_is_refused(org, make_content, snapshot):
    course = make_content(1)
    ada, gone = org.employee("Ada"), org.employee("Gone")
    ok(org.api.post(org.path(f"/employees/{gone}/deactivate")))
    created = assign_one(org, course, ada)
    before = snapshot()

    refused(org.act(created["id"], "reassign", {"employee_id": gone}), 409, "employee_inactive")

    assert snapshot() == before


def test_reassign_to_an_employee_already_holding_that_content_is_refused(
    org, make_content, snapshot
):
    course = make_content(1)
    ada, bob = org.employee("Ada"), org.employee("Bob")
    created = org.assign(course, [ada, bob])["data"]
    before = snapshot()

    response = org.act(created[0]["id"], "reassign", {"employee_id": bob})

    refused(response, 409, "invalid_state")
    assert snapshot() == before
    assert assignment(org, created[0]["id"])["employee_id"] == ada


def test_reassign_of_a_started_assignment_is_refused(org, make_content, snapshot):
    course = make_content(1)
    org.buy(5)
    ada, bob = org.employee("Ada"), org.employee("Bob")
    created = assign_one(org, course, ada)
    ok(org.act(created["id"], "start"))
    before = snapshot()

    refused(org.act(created["id"], "reassign", {"employee_id": bob}), 409, "invalid_state")

    assert snapshot() == before


# --- deactivate ------------------------------------------------------------------------------


def test_deactivating_an_employee_cancels_what_they_had_not_started(org, make_content):
    privacy = make_content(2, "Privacy")
    safety = make_content(1, "Safety")
    ethics = make_content(1, "Ethics")
    org.buy(10)
    leaver, stayer = org.employee("Leaver"), org.employee("Stayer")
    a_privacy = assign_one(org, privacy, leaver)
    a_safety = assign_one(org, safety, leaver)
    a_ethics = assign_one(org, ethics, leaver)
    a_stayer = assign_one(org, privacy, stayer)
    ok(org.act(a_ethics["id"], "start"))
    assert counters(org) == (9, 5, 4)
    entries_before = ledger(org)

    employee = ok(org.api.post(org.path(f"/employees/{leaver}/deactivate")))

    assert employee["id"] == leaver and employee["active"] is False
    for released in (a_privacy, a_safety):
        after = assignment(org, released["id"])
        assert after["status"] == "cancelled" and is_utc_time(after["cancelled_at"])
    assert assignment(org, a_ethics["id"])["status"] == "started"
    assert assignment(org, a_stayer["id"])["status"] == "assigned"
    assert counters(org) == (9, 2, 7)
    new_entries = ledger(org)[len(entries_before) :]
    assert sorted(
        (e["assignment_id"], e["type"], e["assigned_delta"]) for e in new_entries
    ) == sorted([(a_privacy["id"], "release", -2), (a_safety["id"], "release", -1)])
    assert new_entries[-1]["assigned_after"] == 2

    # Deactivating again changes nothing.
    again = ok(org.api.post(org.path(f"/employees/{leaver}/deactivate")))
    assert again["active"] is False
    assert len(ledger(org)) == len(entries_before) + 2
    assert counters(org) == (9, 2, 7)


def test_assigning_to_a_deactivated_employee_refuses_the_whole_bulk(org, make_content, snapshot):
    course = make_content(1)
    leaver, stayer = org.employee("Leaver"), org.employee("Stayer")
    ok(org.api.post(org.path(f"/employees/{leaver}/deactivate")))
    before = snapshot()

    response = org.api.post(
        org.path("/assignments"), {"content_id": course, "employee_ids": [stayer, leaver]}
    )

    refused(response, 409, "employee_inactive")
    assert snapshot() == before
    assert ok(org.api.get(org.path("/assignments")))["data"] == []


# --- free content ----------------------------------------------------------------------------


def test_free_content_goes_through_the_lifecycle_without_touching_the_balance(org, make_content):
    welcome = make_content(0, "Welcome")
    org.buy(3)
    ada, bob, cy = org.employee("Ada"), org.employee("Bob"), org.employee("Cy")
    entries_before = ledger(org)

    created = org.assign(welcome, [ada, bob])["data"]
    assert [a["credit_cost"] for a in created] == [0, 0]
    assert counters(org) == (3, 0, 3)
    started = ok(org.act(created[0]["id"], "start"))
    assert started["status"] == "started"
    assert charge(started) == (0, 0, 0)
    done = ok(org.act(created[0]["id"], "complete"))
    assert done["status"] == "completed"
    moved = ok(org.act(created[1]["id"], "reassign", {"employee_id": cy}))
    assert moved["employee_id"] == cy
    assert ok(org.act(created[1]["id"], "cancel"))["status"] == "cancelled"
    ok(org.api.post(org.path(f"/employees/{bob}/deactivate")))

    assert counters(org) == (3, 0, 3)
    assert org.balance()["overage_credits_this_period"] == 0
    assert ledger(org) == entries_before


# --- bulk assignment -------------------------------------------------------------------------


def test_bulk_assignment_with_an_unknown_employee_creates_nothing(org, make_content, snapshot):
    course = make_content(1)
    ada = org.employee("Ada")
    before = snapshot()

    response = org.api.post(
        org.path("/assignments"), {"content_id": course, "employee_ids": [ada, "emp_999999999"]}
    )

    refused(response, 404, "not_found")
    assert snapshot() == before


def test_bulk_assignment_with_another_orgs_employee_creates_nothing(
    org, make_org, make_content, snapshot
):
    course = make_content(1)
    ada = org.employee("Ada")
    stranger = make_org("Other").employee("Stranger")
    before = snapshot()

    response = org.api.post(
        org.path("/assignments"), {"content_id": course, "employee_ids": [ada, stranger]}
    )

    refused(response, 404, "not_found")
    assert snapshot() == before


def test_bulk_assignment_with_an_inactive_employee_creates_nothing(org, make_content, snapshot):
    course = make_content(1)
    ada, gone = org.employee("Ada"), org.employee("Gone")
    ok(org.api.post(org.path(f"/employees/{gone}/deactivate")))
    before = snapshot()

    response = org.api.post(
        org.path("/assignments"), {"content_id": course, "employee_ids": [ada, gone]}
    )

    refused(response, 409, "employee_inactive")
    assert snapshot() == before


def test_bulk_assignment_skips_employees_already_holding_one(org, make_content):
    course = make_content(2)
    org.buy(10)
    ada, bob, cy = org.employee("Ada"), org.employee("Bob"), org.employee("Cy")
    held = assign_one(org, course, ada)
    started = assign_one(org, course, bob)
    ok(org.act(started["id"], "start"))
    assert counters(org) == (8, 2, 6)

    result = org.assign(course, [ada, bob, cy])

    assert sorted(result["skipped"]) == sorted([ada, bob])
    assert [(a["employee_id"], a["status"]) for a in result["data"]] == [(cy, "assigned")]
    assert counters(org) == (8, 4, 4)
    reserves = [e for e in ledger(org) if e["type"] == "reserve"]
    assert [e["assignment_id"] for e in reserves] == [
        held["id"],
        started["id"],
        result["data"][0]["id"],
    ]


def test_bulk_assignment_answers_the_ids_the_database_holds(org, make_org, make_content):
    """The bulk path computes its rows' ids without reading them back (SQLite: from the last
    id inserted; PostgreSQL: RETURNING); the ORM is the oracle. Another org's assignments
    made before and after leave no gap in the ids that could be mistaken for ours."""
    course = make_content(1)
    other = make_org("Other")
    assign_one(other, course, other.employee("Before"))
    people = [org.employee(f"P{n}") for n in range(150)]
    result = org.assign(course, people)
    assign_one(other, course, other.employee("After"))

    stored = {
        ids.encode("assignment", pk): ids.encode("employee", employee)
        for pk, employee in Assignment.objects.filter(org_id=ids.decode("org", org.id)).values_list(
            "pk", "employee_id"
        )
    }
    assert {a["id"]: a["employee_id"] for a in result["data"]} == stored
    assert [a["employee_id"] for a in result["data"]] == people
    reserves = LedgerEntry.objects.filter(
        org_id=ids.decode("org", org.id), type="reserve"
    ).order_by("pk")
    assert [ids.encode("assignment", e.assignment_id) for e in reserves] == [
        a["id"] for a in result["data"]
    ]


def test_bulk_assignment_handles_a_repeated_employee_once(org, make_content):
    course = make_content(2)
    ada, bob = org.employee("Ada"), org.employee("Bob")

    result = org.assign(course, [ada, bob, ada, ada])

    assert sorted(a["employee_id"] for a in result["data"]) == sorted([ada, bob])
    assert result["skipped"] == []
    assert counters(org) == (0, 4, -4)
    assert [figures(e) for e in ledger(org)] == [
        ("reserve", 0, 2, 0, 0, 2),
        ("reserve", 0, 2, 0, 0, 4),
    ]


# --- purchases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "unit_price_cents"), [(1, 1000), (49, 1000), (50, 900), (95, 900), (100, 850)]
)
def test_purchase_is_priced_at_its_volume_tier_and_gets_a_paid_receipt(
    org, quantity, unit_price_cents
):
    purchase = org.buy(quantity)

    assert purchase["quantity"] == quantity
    assert purchase["unit_price_cents"] == unit_price_cents
    assert purchase["total_cents"] == quantity * unit_price_cents
    assert purchase["currency"] == "USD"
    assert purchase["status"] == "paid"
    assert is_utc_time(purchase["created_at"])
    assert counters(org) == (quantity, 0, quantity)
    entries = ledger(org)
    assert [figures(e) for e in entries] == [("purchase", quantity, 0, 0, quantity, 0)]
    assert entries[0]["purchase_id"] == purchase["id"]
    assert ok(org.api.get(org.path("/purchases")))["data"] == [purchase]
    assert ok(org.api.get(org.path(f"/purchases/{purchase['id']}"))) == purchase

    assert isinstance(purchase["invoice_id"], str)
    receipt = ok(org.api.get(org.path(f"/invoices/{purchase['invoice_id']}")))
    assert (receipt["kind"], receipt["status"], receipt["currency"]) == ("purchase", "paid", "USD")
    assert receipt["total_cents"] == purchase["total_cents"]
    assert [(line["quantity"], line["unit_price_cents"]) for line in receipt["lines"]] == [
        (quantity, unit_price_cents)
    ]
    assert sum(line["amount_cents"] for line in receipt["lines"]) == purchase["total_cents"]
    assert is_utc_time(receipt["issued_at"])


def test_two_purchases_add_their_credits_once_each(org):
    first, second = org.buy(95), org.buy(100)

    assert (first["total_cents"], second["total_cents"]) == (85_500, 85_000)
    assert counters(org) == (195, 0, 195)
    assert [figures(e) for e in ledger(org)] == [
        ("purchase", 95, 0, 0, 95, 0),
        ("purchase", 100, 0, 0, 195, 0),
    ]
    listed = ok(org.api.get(org.path("/purchases")))["data"]
    assert [p["id"] for p in listed] == [second["id"], first["id"]]


def test_declined_payment_adds_no_credits_and_leaves_a_failed_purchase(make_org):
    org = make_org("Declines", billing_email="billing+decline@example.com")

    response = org.api.post(org.path("/purchases"), {"quantity": 10})

    refused(response, 402, "payment_failed")
    assert counters(org) == (0, 0, 0)
    assert ledger(org) == []
    listed = ok(org.api.get(org.path("/purchases")))["data"]
    assert [(p["quantity"], p["status"], p["total_cents"]) for p in listed] == [
        (10, "failed", 10_000)
    ]
    assert listed[0]["invoice_id"] is None
    assert ok(org.api.get(org.path("/invoices")))["data"] == []


def test_declined_payment_problem_names_the_purchase_by_its_public_id(make_org):
    """Ids are opaque strings (docs/api.md, "Basics"). The 402 names the failed purchase; it
    must use the same id the purchase list shows, not the database key."""
    org = make_org("Declines", billing_email="billing+decline@example.com")

    body = refused(org.api.post(org.path("/purchases"), {"quantity": 10}), 402, "payment_failed")

    listed = ok(org.api.get(org.path("/purchases")))["data"]
    if "purchase_id" in body:
        assert body["purchase_id"] == listed[0]["id"]


@pytest.mark.parametrize("quantity", [0, -5, 1.5, "10", None, True])
def test_a_purchase_needs_a_positive_integer_quantity(org, snapshot, quantity):
    assert counters(org) == (0, 0, 0)
    before = snapshot()

    refused(org.api.post(org.path("/purchases"), {"quantity": quantity}), 422, "validation_error")

    assert snapshot() == before


# --- operator adjustments --------------------------------------------------------------------


def test_operator_grants_credits_with_a_reason(org, operator):
    entry = ok(
        operator.post(org.path("/adjustments"), {"credits": 7, "reason": "goodwill, ticket 42"}),
        201,
    )

    assert figures(entry) == ("adjustment", 7, 0, 0, 7, 0)
    assert entry["reason"] == "goodwill, ticket 42"
    assert entry["actor"] == "operator"
    assert entry["assignment_id"] is None and entry["purchase_id"] is None
    assert counters(org) == (7, 0, 7)
    assert ledger(org) == [entry]


def test_operator_removes_credits_with_a_reason(org, operator):
    org.buy(10)

    entry = ok(operator.post(org.path("/adjustments"), {"credits": -4, "reason": "refund"}), 201)

    assert figures(entry) == ("adjustment", -4, 0, 0, 6, 0)
    assert (entry["reason"], entry["actor"]) == ("refund", "operator")
    assert counters(org) == (6, 0, 6)
    assert ledger(org)[-1] == entry


def test_removing_more_credits_than_held_is_refused(org, operator, snapshot):
    org.buy(3)
    before = snapshot()

    response = operator.post(org.path("/adjustments"), {"credits": -4, "reason": "too much"})

    refused(response, 409, "insufficient_credits")
    assert snapshot() == before
    assert counters(org) == (3, 0, 3)


@pytest.mark.parametrize(
    "body",
    [
        {"credits": 5},
        {"credits": 5, "reason": ""},
        {"credits": 5, "reason": "   "},
        {"credits": 0, "reason": "nothing"},
        {"credits": 2.5, "reason": "half"},
    ],
)
def test_an_adjustment_needs_a_reason_and_non_zero_integer_credits(org, operator, snapshot, body):
    before = snapshot()

    refused(operator.post(org.path("/adjustments"), body), 422, "validation_error")

    assert snapshot() == before


# --- price book and quotes -------------------------------------------------------------------

NEW_BOOK = {
    "retail_unit_price_cents": 1200,
    "currency": "USD",
    "tiers": [
        {"min_quantity": 1, "unit_price_cents": 1200},
        {"min_quantity": 20, "unit_price_cents": 1000},
        {"min_quantity": 200, "unit_price_cents": 900},
    ],
}


def test_the_default_price_book(operator):
    book = ok(operator.get("/pricing"))

    assert book == {
        "retail_unit_price_cents": 1000,
        "currency": "USD",
        "tiers": [
            {"min_quantity": 1, "unit_price_cents": 1000},
            {"min_quantity": 50, "unit_price_cents": 900},
            {"min_quantity": 100, "unit_price_cents": 850},
            {"min_quantity": 250, "unit_price_cents": 800},
            {"min_quantity": 500, "unit_price_cents": 750},
            {"min_quantity": 1000, "unit_price_cents": 700},
        ],
    }


def test_a_new_price_book_is_served_quoted_and_charged(org, operator, make_content):
    assert ok(operator.put("/pricing", NEW_BOOK)) == NEW_BOOK

    assert ok(org.api.get("/pricing")) == NEW_BOOK
    quote = ok(org.api.get("/pricing/quote", quantity=19))
    assert quote == {
        "quantity": 19,
        "unit_price_cents": 1200,
        "total_cents": 22_800,
        "retail_total_cents": 22_800,
        "savings_cents": 0,
        "currency": "USD",
        "better_quantity": 20,
        "better_total_cents": 20_000,
        "tax_cents": None,
        "total_with_tax_cents": None,
    }
    purchase = org.buy(20)
    assert (purchase["unit_price_cents"], purchase["total_cents"]) == (1000, 20_000)


def test_overage_is_priced_at_the_retail_price_in_force_at_start(org, operator, make_content):
    course = make_content(2)
    ada, bob = org.employee("Ada"), org.employee("Bob")
    early, late = org.assign(course, [ada, bob])["data"]
    ok(org.act(early["id"], "start"))

    ok(operator.put("/pricing", NEW_BOOK))
    ok(org.act(late["id"], "start"))

    retail = dict(
        LedgerEntry.objects.filter(type="consume").values_list(
            "assignment_id", "retail_unit_price_cents"
        )
    )
    early_pk, late_pk = (int(a["id"].rsplit("_", 1)[1]) for a in (early, late))
    assert retail == {early_pk: 1000, late_pk: 1200}
    consumes = [figures(e) for e in ledger(org) if e["type"] == "consume"]
    assert consumes == [("consume", 0, -2, 2, 0, 2), ("consume", 0, -2, 2, 0, 0)]


def test_an_invalid_price_book_is_refused_and_the_old_one_stays(operator, snapshot):
    before = snapshot()
    rising = {
        "retail_unit_price_cents": 1000,
        "tiers": [
            {"min_quantity": 1, "unit_price_cents": 900},
            {"min_quantity": 10, "unit_price_cents": 950},
        ],
    }

    refused(operator.put("/pricing", rising), 422, "validation_error")

    assert snapshot() == before
    assert ok(operator.get("/pricing"))["retail_unit_price_cents"] == 1000


def test_quote_suggests_a_larger_quantity_that_costs_no_more(org):
    quote = ok(org.api.get("/pricing/quote", quantity=95))

    assert quote == {
        "quantity": 95,
        "unit_price_cents": 900,
        "total_cents": 85_500,
        "retail_total_cents": 95_000,
        "savings_cents": 9_500,
        "currency": "USD",
        "better_quantity": 100,
        "better_total_cents": 85_000,
        "tax_cents": None,
        "total_with_tax_cents": None,
    }


def test_quote_without_a_better_quantity(org):
    quote = ok(org.api.get("/pricing/quote", quantity=100))

    assert (quote["unit_price_cents"], quote["total_cents"]) == (850, 85_000)
    assert (quote["retail_total_cents"], quote["savings_cents"]) == (100_000, 15_000)
    assert quote["better_quantity"] is None
    assert quote["better_total_cents"] is None


@pytest.mark.parametrize("quantity", ["0", "-1", "abc", "1.5"])
def test_quote_needs_a_positive_integer_quantity(org, quantity):
    refused(org.api.get("/pricing/quote", quantity=quantity), 422, "validation_error")


# --- authentication and authorization --------------------------------------------------------


def test_no_token_is_unauthenticated(org, anonymous):
    for response in (
        anonymous.get(org.path("/balance")),
        anonymous.get("/pricing"),
        anonymous.post(org.path("/purchases"), {"quantity": 1}),
    ):
        refused(response, 401, "unauthenticated")
    assert counters(org) == (0, 0, 0)


def test_an_unknown_token_is_unauthenticated(org):
    for token in ("nonsense", "lc_deadbeef_secret", org.key + "x", "test-operator-tokenx"):
        refused(Api(token).get(org.path("/balance")), 401, "unauthenticated")


def test_an_org_key_on_another_org_gets_404_exactly_like_an_unknown_org(make_org):
    mine, theirs = make_org("Mine"), make_org("Theirs")
    theirs.buy(5)
    employee = theirs.employee("Them")

    for suffix in ("", "/balance", "/ledger", "/employees", "/purchases", "/assignments"):
        other = mine.api.get(f"/orgs/{theirs.id}{suffix}")
        unknown = mine.api.get(f"/orgs/org_999999999{suffix}")
        refused(other, 404, "not_found")
        assert other.body == unknown.body
    for suffix, body in (
        ("/purchases", {"quantity": 1}),
        ("/employees", {"name": "Spy", "email": "spy@example.com"}),
        (f"/employees/{employee}/deactivate", None),
    ):
        refused(mine.api.post(f"/orgs/{theirs.id}{suffix}", body), 404, "not_found")
    assert counters(theirs) == (5, 0, 5)
    assert len(ok(theirs.api.get(theirs.path("/employees")))["data"]) == 1


def test_an_org_key_on_operator_only_endpoints_is_forbidden(org, snapshot):
    assert counters(org) == (0, 0, 0)
    before = snapshot()
    book = {"retail_unit_price_cents": 1, "tiers": [{"min_quantity": 1, "unit_price_cents": 1}]}
    attempts = [
        org.api.post("/orgs", {"name": "Evil", "billing_email": "evil@example.com"}),
        org.api.get("/orgs"),
        org.api.patch(org.path(), {"name": "Renamed"}),
        org.api.post(org.path("/api-keys"), {"name": "another"}),
        org.api.post("/content", {"title": "X", "premium": True, "credit_cost": 1}),
        org.api.put("/pricing", book),
        org.api.post(org.path("/adjustments"), {"credits": 1000, "reason": "free money"}),
    ]

    for response in attempts:
        refused(response, 403, "forbidden")
    assert snapshot() == before


def test_the_operator_acts_on_any_org(make_org, operator, make_content):
    first, second = make_org("First"), make_org("Second")
    course = make_content(1)
    for target in (first, second):
        employee = ok(
            operator.post(target.path("/employees"), {"name": "Op", "email": "op@example.com"}),
            201,
        )["id"]
        ok(operator.post(target.path("/purchases"), {"quantity": 2}), 201)
        body = {"content_id": course, "employee_ids": [employee]}
        created = ok(operator.post(target.path("/assignments"), body), 201)["data"][0]
        ok(operator.post(target.path(f"/assignments/{created['id']}/start")))
        assert ok(operator.get(target.path("/balance")))["credits"] == 1
        assert {e["actor"] for e in ledger(target)} == {"operator"}


# --- sign-in accounts ------------------------------------------------------------------------


def test_an_admin_with_a_password_gets_no_invitation(
    org, operator, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        user = ok(
            operator.post(
                org.path("/users"),
                {
                    "email": "Boss@Example.com",
                    "name": "The Boss",
                    "role": "admin",
                    "password": "a-long-unusual-passphrase-42",
                },
            ),
            201,
        )

    assert user["email"] == "boss@example.com"
    assert (user["name"], user["role"]) == ("The Boss", "admin")
    assert user["id"]
    assert mailoutbox == []
    assert ok(org.api.get(org.path("/employees")))["data"] == []
    membership = Membership.objects.get(user__email="boss@example.com")
    assert membership.user.check_password("a-long-unusual-passphrase-42")


def test_a_learner_without_a_password_is_invited_and_linked_to_their_employee(
    org, operator, mailoutbox, django_capture_on_commit_callbacks
):
    employee = org.employee("Ada", "ada@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        user = ok(
            operator.post(
                org.path("/users"), {"email": "ada@example.com", "name": "Ada", "role": "learner"}
            ),
            201,
        )

    assert (user["email"], user["role"]) == ("ada@example.com", "learner")
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["ada@example.com"]
    assert "/reset/" in mailoutbox[0].body
    employees = ok(org.api.get(org.path("/employees")))["data"]
    assert [e["id"] for e in employees] == [employee]
    membership = Membership.objects.get(user__email="ada@example.com")
    assert f"emp_{membership.employee_id}" == employee
    assert not membership.user.has_usable_password()


def test_a_learner_without_an_employee_gets_a_new_one(
    org, operator, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        ok(
            operator.post(
                org.path("/users"),
                {"email": "new@example.com", "name": "New Person", "role": "learner"},
            ),
            201,
        )

    employees = ok(org.api.get(org.path("/employees")))["data"]
    assert [(e["name"], e["email"], e["active"]) for e in employees] == [
        ("New Person", "new@example.com", True)
    ]
    membership = Membership.objects.get(user__email="new@example.com")
    assert f"emp_{membership.employee_id}" == employees[0]["id"]
    assert [m.to for m in mailoutbox] == [["new@example.com"]]


def test_a_second_user_with_the_same_email_is_refused(org, make_org, operator, snapshot):
    body = {"email": "dup@example.com", "name": "Dup", "role": "learner"}
    ok(operator.post(org.path("/users"), body), 201)
    other = make_org("Other")
    before = snapshot()

    refused(operator.post(org.path("/users"), body), 422, "validation_error")
    refused(
        operator.post(other.path("/users"), {**body, "email": "DUP@example.com"}),
        422,
        "validation_error",
    )

    assert snapshot() == before


# --- organizations ---------------------------------------------------------------------------


def test_patch_org_changes_the_given_fields(org, operator):
    before = ok(operator.get(org.path()))

    patched = ok(
        operator.patch(
            org.path(), {"name": "Acme Corp", "timezone": "Europe/Paris", "alert_threshold": 5}
        )
    )

    assert patched == {
        **before,
        "name": "Acme Corp",
        "timezone": "Europe/Paris",
        "alert_threshold": 5,
    }
    assert ok(org.api.get(org.path())) == patched
    billing = ok(operator.patch(org.path(), {"billing_email": "ap@acme.example"}))
    assert billing == {**patched, "billing_email": "ap@acme.example"}


@pytest.mark.parametrize(
    "body",
    [
        {"timezone": "Mars/Olympus_Mons"},
        {"name": "Renamed", "timezone": "Nowhere"},
        {"billing_email": "not-an-email"},
        {"name": None},
        {"nickname": "extra field"},
    ],
)
def test_patch_org_with_invalid_fields_changes_nothing(org, operator, snapshot, body):
    before = snapshot()

    refused(operator.patch(org.path(), body), 422, "validation_error")

    assert snapshot() == before


# --- lists -----------------------------------------------------------------------------------


def test_lists_are_newest_first_and_a_cursor_walks_every_item_once(org):
    created = [org.employee(f"Person {i}") for i in range(7)]

    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = ok(org.api.get(org.path("/employees"), **params))
        pages.append(len(page["data"]))
        seen.extend(e["id"] for e in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "the cursor never ends"

    assert pages == [3, 3, 1]
    assert seen == list(reversed(created))


def test_a_list_holds_50_by_default_and_at_most_500(org):
    for i in range(51):
        org.employee(f"Person {i}")

    default = ok(org.api.get(org.path("/employees")))
    assert len(default["data"]) == 50
    assert default["next_cursor"] is not None
    rest = ok(org.api.get(org.path("/employees"), cursor=default["next_cursor"]))
    assert len(rest["data"]) == 1 and rest["next_cursor"] is None

    everything = ok(org.api.get(org.path("/employees"), limit=500))
    assert len(everything["data"]) == 51 and everything["next_cursor"] is None
    for bad in (0, 501, "many"):
        refused(org.api.get(org.path("/employees"), limit=bad), 422, "validation_error")
    refused(org.api.get(org.path("/employees"), cursor="!!!"), 422, "validation_error")


# --- ledger CSV ------------------------------------------------------------------------------


def test_the_ledger_downloads_as_csv(org, operator, make_content):
    course = make_content(1)
    org.buy(5)
    created = assign_one(org, course, org.employee("Ada"))
    ok(org.act(created["id"], "start"))
    ok(operator.post(org.path("/adjustments"), {"credits": 2, "reason": "sorry, truly"}), 201)
    entries = ledger(org)

    response = org.api.get(org.path("/ledger"), format="csv")

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.raw.decode())))
    assert rows[0] == [
        "id",
        "type",
        "credits_delta",
        "assigned_delta",
        "overage_credits",
        "credits_after",
        "assigned_after",
        "assignment_id",
        "purchase_id",
        "department",
        "actor",
        "reason",
        "created_at",
    ]
    # The CSV (credits/ledger_export.py) and the JSON entry (api/schemas.py) are written in two
    # layers: the same fields, in the same order.
    assert rows[0] == list(entries[0])
    assert len(rows) == 1 + len(entries) == 5
    by_id = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert set(by_id) == {e["id"] for e in entries}
    for entry in entries:
        row = by_id[entry["id"]]
        for field in rows[0]:
            expected = entry[field]
            assert row[field] == ("" if expected is None else str(expected)), (field, entry)


# --- idempotency -----------------------------------------------------------------------------


def test_the_same_key_and_body_replay_the_first_answer_with_no_second_effect(org):
    first = org.api.post(org.path("/purchases"), {"quantity": 10}, idem="buy-10")
    second = org.api.post(org.path("/purchases"), {"quantity": 10}, idem="buy-10")

    assert first.status == second.status == 201
    assert second.body == first.body
    assert counters(org) == (10, 0, 10)
    assert len(ok(org.api.get(org.path("/purchases")))["data"]) == 1
    assert len(ledger(org)) == 1


def test_the_same_key_with_another_body_is_refused(org, snapshot):
    ok(org.api.post(org.path("/purchases"), {"quantity": 10}, idem="buy"), 201)
    before = snapshot()

    response = org.api.post(org.path("/purchases"), {"quantity": 11}, idem="buy")

    refused(response, 422, "idempotency_key_reused")
    assert snapshot() == before


def test_the_same_key_from_two_orgs_is_independent(make_org):
    first, second = make_org("First"), make_org("Second")

    a = first.api.post(first.path("/purchases"), {"quantity": 3}, idem="shared-key")
    b = second.api.post(second.path("/purchases"), {"quantity": 3}, idem="shared-key")

    assert (a.status, b.status) == (201, 201)
    assert a.body["id"] != b.body["id"]
    assert counters(first) == counters(second) == (3, 0, 3)


def test_the_same_key_from_two_orgs_charges_each_org_at_the_provider(make_org):
    """Idempotency-Keys are per org: two orgs that happen to pick the same key make two
    purchases, each charged once at the provider (counted on the provider's side)."""
    from learncredits.billing.models import TestPaymentIntent

    first, second = make_org("First"), make_org("Second")

    a = ok(first.api.post(first.path("/purchases"), {"quantity": 3}, idem="shared-key"), 201)
    b = ok(second.api.post(second.path("/purchases"), {"quantity": 3}, idem="shared-key"), 201)

    charged = TestPaymentIntent.objects.filter(status="succeeded")
    assert sorted(charged.values_list("reference", flat=True)) == sorted([a["id"], b["id"]])


def test_a_refusal_is_replayed_too(org, operator):
    org.buy(2)
    body = {"credits": -5, "reason": "too many"}
    first = operator.post(org.path("/adjustments"), body, idem="take-5")
    refused(first, 409, "insufficient_credits")
    org.buy(10)  # now the removal would succeed if it ran again

    replay = operator.post(org.path("/adjustments"), body, idem="take-5")

    assert (replay.status, replay.body) == (first.status, first.body)
    assert counters(org) == (12, 0, 12)
    assert [e["type"] for e in ledger(org)] == ["purchase", "purchase"]


def test_a_replayed_lifecycle_action_is_not_run_again(org, make_content):
    course = make_content(1)
    org.buy(5)
    ada, bob = org.employee("Ada"), org.employee("Bob")
    created = assign_one(org, course, ada)
    body = {"employee_id": bob}
    moved = org.api.post(org.path(f"/assignments/{created['id']}/reassign"), body, idem="mv")
    assert moved.status == 200
    ok(org.act(created["id"], "reassign", {"employee_id": ada}))

    replay = org.api.post(org.path(f"/assignments/{created['id']}/reassign"), body, idem="mv")

    assert (replay.status, replay.body) == (moved.status, moved.body)
    assert assignment(org, created["id"])["employee_id"] == ada


# --- OpenAPI ---------------------------------------------------------------------------------

# Every endpoint of the HTTP API (docs/api.md), with its path parameters filled in.
API_MD_ENDPOINTS = [
    ("post", "/orgs"),
    ("patch", "/orgs/{org_id}"),
    ("post", "/orgs/{org_id}/api-keys"),
    ("post", "/content"),
    ("put", "/pricing"),
    ("post", "/orgs/{org_id}/adjustments"),
    ("post", "/billing/close-period"),
    ("post", "/orgs/{org_id}/users"),
    ("get", "/orgs/{org_id}"),
    ("get", "/orgs/{org_id}/balance"),
    ("post", "/orgs/{org_id}/employees"),
    ("get", "/orgs/{org_id}/employees"),
    ("post", "/orgs/{org_id}/employees/{id}/deactivate"),
    ("get", "/content"),
    ("get", "/pricing"),
    ("get", "/pricing/quote"),
    ("post", "/orgs/{org_id}/purchases"),
    ("get", "/orgs/{org_id}/purchases"),
    ("post", "/orgs/{org_id}/assignments"),
    ("get", "/orgs/{org_id}/assignments"),
    ("get", "/orgs/{org_id}/assignments/{id}"),
    ("post", "/orgs/{org_id}/assignments/{id}/start"),
    ("post", "/orgs/{org_id}/assignments/{id}/complete"),
    ("post", "/orgs/{org_id}/assignments/{id}/cancel"),
    ("post", "/orgs/{org_id}/assignments/{id}/reassign"),
    ("get", "/orgs/{org_id}/ledger"),
    ("get", "/orgs/{org_id}/alerts"),
    ("get", "/orgs/{org_id}/invoices"),
    ("get", "/orgs/{org_id}/invoices/{id}"),
    ("get", "/orgs/{org_id}/invoices/{id}/pdf"),
    ("get", "/orgs/{org_id}/statement"),
    ("get", "/orgs/{org_id}/usage"),
    ("get", "/orgs/{org_id}/forecast"),
    ("post", "/orgs/{org_id}/webhooks"),
    ("get", "/orgs/{org_id}/webhooks"),
    ("delete", "/orgs/{org_id}/webhooks/{id}"),
    ("get", "/orgs/{org_id}/webhooks/{id}/deliveries"),
    ("post", "/xapi/statements"),
    ("put", "/xapi/statements"),
]


def _shape(path: str) -> str:
    """A path with its parameter names erased: /orgs/{org_id}/x/{id} -> /orgs/{}/x/{}."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _routed(path: str) -> bool:
    concrete = re.sub(r"\{[^}]*\}", "x_1", path)
    try:
        resolve("/api/v1" + concrete)
    except Resolver404:
        return False
    return True


def test_the_openapi_document_describes_every_endpoint_that_exists(anonymous):
    response = anonymous.get("/openapi.json")

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.body
    assert document["openapi"].startswith("3.")
    described = {
        (method, _shape(path))
        for path, operations in document["paths"].items()
        for method in operations
    }
    existing = [(m, p) for m, p in API_MD_ENDPOINTS if _routed(p)]
    assert len(existing) >= 26  # at least sections "Operator-only" and "Operator or own key"
    missing = [(m, p) for m, p in existing if (m, _shape("/api/v1" + p)) not in described]
    assert missing == []


def test_the_interactive_docs_answer(anonymous):
    response = anonymous.client.get("/api/v1/docs")

    assert response.status_code == 200
    assert b"openapi.json" in response.content


def test_a_refused_bulk_assign_names_the_employees_by_their_public_ids(org, make_org, make_content):
    course = make_content(1, "Named refusals")
    present = org.employee("Present")
    leaver = org.employee("Leaver")
    ok(org.api.post(org.path(f"/employees/{leaver}/deactivate")))
    stranger = make_org("Other").employee("Stranger")

    unknown = org.api.post(
        org.path("/assignments"), {"content_id": course, "employee_ids": [present, stranger]}
    )
    assert (unknown.status, unknown.code) == (404, "not_found")
    assert unknown.body["missing_employee_ids"] == [stranger]

    inactive = org.api.post(
        org.path("/assignments"), {"content_id": course, "employee_ids": [present, leaver]}
    )
    assert (inactive.status, inactive.code) == (409, "employee_inactive")
    assert inactive.body["inactive_employee_ids"] == [leaver]
