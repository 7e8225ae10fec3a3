"""Reservations nobody starts (docs/identity.md, "Reservations nobody starts (aging)").

An org with ``release_unstarted_after_days`` set has its admins warned, once, seven days
before an open assignment reaches that age, and the worker then cancels it (actor
``system:aging``), releasing its credits through the same path as a cancel. The clock is
the ``now`` the service takes; assignments are made at chosen moments with time_machine.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.test import Client

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.credits import aging
from learncredits.credits.models import Assignment, Event, LedgerEntry, ReleaseWarning
from learncredits.credits.verify import verify_ledger
from learncredits.notify import delivery
from learncredits.notify.models import EmailMessage
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle, ok, run_threads
from tests.ops.test_cli import run_script

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
PASSWORD = "a-Long-enough-pass-42"


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    with time_machine.travel(moment, tick=False):
        yield


def org_row(org: OrgHandle) -> Organization:
    return Organization.objects.get(pk=ids.decode("org", org.id))


def pk(public_id: str) -> int:
    value = ids.decode("assignment", public_id)
    assert value is not None
    return value


def set_days(org: OrgHandle, days: int | None) -> dict[str, Any]:
    return ok(org.operator.patch(org.path(), {"release_unstarted_after_days": days}))


def status_of(public_id: str) -> str:
    return Assignment.objects.get(pk=pk(public_id)).status


def warning_emails(org: OrgHandle) -> list[EmailMessage]:
    delivery.dispatch_events()
    return list(
        EmailMessage.objects.filter(
            org_id=ids.decode("org", org.id), kind="assignment.release_warning"
        ).order_by("pk")
    )


def releases(org: OrgHandle) -> list[LedgerEntry]:
    return list(
        LedgerEntry.objects.filter(
            org_id=ids.decode("org", org.id), type=LedgerEntry.Type.RELEASE
        ).order_by("pk")
    )


def signed_in_admin(org: OrgHandle, email: str = "boss@example.com") -> Client:
    body = {"email": email, "name": "Boss", "role": "admin", "password": PASSWORD}
    ok(org.operator.post(f"/orgs/{org.id}/users", body), 201)
    client = Client()
    client.force_login(
        get_user_model().objects.get(username=email),
        backend="django.contrib.auth.backends.ModelBackend",
    )
    return client


# --- warn, then release -----------------------------------------------------------------------


@pytest.fixture
def world(make_org: Callable[..., OrgHandle], make_content: Callable[..., str]) -> dict[str, Any]:
    """An org releasing after 30 days with, made at T0: two open assignments of a 3-credit
    course (Ann, Bob), one started (Cy), one cancelled (Di); made at T0 + 10 days: a younger
    open one (Ann, a 2-credit course). A second org without the setting holds an open
    assignment from T0 too."""
    with at(T0):
        org = make_org("Acme", billing_email="billing@acme.example")
        other = make_org("Never")
        course = make_content(credit_cost=3, title="Negotiation")
        short = make_content(credit_cost=2, title="Excel")
        org.buy(20)
        other.buy(5)
        names = ["Ann", "Bob", "Cy", "Di"]
        emp = {name: org.employee(name) for name in names}
        made = org.assign(course, list(emp.values()))["data"]
        asg = {name: a["id"] for name, a in zip(names, made, strict=True)}
        ok(org.act(asg["Cy"], "start"))
        ok(org.act(asg["Di"], "cancel"))
        untouched = other.assign(course, [other.employee("Eve")])["data"][0]["id"]
    with at(T0 + 10 * DAY):
        asg["young"] = org.assign(short, [emp["Ann"]])["data"][0]["id"]
    signed_in_admin(org)
    tenancy.create_user(
        org_row(org), email="owner@acme.example", name="Owner", role="owner", password=PASSWORD
    )
    set_days(org, 30)
    return {"org": org, "other": other, "asg": asg, "untouched": untouched}


def test_warned_once_then_released_after_seven_days(world: dict[str, Any]) -> None:
    org, asg = world["org"], world["asg"]
    # 22 days old: not yet within a week of 30 days.
    assert aging.run(T0 + 22 * DAY).warned == []
    assert warning_emails(org) == []

    warned_at = T0 + 23 * DAY + timedelta(hours=1)
    run = aging.run(warned_at)
    assert sorted(d.assignment_id for d in run.warned) == sorted([pk(asg["Ann"]), pk(asg["Bob"])])
    assert run.released == []
    [email] = warning_emails(org)
    # To the owner and the admins, not to the billing address.
    assert sorted(email.recipients) == ["boss@example.com", "owner@acme.example"]
    assert email.subject == "2 unstarted assignments will be released"
    for name in ("Ann", "Bob"):
        assert f"- {name}: Negotiation (3 credits), released on 2026-04-01" in email.text
    assert "Cy" not in email.text and "Di" not in email.text and "Excel" not in email.text
    assert "Negotiation" in email.html and "2026-04-01" in email.html
    # The email goes out over the mail backend like every other.
    delivery.send_due_emails()
    [sent] = [m for m in mail.outbox if m.subject == email.subject]
    assert sorted(sent.to) == sorted(email.recipients)

    # Later runs before the release warn nobody again.
    for later in (warned_at, T0 + 25 * DAY, T0 + 29 * DAY):
        again = aging.run(later)
        assert (again.warned, again.released) == ([], [])
    assert len(warning_emails(org)) == 1
    assert ReleaseWarning.objects.count() == 2

    before = org.balance()
    released_at = T0 + 30 * DAY + timedelta(hours=2)
    run = aging.run(released_at)
    assert sorted(d.assignment_id for d in run.released) == sorted([pk(asg["Ann"]), pk(asg["Bob"])])
    after = org.balance()
    assert after["assigned"] == before["assigned"] - 6
    assert after["credits"] == before["credits"]
    entries = releases(org)[-2:]
    assert {(e.assignment_id, e.assigned_delta, e.actor) for e in entries} == {
        (pk(asg["Ann"]), -3, "system:aging"),
        (pk(asg["Bob"]), -3, "system:aging"),
    }
    assert all(e.reason == "not started within 30 days" for e in entries)
    for name in ("Ann", "Bob"):
        assert status_of(asg[name]) == "cancelled"
        assert ok(org.api.get(org.path(f"/assignments/{asg[name]}")))["status"] == "cancelled"
    audit = AuditEvent.objects.get(action="assignment.release_unstarted")
    assert (audit.actor, audit.details["credits"]) == ("system:aging", 6)
    cancelled = Event.objects.filter(org_id=org_row(org).pk, type="assignment.cancelled")
    assert {e.data["id"] for e in cancelled} >= {asg["Ann"], asg["Bob"]}
    assert verify_ledger()[1] == []

    # Started, cancelled, younger and other orgs' assignments are untouched.
    assert status_of(asg["Cy"]) == "started"
    assert status_of(asg["Di"]) == "cancelled"
    di_release = [e for e in releases(org) if e.assignment_id == pk(asg["Di"])]
    assert len(di_release) == 1 and di_release[0].actor.startswith("api_key:")
    assert status_of(asg["young"]) == "assigned"
    assert status_of(world["untouched"]) == "assigned"
    assert not ReleaseWarning.objects.filter(org_id=org_row(world["other"]).pk).exists()

    # Nothing more to do at the same moment; the younger one follows its own calendar.
    assert aging.run(released_at).released == []
    run = aging.run(T0 + 10 * DAY + 23 * DAY)
    assert [d.assignment_id for d in run.warned] == [pk(asg["young"])]
    assert len(warning_emails(org)) == 2


def test_an_assignment_older_than_the_setting_gets_its_full_week(
    make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    with at(T0):
        org = make_org()
        org.buy(5)
        a = org.assign(make_content(credit_cost=1), [org.employee("Old")])["data"][0]["id"]
    # Turned on 100 days later with 30 days: the assignment is far past 30 days.
    set_days(org, 30)
    turned_on = T0 + 100 * DAY
    [due] = aging.run(turned_on).warned
    assert due.release_at == turned_on + 7 * DAY
    [email] = warning_emails(org)
    assert "released on 2026-06-17" in email.text
    assert aging.run(turned_on + 7 * DAY - timedelta(minutes=1)).released == []
    assert status_of(a) == "assigned"
    assert [d.assignment_id for d in aging.run(turned_on + 7 * DAY).released] == [pk(a)]
    assert status_of(a) == "cancelled"


def test_a_setting_turned_off_after_the_warning_releases_nothing(
    make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    with at(T0):
        org = make_org()
        org.buy(5)
        a = org.assign(make_content(credit_cost=1), [org.employee("Kept")])["data"][0]["id"]
    set_days(org, 10)
    assert len(aging.run(T0 + 5 * DAY).warned) == 1
    set_days(org, None)
    assert aging.run(T0 + 60 * DAY).released == []
    assert status_of(a) == "assigned"
    # Turned on again: it was warned already, so it goes without a second email.
    set_days(org, 10)
    assert [d.assignment_id for d in aging.run(T0 + 61 * DAY).released] == [pk(a)]
    assert len(warning_emails(org)) == 1


def test_a_dry_run_lists_and_writes_nothing(world: dict[str, Any]) -> None:
    org = world["org"]
    out = io.StringIO()
    with at(T0 + 24 * DAY):
        call_command("release_unstarted", "--dry-run", stdout=out)
    assert "2 would warn (dry run, nothing written)" in out.getvalue()
    assert world["asg"]["Ann"] in out.getvalue()
    assert not ReleaseWarning.objects.exists()
    assert not Event.objects.filter(type="assignment.release_warning").exists()

    out = io.StringIO()
    with at(T0 + 24 * DAY):
        call_command("release_unstarted", stdout=out)
    assert "0 released, 2 warned" in out.getvalue()
    assert len(warning_emails(org)) == 1


# --- several runs at once -----------------------------------------------------------------------


# PostgreSQL: real concurrent connections. The in-memory SQLite test database locks whole
# tables across connections; in production SQLite serializes every writer (BEGIN IMMEDIATE).
@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_warn_once_and_release_once(
    make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    with at(T0):
        org = make_org()
        org.buy(50)
        course = make_content(credit_cost=2)
        made = org.assign(course, [org.employee(f"E{i}") for i in range(12)])["data"]
    set_days(org, 30)
    before = org.balance()

    def run(moment: datetime) -> list[aging.AgingRun]:
        return run_threads(4, lambda i, _: aging.run(moment))

    warned = run(T0 + 24 * DAY)
    assert sum(len(r.warned) for r in warned) == 12
    assert Event.objects.filter(type="assignment.release_warning").count() == 1
    released = run(T0 + 31 * DAY + timedelta(hours=1))
    assert sum(len(r.released) for r in released) == 12
    entries = releases(org)
    assert sorted(e.assignment_id for e in entries) == sorted(pk(a["id"]) for a in made)
    assert org.balance()["assigned"] == before["assigned"] - 24
    assert verify_ledger()[1] == []


# --- the setting ----------------------------------------------------------------------------------


def test_the_setting_through_the_api(org: OrgHandle) -> None:
    assert ok(org.operator.get("/orgs"))["data"][0]["release_unstarted_after_days"] is None
    assert set_days(org, 30)["release_unstarted_after_days"] == 30
    assert set_days(org, 3650)["release_unstarted_after_days"] == 3650
    for bad in (0, -1, 3651, 1.5, "10", True, 10**30):
        answer = org.operator.patch(org.path(), {"release_unstarted_after_days": bad})
        assert answer.status == 422, (bad, answer.body)
        assert answer.body["code"] == "validation_error"
    assert org_row(org).release_unstarted_after_days == 3650
    answer = org.operator.patch(org.path(), {"release_unstarted_after_days": 0})
    assert "from 1 to 3650" in answer.body["detail"]
    assert set_days(org, None)["release_unstarted_after_days"] is None
    # Only the operator changes org settings.
    assert org.api.patch(org.path(), {"release_unstarted_after_days": 5}).status == 403


def test_the_setting_on_the_billing_page(org: OrgHandle) -> None:
    admin = signed_in_admin(org)
    form = {"form": "alerts", "alert_threshold": "0", "billing_email": "b@example.com"}
    page = admin.get("/settings/billing").content.decode()
    assert 'name="release_unstarted_after_days"' in page
    admin.post("/settings/billing", {**form, "release_unstarted_after_days": "45"})
    assert org_row(org).release_unstarted_after_days == 45
    assert 'value="45"' in admin.get("/settings/billing").content.decode()
    answer = admin.post(
        "/settings/billing", {**form, "release_unstarted_after_days": "0"}, follow=True
    )
    assert "from 1 to 3650" in answer.content.decode()
    assert org_row(org).release_unstarted_after_days == 45
    admin.post("/settings/billing", {**form, "release_unstarted_after_days": ""})
    assert org_row(org).release_unstarted_after_days is None


# --- the aging report ------------------------------------------------------------------------


def test_the_aging_report_in_the_api_and_on_the_page(world: dict[str, Any]) -> None:
    org, asg = world["org"], world["asg"]
    with at(T0 + 15 * DAY):
        listed = ok(org.api.get(org.path("/assignments"), status="assigned", older_than_days=12))[
            "data"
        ]
        assert [a["id"] for a in listed] == [asg["Ann"], asg["Bob"]]  # oldest first
        everything = ok(org.api.get(org.path("/assignments"), older_than_days=0))["data"]
        assert [a["id"] for a in everything] == [
            asg["Ann"],
            asg["Bob"],
            asg["Cy"],
            asg["Di"],
            asg["young"],
        ]
        first = ok(org.api.get(org.path("/assignments"), older_than_days=0, limit=2))
        second = ok(
            org.api.get(
                org.path("/assignments"), older_than_days=0, limit=2, cursor=first["next_cursor"]
            )
        )
        paged = [a["id"] for a in first["data"] + second["data"]]
        assert paged == [asg["Ann"], asg["Bob"], asg["Cy"], asg["Di"]]
        assert ok(org.api.get(org.path("/assignments"), older_than_days=16))["data"] == []
        for bad in ("-1", "1.5", "abc", "36501"):
            answer = org.api.get(org.path("/assignments"), older_than_days=bad)
            assert answer.status == 422, (bad, answer.body)

        admin = signed_in_admin(org, "reader@example.com")
        page = admin.get("/assignments", {"status": "assigned", "older_than_days": "12"})
        html = page.content.decode()
        rows = html.count('data-testid="assignment-row"')
        assert rows == 2
        assert html.index(f'data-assignment-id="{pk(asg["Ann"])}"') < html.index(
            f'data-assignment-id="{pk(asg["Bob"])}"'
        )
        assert '<td data-testid="age">' in html and ">15</time>" in html
        unfiltered = admin.get("/assignments", {"older_than_days": ""}).content.decode()
        assert unfiltered.count('data-testid="assignment-row"') == 5
        assert ">5</time>" in unfiltered  # the younger one's age
        refused = admin.get("/assignments", {"older_than_days": "-3"}).content.decode()
        assert "older_than_days must be a whole number" in refused
        assert refused.count('data-testid="assignment-row"') == 5


@pytest.mark.slow  # migrates a fresh SQLite file through the console script
def test_the_console_script_runs_release_unstarted(tmp_path: Path) -> None:
    database = tmp_path / "aging.sqlite3"
    migrated = run_script(["migrate"], tmp_path, database)
    assert migrated.returncode == 0, migrated.stderr
    for args, expected in (
        (["release-unstarted", "--dry-run"], "0 would release, 0 would warn (dry run"),
        (["release-unstarted"], "0 released, 0 warned"),
    ):
        ran = run_script(args, tmp_path, database)
        assert ran.returncode == 0, ran.stderr
        assert expected in ran.stdout
