"""Each write is one service function, whoever calls it (docs/architecture.md, "Write paths").

The API, the dashboard pages, the operator console, the CLI and the worker reach the same
function, so they get the same rules, the same refusals (with the same HTTP status) and the
same audit row naming who did it. Each test here pins one place where a caller used to do
part of the work itself.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.billing.tasks import WORKER_ACTOR, billing_tick
from learncredits.catalog.models import Content
from learncredits.credits import accounts, actions, events, queries
from learncredits.credits.models import Balance, Event
from learncredits.domain.balance import (
    AlertThreshold,
    Counters,
    assign_outlook,
    credits_to_leave_risk,
)
from learncredits.ops.management.commands.close_period import CLI_ACTOR
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Employee, Organization
from tests.conftest import OrgHandle, ok

pytestmark = pytest.mark.django_db

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
PASSWORD = "a-Long-enough-pass-42"


def org_row(org: OrgHandle) -> Organization:
    return Organization.objects.get(pk=ids.decode("org", org.id))


def admin_of(org: OrgHandle, email: str = "boss@example.com") -> tuple[Client, str]:
    """A signed-in org admin and the actor the audit trail names for them."""
    body = {"email": email, "name": "Boss", "role": "admin", "password": PASSWORD}
    ok(org.operator.post(f"/orgs/{org.id}/users", body), 201)
    user = get_user_model().objects.get(username=email)
    client = Client()
    client.force_login(user, backend=MODEL_BACKEND)
    return client, f"user:usr_{user.pk}"


def operator_console() -> tuple[Client, str]:
    staff = get_user_model().objects.create_superuser("ops@example.com", "ops@example.com", "pw")
    client = Client()
    client.force_login(staff, backend=MODEL_BACKEND)
    return client, "operator:ops@example.com"


def newest(action: str) -> AuditEvent:
    event = AuditEvent.objects.filter(action=action).order_by("-pk").first()
    assert event is not None, f"no {action} audit row"
    return event


def reserving_one_of_two(org: OrgHandle, make_content: Callable[..., str]) -> None:
    """2 credits, 1 assigned: available 1, not at risk at the default threshold 0."""
    org.buy(2)
    org.assign(make_content(credit_cost=1), [org.employee()])
    assert org.balance()["at_risk"] is False


# --- organization settings -----------------------------------------------------------------------


def test_the_pages_threshold_change_is_audited_as_the_admin_and_reevaluates_at_risk(
    org, make_content
):
    reserving_one_of_two(org, make_content)
    admin, actor = admin_of(org)
    form = {"form": "alerts", "alert_threshold": "1", "billing_email": "b@example.com"}
    assert admin.post("/settings/billing", form).status_code == 302

    assert org_row(org).alert_threshold == 1
    assert org.balance()["at_risk"] is True
    assert Balance.objects.get(org_id=org_row(org).pk).at_risk is True
    assert Event.objects.filter(org_id=org_row(org).pk, type="balance.at_risk").count() == 1
    event = newest("org.update")
    assert event.actor == actor
    assert (event.details["before"]["alert_threshold"], event.details["after"]) == (
        0,
        {"alert_threshold": 1, "billing_email": "b@example.com"},
    )


def test_a_threshold_has_one_bound_on_the_page_and_in_the_api(org):
    admin, _ = admin_of(org)
    form = {"form": "alerts", "billing_email": "b@example.com"}
    # Inside the service's bound: the page takes what the API takes.
    admin.post("/settings/billing", {**form, "alert_threshold": "2000000"})
    assert org_row(org).alert_threshold == 2_000_000
    ok(org.operator.patch(org.path(), {"alert_threshold": 3_000_000}))
    assert org_row(org).alert_threshold == 3_000_000
    # Beyond it: both refuse, and nothing changes.
    too_far = str(tenancy.MAX_THRESHOLD + 1)
    admin.post("/settings/billing", {**form, "alert_threshold": too_far})
    assert org.operator.patch(org.path(), {"alert_threshold": int(too_far)}).status == 422
    assert org_row(org).alert_threshold == 3_000_000


def test_a_threshold_is_never_saved_without_its_at_risk_reevaluation(org, make_content):
    """The write, the audit row and the re-evaluation are one transaction: when the
    re-evaluation fails, the threshold is not saved either."""
    reserving_one_of_two(org, make_content)
    with (
        patch("learncredits.credits.alerts.at_risk_changed", side_effect=RuntimeError("boom")),
        pytest.raises(RuntimeError),
    ):
        accounts.update_org_settings(org_row(org), {"alert_threshold": 5}, actor="test")
    assert org_row(org).alert_threshold == 0
    assert not AuditEvent.objects.filter(action="org.update").exists()


def test_the_consoles_threshold_change_reevaluates_and_audits_what_was_there(org, make_content):
    reserving_one_of_two(org, make_content)
    console, actor = operator_console()
    page = console.get(f"/admin/tenancy/organization/{org_row(org).pk}/change/")
    form = {"name": "Acme", "billing_email": "billing@example.com", "timezone": "UTC"}
    form["alert_threshold"] = "4"
    for prefix in re.findall(r'name="([\w-]+)-TOTAL_FORMS"', page.content.decode()):
        form.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    response = console.post(f"/admin/tenancy/organization/{org_row(org).pk}/change/", form)
    assert response.status_code == 302, response.content[:500]
    assert org.balance()["at_risk"] is True
    event = newest("org.update")
    assert event.actor == actor
    assert (event.details["before"], event.details["after"]) == (
        {"alert_threshold": 0},
        {"alert_threshold": 4},
    )


def test_reevaluating_an_unchanged_answer_writes_nothing(org, make_content):
    reserving_one_of_two(org, make_content)
    with CaptureQueriesContext(connection) as queries_run:
        actions.reevaluate_at_risk(org_row(org))
    writes = [q["sql"] for q in queries_run.captured_queries if q["sql"].startswith("UPDATE")]
    assert writes == []
    assert not Event.objects.filter(type__startswith="balance.").exists()


# --- the domain's rules, used by every caller ----------------------------------------------------


@pytest.mark.parametrize(
    ("available", "threshold", "needed"), [(1, 1, 1), (-3, 0, 4), (5, 1, 0), (2, 2, 1)]
)
def test_credits_to_leave_risk(available, threshold, needed):
    counters = Counters(credits=available + 1, assigned=1)
    assert credits_to_leave_risk(counters, AlertThreshold(threshold)) == needed
    if needed:  # buying that many is exactly enough
        assert not _at_risk_after(counters, needed, threshold)
        assert _at_risk_after(counters, needed - 1, threshold)


def _at_risk_after(counters: Counters, bought: int, threshold: int) -> bool:
    from learncredits.domain.balance import is_at_risk

    line = AlertThreshold(threshold)
    return is_at_risk(Counters(counters.credits + bought, counters.assigned), line)


def test_the_assign_preview_says_what_assigning_then_does(org, make_content):
    org.buy(3)
    content_id = make_content(credit_cost=2)
    holder, *others = [org.employee(f"E{n}") for n in range(3)]
    org.assign(content_id, [holder])
    content = Content.objects.get(pk=ids.decode("content", content_id))
    employee_pks = [ids.decode("employee", e) for e in [holder, *others]]

    preview = queries.assign_preview(org_row(org), content, employee_pks)
    assert (preview.new_count, preview.skipped_count) == (2, 1)
    # 3 credits, 2 assigned; 4 more reserved: available -3, and 3 billed at retail if all
    # were started now.
    assert preview.outlook == assign_outlook(Counters(3, 2), new_count=2, credit_cost=2)
    assert (preview.outlook.available_after, preview.outlook.billed_at_retail) == (-3, 3)

    result = actions.assign_bulk(
        org_row(org), content_id=content.pk, employee_ids=employee_pks, actor="test"
    )
    assert (len(result.created), len(result.skipped_employee_ids)) == (2, 1)
    assert org.balance()["available"] == preview.outlook.available_after


def test_the_ledger_csv_is_the_same_file_from_the_api_and_the_page(org, make_content):
    reserving_one_of_two(org, make_content)
    admin, _ = admin_of(org)
    from_api = org.api.request("GET", org.path("/ledger"), params={"format": "csv"})
    page = admin.get("/settings/billing/ledger.csv")
    from_page = b"".join(page.streaming_content)
    assert from_api.status == page.status_code == 200
    assert from_api.raw == from_page
    assert from_page.count(b"\n") == 3  # the header, the purchase, the reservation
    assert from_api.headers["Content-Disposition"] == page["Content-Disposition"]


# --- events --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        lambda org_id: events.emit(org_id, "balance.no_such_thing", {}),
        lambda org_id: events.emit_many(org_id, "balance.no_such_thing", [{}, {}]),
        lambda org_id: events.emit_all([(org_id, "no_such_thing", {})]),
    ],
    ids=["emit", "emit_many", "emit_all"],
)
def test_every_event_insert_checks_the_type(org, write):
    with pytest.raises(events.UnknownEventType):
        write(org_row(org).pk)
    assert not Event.objects.exists()


def test_emit_all_writes_events_of_many_orgs_in_order(org, make_org):
    other = make_org("Other")
    rows = [
        (org_row(org).pk, "invoice.issued", {"n": 1}),
        (org_row(other).pk, "invoice.issued", {"n": 2}),
    ]
    events.emit_all(rows * 700)  # more than one statement's worth on SQLite
    written = list(Event.objects.order_by("pk").values_list("org_id", "type", "data"))
    assert written == rows * 700


# --- one status for one refusal ------------------------------------------------------------------


def test_the_buy_page_answers_a_refusal_with_the_apis_status(make_org):
    org = make_org("Declined", billing_email="billing+decline@acme.example")
    admin, _ = admin_of(org)
    declined = admin.post("/buy", {"quantity": "10", "purchase_key": uuid.uuid4().hex})
    assert declined.status_code == 402  # PaymentFailed, as POST /purchases answers it
    assert org.api.post(org.path("/purchases"), {"quantity": 10}).status == 402
    refused = admin.post("/buy", {"quantity": "0"})
    assert refused.status_code == 422  # ValidationFailed


# --- audit, wherever the write is started from ---------------------------------------------------


def test_the_cli_close_is_audited(org):
    call_command("close_period", period="2020-01", stdout=io.StringIO())
    event = newest("billing.close_period")
    assert (event.actor, event.target) == (CLI_ACTOR, "2020-01")
    assert event.details["invoices_issued"] == 0


def test_the_workers_close_is_audited_once(org):
    with time_machine.travel(datetime(2030, 2, 2, tzinfo=UTC), tick=False):
        billing_tick.call()
        billing_tick.call()  # nothing left to close: no second row
    (event,) = AuditEvent.objects.filter(action="billing.close_period")
    assert event.actor == WORKER_ACTOR
    assert event.details["orgs"] == Organization.objects.count()


def test_the_api_close_is_still_audited_once(org):
    ok(org.operator.post("/billing/close-period", {"period": "2020-01"}))
    (event,) = AuditEvent.objects.filter(action="billing.close_period")
    assert (event.actor, event.target) == ("operator", "2020-01")


RULE = {
    "enabled": True,
    "below_available": 5,
    "quantity": 10,
    "target_available": None,
    "max_purchases_per_month": 3,
    "max_credits_per_month": 100,
}


def test_auto_top_up_changes_are_audited_from_the_api_and_the_page(org):
    ok(org.api.put(org.path("/auto-top-up"), RULE))
    first = newest("auto_top_up.configure")
    key_pk = ids.decode("api_key", ok(org.operator.get(org.path("/api-keys")))["data"][0]["id"])
    assert (first.actor, first.org_id) == (f"api_key:key_{key_pk}", org_row(org).pk)
    assert first.details["before"] is None
    assert first.details["after"]["quantity"] == 10

    admin, actor = admin_of(org)
    form = {
        "form": "auto_top_up",
        "enabled": "on",
        "below_available": "2",
        "mode": "quantity",
        "amount": "20",
        "max_purchases": "3",
        "max_credits": "100",
    }
    assert admin.post("/settings/billing", form).status_code == 302
    second = newest("auto_top_up.configure")
    assert second.actor == actor
    assert (second.details["before"]["quantity"], second.details["after"]["quantity"]) == (10, 20)


def test_webhook_endpoints_created_and_deleted_are_audited(org):
    body = {"url": "http://127.0.0.1:9/hook?token=secret", "events": ["purchase.paid"]}
    created = ok(org.api.post(org.path("/webhooks"), body), 201)
    event = newest("webhook.create")
    assert (event.org_id, event.target) == (org_row(org).pk, created["id"])
    assert event.actor.startswith("api_key:")
    assert event.details == {"host": "127.0.0.1", "events": ["purchase.paid"]}
    assert "secret" not in str(event.details)

    deleted = org.api.request("DELETE", org.path(f"/webhooks/{created['id']}"))
    assert deleted.status == 204
    assert newest("webhook.delete").target == event.target


def test_employees_added_anywhere_are_audited(org):
    org.employee("Api Person", "api.person@example.com")
    assert newest("employee.create").details == {"email": "api.person@example.com"}
    admin, actor = admin_of(org)
    admin.post("/employees", {"name": "Page Person", "email": "page.person@example.com"})
    event = newest("employee.create")
    assert (event.actor, event.details["email"]) == (actor, "page.person@example.com")
    employee = Employee.objects.get(email="page.person@example.com")
    assert event.target == f"emp_{employee.pk}"


# --- the console goes through the services -------------------------------------------------------


def test_a_console_content_edit_goes_through_the_catalog_service(make_content):
    content_pk = ids.decode("content", make_content(credit_cost=3, title="Safety"))
    console, actor = operator_console()
    url = f"/admin/catalog/content/{content_pk}/change/"
    form: dict[str, Any] = {"title": "Safety", "credit_cost": "5", "xapi_activity_id": ""}

    refused = console.post(url, form)  # not premium, yet it costs credits
    assert refused.status_code == 200
    assert "a free item costs 0 credits" in refused.content.decode()
    assert Content.objects.get(pk=content_pk).credit_cost == 3
    assert not AuditEvent.objects.filter(action="content.update").exists()

    saved = console.post(url, {**form, "premium": "on", "title": "  Safety 2  "})
    assert saved.status_code == 302
    item = Content.objects.get(pk=content_pk)
    assert (item.title, item.credit_cost) == ("Safety 2", 5)
    event = newest("content.update")
    assert (event.actor, event.target) == (actor, f"cnt_{content_pk}")
    assert (event.details["before"]["credit_cost"], event.details["after"]["credit_cost"]) == (3, 5)
