"""The account menu in a real browser: a learner opens the menu from the keyboard, changes
their password on the Password page without touching the mouse, lands on their profile,
signs out and signs back in with the new password (and not with the old one).

Same live server, Chromium and helpers as tests/web/test_browser.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from tests.conftest import OrgHandle
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    PASSWORD,
    Visitor,
    _flushable,
    _quick_passwords,
    add_user,
    browse,
    chromium,
)

with contextlib.suppress(ImportError):  # without it, the browser marker skips, saying why
    from playwright.sync_api import expect

NEW_PASSWORD = "Amber-Kettle-Meadow-58"


@pytest.mark.browser
def test_a_learner_changes_their_password_from_the_account_menu_with_the_keyboard(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture)
    org: OrgHandle,
) -> None:
    add_user(org, "learner", "lea@acme.example", "Lea Learner")
    lea = browse()
    lea.sign_in("lea@acme.example")
    lea.at("/learn")
    page = lea.page

    # The menu opens from the keyboard and offers Profile, Password and Sign out.
    menu = page.get_by_test_id("account-menu")
    menu.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("open", "")
    expect(page.get_by_test_id("account-profile")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("account-profile")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("account-password")).to_be_focused()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    lea.at("/settings/password")
    lea.assert_clean()

    # The current password has the focus; the new one twice, then Enter submits.
    expect(page.get_by_label("Current password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    expect(page.get_by_label("New password", exact=True)).to_be_focused()
    page.keyboard.type(NEW_PASSWORD)
    page.keyboard.press("Tab")
    expect(page.get_by_label("New password again")).to_be_focused()
    page.keyboard.type(NEW_PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")

    # Still signed in, on the profile, which says so.
    lea.at("/settings/profile")
    expect(lea.message()).to_have_text("Your password is changed.")
    expect(page.get_by_test_id("profile-name")).to_have_text("Lea Learner")
    expect(page.get_by_test_id("profile-email")).to_have_text("lea@acme.example")
    expect(page.get_by_test_id("profile-role")).to_have_text("Learner")
    expect(page.get_by_test_id("profile-org")).to_have_text("Acme")
    lea.shot("profile")

    # Signed out, the old password no longer signs in and the new one does.
    menu.locator("summary").click()
    with page.expect_navigation():
        menu.get_by_role("button", name="Sign out").click()
    lea.sign_in("lea@acme.example", PASSWORD)
    lea.at("/login")
    lea.sign_in("lea@acme.example", NEW_PASSWORD)
    lea.at("/learn")
    expect(page.get_by_test_id("account-menu").locator("summary")).to_have_text("Lea Learner")
    lea.assert_clean()
