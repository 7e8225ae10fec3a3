"""Settings > Billing's alerts (docs/product.md section 9): the list of active and past
alerts with why, the threshold as credits or as a percentage, and the choice of who
receives alert emails, through the page with Django's test client."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from django.contrib.auth import SESSION_KEY
from django.db import transaction
from django.test import Client

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.credits.events import emit
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle, ok, signed_in

pytestmark = pytest.mark.django_db


def user_id(client: Client) -> int:
    """The id of the user the client is signed in as."""
    return int(client.session[SESSION_KEY])


def row(org: OrgHandle) -> Organization:
    return Organization.objects.get(pk=ids.decode("org", org.id))


def section(html: str, testid: str) -> str:
    """The text of the element with this data-testid (tags removed, blanks squeezed)."""
    found = re.search(
        rf'<(\w+)[^>]*data-testid="{re.escape(testid)}"[^>]*>(.*?)</\1>', html, re.DOTALL
    )
    assert found is not None, f"no {testid} on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(2)).split())


def page(client: Client) -> str:
    response = client.get("/settings/billing")
    assert response.status_code == 200
    return response.content.decode()


def save_threshold(client: Client, kind: str, value: str) -> Any:
    form = {
        "form": "alerts",
        "billing_email": "billing@acme.example",
        "alert_threshold_kind": kind,
        "alert_threshold": value,
    }
    return client.post("/settings/billing", form)


@pytest.fixture
def admin(org: OrgHandle) -> Client:
    return signed_in(org, "admin", "boss@acme.example")


# --- the list of alerts --------------------------------------------------------------------------


def test_an_at_risk_episode_is_listed_active_with_its_numbers_then_past_when_cleared(
    org: OrgHandle, admin: Client, make_content: Any
) -> None:
    assert "No active alerts." in section(page(admin), "alerts-active")
    assert "No past alerts." in section(page(admin), "alerts-past")
    org.buy(100)
    org.assign(make_content(credit_cost=120), [org.employee()])

    active = section(page(admin), "alerts-active")
    assert "Balance at risk" in active and "active" in active
    assert "120 credits assigned, 100 credits held: -20 available" in active
    assert "threshold of 0 credits" in active
    assert "No past alerts." in section(page(admin), "alerts-past")

    org.buy(30)  # 130 held, 120 assigned: 10 available, above 0
    html = page(admin)
    assert "No active alerts." in section(html, "alerts-active")
    past = section(html, "alerts-past")
    assert "Balance at risk" in past and "cleared 20" in past  # "cleared 2026-..."
    assert "120 credits assigned, 100 credits held" in past
    assert "Cleared with 10 available (120 credits assigned, 130 credits held)" in past


def test_overages_and_the_notices_emailed_to_the_org_are_listed_too(
    org: OrgHandle, admin: Client, make_content: Any
) -> None:
    assignment = org.assign(make_content(credit_cost=3), [org.employee()])["data"][0]["id"]
    ok(org.act(assignment, "start"))  # nothing held: 3 credits of overage
    org_pk = ids.decode("org", org.id)
    assert org_pk is not None
    with transaction.atomic():
        emit(
            org_pk,
            "invoice.payment_failed",
            {"number": "INV-2026-7", "total_cents": 1234, "reason": "card declined"},
        )
    html = page(admin)
    active = section(html, "alerts-active")
    assert "Overage incurred" in active
    assert "3 credits started beyond the credits held" in active
    past = section(html, "alerts-past")
    assert "Payment declined" in past and "sent" in past
    assert "Invoice INV-2026-7 ($12.34) declined: card declined" in past


def test_another_orgs_alerts_are_not_listed(
    org: OrgHandle, admin: Client, make_org: Any, make_content: Any
) -> None:
    other = make_org()
    other.assign(make_content(credit_cost=5), [other.employee()])
    assert other.balance()["at_risk"] is True
    assert "No active alerts." in section(page(admin), "alerts-active")


# --- the threshold: credits or a percentage -------------------------------------------------------


def test_a_percentage_threshold_is_saved_audited_and_evaluated_at_once(
    org: OrgHandle, admin: Client, make_content: Any
) -> None:
    org.buy(100)
    org.assign(make_content(credit_cost=85), [org.employee()])  # 15 available
    assert org.balance()["at_risk"] is False
    assert save_threshold(admin, "percent", "20").status_code == 302
    assert (row(org).alert_threshold_percent, row(org).alert_threshold) == (20, 0)
    assert org.balance()["at_risk"] is True
    html = page(admin)
    assert "15 available, at or below the threshold of 20 credits (20% of credits held)" in (
        section(html, "alerts-active")
    )
    assert re.search(r'value="percent" checked', html)
    audit = AuditEvent.objects.filter(action="org.update").order_by("-pk").first()
    assert audit is not None and audit.details["after"]["alert_threshold_percent"] == 20

    # Back to credits: the percentage is dropped and the state re-evaluated (15 > 10).
    assert save_threshold(admin, "credits", "10").status_code == 302
    assert (row(org).alert_threshold_percent, row(org).alert_threshold) == (None, 10)
    assert org.balance()["at_risk"] is False


@pytest.mark.parametrize("value", ["0", "100", "-5", "12.5", "twenty", ""])
def test_a_percentage_out_of_bounds_is_refused_and_nothing_changes(
    org: OrgHandle, admin: Client, value: str
) -> None:
    response = save_threshold(admin, "percent", value)
    assert response.status_code == 302
    html = admin.get(response["Location"]).content.decode()
    assert "alert_threshold_percent must be a whole number from 1 to 99" in html
    assert row(org).alert_threshold_percent is None
    assert not AuditEvent.objects.filter(action="org.update").exists()


# --- who receives the alert emails ----------------------------------------------------------------


def test_an_admin_chooses_people_and_addresses_and_can_go_back_to_the_defaults(
    org: OrgHandle, admin: Client
) -> None:
    owner = signed_in(org, "owner", "owner@acme.example")
    owner_id = user_id(owner)
    html = page(admin)
    assert "Not chosen yet" in section(html, "recipients-state")
    # The defaults are shown ticked: the billing email and every owner and admin.
    assert len(re.findall(r'checked data-testid="recipient-user"', html)) == 2

    response = admin.post(
        "/settings/billing/alert-recipients",
        {"recipient_user": [str(owner_id)], "extra_emails": "Ops@acme.example, ops@acme.example"},
    )
    assert response.status_code == 302
    assert row(org).alert_recipients == {
        "billing_email": False,
        "user_ids": [owner_id],
        "emails": ["ops@acme.example"],
    }
    html = page(owner)
    assert "Chosen recipients." in section(html, "recipients-state")
    assert len(re.findall(r'checked data-testid="recipient-user"', html)) == 1
    assert "ops@acme.example" in section(html, "recipient-emails")

    response = owner.post("/settings/billing/alert-recipients", {"action": "defaults"})
    assert response.status_code == 302
    assert row(org).alert_recipients is None


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("ops@acme.example, not-an-address", "'not-an-address' is not a valid email address"),
        (", ".join(f"p{n}@acme.example" for n in range(11)), "at most 10 extra addresses"),
        ("", "choose at least one recipient"),
    ],
)
def test_a_refused_choice_says_why_with_its_code_and_keeps_what_was_typed(
    org: OrgHandle, admin: Client, typed: str, says: str
) -> None:
    response = admin.post("/settings/billing/alert-recipients", {"extra_emails": typed})
    assert response.status_code == 422
    html = response.content.decode()
    assert says in unescape(html)
    assert 'data-code="invalid_recipients"' in html
    assert section(html, "recipient-emails") == " ".join(typed.split())
    assert row(org).alert_recipients is None


def test_someone_who_is_not_an_owner_or_admin_cannot_be_chosen(
    org: OrgHandle, admin: Client
) -> None:
    billing_id = user_id(signed_in(org, "billing"))
    response = admin.post(
        "/settings/billing/alert-recipients", {"recipient_user": [str(billing_id)]}
    )
    assert response.status_code == 422
    assert "only the organization's owners and admins" in unescape(response.content.decode())
    assert row(org).alert_recipients is None


def test_the_billing_role_sees_the_alerts_but_may_not_choose_recipients(
    org: OrgHandle,
) -> None:
    billing = signed_in(org, "billing")
    html = page(billing)
    assert 'data-testid="alerts-active"' in html
    assert 'data-testid="alert-recipients"' not in html
    response = billing.post("/settings/billing/alert-recipients", {"billing_email_recipient": "on"})
    assert response.status_code == 403
    assert row(org).alert_recipients is None
