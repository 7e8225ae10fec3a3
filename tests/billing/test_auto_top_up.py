"""Auto top-up (docs/product.md section 10; API ``PUT/GET /orgs/{id}/auto-top-up``).

When available drops below the trigger, buy ``quantity`` credits (or enough to reach
``target_available``) at the volume price, at most ``max_purchases_per_month`` purchases
and ``max_credits_per_month`` credits per calendar month (the org's own). A declined
payment switches the rule off with a reason, tells the org (event and email) and is never
retried in a loop.

A balance write that crosses below the trigger only records the internal event
``auto_top_up.due`` in its transaction; the worker, draining the outbox after the commit,
queues ``auto_top_up_task`` (Django's Tasks framework, database backend). The tests drain the
outbox as the worker does (``run_once``), check the queued task and run what it names. The
rest call the worker's functions directly (``run_auto_top_up`` and the periodic ``run_due``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.db import transaction
from django.utils.module_loading import import_string
from django_tasks_db.models import DBTaskResult

from learncredits import ids
from learncredits.billing.auto_top_up import run_auto_top_up, run_due
from learncredits.billing.payments import TestProvider
from learncredits.billing.tasks import enqueue_auto_top_up
from learncredits.credits import actions, events
from learncredits.credits.events import WEBHOOK_EVENT_TYPES
from learncredits.credits.models import Event, Purchase
from learncredits.notify.delivery import dispatch_events, run_once
from learncredits.notify.models import EmailMessage, WebhookDelivery
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle, Response, ok

pytestmark = pytest.mark.django_db

TASK_PATH = "learncredits.billing.tasks.auto_top_up_task"


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    with time_machine.travel(moment, tick=False):
        yield


def pk(org: OrgHandle) -> int:
    value = ids.decode("org", org.id)
    assert value is not None
    return value


def rule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "enabled": True,
        "below_available": 5,
        "quantity": 100,
        "max_purchases_per_month": 3,
        "max_credits_per_month": 1000,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def put_rule(org: OrgHandle, **overrides: Any) -> Response:
    return org.api.put(org.path("/auto-top-up"), rule_body(**overrides))


def set_rule(org: OrgHandle, **overrides: Any) -> dict[str, Any]:
    return ok(put_rule(org, **overrides))


def take(org: OrgHandle, credits: int) -> None:
    """Lower the balance by an operator adjustment (simplest way to spend credits)."""
    body = {"credits": -credits, "reason": "test spend"}
    ok(org.operator.post(org.path("/adjustments"), body), 201)


def purchases(org: OrgHandle) -> list[dict[str, Any]]:
    return list(reversed(ok(org.api.get(org.path("/purchases")))["data"]))  # oldest first


def paid_auto(org: OrgHandle) -> list[int]:
    return list(
        Purchase.objects.filter(org_id=pk(org), actor="system:auto_top_up", status="paid")
        .order_by("pk")
        .values_list("quantity", flat=True)
    )


def queued_top_ups() -> list[list[Any]]:
    return [r.args_kwargs["args"] for r in DBTaskResult.objects.filter(task_path=TASK_PATH)]


def due_events(org: OrgHandle) -> list[Event]:
    return list(Event.objects.filter(org_id=pk(org), type="auto_top_up.due").order_by("pk"))


# --- the rule -------------------------------------------------------------------------------------


def test_rule_round_trips_and_is_per_org(
    org: OrgHandle, make_org: Callable[..., OrgHandle]
) -> None:
    missing = org.api.get(org.path("/auto-top-up"))
    assert (missing.status, missing.code) == (404, "not_found")
    saved = set_rule(org, below_available=10, quantity=None, target_available=50)
    assert saved == {
        "enabled": True,
        "below_available": 10,
        "quantity": None,
        "target_available": 50,
        "max_purchases_per_month": 3,
        "max_credits_per_month": 1000,
        "disabled_reason": "",
    }
    assert ok(org.api.get(org.path("/auto-top-up"))) == saved
    other = make_org("Other")
    for response in (
        other.api.get(org.path("/auto-top-up")),
        other.api.put(org.path("/auto-top-up"), rule_body()),
    ):
        assert (response.status, response.code) == (404, "not_found")
    assert ok(org.operator.get(org.path("/auto-top-up"))) == saved
    assert other.api.get(other.path("/auto-top-up")).status == 404


@pytest.mark.parametrize(
    "overrides",
    [
        {"quantity": 100, "target_available": 50},  # both
        {"quantity": None},  # neither
        {"quantity": None, "target_available": 5},  # target == below
        {"quantity": None, "target_available": 2},  # target < below
        {"quantity": 0},
        {"quantity": -5},
        {"quantity": 2.5},
        {"quantity": "10"},
        {"max_purchases_per_month": 0},
        {"max_credits_per_month": 0},
        {"enabled": None},  # missing
        {"below_available": None},  # missing
    ],
)
def test_invalid_rules_are_refused(org: OrgHandle, overrides: dict[str, Any]) -> None:
    response = put_rule(org, **overrides)
    assert (response.status, response.code) == (422, "validation_error"), response.body
    assert org.api.get(org.path("/auto-top-up")).status == 404


def test_an_invalid_update_keeps_the_previous_rule(org: OrgHandle) -> None:
    saved = set_rule(org)
    response = put_rule(org, target_available=500)  # quantity and target both
    assert (response.status, response.code) == (422, "validation_error")
    assert ok(org.api.get(org.path("/auto-top-up"))) == saved


# --- buying ---------------------------------------------------------------------------------------


def test_crossing_below_enqueues_a_top_up_that_buys_at_the_volume_price(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    org.buy(10)
    set_rule(org, below_available=5, quantity=100)
    content = make_content(credit_cost=3)
    e1, e2, e3 = org.employee("E1"), org.employee("E2"), org.employee("E3")

    org.assign(content, [e1])  # available 7: not below 5
    run_once()
    assert queued_top_ups() == []
    assert run_auto_top_up(pk(org)) == "not needed"

    org.assign(content, [e2])  # available 4: crosses below 5
    assert queued_top_ups() == []  # the write only records that a top-up is due
    [due] = due_events(org)
    assert due.data == {"available": 4, "below_available": 5}
    run_once()
    assert queued_top_ups() == [[pk(org)]]
    org.assign(content, [e3])  # available 1: already below, no second task
    run_once()
    assert len(due_events(org)) == 1
    assert queued_top_ups() == [[pk(org)]]

    # Run the queued task as the worker would (db_worker itself closes the test's
    # database connection on PostgreSQL, so call the task it would call).
    [queued] = DBTaskResult.objects.filter(task_path=TASK_PATH)
    task = import_string(queued.task_path)
    assert task.call(*queued.args_kwargs["args"], **queued.args_kwargs["kwargs"]) == "bought 100"

    balance = org.balance()
    assert (balance["credits"], balance["assigned"], balance["available"]) == (110, 9, 101)
    bought = purchases(org)[-1]
    assert (bought["quantity"], bought["status"]) == (100, "paid")
    assert (bought["unit_price_cents"], bought["total_cents"]) == (850, 85_000)  # the 100+ tier
    assert bought["invoice_id"] is not None
    assert paid_auto(org) == [100]
    # Bought once: running again finds nothing to do.
    assert run_auto_top_up(pk(org)) == "not needed"
    assert run_due() == 0
    assert paid_auto(org) == [100]


def test_target_mode_buys_enough_to_reach_the_target(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    set_rule(org, below_available=10, quantity=None, target_available=60)
    org.assign(make_content(credit_cost=3), [org.employee("E")])  # available -3
    assert run_auto_top_up(pk(org)) == "bought 63"
    assert org.balance()["available"] == 60
    bought = purchases(org)[-1]
    assert (bought["quantity"], bought["unit_price_cents"], bought["total_cents"]) == (
        63,
        900,
        56_700,
    )


def test_available_equal_to_the_trigger_is_not_below_it(org: OrgHandle) -> None:
    org.buy(5)
    set_rule(org, below_available=5, quantity=10)
    assert run_auto_top_up(pk(org)) == "not needed"
    take(org, 1)
    assert run_auto_top_up(pk(org)) == "bought 10"
    assert org.balance()["credits"] == 14


def test_a_switched_off_rule_buys_nothing(org: OrgHandle) -> None:
    org.buy(10)
    set_rule(org, enabled=False, below_available=5)
    take(org, 8)
    run_once()
    assert due_events(org) == []
    assert queued_top_ups() == []
    assert run_auto_top_up(pk(org)) == "no rule"
    assert run_due() == 0
    assert paid_auto(org) == []


def test_run_due_tops_up_every_org_below_its_trigger_and_no_other(
    make_org: Callable[..., OrgHandle],
) -> None:
    low, high, none = make_org("Low"), make_org("High"), make_org("None")
    high.buy(50)
    set_rule(low, below_available=5, quantity=20)
    set_rule(high, below_available=5, quantity=20)
    assert run_due() == 1
    assert (paid_auto(low), paid_auto(high), paid_auto(none)) == ([20], [], [])
    assert run_due() == 0


# --- monthly limits -------------------------------------------------------------------------------


def test_at_most_n_purchases_a_month_then_again_next_month(
    make_org: Callable[..., OrgHandle],
) -> None:
    with at(datetime(2031, 5, 10, 12, tzinfo=UTC)):
        org = make_org("Limited")
        set_rule(org, below_available=1, quantity=2, max_purchases_per_month=2)
        assert run_auto_top_up(pk(org)) == "bought 2"
        take(org, 2)
        assert run_auto_top_up(pk(org)) == "bought 2"
        take(org, 2)
        assert run_auto_top_up(pk(org)) == "monthly purchase limit reached"
        assert run_due() == 1  # it looked, and bought nothing
        assert paid_auto(org) == [2, 2]
        # Purchases made by hand do not count against the rule.
        org.buy(1)
        take(org, 1)
        assert run_auto_top_up(pk(org)) == "monthly purchase limit reached"
    with at(datetime(2031, 5, 31, 23, 59, tzinfo=UTC)):
        assert run_auto_top_up(pk(org)) == "monthly purchase limit reached"
    with at(datetime(2031, 6, 1, 0, 1, tzinfo=UTC)):
        assert run_auto_top_up(pk(org)) == "bought 2"
        assert paid_auto(org) == [2, 2, 2]


def test_at_most_m_credits_a_month_then_again_next_month(
    make_org: Callable[..., OrgHandle],
) -> None:
    with at(datetime(2031, 7, 3, 12, tzinfo=UTC)):
        org = make_org("Capped")
        set_rule(
            org,
            below_available=1,
            quantity=40,
            max_purchases_per_month=10,
            max_credits_per_month=100,
        )
        results = []
        for _ in range(4):
            results.append(run_auto_top_up(pk(org)))
            if credits := org.balance()["credits"]:
                take(org, credits)
        assert results == ["bought 40", "bought 40", "bought 20", "monthly credit limit reached"]
        assert sum(paid_auto(org)) == 100
    with at(datetime(2031, 8, 1, 8, tzinfo=UTC)):
        assert run_auto_top_up(pk(org)) == "bought 40"
        assert paid_auto(org) == [40, 40, 20, 40]


def test_the_month_is_the_orgs_own(make_org: Callable[..., OrgHandle]) -> None:
    # 1 June 03:00 UTC is still 31 May in Los Angeles: May's limit still applies.
    with at(datetime(2031, 5, 20, 12, tzinfo=UTC)):
        org = make_org("West", timezone="America/Los_Angeles")
        set_rule(org, below_available=1, quantity=2, max_purchases_per_month=1)
        assert run_auto_top_up(pk(org)) == "bought 2"
        take(org, 2)
    with at(datetime(2031, 6, 1, 3, tzinfo=UTC)):
        assert run_auto_top_up(pk(org)) == "monthly purchase limit reached"
    with at(datetime(2031, 6, 1, 8, tzinfo=UTC)):  # 1 June 01:00 in Los Angeles
        assert run_auto_top_up(pk(org)) == "bought 2"


# --- a declined payment ---------------------------------------------------------------------------


def test_a_declined_payment_switches_the_rule_off_tells_the_org_and_never_loops(
    make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    org = make_org("Declines", billing_email="pay@declines.example")
    org.buy(10)
    set_rule(org, below_available=5, quantity=50)
    ok(org.operator.patch(org.path(), {"billing_email": "pay+decline@declines.example"}))
    take(org, 8)

    assert run_auto_top_up(pk(org)) == "declined; rule disabled"
    rule = ok(org.api.get(org.path("/auto-top-up")))
    assert rule["enabled"] is False
    assert "declined" in rule["disabled_reason"]
    [failed] = purchases(org)[1:]
    assert (failed["status"], failed["quantity"]) == ("failed", 50)
    assert org.balance()["credits"] == 2
    [event] = Event.objects.filter(org_id=pk(org), type="auto_top_up.failed")
    assert event.data["quantity"] == 50 and "declined" in event.data["reason"]

    # One email to the billing contacts.
    mail.outbox.clear()
    run_once()
    run_once()
    [email] = [m for m in mail.outbox if "Auto top-up" in m.subject]
    assert email.subject == "Auto top-up stopped: the payment was declined"
    assert email.to == ["pay+decline@declines.example"]
    assert "50 credits" in email.body and "/settings/billing" in email.body
    assert any(mime == "text/html" for _, mime in email.alternatives)

    # No retry: not by the task, not by the periodic tick, not by a later crossing.
    assert run_auto_top_up(pk(org)) == "no rule"
    assert run_due() == 0
    queued = queued_top_ups()  # the first crossing's (run_once above drained it): "no rule"
    org.assign(make_content(credit_cost=5), [org.employee("E")])
    run_once()
    assert len(due_events(org)) == 1
    assert queued_top_ups() == queued
    assert len(purchases(org)) == 2
    assert Event.objects.filter(org_id=pk(org), type="auto_top_up.failed").count() == 1
    mail.outbox.clear()
    run_once()
    assert [m for m in mail.outbox if "Auto top-up" in m.subject] == []

    # Fixed and set up again by the org: it works again.
    ok(org.operator.patch(org.path(), {"billing_email": "pay@declines.example"}))
    again = set_rule(org, below_available=5, quantity=50)
    assert (again["enabled"], again["disabled_reason"]) == (True, "")
    assert run_auto_top_up(pk(org)) == "bought 50"


# --- the balance write and the worker -------------------------------------------------------------


def test_the_balance_write_only_records_that_a_top_up_is_due(
    org: OrgHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of billing runs in the balance write: it calls no payment provider and queues
    nothing; the internal event it writes reaches no webhook and no inbox, only the worker."""
    org.buy(10)
    set_rule(org, below_available=5, quantity=20)
    endpoint = org.api.post(org.path("/webhooks"), {"url": "https://hooks.example/in"})
    assert endpoint.status == 201  # subscribed to every event type
    calls: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"the payment provider's {name} was called")

        return called

    for name in ("create_intent", "confirm", "retrieve", "cancel"):
        monkeypatch.setattr(TestProvider, name, refuse(name))
    take(org, 8)  # available 2: crosses below 5
    assert calls == []
    assert org.balance()["credits"] == 2
    assert paid_auto(org) == [] and not Purchase.objects.filter(actor="system:auto_top_up")
    [due] = due_events(org)
    assert due.dispatched_at is None and queued_top_ups() == []
    assert "auto_top_up.due" not in WEBHOOK_EVENT_TYPES
    internal = {"url": "https://hooks.example/in", "events": ["auto_top_up.due"]}
    assert org.api.post(org.path("/webhooks"), internal).status == 422

    dispatch_events()  # the worker's drain, after the commit
    assert queued_top_ups() == [[pk(org)]]
    assert not WebhookDelivery.objects.filter(event=due).exists()
    assert not EmailMessage.objects.filter(event=due).exists()
    assert calls == []

    monkeypatch.undo()
    [queued] = DBTaskResult.objects.filter(task_path=TASK_PATH)
    task = import_string(queued.task_path)
    assert task.call(*queued.args_kwargs["args"], **queued.args_kwargs["kwargs"]) == "bought 20"
    assert org.balance()["credits"] == 22


def test_a_rolled_back_balance_write_leaves_no_top_up_due(org: OrgHandle) -> None:
    org.buy(10)
    set_rule(org, below_available=5, quantity=20)
    organization = Organization.objects.get(pk=pk(org))
    with pytest.raises(RuntimeError), transaction.atomic():
        actions.adjust_credits(organization, -8, reason="rolled back", actor="test")
        assert len(due_events(org)) == 1
        raise RuntimeError("roll back")
    assert due_events(org) == []
    run_once()
    assert queued_top_ups() == []


def test_only_internal_events_take_reactions() -> None:
    """A reaction is the worker's own business: events customers see cannot carry one."""
    with pytest.raises(ValueError, match="not an internal event type"):
        events.react_to("balance.at_risk", lambda event: None)
    assert events.reactions_to("auto_top_up.due") == (enqueue_auto_top_up,)
