"""Who receives the alert emails (tenancy/recipients.py, docs/product.md section 9): the
rule for a choice, the emails that follow it, and the operator's PATCH /orgs/{id} that
sets it (with the percentage threshold) the same way the page does."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.credits.models import Event
from learncredits.domain.errors import InvalidRecipients
from learncredits.notify.emails import admins_and_owner, compose, recipients
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Membership, Organization
from learncredits.tenancy.recipients import (
    MAX_EXTRA_EMAILS,
    chosen_emails,
    clean_alert_recipients,
    split_addresses,
)
from tests.conftest import OrgHandle, ok

pytestmark = pytest.mark.django_db
PASSWORD = "a-Long-enough-pass-42"


def row(org: OrgHandle) -> Organization:
    return Organization.objects.get(pk=ids.decode("org", org.id))


def member(org: OrgHandle, email: str, role: str) -> int:
    body = {"email": email, "name": email.split("@")[0], "role": role, "password": PASSWORD}
    ok(org.operator.post(f"/orgs/{org.id}/users", body), 201)
    return int(get_user_model().objects.get(username=email).pk)


@pytest.fixture
def people(org: OrgHandle) -> dict[str, int]:
    return {
        "owner": member(org, "owner@acme.example", "owner"),
        "admin": member(org, "admin@acme.example", "admin"),
        "billing": member(org, "billing@acme.example", "billing"),
    }


def refused(org: OrgHandle, value: Any) -> str:
    with pytest.raises(InvalidRecipients) as caught:
        clean_alert_recipients(row(org), value)
    assert caught.value.code == "invalid_recipients"
    return caught.value.detail


# --- the rule -------------------------------------------------------------------------------


def test_addresses_are_lower_cased_trimmed_and_de_duplicated(org, people) -> None:
    cleaned = clean_alert_recipients(
        row(org),
        {
            "billing_email": False,
            "user_ids": [people["admin"], people["admin"]],
            "emails": [" Ops@Acme.example ", "ops@acme.example", "", "ADMIN@acme.example"],
        },
    )
    # The admin's own address adds nothing: they are chosen already.
    assert cleaned == {
        "billing_email": False,
        "user_ids": [people["admin"]],
        "emails": ["ops@acme.example"],
    }


@pytest.mark.parametrize("bad", ["not-an-address", "a@b", "two@@acme.example", "x@acme.example>"])
def test_a_bad_address_is_refused_naming_it(org, people, bad: str) -> None:
    detail = refused(org, {"emails": ["fine@acme.example", bad]})
    assert repr(bad) in detail and "not a valid email address" in detail


def test_at_most_ten_extra_addresses_counted_after_repeats_are_dropped(org, people) -> None:
    ten = [f"p{n}@acme.example" for n in range(MAX_EXTRA_EMAILS)]
    assert clean_alert_recipients(row(org), {"emails": [*ten, ten[0].upper()]}) is not None
    detail = refused(org, {"emails": [*ten, "one-more@acme.example"]})
    assert f"at most {MAX_EXTRA_EMAILS}" in detail
    refused(org, {"emails": ["x@acme.example"] * 101})  # refused before reading them all


def test_only_the_orgs_owners_and_admins_may_be_chosen(org, people, make_org) -> None:
    other = make_org()
    outsider = member(other, "admin@other.example", "admin")
    for user_id in (people["billing"], outsider, 10**9):
        assert "owners and admins" in refused(org, {"user_ids": [user_id]})
    assert clean_alert_recipients(row(org), {"user_ids": [people["owner"]]})


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"billing_email": False, "user_ids": [], "emails": ["  "]},
        {"billing_email": "yes"},
        {"emails": "ops@acme.example"},
        {"user_ids": ["1"]},
        {"cc": []},
        ["ops@acme.example"],
    ],
)
def test_nobody_or_a_malformed_choice_is_refused(org, people, value: Any) -> None:
    refused(org, value)


def test_none_goes_back_to_the_defaults(org) -> None:
    assert clean_alert_recipients(row(org), None) is None


def test_typed_addresses_split_on_commas_semicolons_blanks_and_lines() -> None:
    typed = "a@x.example, b@x.example;c@x.example\n d@x.example\t\n"
    assert split_addresses(typed) == [f"{c}@x.example" for c in "abcd"]


# --- the emails follow the choice -------------------------------------------------------------


def at_risk_event(org: OrgHandle, make_content: Any) -> Event:
    org.buy(1)
    org.assign(make_content(credit_cost=1), [org.employee()])
    return Event.objects.get(org_id=ids.decode("org", org.id), type="balance.at_risk")


def test_without_a_choice_emails_go_where_they_always_went(org, people, make_content) -> None:
    org_row = row(org)
    assert chosen_emails(org_row) is None
    assert recipients(org_row) == [
        org_row.billing_email,
        "owner@acme.example",
        "admin@acme.example",
    ]
    assert admins_and_owner(org_row) == ["owner@acme.example", "admin@acme.example"]
    email = compose(at_risk_event(org, make_content))
    assert email is not None and email.recipients == recipients(org_row)


def test_the_chosen_recipients_are_the_one_source_of_every_alert_email(
    org, people, make_content
) -> None:
    org_row = row(org)
    tenancy.set_alert_recipients(
        org_row,
        {"billing_email": False, "user_ids": [people["admin"]], "emails": ["Ops@acme.example"]},
        actor="test",
    )
    org_row.refresh_from_db()
    chosen = ["admin@acme.example", "ops@acme.example"]
    assert recipients(org_row) == chosen
    assert admins_and_owner(org_row) == chosen  # the release warning too
    email = compose(at_risk_event(org, make_content))
    assert email is not None and email.recipients == chosen
    audit = AuditEvent.objects.filter(action="org.update").order_by("-pk").first()
    assert audit is not None and audit.actor == "test"
    assert audit.details["before"] == {"alert_recipients": None}
    assert audit.details["after"]["alert_recipients"]["emails"] == ["ops@acme.example"]


def test_a_chosen_admin_who_is_demoted_stops_receiving_and_nobody_left_means_the_defaults(
    org, people
) -> None:
    org_row = row(org)
    tenancy.set_alert_recipients(org_row, {"user_ids": [people["admin"]]}, actor="test")
    org_row.refresh_from_db()
    assert recipients(org_row) == ["admin@acme.example"]
    Membership.objects.filter(user_id=people["admin"]).update(role="billing")
    assert chosen_emails(org_row) is None
    assert recipients(org_row) == [org_row.billing_email, "owner@acme.example"]


# --- the API: the operator's org settings --------------------------------------------------------


def test_the_api_sets_recipients_and_a_percentage_threshold_and_answers_them(
    org, people, make_content
) -> None:
    admin_id = ids.encode("user", people["admin"])
    answer = ok(
        org.operator.patch(
            org.path(),
            {
                "alert_threshold_percent": 20,
                "alert_recipients": {"user_ids": [admin_id], "emails": ["ops@acme.example"]},
            },
        )
    )
    assert answer["alert_threshold_percent"] == 20
    assert answer["alert_recipients"] == {
        "billing_email": False,
        "user_ids": [admin_id],
        "emails": ["ops@acme.example"],
    }
    assert ok(org.api.get(org.path()))["alert_recipients"]["user_ids"] == [admin_id]

    # 100 held, 80 assigned: 20 available, 20% of 100: at risk.
    org.buy(100)
    course = make_content(credit_cost=80)
    org.assign(course, [org.employee()])
    assert org.balance()["at_risk"] is True
    event = Event.objects.get(org_id=ids.decode("org", org.id), type="balance.at_risk")
    assert event.data["alert_threshold"] == 20 and event.data["alert_threshold_percent"] == 20
    email = compose(event)
    assert email is not None
    assert email.recipients == ["admin@acme.example", "ops@acme.example"]
    assert "20% of credits held" in email.text

    # Setting credits alone goes back to credits, and re-evaluates: 20 > 5, not at risk.
    back = ok(org.operator.patch(org.path(), {"alert_threshold": 5}))
    assert (back["alert_threshold"], back["alert_threshold_percent"]) == (5, None)
    assert org.balance()["at_risk"] is False
    assert (
        ok(org.operator.patch(org.path(), {"alert_recipients": None}))["alert_recipients"] is None
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"alert_threshold_percent": 0}, 422, "validation_error"),
        ({"alert_threshold_percent": 100}, 422, "validation_error"),
        ({"alert_threshold_percent": "20"}, 422, "validation_error"),
        ({"alert_recipients": {"emails": ["nope"]}}, 422, "invalid_recipients"),
        ({"alert_recipients": {"billing_email": False}}, 422, "invalid_recipients"),
        ({"alert_recipients": {"user_ids": ["usr_x"]}}, 404, "not_found"),
        ({"alert_recipients": {"emails": [], "bcc": []}}, 422, "validation_error"),
    ],
)
def test_the_api_refuses_bad_settings_with_a_stable_code_and_changes_nothing(
    org, people, body: dict[str, Any], status: int, code: str
) -> None:
    answer = org.operator.patch(org.path(), body)
    assert (answer.status, answer.code) == (status, code), answer.body
    org_row = row(org)
    assert (org_row.alert_threshold_percent, org_row.alert_recipients) == (None, None)


def test_an_org_key_may_not_change_the_settings(org, people) -> None:
    answer = org.api.patch(org.path(), {"alert_threshold_percent": 20})
    assert answer.status == 403
