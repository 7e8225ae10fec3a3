"""Billing under concurrency, on PostgreSQL (docs/product.md section 8).

Closing a period takes the org's balance lock, and an invoice number comes from a per-year
counter row locked and advanced in the issuing transaction. These tests release many threads
at once (a barrier), each with its own client and database connection, let them commit for
real (transactional tests), and check against the database: every overage ledger entry is
billed by exactly one invoice line, and invoice numbers are distinct and consecutive with no
gap, across receipts (purchases) and monthly invoices (closes) issued side by side.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine

from learncredits import ids
from learncredits.billing.invoicing import auto_close_due, receipt_of
from learncredits.billing.models import Invoice, InvoiceLine, InvoiceSequence, PeriodClose
from learncredits.credits.models import LedgerEntry, Purchase
from tests.conftest import OPERATOR_TOKEN, Api, OrgHandle, Response, ok, run_threads

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

YEAR = 2026
PERIOD = "2026-03"


@pytest.fixture
def mid_march() -> Iterator[None]:
    """The clock runs (tick=True) from the middle of March 2026, in every thread."""
    with time_machine.travel(datetime(YEAR, 3, 15, 12, tzinfo=UTC), tick=True):
        yield


def answered(response: Response, status: int) -> Any:
    assert response.status < 500, (response.status, response.body)
    return ok(response, status)


def pending_assignments(org: OrgHandle, content_id: str, count: int) -> list[str]:
    employees = [org.employee(f"E{i}") for i in range(count)]
    return [a["id"] for a in org.assign(content_id, employees)["data"]]


def last_number() -> int:
    row = InvoiceSequence.objects.filter(year=YEAR).values_list("last_number", flat=True).first()
    return int(row or 0)


def assert_numbers_gapless(first_expected: int) -> None:
    numbers = list(Invoice.objects.values_list("number", flat=True))
    assert all(n.startswith(f"INV-{YEAR}-") and len(n) == len("INV-2026-000001") for n in numbers)
    values = sorted(int(n.rsplit("-", 1)[1]) for n in numbers)
    assert values == list(range(first_expected, first_expected + len(values)))
    assert last_number() == first_expected + len(values) - 1


def assert_every_overage_billed_once() -> None:
    billed = list(
        InvoiceLine.objects.filter(ledger_entry__isnull=False).values_list(
            "ledger_entry_id", "quantity", "invoice__org_id"
        )
    )
    entry_ids = [entry_id for entry_id, _, _ in billed]
    assert len(entry_ids) == len(set(entry_ids))
    overages = dict(
        LedgerEntry.objects.filter(overage_credits__gt=0).values_list("pk", "overage_credits")
    )
    assert set(entry_ids) == set(overages)
    for entry_id, quantity, org_id in billed:
        assert quantity == overages[entry_id]
        assert LedgerEntry.objects.get(pk=entry_id).org_id == org_id


def close_all_at_once(n: int, period: str) -> list[int]:
    def work(_: int, __: Any) -> int:
        caller = Api(OPERATOR_TOKEN)
        return answered(caller.post("/billing/close-period", {"period": period}), 200)[
            "invoices_issued"
        ]

    return run_threads(n, work)


def test_concurrent_closes_of_one_period_issue_each_overage_once(mid_march, make_org, make_content):
    first = last_number() + 1
    content = make_content(3, "Course")
    orgs = [make_org(f"Org {i}") for i in range(4)]
    for index, org in enumerate(orgs[:3]):
        for assignment_id in pending_assignments(org, content, index + 1):
            assert answered(org.act(assignment_id, "start"), 200)["overage_credits"] == 3
    orgs[3].buy(10)  # covered: no overage, no monthly invoice
    for assignment_id in pending_assignments(orgs[3], content, 2):
        answered(orgs[3].act(assignment_id, "start"), 200)

    issued = close_all_at_once(6, PERIOD)

    assert sum(issued) == 3
    monthly = Invoice.objects.filter(kind="monthly")
    assert sorted(monthly.values_list("org_id", flat=True)) == sorted(
        ids.decode("org", o.id) for o in orgs[:3]
    )
    assert sorted(i.lines.count() for i in monthly) == [1, 2, 3]
    assert_every_overage_billed_once()
    assert_numbers_gapless(first)
    assert sum(close_all_at_once(3, PERIOD)) == 0
    assert_numbers_gapless(first)


def test_closes_racing_new_overages_bill_each_overage_exactly_once(
    mid_march, make_org, make_content
):
    first = last_number() + 1
    content = make_content(2, "Course")
    orgs = [make_org(f"Org {i}") for i in range(3)]
    pending = {org.id: pending_assignments(org, content, 4) for org in orgs}
    operator = Api(OPERATOR_TOKEN)
    answered(operator.post("/billing/close-period", {"period": PERIOD}), 200)  # nothing yet

    def work(i: int, _: Any) -> int:
        if i < len(orgs):  # starters: one org each, overages one after another
            org = orgs[i]
            caller = Api(org.key)
            for assignment_id in pending[org.id]:
                path = org.path(f"/assignments/{assignment_id}/start")
                assert answered(caller.post(path), 200)["overage_credits"] == 2
            return 0
        caller = Api(OPERATOR_TOKEN)  # closers: close the month in progress, again and again
        issued = 0
        for _ in range(4):
            body = answered(caller.post("/billing/close-period", {"period": PERIOD}), 200)
            issued += body["invoices_issued"]
        return issued

    issued = run_threads(len(orgs) + 4, work)
    issued_after = answered(operator.post("/billing/close-period", {"period": PERIOD}), 200)

    assert LedgerEntry.objects.filter(overage_credits__gt=0).count() == 12
    assert_every_overage_billed_once()
    assert sum(issued) + issued_after["invoices_issued"] == Invoice.objects.count()
    assert all(i.lines.exists() for i in Invoice.objects.all())
    assert_numbers_gapless(first)
    assert answered(operator.post("/billing/close-period", {"period": PERIOD}), 200) == {
        "period": PERIOD,
        "invoices_issued": 0,
    }


def test_workers_auto_closing_at_once_issue_each_month_once(mid_march, make_org, make_content):
    """Several worker processes may run the billing tick at the same moment."""
    first = last_number() + 1
    content = make_content(4, "Course")
    with time_machine.travel(datetime(YEAR, 2, 20, 9, tzinfo=UTC), tick=False):
        orgs = [make_org(f"Org {i}", timezone=tz) for i, tz in enumerate(["UTC", "Asia/Tokyo"])]
        for org in orgs:
            for assignment_id in pending_assignments(org, content, 2):
                answered(org.act(assignment_id, "start"), 200)
        quiet = make_org("Quiet")

    issued = run_threads(4, lambda *_: auto_close_due())

    assert sum(issued) == 2
    assert Invoice.objects.filter(kind="monthly", period="2026-02").count() == 2
    closes = list(PeriodClose.objects.values_list("org_id", "period"))
    assert sorted(closes) == sorted((ids.decode("org", o.id), "2026-02") for o in [*orgs, quiet])
    assert_every_overage_billed_once()
    assert_numbers_gapless(first)


def test_eight_threads_issuing_receipts_and_monthly_invoices_get_gapless_numbers(
    mid_march, make_org, make_content
):
    first = last_number() + 1
    content = make_content(1, "Course")
    buyers = [make_org(f"Buyer {i}") for i in range(4)]
    closers = [make_org(f"Closer {i}") for i in range(4)]
    pending = {org.id: pending_assignments(org, content, 3) for org in closers}
    quantities = [1, 50, 100, 7, 250]

    def work(i: int, _: Any) -> list[Response]:
        responses = []
        if i < 4:  # purchases of four different orgs, each issuing a receipt
            org = buyers[i]
            caller = Api(org.key)
            for quantity in quantities:
                responses.append(caller.post(org.path("/purchases"), {"quantity": quantity}))
            return responses
        org = closers[i - 4]  # an overage, then a close of the month in progress
        caller, operator = Api(org.key), Api(OPERATOR_TOKEN)
        for assignment_id in pending[org.id]:
            responses.append(caller.post(org.path(f"/assignments/{assignment_id}/start")))
            responses.append(operator.post("/billing/close-period", {"period": PERIOD}))
        return responses

    results = run_threads(8, work)
    for thread in results:
        for response in thread:
            assert response.status in (200, 201), (response.status, response.body)

    assert_numbers_gapless(first)
    paid = Purchase.objects.filter(status="paid")
    assert paid.count() == 4 * len(quantities)
    assert Invoice.objects.filter(kind="purchase").count() == paid.count()
    for purchase in paid:
        assert receipt_of(purchase).total_cents == purchase.total_cents
    monthly = Invoice.objects.filter(kind="monthly")
    assert monthly.count() >= 4  # each closer's last close finds at least its last overage
    assert_every_overage_billed_once()
    assert LedgerEntry.objects.filter(overage_credits__gt=0).count() == 12
