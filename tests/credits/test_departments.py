"""Departments and their budgets: the budget year, committed credits, the check a manager's
assignment passes under the balance lock (and an admin is told about), managers' reach, the
department filters and column, and the /departments page. Both databases; the race between
managers is on PostgreSQL (tests/credits/test_departments_concurrency.py)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from learncredits import ids
from learncredits.credits import actions, budgets
from learncredits.credits.models import Assignment, LedgerEntry
from learncredits.domain import budgets as rules
from learncredits.domain.errors import BudgetExceeded, NotFound, ValidationFailed
from learncredits.tenancy import departments
from learncredits.tenancy.models import Department, Employee, Membership, Organization
from tests.conftest import Api, OrgHandle, ok

ACTOR = "test"


def pk(kind: str, public_id: str) -> int:
    value = ids.decode(kind, public_id)
    assert value is not None, public_id
    return value


def org_row(handle: OrgHandle) -> Organization:
    return Organization.objects.get(pk=pk("org", handle.id))


def department(handle: OrgHandle, name: str, budget: int | None = None, **extra: Any) -> dict:
    body = {"name": name, "budget_credits": budget, **extra}
    return ok(handle.api.post(handle.path("/departments"), body), 201)


def join(handle: OrgHandle, employee_id: str, department_id: str | None) -> dict:
    body = {"department_id": department_id}
    return ok(handle.api.patch(handle.path(f"/employees/{employee_id}"), body))


def member(handle: OrgHandle, name: str, department_id: str) -> str:
    employee = handle.employee(name)
    join(handle, employee, department_id)
    return employee


# --- the budget year (pure rules) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"), [("01-01", "01-01"), ("04-01", "04-01"), ("12-31", "12-31")]
)
def test_a_budget_year_may_start_on_any_day_but_february_29th(value, stored):
    assert rules.clean_year_start(value) == stored


@pytest.mark.parametrize("value", ["02-29", "13-01", "00-10", "04-31", "4-1", "04/01", "", 401])
def test_a_budget_year_start_that_is_no_day_every_year_is_refused(value):
    with pytest.raises(ValidationFailed) as refused:
        rules.clean_year_start(value)
    if value == "02-29":
        assert "02-28 or 03-01" in refused.value.detail


@pytest.mark.parametrize(
    ("today", "start", "began"),
    [
        (date(2026, 3, 31), "04-01", date(2025, 4, 1)),  # the day before: last year's
        (date(2026, 4, 1), "04-01", date(2026, 4, 1)),  # on the day: this year's
        (date(2026, 12, 31), "04-01", date(2026, 4, 1)),
        (date(2026, 1, 1), "01-01", date(2026, 1, 1)),
        (date(2028, 2, 29), "03-01", date(2027, 3, 1)),  # a leap day inside the year
    ],
)
def test_the_budget_year_is_the_latest_start_on_or_before_today(today, start, began):
    assert rules.budget_year_start(today, start) == began


@pytest.mark.parametrize("value", [-1, 1_000_000_001, True, 1.5, "10"])
def test_a_budget_is_a_whole_number_from_zero(value):
    with pytest.raises(ValidationFailed):
        rules.clean_budget(value)
    assert rules.clean_budget(0) == 0
    assert rules.clean_budget(None) is None


# --- the service -------------------------------------------------------------------------------


def test_the_service_creates_renames_budgets_moves_and_deletes(org, make_org):
    acme = org_row(org)
    sales = departments.create_department(acme, name=" Sales ", budget_credits=10, actor=ACTOR)
    assert (sales.name, sales.budget_credits, sales.budget_year_start) == ("Sales", 10, "01-01")
    with pytest.raises(ValidationFailed):
        departments.create_department(acme, name="Sales", actor=ACTOR)  # unique per org
    with pytest.raises(ValidationFailed):
        departments.create_department(acme, name="Ops", budget_year_start="02-29", actor=ACTOR)

    updated = departments.update_department(
        acme, sales.pk, actor=ACTOR, name="Sales EMEA", budget_credits=None, external_id="g-1"
    )
    assert (updated.name, updated.budget_credits, updated.external_id) == (
        "Sales EMEA",
        None,
        "g-1",
    )
    with pytest.raises(ValidationFailed):
        departments.update_department(acme, sales.pk, actor=ACTOR, colour="red")

    employee = Employee.objects.get(pk=pk("employee", org.employee("Ada")))
    departments.set_employee_department(acme, employee.pk, sales.pk, actor=ACTOR)
    employee.refresh_from_db()
    assert employee.department_id == sales.pk

    other = org_row(make_org("Other"))
    elsewhere = departments.create_department(other, name="Sales", actor=ACTOR)
    with pytest.raises(NotFound):  # another org's department is not found
        departments.set_employee_department(acme, employee.pk, elsewhere.pk, actor=ACTOR)
    with pytest.raises(NotFound):  # nor is another org's employee
        departments.set_employee_department(other, employee.pk, elsewhere.pk, actor=ACTOR)
    with pytest.raises(NotFound):
        departments.update_department(other, sales.pk, actor=ACTOR, name="Taken")

    departments.delete_department(acme, sales.pk, actor=ACTOR)
    employee.refresh_from_db()
    assert employee.department_id is None
    assert not Department.objects.filter(pk=sales.pk).exists()


def test_committed_counts_open_reservations_and_this_budget_years_starts(org, make_content):
    """Open reservations count whenever made; starts count in the budget year they happened
    in (the org's time zone); cancelled ones not at all."""
    ok(org.operator.patch(org.path(), {"timezone": "Pacific/Kiritimati"}))  # UTC+14
    course = make_content(3)
    sales = department(org, "Sales", budget_credits=None, budget_year_start="04-01")
    people = [member(org, f"P{n}", sales["id"]) for n in range(5)]
    outsider = org.employee("Not in sales")
    org.buy(20)
    made = org.assign(course, [*people, outsider])["data"]
    for a in made[:3]:
        ok(org.act(a["id"], "start"))
    ok(org.act(made[3]["id"], "cancel"))
    # Started at 2026-03-31 11:00 UTC (= 04-01 01:00 in Kiritimati): this budget year;
    # at 09:00 UTC (= 03-31 23:00 there): last year's.
    Assignment.objects.filter(pk=pk("assignment", made[0]["id"])).update(
        started_at=datetime(2026, 3, 31, 11, tzinfo=UTC)
    )
    Assignment.objects.filter(pk=pk("assignment", made[1]["id"])).update(
        started_at=datetime(2026, 3, 31, 9, tzinfo=UTC)
    )
    Assignment.objects.filter(pk=pk("assignment", made[2]["id"])).update(
        started_at=datetime(2027, 4, 1, tzinfo=UTC)  # next year's, as seen from 2026
    )
    row = Department.objects.get(pk=pk("department", sales["id"]))
    # 2026-06-01: made[0] (3) + made[4] still assigned (3); made[2] started after "today"
    # counts too (started_at >= year start): a start is never in the future in practice.
    assert budgets.committed_credits(row, date(2026, 6, 1)) == 3 + 3 + 3
    # 2027-06-01: only the open one and made[2] (its year); made[0] was last year's.
    assert budgets.committed_credits(row, date(2027, 6, 1)) == 3 + 3


def test_an_admin_may_go_over_a_budget_and_is_told(org, make_content):
    course = make_content(4)
    sales = department(org, "Sales", 10)
    people = [member(org, f"P{n}", sales["id"]) for n in range(3)]
    org.buy(50)

    within = org.assign(course, people[:2])
    assert within["budget_warnings"] == []
    over = org.assign(course, people[2:])
    assert len(over["data"]) == 1
    assert over["budget_warnings"] == [
        {
            "department_id": sales["id"],
            "name": "Sales",
            "budget_credits": 10,
            "committed_credits": 12,
            "over_by": 2,
        }
    ]
    listed = ok(org.api.get(org.path("/departments")))["data"]
    assert [(d["name"], d["committed_credits"], d["remaining_credits"]) for d in listed] == [
        ("Sales", 12, -2)
    ]


def test_a_manager_is_refused_past_the_budget_and_nothing_is_written(org, make_content, snapshot):
    course = make_content(4)
    sales = department(org, "Sales", 10)
    people = [member(org, f"P{n}", sales["id"]) for n in range(3)]
    org.buy(50)
    acme, course_pk = org_row(org), pk("content", course)
    scope = frozenset({pk("department", sales["id"])})
    emp = [pk("employee", p) for p in people]

    done = actions.assign_bulk(
        acme, content_id=course_pk, employee_ids=emp[:2], actor=ACTOR, manager_of=scope
    )
    assert len(done.created) == 2 and done.budget_warnings == []
    before = snapshot()
    with pytest.raises(BudgetExceeded) as refused:
        actions.assign_bulk(
            acme, content_id=course_pk, employee_ids=emp[2:], actor=ACTOR, manager_of=scope
        )
    assert refused.value.code == "budget_exceeded"
    assert "12 of 10" in refused.value.detail
    assert refused.value.extra["departments"][0]["over_by"] == 2
    assert snapshot() == before
    # Exactly at the budget is allowed: cancel one (4 back), then assign the third.
    actions.cancel_assignment(acme, done.created[0].pk, actor=ACTOR, manager_of=scope)
    again = actions.assign_bulk(
        acme, content_id=course_pk, employee_ids=emp[2:], actor=ACTOR, manager_of=scope
    )
    assert len(again.created) == 1
    row = Department.objects.get(pk=pk("department", sales["id"]))
    assert budgets.committed_credits(row) == 8


def test_a_manager_acts_only_on_their_departments_employees(org, make_content):
    course = make_content(1)
    sales, ops = department(org, "Sales", 100), department(org, "Ops", 100)
    mine, theirs = member(org, "Mine", sales["id"]), member(org, "Theirs", ops["id"])
    nobody = org.employee("In no department")
    org.buy(10)
    acme, course_pk = org_row(org), pk("content", course)
    scope = frozenset({pk("department", sales["id"])})
    for outside in (theirs, nobody):
        with pytest.raises(NotFound):  # as if the employee did not exist
            actions.assign_bulk(
                acme,
                content_id=course_pk,
                employee_ids=[pk("employee", mine), pk("employee", outside)],
                actor=ACTOR,
                manager_of=scope,
            )
    assert not Assignment.objects.filter(org=acme).exists()
    their_assignment = org.assign(course, [theirs])["data"][0]["id"]  # the admin's
    my_assignment = org.assign(course, [mine])["data"][0]["id"]
    with pytest.raises(NotFound):
        actions.cancel_assignment(
            acme, pk("assignment", their_assignment), actor=ACTOR, manager_of=scope
        )
    with pytest.raises(NotFound):  # reassigning theirs to mine
        actions.reassign(
            acme,
            pk("assignment", their_assignment),
            employee_id=pk("employee", mine),
            actor=ACTOR,
            manager_of=scope,
        )
    with pytest.raises(NotFound):  # reassigning mine to theirs
        actions.reassign(
            acme,
            pk("assignment", my_assignment),
            employee_id=pk("employee", theirs),
            actor=ACTOR,
            manager_of=scope,
        )
    assert Assignment.objects.get(pk=pk("assignment", their_assignment)).status == "assigned"


def test_reassigning_into_a_department_commits_its_cost_there(org, make_content):
    course = make_content(5)
    sales, ops = department(org, "Sales", 100), department(org, "Ops", 4)
    seller, operator_ = member(org, "Seller", sales["id"]), member(org, "Op", ops["id"])
    org.buy(10)
    made = org.assign(course, [seller])["data"][0]["id"]
    answer = ok(org.act(made, "reassign", {"employee_id": operator_}))
    assert answer["employee_id"] == operator_
    assert answer["budget_warnings"] == [
        {
            "department_id": ops["id"],
            "name": "Ops",
            "budget_credits": 4,
            "committed_credits": 5,
            "over_by": 1,
        }
    ]
    by_name = {d["name"]: d for d in ok(org.api.get(org.path("/departments")))["data"]}
    assert (by_name["Sales"]["committed_credits"], by_name["Ops"]["committed_credits"]) == (0, 5)
    # A manager of both is refused moving it back over a (now lowered) Sales budget.
    ok(org.api.patch(org.path(f"/departments/{sales['id']}"), {"budget_credits": 4}))
    scope = frozenset({pk("department", sales["id"]), pk("department", ops["id"])})
    with pytest.raises(BudgetExceeded):
        actions.reassign(
            org_row(org),
            pk("assignment", made),
            employee_id=pk("employee", seller),
            actor=ACTOR,
            manager_of=scope,
        )


# --- the API -----------------------------------------------------------------------------------


def test_departments_through_the_api(org, make_org):
    created = department(org, "Sales", 100, budget_year_start="04-01")
    assert created == {
        "id": created["id"],
        "name": "Sales",
        "budget_credits": 100,
        "budget_year_start": "04-01",
        "committed_credits": 0,
        "remaining_credits": 100,
        "external_id": None,
    }
    unbudgeted = department(org, "Ops")
    assert (unbudgeted["budget_credits"], unbudgeted["remaining_credits"]) == (None, None)
    path = org.path(f"/departments/{created['id']}")
    assert ok(org.api.get(path)) == created

    renamed = ok(org.api.patch(path, {"name": "Sales EMEA", "budget_credits": None}))
    assert (renamed["name"], renamed["budget_credits"]) == ("Sales EMEA", None)
    for body in (
        {"budget_year_start": "02-29"},
        {"budget_credits": -1},
        {"budget_credits": 1.5},
        {"name": None},
        {"name": "Ops"},  # taken
    ):
        response = org.api.patch(path, body)
        assert (response.status, response.code) == (422, "validation_error"), body
    duplicate = org.api.post(org.path("/departments"), {"name": "Ops"})
    assert (duplicate.status, duplicate.code) == (422, "validation_error")

    listed = ok(org.api.get(org.path("/departments")))["data"]
    assert {d["name"] for d in listed} == {"Sales EMEA", "Ops"}
    other = make_org("Other")
    assert ok(other.api.get(other.path("/departments")))["data"] == []
    assert other.api.get(other.path(f"/departments/{created['id']}")).status == 404


def test_an_employee_is_put_in_one_department_renamed_and_taken_out(org, make_org):
    sales, ops = department(org, "Sales"), department(org, "Ops")
    ada = org.employee("Ada")
    path = org.path(f"/employees/{ada}")
    answer = ok(org.api.patch(path, {"department_id": sales["id"], "name": "Ada L."}))
    assert (answer["department_id"], answer["name"], answer["external_id"]) == (
        sales["id"],
        "Ada L.",
        None,
    )
    assert ok(org.api.patch(path, {"department_id": ops["id"]}))["department_id"] == ops["id"]
    assert ok(org.api.patch(path, {"department_id": None}))["department_id"] is None
    for body in ({"department_id": "dep_987654321"}, {"department_id": "emp_1"}):
        assert org.api.patch(path, body).status == 404
    other = make_org("Other")
    foreign = department(other, "Theirs")
    assert org.api.patch(path, {"department_id": foreign["id"]}).status == 404
    assert other.api.patch(other.path(f"/employees/{ada}"), {"name": "X"}).status == 404
    listed = ok(org.api.get(org.path("/employees")))["data"]
    assert [e["department_id"] for e in listed] == [None]


def test_department_filters_and_the_ledger_department_column(org, make_content):
    course = make_content(2)
    sales, ops = department(org, "Sales"), department(org, "Ops")
    seller, op = member(org, "Seller", sales["id"]), member(org, "Op", ops["id"])
    loner = org.employee("Loner")
    org.buy(20)
    made = {a["employee_id"]: a["id"] for a in org.assign(course, [seller, op, loner])["data"]}
    ok(org.act(made[seller], "start"))
    ok(org.act(made[op], "start"))

    mine = ok(org.api.get(org.path("/assignments"), department_id=sales["id"]))["data"]
    assert [a["id"] for a in mine] == [made[seller]]

    entries = ok(org.api.get(org.path("/ledger"), department_id=sales["id"]))["data"]
    assert {(e["type"], e["department"]) for e in entries} == {
        ("reserve", "Sales"),
        ("consume", "Sales"),
    }
    everything = ok(org.api.get(org.path("/ledger"), limit=500))["data"]
    assert {e["department"] for e in everything} == {None, "Sales", "Ops"}

    response = org.api.get(org.path("/ledger"), format="csv", department_id=ops["id"])
    rows = list(csv.DictReader(io.StringIO(response.raw.decode())))
    assert "department" in rows[0]
    assert sorted((r["type"], r["department"]) for r in rows) == [
        ("consume", "Ops"),
        ("reserve", "Ops"),
    ]
    assert f"dep_{pk('department', ops['id'])}" in response.headers["Content-Disposition"]

    today = LedgerEntry.objects.latest("pk").created_at.date().isoformat()
    usage = ok(
        org.api.get(org.path("/usage"), department_id=sales["id"], **{"from": today, "to": today})
    )["data"]
    assert [(p["consumed_credits"], p["assigned_credits"]) for p in usage] == [(2, 0)]
    whole = ok(org.api.get(org.path("/usage"), **{"from": today, "to": today}))["data"]
    assert [(p["consumed_credits"], p["assigned_credits"]) for p in whole] == [(4, 2)]

    period = today[:7]
    statement = ok(org.api.get(org.path("/statement"), period=period, department_id=ops["id"]))
    assert statement["consumed_credits"] == 2
    assert ok(org.api.get(org.path("/statement"), period=period))["consumed_credits"] == 4

    for where, extra in (
        ("/assignments", {}),
        ("/ledger", {}),
        ("/usage", {"from": today, "to": today}),
        ("/statement", {"period": period}),
    ):
        for unknown in ("dep_987654321", "dep_x", made[seller]):
            response = org.api.get(org.path(where), department_id=unknown, **extra)
            assert (response.status, response.code) == (404, "not_found"), (where, unknown)


# --- the pages ---------------------------------------------------------------------------------


def signed_in(handle: OrgHandle, role: str, *, departments_of: list[str] = ()) -> Client:
    org = org_row(handle)
    user = get_user_model().objects.create_user(
        f"{role}.{handle.id}@example.com", password="Correct-Horse-42"
    )
    membership = Membership.objects.create(org=org, user=user, role=role)
    membership.departments.set([pk("department", d) for d in departments_of])
    client = Client()
    client.force_login(user)
    return client


def test_the_departments_page_shows_budgets_and_its_forms_change_them(org, make_content):
    course = make_content(3)
    sales = department(org, "Sales", 10)
    org.assign(course, [member(org, "Seller", sales["id"])])
    admin = signed_in(org, "admin")

    page = admin.get("/departments")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Sales" in text and ">10<" in text and ">3<" in text and ">7<" in text
    sales_pk = pk("department", sales["id"])
    assert f"/settings/billing/ledger.csv?department={sales_pk}" in text

    made = admin.post(
        "/departments/edit",
        {"action": "create", "name": "Ops", "budget_credits": "", "budget_year_start": "04-01"},
    )
    assert made.status_code == 302
    ops = Department.objects.get(org=org_row(org), name="Ops")
    assert (ops.budget_credits, ops.budget_year_start) == (None, "04-01")

    changed = admin.post(
        "/departments/edit",
        {
            "action": "update",
            "department_id": str(ops.pk),
            "name": "Operations",
            "budget_credits": "25",
            "budget_year_start": "04-01",
        },
    )
    assert changed.status_code == 302
    ops.refresh_from_db()
    assert (ops.name, ops.budget_credits) == ("Operations", 25)

    refused = admin.post(
        "/departments/edit",
        {"action": "create", "name": "Leap", "budget_credits": "", "budget_year_start": "02-29"},
    )
    assert refused.status_code == 422
    assert "02-28 or 03-01" in refused.content.decode()
    assert not Department.objects.filter(name="Leap").exists()


def test_a_manager_sees_and_assigns_only_their_departments(org, make_content):
    course = make_content(4)
    sales, ops = department(org, "Sales", 4), department(org, "Ops", 100)
    seller, seller2 = member(org, "Seller One", sales["id"]), member(org, "Seller Two", sales["id"])
    theirs = member(org, "Operator Person", ops["id"])
    org.buy(20)
    manager = signed_in(org, "manager", departments_of=[sales["id"]])

    text = manager.get("/departments").content.decode()
    assert "Sales" in text and "Ops" not in text
    assert (
        manager.post("/departments/edit", {"action": "create", "name": "Mine"}).status_code == 403
    )

    picker = manager.get("/assign").content.decode()
    assert "Seller One" in picker and "Operator Person" not in picker

    def assign(employee: str) -> Any:
        form = {"content": pk("content", course), "employee": pk("employee", employee)}
        return manager.post("/assign", {**form, "confirm": "1"})

    first = assign(seller)
    assert first.status_code == 302
    outside = assign(theirs)  # not offered, and refused if sent anyway
    assert outside.status_code == 404
    over = assign(seller2)
    assert over.status_code == 409
    assert "over its budget" in over.content.decode()
    assert Assignment.objects.filter(org=org_row(org)).count() == 1


def test_the_dashboards_ledger_csv_keeps_one_departments_entries(org, make_org, make_content):
    course = make_content(2)
    sales, ops = department(org, "Sales"), department(org, "Ops")
    org.buy(10)
    org.assign(course, [member(org, "Seller", sales["id"]), member(org, "Op", ops["id"])])
    admin = signed_in(org, "admin")
    sales_pk = pk("department", sales["id"])

    response = admin.get("/settings/billing/ledger.csv", {"department": str(sales_pk)})
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["type"], r["department"]) for r in rows] == [("reserve", "Sales")]
    everything = admin.get("/settings/billing/ledger.csv")
    lines = b"".join(everything.streaming_content).decode().splitlines()
    assert len(lines) == 1 + 3  # the purchase and both reservations

    foreign = department(make_org("Other"), "Theirs")
    for value in ("987654321", "x", str(pk("department", foreign["id"]))):
        assert admin.get("/settings/billing/ledger.csv", {"department": value}).status_code == 404


def test_the_assignments_page_filters_by_department(org, make_content):
    course = make_content(1)
    sales, ops = department(org, "Sales"), department(org, "Ops")
    org.buy(5)
    org.assign(
        course, [member(org, "Seller Person", sales["id"]), member(org, "Ops Person", ops["id"])]
    )
    admin = signed_in(org, "admin")
    page = admin.get("/assignments", {"department": str(pk("department", ops["id"]))})
    assert page.status_code == 200
    rows = page.content.decode().split('data-testid="assignment-row"')[1:]
    assert [row.split("<td>", 1)[1].split("</td>", 1)[0] for row in rows] == ["Ops Person"]


def test_budget_exceeded_is_a_409_wherever_it_is_met():
    from learncredits.domain.errors import http_status

    refusal = BudgetExceeded("over")
    assert (refusal.code, http_status(refusal)) == ("budget_exceeded", 409)


def test_a_manager_key_is_held_to_its_departments_and_their_budget_over_the_api(
    org, make_content, snapshot
):
    """The same rules through the HTTP API with a key whose role is manager: its own
    department's employees within budget (201), past the budget 409 ``budget_exceeded`` with
    nothing written, another department's employee 404, buying 403; an admin key may go over
    and is told."""
    course = make_content(4)
    sales, ops = department(org, "Sales", 10), department(org, "Ops", 100)
    people = [member(org, f"S{n}", sales["id"]) for n in range(3)]
    outsider = member(org, "O1", ops["id"])
    org.buy(50)
    body = {"name": "sales lead", "role": "manager", "department_ids": [sales["id"]]}
    manager = Api(ok(org.operator.post(org.path("/api-keys"), body), 201)["key"])

    def assign(employees: list[str]) -> Any:
        return manager.post(
            org.path("/assignments"), {"content_id": course, "employee_ids": employees}
        )

    made = ok(assign(people[:2]), 201)
    assert len(made["data"]) == 2 and made["budget_warnings"] == []
    before = snapshot()
    refused = assign(people[2:])
    assert (refused.status, refused.code) == (409, "budget_exceeded")
    assert snapshot() == before
    assert assign([outsider]).status == 404
    assert snapshot() == before
    assert manager.post(org.path("/purchases"), {"quantity": 1}).status == 403
    listed = ok(manager.get(org.path("/departments")))["data"]
    assert [d["name"] for d in listed] == ["Sales"]  # a manager sees their own

    over = org.assign(course, people[2:])  # the org's admin key
    assert [w["over_by"] for w in over["budget_warnings"]] == [2]
