"""Billing (docs/product.md section 8; invoices, close-period and the billing reports of
docs/api.md).

Receipts, monthly overage invoices in each org's own time zone, exactly-once invoicing,
gapless numbers, immutability, collection with retries, the PDF and HTML documents, the
cost-basis statement (with a Hypothesis model of FIFO lots), usage and forecast, and the
``close-period`` command. Time is controlled with time_machine (``tick=False``), so every
ledger entry and invoice is dated exactly where the test says.

Tests go through the HTTP API wherever it offers the operation; the worker-only parts
(``auto_close_due``, ``collect_invoice``, ``retry_due_collections``) are called directly.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pypdf
import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.db.models import ProtectedError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learncredits import ids
from learncredits.billing.collection import collect_invoice, retry_due_collections
from learncredits.billing.invoicing import auto_close_due, next_invoice_number
from learncredits.billing.models import (
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceSequence,
    PeriodClose,
)
from learncredits.credits.models import LedgerEntry, Purchase
from learncredits.notify.delivery import run_once
from tests.conftest import Api, OrgHandle, Response, ok

LA = "America/Los_Angeles"
AKL = "Pacific/Auckland"
SELLER = "learncredits Marketplace Inc."
NUMBER = re.compile(r"^INV-(\d{4})-(\d{6})$")


# --- helpers ---------------------------------------------------------------------------------


def local(tz: str, year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz))


def utc(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    """Freeze the clock at ``moment`` (an aware datetime)."""
    with time_machine.travel(moment, tick=False):
        yield


def pk(kind: str, public_id: str) -> int:
    value = ids.decode(kind, public_id)
    assert value is not None, public_id
    return value


def refused(response: Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status, response.code) == (status, code), (response.status, response.body)
    return response.body


def start_new(org: OrgHandle, content_id: str, name: str = "Learner") -> dict[str, Any]:
    """Assign the content to a new employee and start it at once; the started assignment."""
    employee = org.employee(name)
    assignment = org.assign(content_id, [employee])["data"][0]
    return ok(org.act(assignment["id"], "start"))


def invoices(org: OrgHandle, kind: str | None = None) -> list[dict[str, Any]]:
    listed = ok(org.api.get(org.path("/invoices"), limit=500))["data"]
    return [i for i in listed if kind is None or i["kind"] == kind]


def invoice(org: OrgHandle, invoice_id: str) -> dict[str, Any]:
    return ok(org.api.get(org.path(f"/invoices/{invoice_id}")))


def close(operator: Api, period: str) -> int:
    body = ok(operator.post("/billing/close-period", {"period": period}))
    assert body["period"] == period
    return body["invoices_issued"]


def statement(org: OrgHandle, period: str) -> dict[str, Any]:
    return ok(org.api.get(org.path("/statement"), period=period))


def lines_of(inv: dict[str, Any]) -> list[tuple[int, int, int]]:
    return [(li["quantity"], li["unit_price_cents"], li["amount_cents"]) for li in inv["lines"]]


def pdf_text(raw: bytes) -> str:
    assert raw.startswith(b"%PDF"), raw[:20]
    reader = pypdf.PdfReader(io.BytesIO(raw))
    return "\n".join(page.extract_text() for page in reader.pages)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def set_retail(operator: Api, retail_cents: int) -> None:
    book = ok(operator.get("/pricing"))
    book["retail_unit_price_cents"] = retail_cents
    ok(operator.put("/pricing", book))


# --- receipts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "unit_cents"), [(10, 1000), (50, 900), (100, 850)])
def test_every_paid_purchase_has_a_paid_receipt_at_once(org, quantity, unit_cents):
    with at(utc(2026, 5, 12, 9)):
        purchase = org.buy(quantity)

        assert purchase["status"] == "paid"
        assert purchase["invoice_id"] is not None
        receipt = invoice(org, purchase["invoice_id"])
        assert receipt["kind"] == "purchase"
        assert receipt["status"] == "paid"
        assert receipt["period"] == "2026-05"
        assert receipt["purchase_id"] == purchase["id"]
        assert lines_of(receipt) == [(quantity, unit_cents, quantity * unit_cents)]
        assert receipt["lines"][0]["assignment_id"] is None
        assert receipt["total_cents"] == quantity * unit_cents == purchase["total_cents"]
        assert receipt["currency"] == "USD"
        assert NUMBER.match(receipt["number"])
        listed = ok(org.api.get(org.path("/purchases")))["data"]
        assert [p["invoice_id"] for p in listed] == [purchase["invoice_id"]]
        stored = Purchase.objects.get(pk=pk("purchase", purchase["id"]))
        [receipt] = stored.receipts.all()
        assert receipt.pk == pk("invoice", purchase["invoice_id"])
        assert [(p.attempt, p.approved) for p in receipt.payments.all()] == [(1, True)]


def test_receipt_documents_show_the_volume_saving_against_retail(org):
    purchase = org.buy(100)  # 100 x $8.50 = $850.00; retail $1,000.00; saving $150.00
    path = org.path(f"/invoices/{purchase['invoice_id']}")
    number = invoice(org, purchase["invoice_id"])["number"]

    html = org.api.get(path + "/html")
    assert html.status == 200
    page = html.raw.decode()
    pdf = org.api.get(path + "/pdf")
    assert pdf.status == 200
    text = squash(pdf_text(pdf.raw))

    for shown in (squash(page), text):
        assert number in shown
        assert "$850.00" in shown
        assert "$1,000.00" in shown
        assert "$150.00" in shown


def test_a_declined_purchase_has_no_invoice_and_uses_no_number(make_org):
    declining = make_org("Declines", billing_email="billing+decline@example.com")
    paying = make_org("Pays")
    with at(utc(2026, 5, 12, 9)):
        refused(
            declining.api.post(declining.path("/purchases"), {"quantity": 10}),
            402,
            "payment_failed",
        )
        listed = ok(declining.api.get(declining.path("/purchases")))["data"]
        assert [(p["status"], p["invoice_id"]) for p in listed] == [("failed", None)]
        assert invoices(declining) == []
        assert not Invoice.objects.filter(org_id=pk("org", declining.id)).exists()

        receipt = invoice(paying, paying.buy(1)["invoice_id"])
        assert receipt["number"] == "INV-2026-000001"


# --- month boundaries in the org's time zone -------------------------------------------------


@pytest.mark.parametrize(("year", "month", "day"), [(2026, 4, 30), (2026, 3, 31)])
def test_an_overage_at_2330_on_the_last_day_belongs_to_that_month(
    make_org, make_content, operator, year, month, day
):
    period = f"{year}-{month:02d}"
    next_period = f"{year}-{month + 1:02d}"
    late = local(LA, year, month, day, 23, 30)
    assert late.astimezone(UTC).month == month + 1  # already the next month in UTC
    with at(local(LA, year, month, day, 9)):
        org = make_org("Pacific", timezone=LA)
        content = make_content(3, "Late course")
        employee = org.employee("Night Owl")
        assignment = org.assign(content, [employee])["data"][0]
    with at(late):
        started = ok(org.act(assignment["id"], "start"))
        assert started["overage_credits"] == 3
        receipt = invoice(org, org.buy(1)["invoice_id"])
        assert receipt["period"] == period
        balance = org.balance()
        assert (balance["period"], balance["overage_credits_this_period"]) == (period, 3)

    with at(local(LA, year, month + 1, 2, 10)):
        assert close(operator, next_period) == 0
        assert invoices(org, "monthly") == []
        assert close(operator, period) == 1
        assert close(operator, next_period) == 0
        (monthly,) = invoices(org, "monthly")
        assert monthly["period"] == period
        assert lines_of(monthly) == [(3, 1000, 3000)]
        assert monthly["lines"][0]["assignment_id"] == assignment["id"]
        assert monthly["total_cents"] == 3000
        assert statement(org, period)["overage_credits"] == 3
        assert statement(org, next_period)["overage_credits"] == 0


# --- automatic close -------------------------------------------------------------------------


def test_auto_close_issues_each_month_once_after_it_ends_in_the_org_zone(make_org, make_content):
    with at(utc(2026, 4, 20)):
        la = make_org("Los Angeles", timezone=LA)
        akl = make_org("Auckland", timezone=AKL)
        quiet = make_org("Quiet", timezone=LA)
        content = make_content(4, "Course")
        quiet.buy(10)
        start_new(quiet, content)  # covered by the balance: no overage, no monthly invoice
    with at(local(AKL, 2026, 4, 30, 23, 0)):  # 11:00 UTC on the 30th
        start_new(akl, content)

    def auto(moment: datetime) -> int:
        with at(moment):
            return auto_close_due(now=moment)

    # 12:30 UTC on April 30th: May 1st 00:30 in Auckland, April 30th 05:30 in Los Angeles.
    moment = utc(2026, 4, 30, 12, 30)
    assert auto(moment) == 1
    assert [i["period"] for i in invoices(akl, "monthly")] == ["2026-04"]
    assert invoices(la, "monthly") == []
    assert auto(moment) == 0
    assert auto(moment + timedelta(hours=1)) == 0
    assert invoices(la, "monthly") == []

    with at(local(LA, 2026, 4, 30, 23, 30)):  # 06:30 UTC on May 1st
        start_new(la, content)
    # Los Angeles' April ends at 07:00 UTC on May 1st; its overage at 23:30 local is April's.
    assert auto(utc(2026, 5, 1, 6, 59)) == 0
    assert invoices(la, "monthly") == []
    assert auto(utc(2026, 5, 1, 7, 5)) == 1
    (monthly,) = invoices(la, "monthly")
    assert (monthly["period"], monthly["total_cents"]) == ("2026-04", 4000)
    assert auto(utc(2026, 5, 1, 7, 5)) == 0
    assert auto(utc(2026, 5, 1, 8, 5)) == 0

    assert len(invoices(akl, "monthly")) == 1
    assert invoices(quiet, "monthly") == []
    assert Invoice.objects.filter(kind="monthly").count() == 2
    closes = set(PeriodClose.objects.values_list("org_id", "period"))
    assert {(pk("org", o.id), "2026-04") for o in (la, akl, quiet)} <= closes


# --- closing early, then again ---------------------------------------------------------------


def test_early_close_then_late_overages_issue_a_second_invoice_with_only_the_new_lines(
    make_org, make_content, operator
):
    with at(utc(2026, 6, 10)):
        org = make_org("Early")
        covered = make_org("Covered")
        content = make_content(2, "Course")
        covered.buy(50)
        start_new(covered, content)
        first = start_new(org, content, "First")
        assert close(operator, "2026-06") == 1  # the month in progress
        (invoice1,) = invoices(org, "monthly")
        assert [li["assignment_id"] for li in invoice1["lines"]] == [first["id"]]
        assert invoice1["total_cents"] == 2000

    with at(utc(2026, 6, 20)):
        second = start_new(org, content, "Second")
        third = start_new(org, content, "Third")
        assert close(operator, "2026-06") == 1
        assert close(operator, "2026-06") == 0
        newest, oldest = invoices(org, "monthly")
        assert oldest == invoice1  # unchanged by the second close
    assert [li["assignment_id"] for li in newest["lines"]] == [second["id"], third["id"]]
    assert lines_of(newest) == [(2, 1000, 2000), (2, 1000, 2000)]
    assert newest["total_cents"] == 4000
    assert newest["period"] == "2026-06"
    assert invoices(covered, "monthly") == []

    with at(utc(2026, 7, 3)):
        assert close(operator, "2026-06") == 0
        assert close(operator, "2026-07") == 0


def test_every_overage_is_invoiced_once_at_the_retail_price_recorded_at_start(
    make_org, make_content, operator
):
    with at(utc(2026, 8, 3)):
        org = make_org("Overages")
        other = make_org("Other")
        content = make_content(5, "Course")
        org.buy(2)
        partial = start_new(org, content, "Partial")  # 2 from the balance, 3 overage at $10
        assert (partial["charged_credits"], partial["overage_credits"]) == (2, 3)
        set_retail(operator, 1250)
        full = start_new(org, content, "Full")  # 5 overage at $12.50
        start_new(other, content, "Other")
    with at(utc(2026, 8, 5)):
        assert close(operator, "2026-08") == 2  # early
    with at(utc(2026, 8, 20)):
        set_retail(operator, 1100)
        late = start_new(org, content, "Late")
    with at(utc(2026, 9, 2)):
        start_new(org, content, "September")
        assert close(operator, "2026-08") == 1
        assert close(operator, "2026-09") == 1
        assert close(operator, "2026-08") == close(operator, "2026-09") == 0

    september, august_late, first = invoices(org, "monthly")
    assert [i["period"] for i in (first, august_late, september)] == ["2026-08"] * 2 + ["2026-09"]
    assert [li["assignment_id"] for li in first["lines"]] == [partial["id"], full["id"]]
    assert lines_of(first) == [(3, 1000, 3000), (5, 1250, 6250)]
    assert first["total_cents"] == 9250
    assert [li["assignment_id"] for li in august_late["lines"]] == [late["id"]]
    assert lines_of(august_late) == [(5, 1100, 5500)]
    assert lines_of(september) == [(5, 1100, 5500)]
    assert [i["period"] for i in invoices(other, "monthly")] == ["2026-08"]

    overages = LedgerEntry.objects.filter(overage_credits__gt=0)
    billed = list(InvoiceLine.objects.filter(ledger_entry__isnull=False))
    entry_ids = [line.ledger_entry_id for line in billed]
    assert len(entry_ids) == len(set(entry_ids))
    assert set(entry_ids) == set(overages.values_list("pk", flat=True))
    assert len(entry_ids) == 5
    for line in billed:
        entry = line.ledger_entry
        assert line.org_id == entry.org_id == line.invoice.org_id
        assert line.quantity == entry.overage_credits
        assert line.unit_price_cents == entry.retail_unit_price_cents
        assert line.amount_cents == entry.overage_credits * entry.retail_unit_price_cents
        assert line.assignment_id == entry.assignment_id
    for inv in Invoice.objects.filter(kind="monthly"):
        assert inv.total_cents == sum(line.amount_cents for line in inv.lines.all())


# --- numbers ---------------------------------------------------------------------------------


def test_invoice_numbers_are_consecutive_across_receipts_and_monthly_invoices(
    make_org, make_content, operator
):
    with at(utc(2026, 3, 10)):
        org = make_org("Numbers")
        declining = make_org("Declines", billing_email="ap+decline@example.com")
        content = make_content(3, "Course")
        org.buy(5)
        start_new(org, content, "A")
        start_new(org, content, "B")  # overage
        refused(
            declining.api.post(declining.path("/purchases"), {"quantity": 5}), 402, "payment_failed"
        )
        start_new(declining, content, "C")  # overage
        assert close(operator, "2026-03") == 2
        org.buy(60)
        # A rolled-back invoice rolls its number back too.
        with pytest.raises(RuntimeError), transaction.atomic():
            next_invoice_number(utc(2026, 3, 10))
            raise RuntimeError("rolled back")
    with at(utc(2026, 4, 2)):
        start_new(declining, content, "D")
        org.buy(1)
        assert close(operator, "2026-04") == 1

    issued = list(Invoice.objects.order_by("pk").values_list("number", "kind", "issued_at"))
    assert [kind for _, kind, _ in issued] == [
        "purchase",
        "monthly",
        "monthly",
        "purchase",
        "purchase",
        "monthly",
    ]
    for number, _, issued_at in issued:
        match = NUMBER.match(number)
        assert match, number
        assert int(match.group(1)) == issued_at.astimezone(UTC).year == 2026
    assert [int(NUMBER.match(n).group(2)) for n, _, _ in issued] == list(range(1, 7))
    assert InvoiceSequence.objects.get(year=2026).last_number == 6
    listed = sorted(i["number"] for o in (org, declining) for i in invoices(o))
    assert listed == [f"INV-2026-{n:06d}" for n in range(1, 7)]


# --- immutability ----------------------------------------------------------------------------


@pytest.fixture
def issued(make_org, make_content, operator) -> dict[str, Any]:
    """A receipt and a monthly invoice with a collection attempt each."""
    with at(utc(2026, 2, 10)):
        org = make_org("Immutable")
        receipt_id = org.buy(3)["invoice_id"]
        start_new(org, make_content(5, "Course"))
        assert close(operator, "2026-02") == 1
        (monthly,) = invoices(org, "monthly")
        assert collect_invoice(pk("invoice", monthly["id"])) == "paid"
    return {"org": org, "invoice_ids": [receipt_id, monthly["id"]]}


def _rows() -> list[tuple[Any, ...]]:
    return [
        *Invoice.objects.order_by("pk").values_list(),
        *InvoiceLine.objects.order_by("pk").values_list(),
        *InvoicePayment.objects.order_by("pk").values_list(),
    ]


@pytest.mark.parametrize(
    ("model", "change"),
    [
        (Invoice, {"total_cents": 0}),
        (Invoice, {"buyer_name": "Someone else"}),
        (InvoiceLine, {"amount_cents": 0, "quantity": 0}),
        (InvoiceLine, {"description": "changed"}),
        (InvoicePayment, {"approved": False}),
    ],
)
def test_the_database_refuses_to_update_invoices(issued, model, change):
    before = _rows()
    with pytest.raises(DatabaseError), transaction.atomic():
        model.objects.all().update(**change)
    assert _rows() == before


@pytest.mark.parametrize("model", [Invoice, InvoiceLine, InvoicePayment])
def test_the_database_refuses_to_delete_invoices(issued, model):
    before = _rows()
    # Invoice rows are also protected by their lines (PROTECT) before the database is asked.
    with pytest.raises((DatabaseError, ProtectedError)), transaction.atomic():
        model.objects.all().delete()
    assert _rows() == before


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE billing_invoice SET total_cents = 1",
        "UPDATE billing_invoice SET number = 'INV-1999-000001'",
        "DELETE FROM billing_invoice",
        "UPDATE billing_invoiceline SET description = 'x'",
        "DELETE FROM billing_invoiceline",
        "UPDATE billing_invoicepayment SET approved = FALSE",
        "DELETE FROM billing_invoicepayment",
    ],
)
def test_raw_sql_cannot_change_invoices(issued, sql):
    before = _rows()
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert _rows() == before


def test_no_endpoint_changes_an_invoice(issued, operator):
    org: OrgHandle = issued["org"]
    for invoice_id in issued["invoice_ids"]:
        path = org.path(f"/invoices/{invoice_id}")
        before = invoice(org, invoice_id)
        for caller in (org.api, operator):
            for method in ("PUT", "PATCH", "DELETE", "POST"):
                for suffix in ("", "/pdf", "/html"):
                    response = caller.request(
                        method, path + suffix, {"total_cents": 0, "lines": []}
                    )
                    assert response.status in (404, 405), (method, suffix, response.status)
        assert invoice(org, invoice_id) == before
    # The buyer is kept as it was at issue: renaming the org changes no invoice.
    ok(operator.patch(org.path(), {"name": "Renamed Ltd", "billing_email": "new@example.com"}))
    for invoice_id in issued["invoice_ids"]:
        page = org.api.get(org.path(f"/invoices/{invoice_id}/html")).raw.decode()
        assert "Immutable" in page
        assert "Renamed Ltd" not in page


# --- collection ------------------------------------------------------------------------------


def _monthly_for(
    make_org: Callable[..., OrgHandle],
    make_content: Callable[..., str],
    operator: Api,
    email: str,
    issue_at: datetime,
) -> tuple[OrgHandle, dict[str, Any]]:
    with at(issue_at - timedelta(days=20)):
        org = make_org("Collected", billing_email=email)
        start_new(org, make_content(7, "Course"))
    with at(issue_at):
        assert close(operator, f"{(issue_at - timedelta(days=20)):%Y-%m}") == 1
        (monthly,) = invoices(org, "monthly")
    return org, monthly


def outbox(moment: datetime) -> None:
    """What the worker does every second: turn events into emails and send them."""
    with at(moment):
        run_once(moment)


def declined_mail(mailoutbox: list[Any], number: str) -> list[Any]:
    return [m for m in mailoutbox if m.subject == f"Payment declined for invoice {number}"]


def test_a_declined_invoice_stays_open_turns_past_due_and_is_retried_on_schedule(
    make_org, make_content, operator, mailoutbox
):
    issue_at = utc(2026, 6, 1, 0, 10)
    org, monthly = _monthly_for(
        make_org, make_content, operator, "billing+decline@example.com", issue_at
    )
    invoice_pk = pk("invoice", monthly["id"])

    def attempts() -> list[tuple[int, bool]]:
        return list(
            InvoicePayment.objects.filter(invoice_id=invoice_pk)
            .order_by("attempt")
            .values_list("attempt", "approved")
        )

    def retry(moment: datetime) -> int:
        with at(moment):
            made = retry_due_collections(now=moment)
        outbox(moment)
        return made

    with at(issue_at):
        assert collect_invoice(invoice_pk) == "open"
        assert invoice(org, monthly["id"])["status"] == "open"
    outbox(issue_at)
    assert attempts() == [(1, False)]
    (mail,) = declined_mail(mailoutbox, monthly["number"])
    assert mail.to == ["billing+decline@example.com"]

    schedule = [  # (hours after issue, attempts made)
        (23, 0),
        (24, 1),
        (24, 0),
        (48, 0),
        (71, 0),
        (72, 1),
        (100, 0),
        (167, 0),
        (168, 1),
        (169, 0),
        (24 * 14, 0),
        (24 * 60, 0),
    ]
    for hours, made in schedule:
        assert retry(issue_at + timedelta(hours=hours)) == made, hours
        with at(issue_at + timedelta(hours=hours)):
            assert invoice(org, monthly["id"])["status"] in ("open", "past_due")
    assert attempts() == [(1, False), (2, False), (3, False), (4, False)]
    declined = declined_mail(mailoutbox, monthly["number"])
    assert len(declined) == 4
    assert all(m.to == ["billing+decline@example.com"] for m in declined)

    with at(issue_at + timedelta(days=14) - timedelta(minutes=1)):
        assert invoice(org, monthly["id"])["status"] == "open"
    with at(issue_at + timedelta(days=14, minutes=1)):
        assert invoice(org, monthly["id"])["status"] == "past_due"
        listed = invoices(org, "monthly")
        assert [i["status"] for i in listed] == ["past_due"]


def test_a_declining_org_that_fixes_its_payment_method_pays_on_the_next_retry(
    make_org, make_content, operator, mailoutbox
):
    issue_at = utc(2026, 6, 1, 0, 10)
    org, monthly = _monthly_for(
        make_org, make_content, operator, "ap+decline@example.com", issue_at
    )
    invoice_pk = pk("invoice", monthly["id"])
    with at(issue_at):
        assert collect_invoice(invoice_pk) == "open"
    outbox(issue_at)
    ok(operator.patch(org.path(), {"billing_email": "ap@example.com"}))

    with at(issue_at + timedelta(hours=12)):
        assert retry_due_collections(now=issue_at + timedelta(hours=12)) == 0
    for days, made in [(1, 1), (3, 0), (7, 0), (30, 0)]:
        moment = issue_at + timedelta(days=days)
        with at(moment):
            assert retry_due_collections(now=moment) == made, days
        outbox(moment)
    with at(issue_at + timedelta(days=30)):
        assert invoice(org, monthly["id"])["status"] == "paid"
    payments = InvoicePayment.objects.filter(invoice_id=invoice_pk).order_by("attempt")
    assert [(p.attempt, p.approved) for p in payments] == [(1, False), (2, True)]
    assert len(declined_mail(mailoutbox, monthly["number"])) == 1  # one decline, one email


def test_collecting_a_normal_org_pays_once(make_org, make_content, operator, mailoutbox):
    issue_at = utc(2026, 6, 1, 0, 10)
    org, monthly = _monthly_for(make_org, make_content, operator, "ap@example.com", issue_at)
    invoice_pk = pk("invoice", monthly["id"])
    assert monthly["status"] == "open"
    with at(issue_at):
        assert collect_invoice(invoice_pk) == "paid"
        assert collect_invoice(invoice_pk) == "paid"
        assert invoice(org, monthly["id"])["status"] == "paid"
    for days in (1, 3, 7, 20):
        with at(issue_at + timedelta(days=days)):
            assert retry_due_collections(now=issue_at + timedelta(days=days)) == 0
    outbox(issue_at + timedelta(days=20))
    payments = InvoicePayment.objects.filter(invoice_id=invoice_pk)
    assert [(p.attempt, p.approved, p.amount_cents) for p in payments] == [(1, True, 7000)]
    with at(issue_at + timedelta(days=40)):
        assert invoice(org, monthly["id"])["status"] == "paid"
    assert declined_mail(mailoutbox, monthly["number"]) == []
    assert any(monthly["number"] in m.subject for m in mailoutbox)  # the invoice itself


# --- documents -------------------------------------------------------------------------------


def test_the_pdf_and_html_show_number_total_parties_and_period(make_org, make_content, operator):
    with at(local(LA, 2026, 9, 30, 22)):
        org = make_org("Globex Learning", timezone=LA, billing_email="ap@globex.example")
        start_new(org, make_content(1, "Safety"), "Homer")
    with at(utc(2026, 10, 5)):
        assert close(operator, "2026-09") == 1
    (monthly,) = invoices(org, "monthly")
    path = org.path(f"/invoices/{monthly['id']}")

    pdf = org.api.get(path + "/pdf")
    assert pdf.status == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    text = squash(pdf_text(pdf.raw))
    html = org.api.get(path + "/html")
    assert html.status == 200
    page = squash(html.raw.decode())

    for shown in (text, page):
        assert monthly["number"] in shown
        assert "$10.00" in shown
        assert SELLER in shown
        assert "Globex Learning" in shown
        assert "2026-09" in shown
        assert "Homer" in shown

    with at(utc(2026, 10, 6)):
        receipt = invoice(org, org.buy(250)["invoice_id"])
    receipt_text = squash(pdf_text(org.api.get(org.path(f"/invoices/{receipt['id']}/pdf")).raw))
    assert receipt["number"] in receipt_text
    assert "$2,000.00" in receipt_text
    assert "2026-10" in receipt_text


def test_invoice_lines_date_each_start_in_the_org_time_zone(make_org, make_content, operator):
    """A September invoice of an org in Los Angeles lists an overage started at 23:30 on
    September 30th (local) as started on 2026-09-30, the day of its own period, as the
    document dates its issue and due days in the org's zone; not as 2026-10-01 (UTC)."""
    with at(local(LA, 2026, 9, 30, 23, 30)):
        org = make_org("Dated", timezone=LA)
        start_new(org, make_content(1, "Safety"), "Marge")
    with at(utc(2026, 10, 5)):
        assert close(operator, "2026-09") == 1
        (monthly,) = invoices(org, "monthly")
    description = monthly["lines"][0]["description"]
    assert "Marge" in description
    page = org.api.get(org.path(f"/invoices/{monthly['id']}/html")).raw.decode()
    for shown in (description, page):
        assert "2026-10-01" not in shown
    assert "2026-09-30" in description


def test_another_orgs_invoice_is_not_found(make_org):
    mine, theirs = make_org("Mine"), make_org("Theirs")
    mine.buy(1)
    their_invoice = theirs.buy(1)["invoice_id"]
    purchase_id = mine.buy(2)["id"]
    for path in (
        mine.path(f"/invoices/{their_invoice}"),
        mine.path(f"/invoices/{their_invoice}/pdf"),
        mine.path(f"/invoices/{their_invoice}/html"),
        theirs.path(f"/invoices/{their_invoice}"),
        mine.path(f"/invoices/{purchase_id}"),
        mine.path("/invoices/inv_999999"),
        mine.path("/invoices/inv_abc"),
    ):
        refused(mine.api.get(path), 404, "not_found")
    ok(theirs.api.get(theirs.path(f"/invoices/{their_invoice}/pdf")))


# --- statement -------------------------------------------------------------------------------


STATEMENT_FIELDS = [
    "period",
    "opening_credits",
    "purchased_credits",
    "granted_credits",
    "consumed_credits",
    "closing_credits",
    "purchased_cents",
    "recognized_cents",
    "overage_credits",
    "overage_cents",
    "deferred_opening_cents",
    "deferred_closing_cents",
    "refunded_credits",
    "refunded_cents",
    "tax_collected_cents",
    "currency",
]


def test_statement_cost_basis_is_first_in_first_out_across_lots(make_org, make_content, operator):
    with at(utc(2026, 1, 5)):
        org = make_org("Lots")
        small = make_org("Small")
        assert org.buy(50)["unit_price_cents"] == 900
        assert org.buy(100)["unit_price_cents"] == 850
        ok(operator.post(org.path("/adjustments"), {"credits": 5, "reason": "goodwill"}), 201)
        small.buy(10)
    with at(utc(2026, 1, 20)):
        start_new(org, make_content(60, "Big course"))
    with at(utc(2026, 2, 10)):
        start_new(org, make_content(100, "Bigger course"))  # 95 from the balance, 5 overage

    january = statement(org, "2026-01")
    assert january == {
        "period": "2026-01",
        "opening_credits": 0,
        "purchased_credits": 150,
        "granted_credits": 5,
        "consumed_credits": 60,
        "closing_credits": 95,
        "purchased_cents": 50 * 900 + 100 * 850,
        "recognized_cents": 50 * 900 + 10 * 850,
        "overage_credits": 0,
        "overage_cents": 0,
        "deferred_opening_cents": 0,
        "deferred_closing_cents": 90 * 850,
        "refunded_credits": 0,
        "refunded_cents": 0,
        "tax_collected_cents": 0,
        "currency": "USD",
    }
    february = statement(org, "2026-02")
    assert february == {
        "period": "2026-02",
        "opening_credits": 95,
        "purchased_credits": 0,
        "granted_credits": 0,
        "consumed_credits": 95,
        "closing_credits": 0,
        "purchased_cents": 0,
        "recognized_cents": 90 * 850,  # the granted 5 cost nothing
        "overage_credits": 5,
        "overage_cents": 5 * 1000,
        "deferred_opening_cents": 90 * 850,
        "deferred_closing_cents": 0,
        "refunded_credits": 0,
        "refunded_cents": 0,
        "tax_collected_cents": 0,
        "currency": "USD",
    }
    for s in (january, february):
        assert s["deferred_closing_cents"] == (
            s["deferred_opening_cents"]
            + s["purchased_cents"]
            - s["recognized_cents"]
            - s["refunded_cents"]
        )
        assert s["closing_credits"] == (
            s["opening_credits"]
            + s["purchased_credits"]
            + s["granted_credits"]
            - s["consumed_credits"]
            - s["refunded_credits"]
        )
    assert february["opening_credits"] == january["closing_credits"]
    assert february["deferred_opening_cents"] == january["deferred_closing_cents"]
    assert statement(org, "2026-03")["opening_credits"] == 0

    # The operator-wide statement sums every org.
    for period in ("2026-01", "2026-02"):
        total = ok(operator.get("/billing/statement", period=period))
        parts = [statement(o, period) for o in (org, small)]
        for field in STATEMENT_FIELDS[1:-1]:
            assert total[field] == sum(p[field] for p in parts), field
        assert (total["period"], total["currency"]) == (period, "USD")
    assert ok(operator.get("/billing/statement", period="2026-01"))["purchased_cents"] == 140_000
    refused(org.api.get("/billing/statement", period="2026-01"), 403, "forbidden")

    # CSV: a header row and one row of the same figures.
    response = org.api.get(org.path("/statement"), period="2026-01", format="csv")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.raw.decode())))
    assert rows == [STATEMENT_FIELDS, [str(january[f]) for f in STATEMENT_FIELDS]]
    response = operator.get("/billing/statement", period="2026-02", format="csv")
    rows = list(csv.reader(io.StringIO(response.raw.decode())))
    assert rows[0] == STATEMENT_FIELDS
    assert int(rows[1][STATEMENT_FIELDS.index("overage_cents")]) == 5000


def test_invoices_as_csv(make_org, make_content, operator):
    with at(utc(2026, 1, 5)):
        org = make_org("Csv")
        org.buy(5)
        start_new(org, make_content(8, "Course"))
        assert close(operator, "2026-01") == 1
        org.buy(100)
    response = org.api.get(org.path("/invoices"), format="csv")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    header, *rows = list(csv.reader(io.StringIO(response.raw.decode())))
    assert header[:7] == ["id", "number", "kind", "period", "status", "currency", "total_cents"]
    listed = invoices(org)
    assert len(rows) == len(listed) == 3
    by_id = {i["id"]: i for i in listed}
    for row in rows:
        inv = by_id[row[0]]
        assert row[1:7] == [
            inv["number"],
            inv["kind"],
            inv["period"],
            inv["status"],
            "USD",
            str(inv["total_cents"]),
        ]
    assert [r[6] for r in rows] == ["5000", "3000", "85000"]


@pytest.mark.parametrize(
    "period",
    [
        "2026-13",
        "2026-00",
        "26-01",
        "2026-1",
        "",
        "abcd-ef",
        "2026-01\n",
        "\uff12\uff10\uff12\uff16-01",
    ],
)
def test_bad_periods_are_validation_errors(org, operator, period):
    refused(org.api.get(org.path("/statement"), period=period), 422, "validation_error")
    refused(operator.get("/billing/statement", period=period), 422, "validation_error")
    refused(operator.post("/billing/close-period", {"period": period}), 422, "validation_error")


# --- the statement under random histories (Hypothesis) ---------------------------------------


class Model:
    """FIFO lots and per-month figures, computed independently of the service."""

    def __init__(self) -> None:
        self.lots: list[list[int]] = []  # [remaining, unit price]
        self.credits = 0
        self.months: dict[str, dict[str, int]] = {}

    def month(self, period: str) -> dict[str, int]:
        return self.months.setdefault(
            period,
            dict.fromkeys(
                [
                    "purchased_credits",
                    "granted_credits",
                    "consumed_credits",
                    "purchased_cents",
                    "recognized_cents",
                    "refunded_credits",
                    "refunded_cents",
                ],
                0,
            ),
        )

    def add(self, period: str, quantity: int, unit: int, purchased: bool) -> None:
        self.lots.append([quantity, unit])
        self.credits += quantity
        m = self.month(period)
        if purchased:
            m["purchased_credits"] += quantity
            m["purchased_cents"] += quantity * unit
        else:
            m["granted_credits"] += quantity

    def draw(self, period: str, quantity: int) -> None:
        self.credits -= quantity
        m = self.month(period)
        m["consumed_credits"] += quantity
        for lot in self.lots:
            take = min(lot[0], quantity)
            lot[0] -= take
            quantity -= take
            m["recognized_cents"] += take * lot[1]
        assert quantity == 0

    def refund(self, period: str, lot_index: int, quantity: int) -> None:
        """Credits of one purchase given back: from that purchase's own lot, not FIFO."""
        self.lots[lot_index][0] -= quantity
        self.credits -= quantity
        m = self.month(period)
        m["refunded_credits"] += quantity
        m["refunded_cents"] += quantity * self.lots[lot_index][1]

    def deferred(self) -> int:
        return sum(remaining * unit for remaining, unit in self.lots)


OPERATION = st.one_of(
    st.tuples(st.just("buy"), st.sampled_from([1, 7, 49, 50, 99, 100, 120, 250, 500, 1000])),
    st.tuples(st.just("grant"), st.integers(1, 40)),
    st.tuples(st.just("remove"), st.integers(1, 80)),
    st.tuples(st.just("assign"), st.sampled_from([1, 5, 20, 80, 300])),
    st.tuples(st.just("start"), st.integers(0, 1000)),
    st.tuples(st.just("refund"), st.integers(1, 60)),
)
TIMED = st.tuples(OPERATION, st.integers(1, 31), st.integers(0, 23), st.sampled_from([0, 30, 59]))


def _periods(first: tuple[int, int], count: int) -> list[tuple[int, int]]:
    year, month = first
    out = []
    for _ in range(count):
        out.append((year, month))
        year, month = year + (month == 12), month % 12 + 1
    return out


def _last_day(year: int, month: int) -> int:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tz=st.sampled_from(["UTC", LA, AKL]),
    first=st.sampled_from([(2025, 11), (2026, 1), (2026, 3)]),
    plan=st.lists(st.lists(TIMED, max_size=6), min_size=2, max_size=3),
)
def test_statements_reconcile_month_after_month(make_org, make_content, operator, tz, first, plan):
    months = _periods(first, len(plan) + 1)
    with at(local(tz, *months[0], 1, 0, 0) - timedelta(days=3)):
        org = make_org("Simulated", timezone=tz)
        contents: dict[int, str] = {}
    model = Model()
    pending: list[tuple[str, int]] = []  # (assignment id, cost)
    bought: list[tuple[str, int]] = []  # (purchase id, its lot's index in the model)
    overage = dict.fromkeys([f"{y}-{m:02d}" for y, m in months], 0)
    closing: dict[str, tuple[int, int]] = {}  # the model's credits and deferred cents

    for (year, month), operations in zip(months, [*plan, []], strict=True):
        period = f"{year}-{month:02d}"
        model.month(period)
        timed = sorted(
            (local(tz, year, month, min(day, _last_day(year, month)), hour, minute), op)
            for op, day, hour, minute in operations
        )
        for moment, (kind, value) in timed:
            with at(moment):
                if kind == "buy":
                    purchase = org.buy(value)
                    assert purchase["total_cents"] == value * purchase["unit_price_cents"]
                    model.add(period, value, purchase["unit_price_cents"], purchased=True)
                    bought.append((purchase["id"], len(model.lots) - 1))
                elif kind == "grant":
                    body = {"credits": value, "reason": "grant"}
                    ok(operator.post(org.path("/adjustments"), body), 201)
                    model.add(period, value, 0, purchased=False)
                elif kind == "remove":
                    body = {"credits": -value, "reason": "correction"}
                    response = operator.post(org.path("/adjustments"), body)
                    if value > model.credits:
                        refused(response, 409, "insufficient_credits")
                    else:
                        ok(response, 201)
                        model.draw(period, value)
                elif kind == "assign":
                    if value not in contents:
                        contents[value] = make_content(value, f"Course {value}")
                    created = org.assign(contents[value], [org.employee()])["data"]
                    pending.append((created[0]["id"], value))
                elif kind == "refund":
                    if not bought:
                        continue
                    purchase_id, lot_index = bought[-1]
                    available = model.credits - sum(cost for _, cost in pending)
                    refundable = max(0, min(model.lots[lot_index][0], available))
                    body = {"credits": value, "reason": "refund"}
                    response = operator.post(org.path(f"/purchases/{purchase_id}/refund"), body)
                    if value > refundable:
                        refused(response, 409, "refund_exceeds_available")
                    else:
                        ok(response, 201)
                        model.refund(period, lot_index, value)
                elif pending:
                    assignment_id, cost = pending.pop(value % len(pending))
                    started = ok(org.act(assignment_id, "start"))
                    from_balance = min(cost, model.credits)
                    assert (started["charged_credits"], started["overage_credits"]) == (
                        from_balance,
                        cost - from_balance,
                    )
                    model.draw(period, from_balance)
                    overage[period] += cost - from_balance
        closing[period] = (model.credits, model.deferred())

    with at(local(tz, *months[-1], 15)):
        statements = [statement(org, f"{y}-{m:02d}") for y, m in months]
        balance = org.balance()

    opening_credits = opening_deferred = 0
    for s in statements:
        expected = model.month(s["period"])
        for field, value in expected.items():
            assert s[field] == value, (s["period"], field, s)
        assert s["overage_credits"] == overage[s["period"]]
        assert s["overage_cents"] == overage[s["period"]] * 1000
        assert (s["closing_credits"], s["deferred_closing_cents"]) == closing[s["period"]]
        # The identity, to the cent, and the chain from one month to the next.
        assert s["deferred_closing_cents"] == (
            s["deferred_opening_cents"]
            + s["purchased_cents"]
            - s["recognized_cents"]
            - s["refunded_cents"]
        )
        assert s["closing_credits"] == (
            s["opening_credits"]
            + s["purchased_credits"]
            + s["granted_credits"]
            - s["consumed_credits"]
            - s["refunded_credits"]
        )
        assert s["opening_credits"] == opening_credits
        assert s["deferred_opening_cents"] == opening_deferred
        opening_credits, opening_deferred = s["closing_credits"], s["deferred_closing_cents"]
    assert opening_credits == model.credits == balance["credits"]
    assert opening_deferred == model.deferred()
    total_purchased = sum(
        p["total_cents"] for p in ok(org.api.get(org.path("/purchases"), limit=500))["data"]
    )
    refunded = sum(s["refunded_cents"] for s in statements)
    assert (
        sum(s["recognized_cents"] for s in statements) + refunded + opening_deferred
        == total_purchased
    )


# --- usage -----------------------------------------------------------------------------------


def usage(org: OrgHandle, **params: Any) -> Response:
    return org.api.request("GET", org.path("/usage"), params=params)


def test_usage_by_day_and_by_month_in_the_org_time_zone(make_org, make_content):
    with at(local(LA, 2026, 3, 1, 10)):
        org = make_org("Usage", timezone=LA)
        content = make_content(5, "Course")
        org.buy(8)
    with at(local(LA, 2026, 3, 2, 9)):
        employees = [org.employee(f"E{i}") for i in range(3)]
        created = org.assign(content, employees)["data"]
    with at(local(LA, 2026, 3, 2, 23, 30)):  # already March 3rd in UTC
        ok(org.act(created[0]["id"], "start"))
    with at(local(LA, 2026, 3, 4, 12)):
        assert ok(org.act(created[1]["id"], "start"))["overage_credits"] == 2

    with at(local(LA, 2026, 3, 20)):
        days = ok(usage(org, **{"from": "2026-03-01", "to": "2026-03-05", "granularity": "day"}))
        months = ok(
            usage(org, **{"from": "2026-02-15", "to": "2026-04-02", "granularity": "month"})
        )
        default = ok(usage(org, **{"from": "2026-03-04", "to": "2026-03-04"}))

    def points(body: dict[str, Any]) -> list[tuple[Any, ...]]:
        keys = ("date", "consumed_credits", "overage_credits", "assigned_credits", "credits")
        return [tuple(p[k] for k in keys) for p in body["data"]]

    assert points(days) == [
        ("2026-03-01", 0, 0, 0, 8),
        ("2026-03-02", 5, 0, 10, 3),
        ("2026-03-03", 0, 0, 10, 3),
        ("2026-03-04", 3, 2, 5, 0),
        ("2026-03-05", 0, 0, 5, 0),
    ]
    assert points(months) == [
        ("2026-02-01", 0, 0, 0, 0),
        ("2026-03-01", 8, 2, 5, 0),
        ("2026-04-01", 0, 0, 5, 0),
    ]
    assert points(default) == [("2026-03-04", 3, 2, 5, 0)]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-03-05", "to": "2026-03-01", "granularity": "day"},
        {"from": "2026-03-05", "to": "2026-02-01", "granularity": "month"},
        {"from": "2025-01-01", "to": "2026-03-01", "granularity": "day"},  # > 400 days
        {"from": "2010-01-01", "to": "2026-03-01", "granularity": "month"},  # > 120 months
        {"from": "2026-03-01", "to": "2026-03-05", "granularity": "week"},
        {"from": "2026-13-01", "to": "2026-03-05", "granularity": "day"},
        {"from": "yesterday", "to": "2026-03-05"},
        {"to": "2026-03-05"},
        {"from": "2026-03-01"},
    ],
)
def test_bad_usage_queries_are_validation_errors(org, params):
    refused(usage(org, **params), 422, "validation_error")


def test_usage_accepts_the_largest_allowed_ranges(org):
    body = ok(usage(org, **{"from": "2025-01-01", "to": "2026-02-04", "granularity": "day"}))
    assert len(body["data"]) == 400
    body = ok(usage(org, **{"from": "2010-01-01", "to": "2019-12-31", "granularity": "month"}))
    assert len(body["data"]) == 120


# --- forecast --------------------------------------------------------------------------------


def test_forecast_from_the_last_90_days_of_consumption(make_org, make_content, operator):
    now = utc(2026, 6, 30, 12)
    with at(now - timedelta(days=120)):
        org = make_org("Burner")
        org.buy(100)
    with at(now - timedelta(days=100)):  # outside the 90-day window
        start_new(org, make_content(45, "Old"))
    with at(now - timedelta(days=60)):
        start_new(org, make_content(30, "Recent"))
    with at(now - timedelta(days=30)):
        started = start_new(org, make_content(60, "Overage"))  # 25 + 35 overage: counts 60
        assert started["overage_credits"] == 35
    with at(now - timedelta(days=1)):
        org.buy(40)
        org.assign(make_content(15, "Pending"), [org.employee()])

    with at(now):
        forecast = ok(org.api.get(org.path("/forecast")))
        assert forecast["available"] == 25
        assert forecast["daily_burn"] == pytest.approx(1.0)  # (30 + 60) / 90
        assert forecast["runs_out_on"] == "2026-07-25"
        assert forecast["recommended_quantity"] == 15 + 30 - 40
        assert forecast["quote"] == ok(operator.get("/pricing/quote", quantity=5))

        longer = ok(org.api.get(org.path("/forecast"), horizon_days=90))
        assert longer["recommended_quantity"] == 15 + 90 - 40
        assert longer["quote"]["unit_price_cents"] == 900
        assert longer["quote"] == ok(operator.get("/pricing/quote", quantity=65))

    # A day later the oldest counted start is still inside the window; the burn is unchanged,
    # and the run-out date moves with "today".
    with at(now + timedelta(days=1)):
        assert ok(org.api.get(org.path("/forecast")))["runs_out_on"] == "2026-07-26"
    # 61 days later the start of 60 days ago has left the window: only 60 credits remain.
    with at(now + timedelta(days=31)):
        later = ok(org.api.get(org.path("/forecast")))
        assert later["daily_burn"] == pytest.approx(round(60 / 90, 2))


def test_forecast_without_history_derives_the_burn_from_pending_assignments(
    make_org, make_content, operator
):
    with at(local(AKL, 2026, 5, 10, 23, 30)):
        org = make_org("Fresh", timezone=AKL)
        org.buy(100)
        content = make_content(6, "Course")
        org.assign(content, [org.employee(f"E{i}") for i in range(10)])  # 60 pending
        forecast = ok(org.api.get(org.path("/forecast")))
        assert forecast["available"] == 40
        assert forecast["daily_burn"] == pytest.approx(2.0)  # 60 pending over 30 days
        assert forecast["runs_out_on"] == "2026-05-30"  # Auckland's today + 20 days
        assert forecast["recommended_quantity"] >= 0
        if forecast["recommended_quantity"]:
            quantity = forecast["recommended_quantity"]
            assert forecast["quote"] == ok(operator.get("/pricing/quote", quantity=quantity))
        else:
            assert forecast["quote"] is None

        org.assign(make_content(50, "Expensive"), [org.employee("Big")])  # 110 pending
        short = ok(org.api.get(org.path("/forecast"), horizon_days=10))
        assert short["available"] == -10
        assert short["daily_burn"] == pytest.approx(11.0)
        assert short["runs_out_on"] == "2026-05-10"  # already out: today
        assert short["recommended_quantity"] >= 10  # at least the pending shortfall
        quantity = short["recommended_quantity"]
        assert short["quote"] == ok(operator.get("/pricing/quote", quantity=quantity))

    empty = make_org("Empty")
    idle = ok(empty.api.get(empty.path("/forecast")))
    assert idle == {
        "available": 0,
        "daily_burn": 0.0,
        "runs_out_on": None,
        "recommended_quantity": 0,
        "quote": None,
    }


@pytest.mark.parametrize("horizon", [0, -1, 3651, "abc", 1.5])
def test_forecast_horizon_is_validated(org, horizon):
    refused(org.api.get(org.path("/forecast"), horizon_days=horizon), 422, "validation_error")


@pytest.mark.parametrize("horizon", [1, 3650])
def test_forecast_horizon_bounds_are_accepted(org, horizon):
    ok(org.api.get(org.path("/forecast"), horizon_days=horizon))


# --- the close-period command ----------------------------------------------------------------


def test_close_period_command_prints_a_summary(make_org, make_content):
    with at(utc(2026, 4, 10)):
        first, second, quiet = make_org("One"), make_org("Two"), make_org("Quiet")
        content = make_content(3, "Course")
        start_new(first, content)
        start_new(second, content)
        start_new(second, content, "Again")
        quiet.buy(5)
    with at(utc(2026, 5, 2)):
        out = io.StringIO()
        call_command("close_period", period="2026-04", stdout=out)
        assert "2 invoices issued" in out.getvalue()
        assert "3 orgs" in out.getvalue()
        assert "$90.00" in out.getvalue()
        out = io.StringIO()
        call_command("close_period", period="2026-04", stdout=out)
        assert "0 invoices issued" in out.getvalue()
    assert [i["total_cents"] for i in invoices(second, "monthly")] == [6000]
    assert invoices(quiet, "monthly") == []


def test_close_period_command_defaults_to_the_last_complete_month(make_org, make_content):
    with at(local(LA, 2026, 4, 30, 23, 30)):
        org = make_org("West", timezone=LA)
        start_new(org, make_content(2, "Course"))
    with at(utc(2026, 5, 1, 12)):
        out = io.StringIO()
        call_command("close_period", stdout=out)
        assert "1 invoices issued" in out.getvalue()
    assert [i["period"] for i in invoices(org, "monthly")] == ["2026-04"]


@pytest.mark.parametrize("period", ["2026-13", "2026-00", "april", "2026-4"])
def test_close_period_command_refuses_a_bad_period(db, period):
    with pytest.raises(CommandError):
        call_command("close_period", period=period, stdout=io.StringIO())


def test_documents_count_credits_in_words_that_agree_with_the_number() -> None:
    from learncredits.billing.invoicing import credits_phrase

    assert [credits_phrase(n) for n in (0, 1, 2, 1000)] == [
        "0 credits",
        "1 credit",
        "2 credits",
        "1000 credits",
    ]
