"""At-risk and overage alerts (docs/product.md section 9; AlertOut and BalanceOut in docs/api.md).

An org is at risk when assigned > 0 and available <= its alert threshold (default 0). The
alert opens in the transaction that crosses the line, resolves when it clears (a purchase,
a cancel, a deactivation, a lower threshold) and a later crossing opens a NEW alert. The
balance's ``at_risk`` always matches. An ``overage`` alert opens at the first overage of a
billing period (in the org's time zone) and no other, and resolves when that period's
monthly invoice is issued.

Everything goes through the HTTP API; the outbox rows (``Event``) are read from the
database to show that exactly one ``balance.at_risk`` event (hence one email) is emitted
per crossing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine

from learncredits import ids
from learncredits.credits.models import Alert, Event
from tests.conftest import Api, OrgHandle, ok

pytestmark = pytest.mark.django_db


# --- helpers --------------------------------------------------------------------------------------


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    with time_machine.travel(moment, tick=False):
        yield


def alerts(org: OrgHandle, kind: str | None = None) -> list[dict[str, Any]]:
    data = ok(org.api.get(org.path("/alerts")))["data"]
    return [a for a in data if kind is None or a["kind"] == kind]


def events(org: OrgHandle, event_type: str) -> list[dict[str, Any]]:
    org_pk = ids.decode("org", org.id)
    return list(
        Event.objects.filter(org_id=org_pk, type=event_type)
        .order_by("pk")
        .values_list("data", flat=True)
    )


def expect_at_risk(org: OrgHandle, expected: bool) -> dict[str, Any]:
    balance = org.balance()
    assert balance["at_risk"] is expected, balance
    active = [a for a in alerts(org, "at_risk") if a["active"]]
    assert len(active) == int(expected), active
    return balance


def start(org: OrgHandle, assignment_id: str) -> dict[str, Any]:
    return ok(org.act(assignment_id, "start"))


# --- at risk --------------------------------------------------------------------------------------


def test_new_org_with_nothing_assigned_is_not_at_risk(org: OrgHandle) -> None:
    # available 0 <= threshold 0, but nothing is assigned: not at risk.
    balance = org.balance()
    assert (balance["credits"], balance["assigned"], balance["available"]) == (0, 0, 0)
    assert balance["at_risk"] is False
    assert alerts(org) == []
    assert ok(org.api.get(org.path("/alerts")))["next_cursor"] is None


def test_at_risk_opens_once_resolves_on_purchase_and_comes_back_as_a_new_alert(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    content = make_content(credit_cost=2)
    org.buy(4)
    e1, e2, e3, e4 = (org.employee(f"E{i}") for i in range(4))

    org.assign(content, [e1])  # credits 4, assigned 2, available 2
    expect_at_risk(org, False)
    assert events(org, "balance.at_risk") == []

    org.assign(content, [e2])  # available 0 = threshold: at risk
    balance = expect_at_risk(org, True)
    assert (balance["credits"], balance["assigned"], balance["available"]) == (4, 4, 0)
    [first] = alerts(org, "at_risk")
    assert first["active"] is True and first["resolved_at"] is None
    assert first["id"].startswith("alr_")
    assert events(org, "balance.at_risk") == [
        {"credits": 4, "assigned": 4, "available": 0, "alert_threshold": 0}
    ]

    org.assign(content, [e3])  # deeper in: still the same one alert, no second event
    expect_at_risk(org, True)
    assert [a["id"] for a in alerts(org, "at_risk")] == [first["id"]]
    assert len(events(org, "balance.at_risk")) == 1

    org.buy(3)  # credits 7, assigned 6, available 1: cleared
    expect_at_risk(org, False)
    [resolved] = alerts(org, "at_risk")
    assert resolved["id"] == first["id"]
    assert resolved["active"] is False and resolved["resolved_at"] is not None
    assert events(org, "balance.recovered") == [
        {"credits": 7, "assigned": 6, "available": 1, "alert_threshold": 0}
    ]

    org.assign(content, [e4])  # available -1: at risk again, as a NEW alert
    expect_at_risk(org, True)
    history = alerts(org, "at_risk")
    assert len(history) == 2
    assert history[0]["id"] != first["id"]  # newest first
    assert history[0]["active"] is True and history[0]["resolved_at"] is None
    assert history[1]["id"] == first["id"] and history[1]["active"] is False
    assert len(events(org, "balance.at_risk")) == 2


def test_at_risk_resolves_on_cancel_and_on_deactivation(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    content = make_content(credit_cost=3)
    org.buy(3)
    e1, e2 = org.employee("E1"), org.employee("E2")

    [a1] = org.assign(content, [e1])["data"]
    expect_at_risk(org, True)
    ok(org.act(a1["id"], "cancel"))  # the reservation is released
    expect_at_risk(org, False)

    org.assign(content, [e2])
    expect_at_risk(org, True)
    ok(org.api.post(org.path(f"/employees/{e2}/deactivate")))
    balance = expect_at_risk(org, False)
    assert balance["assigned"] == 0

    history = alerts(org, "at_risk")
    assert len(history) == 2
    assert all(not a["active"] and a["resolved_at"] for a in history)
    assert len(events(org, "balance.at_risk")) == 2
    assert len(events(org, "balance.recovered")) == 2


def test_reassign_does_not_touch_the_alert(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    content = make_content(credit_cost=1)
    org.buy(1)
    e1, e2 = org.employee("E1"), org.employee("E2")
    [a1] = org.assign(content, [e1])["data"]
    expect_at_risk(org, True)
    ok(org.act(a1["id"], "reassign", {"employee_id": e2}))
    expect_at_risk(org, True)
    assert len(alerts(org, "at_risk")) == 1
    assert len(events(org, "balance.at_risk")) == 1
    assert events(org, "balance.recovered") == []


def test_custom_threshold_at_creation_and_patch_reevaluates_at_once(
    make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    org = make_org("Thresholds", alert_threshold=3)
    assert ok(org.api.get(org.path()))["alert_threshold"] == 3
    org.buy(10)
    e1, e2 = org.employee("E1"), org.employee("E2")
    org.assign(make_content(credit_cost=6), [e1])  # available 4 > 3
    expect_at_risk(org, False)
    org.assign(make_content(credit_cost=1), [e2])  # available 3 <= 3
    expect_at_risk(org, True)
    [first] = alerts(org, "at_risk")
    assert events(org, "balance.at_risk")[-1]["alert_threshold"] == 3

    # Lowering the threshold clears it at once, with no balance change.
    patched = ok(org.operator.patch(org.path(), {"alert_threshold": 2}))
    assert patched["alert_threshold"] == 2
    expect_at_risk(org, False)
    assert alerts(org, "at_risk")[0]["resolved_at"] is not None

    # Raising it again opens a new alert at once.
    ok(org.operator.patch(org.path(), {"alert_threshold": 3}))
    expect_at_risk(org, True)
    history = alerts(org, "at_risk")
    assert len(history) == 2 and history[0]["id"] != first["id"]
    assert len(events(org, "balance.at_risk")) == 2

    # A PATCH that does not cross the line changes nothing.
    ok(org.operator.patch(org.path(), {"alert_threshold": 5}))
    expect_at_risk(org, True)
    assert len(alerts(org, "at_risk")) == 2
    ok(org.operator.patch(org.path(), {"name": "Renamed"}))
    expect_at_risk(org, True)

    # A negative threshold: at risk only once available <= -1.
    ok(org.operator.patch(org.path(), {"alert_threshold": -1}))
    balance = expect_at_risk(org, False)
    assert balance["available"] == 3


def test_threshold_alone_never_makes_an_org_with_nothing_assigned_at_risk(
    org: OrgHandle,
) -> None:
    org.buy(5)
    ok(org.operator.patch(org.path(), {"alert_threshold": 100}))
    expect_at_risk(org, False)  # available 5 <= 100, but assigned is 0
    assert alerts(org) == []


def test_at_risk_flag_and_alerts_follow_the_rule_through_random_actions(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    """After every action: balance.at_risk == (assigned > 0 and available <= threshold),
    exactly one active alert while at risk, and one alert (and one event) per crossing."""
    rng = random.Random(4)
    contents = [make_content(credit_cost=c) for c in (1, 2, 5)]
    employees = [org.employee(f"R{i}") for i in range(6)]
    threshold = 0
    was_at_risk = False
    crossings = 0
    for _ in range(40):
        choice = rng.random()
        if choice < 0.2:
            org.buy(rng.randint(1, 6))
        elif choice < 0.55:
            org.api.post(
                org.path("/assignments"),
                {"content_id": rng.choice(contents), "employee_ids": [rng.choice(employees)]},
            )
        elif choice < 0.9:
            open_ = ok(org.api.get(org.path("/assignments"), status="assigned"))["data"]
            if open_:
                org.act(rng.choice(open_)["id"], rng.choice(["cancel", "start"]))
        else:
            threshold = rng.randint(-2, 4)
            ok(org.operator.patch(org.path(), {"alert_threshold": threshold}))
        balance = org.balance()
        expected = balance["assigned"] > 0 and balance["available"] <= threshold
        assert balance["at_risk"] is expected, (balance, threshold)
        active = [a for a in alerts(org, "at_risk") if a["active"]]
        assert len(active) == int(expected)
        crossings += int(expected and not was_at_risk)
        was_at_risk = expected
    assert crossings > 1  # the walk really crossed the line more than once
    assert len(alerts(org, "at_risk")) == crossings
    assert len(events(org, "balance.at_risk")) == crossings


def test_alert_history_is_scoped_to_the_org(
    org: OrgHandle, make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    other = make_org("Other")
    other.assign(make_content(credit_cost=1), [other.employee("X")])
    assert len(alerts(other, "at_risk")) == 1
    assert alerts(org) == []
    response = org.api.get(other.path("/alerts"))
    assert (response.status, response.code) == (404, "not_found")
    assert Api(None).get(org.path("/alerts")).status == 401
    # The operator sees any org's history.
    assert len(ok(org.operator.get(other.path("/alerts")))["data"]) == 1


# --- overage --------------------------------------------------------------------------------------


def test_overage_alert_at_the_first_overage_of_each_period_only(
    operator: Api, make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    with at(datetime(2031, 3, 10, 12, tzinfo=UTC)):
        org = make_org("Overage")
        content = make_content(credit_cost=2)
        org.buy(1)
        e = [org.employee(f"O{i}") for i in range(4)]
        a = [org.assign(content, [emp])["data"][0]["id"] for emp in e[:3]]

        start(org, a[0])  # 1 from the balance, 1 overage: the first of March
        [alert] = alerts(org, "overage")
        assert alert["active"] is True and alert["period"] == "2031-03"
        assert alert["resolved_at"] is None

        start(org, a[1])  # a second overage in March: no second alert
        assert [x["id"] for x in alerts(org, "overage")] == [alert["id"]]
        assert org.balance()["overage_credits_this_period"] == 3
        firsts = [d["first_of_period"] for d in events(org, "overage.incurred")]
        assert firsts == [True, False]

        # Issuing March's monthly invoice resolves the alert.
        closed = ok(operator.post("/billing/close-period", {"period": "2031-03"}))
        assert closed["invoices_issued"] == 1
        [resolved] = alerts(org, "overage")
        assert resolved["id"] == alert["id"]
        assert resolved["active"] is False and resolved["resolved_at"] is not None

        start(org, a[2])  # still March: not the first overage of the period
        assert len(alerts(org, "overage")) == 1
        assert [d["first_of_period"] for d in events(org, "overage.incurred")][-1] is False

    with at(datetime(2031, 4, 2, 9, tzinfo=UTC)):
        [a4] = org.assign(content, [e[3]])["data"]
        start(org, a4["id"])  # the first overage of April
        history = alerts(org, "overage")
        assert [(x["period"], x["active"]) for x in history] == [
            ("2031-04", True),
            ("2031-03", False),
        ]
        assert [d["first_of_period"] for d in events(org, "overage.incurred")] == [
            True,
            False,
            False,
            True,
        ]


def test_overage_period_is_the_orgs_own_month(
    make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    # 03:00 UTC on 1 April is still 31 March in Los Angeles.
    with at(datetime(2031, 4, 1, 3, tzinfo=UTC)):
        org = make_org("West", timezone="America/Los_Angeles")
        [a] = org.assign(make_content(credit_cost=1), [org.employee("W")])["data"]
        start(org, a["id"])
        [alert] = alerts(org, "overage")
        assert alert["period"] == "2031-03"


def test_a_fully_covered_start_opens_no_overage_alert(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    org.buy(2)
    [a] = org.assign(make_content(credit_cost=2), [org.employee("C")])["data"]
    started = start(org, a["id"])
    assert (started["charged_credits"], started["overage_credits"]) == (2, 0)
    assert alerts(org, "overage") == []
    assert events(org, "overage.incurred") == []
    # The start took assigned back to 0: no longer at risk either.
    expect_at_risk(org, False)
    assert Alert.objects.filter(kind="at_risk", active=True).count() == 0
