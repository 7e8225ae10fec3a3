"""The month-end close in batches (``close_all`` / ``auto_close_due``, billing/invoicing.py).

Several orgs share one transaction; the batch size is made small here so that a handful of
orgs spans several batches. What must hold whatever the batching: every overage is billed by
exactly one line, invoice numbers are gapless and follow the org order, each org's period is
its own month in its own time zone, each issued invoice's collection is enqueued once, and an
org whose close fails neither loses nor double-bills another org's lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django_tasks_db.models import DBTaskResult

from learncredits import ids
from learncredits.billing import invoicing
from learncredits.billing.invoicing import auto_close_due, close_all
from learncredits.billing.models import Invoice, InvoiceLine, InvoiceSequence, PeriodClose
from learncredits.billing.tasks import collect_invoice_task, enqueue_collection
from learncredits.credits.models import Event, LedgerEntry
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle, ok

# Real commits: the batches' own transactions, rollbacks and after-commit hooks are what is
# tested (``flushable`` lets Django empty the append-only tables afterwards on SQLite).
pytestmark = pytest.mark.django_db(transaction=True)

PERIOD = "2026-04"
LA = "America/Los_Angeles"
TOKYO = "Asia/Tokyo"


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    with time_machine.travel(moment, tick=False):
        yield


def start_new(org: OrgHandle, content_id: str, name: str = "Learner") -> dict[str, Any]:
    employee = org.employee(name)
    assignment = org.assign(content_id, [employee])["data"][0]
    return ok(org.act(assignment["id"], "start"))


def pk(org: OrgHandle) -> int:
    value = ids.decode("org", org.id)
    assert value is not None
    return value


def last_number() -> int:
    row = InvoiceSequence.objects.filter(year=2026).first()
    return row.last_number if row else 0


def number_of(invoice: Invoice) -> int:
    return int(invoice.number.rsplit("-", 1)[1])


def assert_billed_once(period_entries: set[int]) -> None:
    """Each overage entry of the period is billed by exactly one line of its own org."""
    lines = list(
        InvoiceLine.objects.filter(ledger_entry__isnull=False).values_list(
            "ledger_entry_id", "org_id", "invoice__org_id"
        )
    )
    billed = [entry for entry, _, _ in lines]
    assert len(billed) == len(set(billed))
    assert set(billed) == period_entries
    owners = dict(LedgerEntry.objects.filter(pk__in=billed).values_list("pk", "org_id"))
    for entry, line_org, invoice_org in lines:
        assert owners[entry] == line_org == invoice_org


@pytest.fixture(autouse=True)
def _flush(flushable: None) -> None:
    pass


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoicing, "ORGS_PER_TRANSACTION", 3)


@pytest.fixture
def april(make_org, make_content) -> dict[str, Any]:
    """Eight orgs: six with April overages (one to three each), one covered by its balance,
    and two at the edges of April in their own time zones (Los Angeles, Tokyo)."""
    with at(datetime(2026, 4, 10, 12, tzinfo=UTC)):
        content = make_content(2, "Course")
        orgs = [make_org(f"Org {i}") for i in range(6)]
        for index, org in enumerate(orgs):
            for n in range(index % 3 + 1):
                start_new(org, content, f"Learner {n}")
        covered = make_org("Covered")
        covered.buy(10)
        start_new(covered, content)
        west = make_org("West", timezone=LA)
        east = make_org("East", timezone=TOKYO)
    # April 30th 23:30 in Los Angeles is May 1st in UTC: April's.
    with at(datetime(2026, 4, 30, 23, 30, tzinfo=ZoneInfo(LA))):
        start_new(west, content, "Late")
    # May 1st 00:30 in Tokyo is still April 30th in UTC: May's, not April's.
    with at(datetime(2026, 5, 1, 0, 30, tzinfo=ZoneInfo(TOKYO))):
        start_new(east, content, "Early")
    everyone = [*orgs, covered, west, east]
    entries = {
        entry.pk
        for entry in LedgerEntry.objects.filter(overage_credits__gt=0)
        if entry.org_id != pk(east)
    }
    return {"billed_orgs": [*orgs, west], "all": everyone, "east": east, "entries": entries}


def test_batched_close_bills_each_overage_once_numbered_in_org_order(small_batches, april):
    first = last_number() + 1
    with at(datetime(2026, 5, 3, tzinfo=UTC)):
        summary = close_all(PERIOD, on_issue=enqueue_collection)

    billed_orgs = april["billed_orgs"]
    assert summary.orgs == Organization.objects.count()
    assert summary.invoices_issued == len(billed_orgs)
    monthly = list(Invoice.objects.filter(kind="monthly").order_by("org_id"))
    assert [i.org_id for i in monthly] == sorted(pk(o) for o in billed_orgs)
    assert [number_of(i) for i in monthly] == list(range(first, first + len(monthly)))
    assert last_number() == first + len(monthly) - 1
    assert summary.total_cents == sum(i.total_cents for i in monthly)
    assert_billed_once(april["entries"])
    for inv in monthly:
        lines = list(inv.lines.order_by("position"))
        assert [line.position for line in lines] == list(range(1, len(lines) + 1))
        assert [line.ledger_entry_id for line in lines] == sorted(
            line.ledger_entry_id for line in lines
        )
        assert inv.total_cents == sum(line.amount_cents for line in lines)
    west_lines = InvoiceLine.objects.filter(org_id=pk(april["billed_orgs"][-1]))
    assert [line.description for line in west_lines] == [
        "Overage: Course for Late (started 2026-04-30, 2 credits, 2 not covered by the balance)"
    ]

    # One invoice.issued event and one collection task per invoice.
    events = Event.objects.filter(type="invoice.issued", data__kind="monthly")
    assert sorted(e.data["number"] for e in events) == sorted(i.number for i in monthly)
    tasks = DBTaskResult.objects.filter(task_path=collect_invoice_task.module_path)
    assert sorted(t.args_kwargs["args"][0] for t in tasks) == sorted(i.pk for i in monthly)

    with at(datetime(2026, 5, 3, 1, tzinfo=UTC)):
        again = close_all(PERIOD, on_issue=enqueue_collection)
    assert (again.invoices_issued, again.total_cents) == (0, 0)
    assert Invoice.objects.filter(kind="monthly").count() == len(monthly)
    assert tasks.count() == len(monthly)
    assert_billed_once(april["entries"])


def test_an_org_failing_in_a_batch_loses_and_double_bills_nothing(
    small_batches, april, monkeypatch
):
    """The fifth org with something to bill fails in the middle of its close (after the
    batch reserved numbers and wrote its batch-mates' invoices): the batch is rolled back
    and closed again one org at a time, so the fourth org is billed, the fifth raises, and
    nothing after it is closed; closing again bills the rest, once."""
    billed_orgs = sorted(april["billed_orgs"], key=pk)
    failing = pk(billed_orgs[4])
    real = invoicing._overage_line_text

    def faulty(overage: Any, tz: ZoneInfo) -> str:
        if overage.org_id == failing:
            raise RuntimeError("cannot describe this line")
        return real(overage, tz)

    monkeypatch.setattr(invoicing, "_overage_line_text", faulty)
    first = last_number() + 1
    issued: list[int] = []
    with at(datetime(2026, 5, 3, tzinfo=UTC)), pytest.raises(RuntimeError):
        close_all(PERIOD, on_issue=lambda invoice: issued.append(invoice.pk))

    closed = list(Invoice.objects.filter(kind="monthly").order_by("org_id"))
    assert [i.org_id for i in closed] == [pk(o) for o in billed_orgs[:4]]
    assert [number_of(i) for i in closed] == list(range(first, first + 4))
    assert last_number() == first + 3  # the rolled-back batch used no number
    assert sorted(issued) == sorted(i.pk for i in closed)  # each hook call once, committed
    rest = [pk(o) for o in billed_orgs[4:]]
    assert not InvoiceLine.objects.filter(org_id__in=rest, ledger_entry__isnull=False).exists()

    monkeypatch.setattr(invoicing, "_overage_line_text", real)
    with at(datetime(2026, 5, 3, 1, tzinfo=UTC)):
        summary = close_all(PERIOD, on_issue=lambda invoice: issued.append(invoice.pk))
    assert summary.invoices_issued == len(billed_orgs) - 4
    monthly = list(Invoice.objects.filter(kind="monthly").order_by("org_id"))
    assert [i.org_id for i in monthly] == [pk(o) for o in billed_orgs]
    assert [number_of(i) for i in monthly] == list(range(first, first + len(monthly)))
    assert sorted(issued) == sorted(i.pk for i in monthly)
    assert_billed_once(april["entries"])


def test_a_hook_without_many_is_called_once_per_invoice_after_commit(small_batches, april):
    seen: list[tuple[int, bool]] = []

    def hook(invoice: Invoice) -> None:
        seen.append((invoice.pk, Invoice.objects.filter(pk=invoice.pk).exists()))

    with at(datetime(2026, 5, 3, tzinfo=UTC)):
        summary = close_all(PERIOD, on_issue=hook)
    assert summary.invoices_issued == len(april["billed_orgs"])
    assert sorted(seen) == sorted((i.pk, True) for i in Invoice.objects.filter(kind="monthly"))


def test_bulk_enqueued_collections_are_the_rows_enqueue_writes(april):
    with at(datetime(2026, 5, 3, tzinfo=UTC)):
        close_all(PERIOD)
    one, two, *_ = Invoice.objects.filter(kind="monthly").order_by("pk")
    receipt = Invoice.objects.filter(kind="purchase").first()
    assert receipt is not None
    collect_invoice_task.enqueue(one.pk)
    enqueue_collection.many([two, receipt])  # a receipt is paid at issue: never collected

    rows = {row.args_kwargs["args"][0]: row for row in DBTaskResult.objects.all()}
    assert set(rows) == {one.pk, two.pk}
    skip = {"id", "enqueued_at", "args_kwargs"}
    fields = [f.attname for f in DBTaskResult._meta.concrete_fields if f.attname not in skip]
    assert {f: getattr(rows[two.pk], f) for f in fields} == {
        f: getattr(rows[one.pk], f) for f in fields
    }
    assert rows[two.pk].args_kwargs == {"args": [two.pk], "kwargs": {}}
    assert rows[two.pk].task_result.task.func == collect_invoice_task.func


def test_auto_close_in_batches_closes_each_org_once(monkeypatch, april):
    monkeypatch.setattr(invoicing, "ORGS_PER_TRANSACTION", 2)
    first = last_number() + 1
    # 06:00 UTC on May 1st: April has ended everywhere but in Los Angeles (23:00 there).
    moment = datetime(2026, 5, 1, 6, tzinfo=UTC)
    with at(moment):
        issued = auto_close_due(now=moment, on_issue=enqueue_collection)
        assert auto_close_due(now=moment, on_issue=enqueue_collection) == 0
    west = pk(april["billed_orgs"][-1])
    billed = sorted(pk(o) for o in april["billed_orgs"] if pk(o) != west)
    assert issued == len(billed)
    monthly = list(Invoice.objects.filter(kind="monthly").order_by("org_id"))
    assert [i.org_id for i in monthly] == billed
    assert [number_of(i) for i in monthly] == list(range(first, first + len(billed)))
    closes = {(org, period): n for org, period, n in PeriodClose.objects.values_list(
        "org_id", "period", "invoices_issued")}  # fmt: skip
    everyone_but_west = [pk(o) for o in april["all"] if pk(o) != west]
    assert closes == {
        **{(org, PERIOD): int(org in billed) for org in everyone_but_west},
        (west, "2026-03"): 0,  # its last complete month at that moment
    }
    assert DBTaskResult.objects.count() == len(billed)

    later = datetime(2026, 5, 1, 8, tzinfo=ZoneInfo(LA))
    with at(later):
        assert auto_close_due(now=later, on_issue=enqueue_collection) == 1
    assert PeriodClose.objects.get(org_id=west, period=PERIOD).invoices_issued == 1
    assert_billed_once(april["entries"])
