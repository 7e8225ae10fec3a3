"""Settings > Billing's alerts in a real browser (the helpers and fixtures of
tests/web/test_browser.py): an admin chooses who receives the alert emails and a
percentage threshold, sees the at-risk alert it raises listed as active, with why, and, once
credits are bought, listed as past; the email goes to the people chosen."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from learncredits import ids
from learncredits.notify.delivery import dispatch_events
from learncredits.notify.models import EmailMessage
from tests.conftest import OrgHandle
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    Visitor,
    _flushable,
    _quick_passwords,
    add_user,
    admin_of,
    browse,
    chromium,
    hire,
)

with contextlib.suppress(ImportError):
    from playwright.sync_api import expect


def answered(visitor: Visitor, status: int) -> None:
    """The page was answered with this status on purpose (a refused form shown again);
    Chromium logs that as a console error, expected here only."""
    expected = f"the server responded with a status of {status}"
    left = [p for p in visitor.problems if expected not in p]
    assert len(left) < len(visitor.problems), f"no {status} answer: {visitor.problems}"
    visitor.problems[:] = left


@pytest.mark.browser
def test_an_admin_chooses_recipients_and_a_percentage_threshold_and_follows_the_alert(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    make_content: Any,
) -> None:
    org = make_org("Acme")
    add_user(org, "owner", "olivia@acme.example", "Olivia Owner")
    course = make_content(85, title="Leadership")
    org.buy(100)
    org.assign(course, [hire(org, "Ada Lovelace")])  # 15 of 100 free: fine at 0 credits
    alice = browse()
    alice.sign_in(admin_of(org))
    alice.open("/settings/billing")
    page = alice.page
    expect(page.get_by_test_id("alerts-active")).to_contain_text("No active alerts.")
    expect(page.get_by_test_id("recipients-state")).to_contain_text("Not chosen yet")

    # Who: Alice and the operations mailbox, not the billing email nor Olivia.
    recipients = page.get_by_test_id("alert-recipients")
    recipients.get_by_test_id("recipient-billing-email").uncheck()
    recipients.get_by_label("Olivia Owner (olivia@acme.example, owner)").uncheck()
    expect(recipients.get_by_label("Alice Admin (alice@acme.example, admin)")).to_be_checked()
    recipients.get_by_test_id("recipient-emails").fill("not an address")
    recipients.get_by_test_id("recipients-save").click()
    expect(alice.message()).to_contain_text("'not' is not a valid email address")
    expect(page.get_by_test_id("recipients-error")).to_have_attribute(
        "data-code", "invalid_recipients"
    )
    answered(alice, 422)
    recipients.get_by_test_id("recipient-emails").fill("Ops@acme.example")
    recipients.get_by_test_id("recipient-billing-email").uncheck()
    recipients.get_by_label("Olivia Owner (olivia@acme.example, owner)").uncheck()
    recipients.get_by_test_id("recipients-save").click()
    expect(alice.message()).to_have_text("Alert recipients saved.")
    expect(page.get_by_test_id("recipients-state")).to_have_text("Chosen recipients.")
    expect(page.get_by_test_id("recipient-emails")).to_have_value("ops@acme.example")

    # Warn at 20% of the credits held: 15 free of 100 is below, so the alert opens now.
    threshold = page.get_by_test_id("alert-threshold")
    threshold.get_by_test_id("threshold-kind-percent").check()
    threshold.get_by_test_id("threshold-value").fill("20")
    page.locator("form:has([data-testid=alert-threshold]) > button").click()
    expect(alice.message()).to_contain_text("alert threshold saved")
    expect(page.get_by_test_id("threshold-kind-percent")).to_be_checked()
    expect(page.get_by_test_id("threshold-value")).to_have_value("20")
    active = page.get_by_test_id("alerts-active")
    expect(active).to_contain_text("Balance at risk")
    expect(active).to_contain_text(
        "85 credits assigned, 100 credits held: 15 available, at or below the threshold of "
        "20 credits (20% of credits held)"
    )
    expect(alice.icon("total")).to_have_attribute("data-at-risk", "true")
    alice.shot("settings-alerts")

    # The email goes to the people chosen, and no one else.
    dispatch_events()
    email = EmailMessage.objects.get(org_id=ids.decode("org", org.id), kind="balance.at_risk")
    assert email.recipients == ["alice@acme.example", "ops@acme.example"]

    # Buying enough clears it: 150 held, 65 free, above 30. It moves to the past.
    org.buy(50)
    alice.open("/settings/billing")
    expect(page.get_by_test_id("alerts-active")).to_contain_text("No active alerts.")
    past = page.get_by_test_id("alerts-past")
    expect(past).to_contain_text("Balance at risk")
    expect(past).to_contain_text("cleared")
    expect(past).to_contain_text(
        "Cleared with 65 available (85 credits assigned, 150 credits held)"
    )
    expect(alice.icon("total")).to_have_attribute("data-at-risk", "false")
