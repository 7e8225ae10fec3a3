"""The dashboard in a real browser: Playwright driving the system's Chromium.

Each test is one user story, told against the live server (pytest-django's ``live_server``,
on a transactional database): the data is made through the HTTP API in-process, the people
sign in through the real forms, and every page visited must log no console error (which also
catches content-security-policy violations). Each step that passes saves a full-page
screenshot into docs/screenshots/ for the README.

Playwright never downloads a browser here: it launches Debian's Chromium (conftest.CHROMIUM).
Without it the ``browser`` marker skips these tests with the reason (and fails them in CI).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM, OrgHandle, ok

# Playwright's sync API keeps an event loop in this thread; Django's ORM (used in-process by
# the API helpers) refuses to run beside one unless told it is safe, which it is here.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

with contextlib.suppress(ImportError):  # without it, the browser marker skips, saying why
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "Quiet-Harbour-Lantern-42"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MISSING_FAVICON: set[str] = set()


def pk(public_id: str) -> int:
    """The row key behind a public id (``cnt_7`` -> 7), as the pages use it."""
    return int(public_id.rsplit("_", 1)[1])


def add_user(org: OrgHandle, role: str, email: str, name: str) -> None:
    body = {"email": email, "name": name, "role": role, "password": PASSWORD}
    ok(org.operator.post(org.path("/users"), body), 201)


def hire(org: OrgHandle, name: str) -> str:
    """An employee with a plain address (ada@acme.example), so screenshots stay the same."""
    return org.employee(name, f"{name.split()[0].lower()}@acme.example")


def admin_of(org: OrgHandle, email: str = "alice@acme.example") -> str:
    add_user(org, "admin", email, "Alice Admin")
    return email


@dataclass
class Visitor:
    """One person in one browser context: their page, and what went wrong on it."""

    page: Page
    base: str
    problems: list[str]

    def open(self, path: str) -> None:
        self.page.goto(self.base + path)
        self.page.wait_for_load_state("load")
        self.assert_clean()

    def at(self, path: str) -> None:
        """The browser is on this path (query strings aside)."""
        expect(self.page).to_have_url(re.compile(re.escape(self.base + path) + r"(\?.*)?$"))

    def on_receipt(self, said: str | None = None) -> None:
        """After a purchase: back on the billing page with the success message (saying
        ``said``), whose link opens the receipt invoice's page. The charge goes through the
        payment provider (a local server in these tests), so the wait is longer than a
        page's: on a loaded machine it has taken more than the default five seconds."""
        expect(self.page).to_have_url(
            re.compile(re.escape(self.base + "/settings/billing") + r"(\?.*)?$"), timeout=30_000
        )
        success = self.page.get_by_test_id("buy-success")
        expect(success).to_be_visible()
        if said is not None:
            expect(success).to_contain_text(said)
        success.get_by_role("link").click()
        expect(self.page).to_have_url(
            re.compile(re.escape(self.base) + r"/settings/billing/invoices/\d+$")
        )

    def assert_clean(self) -> None:
        assert self.problems == [], "\n".join(self.problems)

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        """The email first, then (for an address without single sign-on) the password."""
        self.open("/login")
        self.page.get_by_label("Email").fill(email)
        with self.page.expect_navigation():
            self.page.get_by_test_id("login-continue").click()
        self.page.get_by_label("Password").fill(password)
        with self.page.expect_navigation():  # the POST answers, right or wrong
            self.page.get_by_test_id("login-submit").click()

    def icon(self, name: str) -> Locator:
        return self.page.get_by_test_id(f"balance-{name}")

    def expect_balance(self, credits: int, assigned: int) -> None:
        expect(self.icon("credits")).to_have_text(str(credits))
        expect(self.icon("assigned")).to_have_text(str(assigned))
        expect(self.icon("available")).to_have_text(str(credits - assigned))

    def message(self) -> Locator:
        return self.page.locator("ul.messages li")

    def shot(self, name: str) -> None:
        """Screenshot of the page as it is now (called only once the step has passed)."""
        self.assert_clean()
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# --- SQLite: let the transactional teardown empty the append-only tables ------------------------
#
# live_server needs a transactional database, which Django empties after each test with
# DELETE; on SQLite the append-only triggers (learncredits.db.append_only) refuse that, and
# every test would error at teardown. (PostgreSQL empties with TRUNCATE, which fires no row
# trigger.) So, on SQLite only, the DELETE triggers are dropped just before the flush and put
# back (the very same SQL) before the next test and after the module.


@pytest.fixture(autouse=True)
def _flushable(flushable: None) -> None:
    """Every test here runs a live server (see `flushable` in conftest)."""


@pytest.fixture(autouse=True)
def _quick_passwords(settings: Any) -> None:
    """Argon2 is for real passwords; here it would only slow every sign-in (the live server
    runs in this process, so it uses these settings too)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browse(chromium: Browser, live_server: Any) -> Iterator[Callable[..., Visitor]]:
    """A fresh browser context per person; every console error and page error is kept."""
    contexts = []

    def open_context(viewport: dict[str, int] | None = None) -> Visitor:
        context = chromium.new_context(viewport=viewport or DESKTOP, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        problems: list[str] = []

        def on_console(message: Any) -> None:
            if message.type != "error":
                return
            if str(message.location.get("url", "")).endswith("/favicon.ico"):
                # Chromium asks every site for /favicon.ico; the dashboard has none (a 404 the
                # browser logs). Kept apart from real errors: see MISSING_FAVICON.
                MISSING_FAVICON.add(page.url)
                return
            problems.append(f"console error on {page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error on {page.url}: {error}"))
        return Visitor(page=page, base=live_server.url, problems=problems)

    yield open_context
    for context in contexts:
        context.close()


# --- 1. signing in ----------------------------------------------------------------------------


@pytest.mark.browser
def test_an_admin_signs_in_to_the_marketplace_and_a_learner_to_their_own_page(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    org = make_org("Acme Training")
    make_content(3, title="Data protection essentials")
    make_content(1, title="Fire safety")
    make_content(0, title="Welcome to Acme")
    org.buy(120)
    email = admin_of(org)
    add_user(org, "learner", "lee@acme.example", "Lee Learner")

    alice = browse()
    alice.open("/login")
    expect(alice.page.get_by_role("heading", name="Sign in")).to_be_visible()
    alice.shot("login")

    # A wrong password is refused with a message, and she stays on the sign-in page.
    alice.sign_in(email, "not-my-password")
    expect(alice.page.get_by_role("alert")).to_contain_text("did not match")
    alice.at("/login")

    alice.sign_in(email)
    alice.at("/")
    expect(alice.page.get_by_role("heading", name="Marketplace")).to_be_visible()
    alice.expect_balance(credits=120, assigned=0)
    expect(alice.icon("total")).to_have_attribute("data-at-risk", "false")
    catalog = alice.page.locator("ul.catalog li")
    expect(catalog).to_have_count(3)
    expect(catalog.filter(has_text="Data protection essentials")).to_contain_text(
        "Premium · 3 credits"
    )
    expect(catalog.filter(has_text="Welcome to Acme")).to_contain_text("Free")
    alice.shot("marketplace")

    # A learner signing in lands on their own page, with no balance and no admin pages.
    lee = browse()
    lee.sign_in("lee@acme.example")
    lee.at("/learn")
    expect(lee.page.get_by_role("heading", name="My learning")).to_be_visible()
    expect(lee.icon("credits")).to_have_count(0)
    expect(lee.page.get_by_role("link", name="Buy credits")).to_have_count(0)
    lee.open("/buy")
    lee.at("/learn")
    alice.assert_clean()
    lee.assert_clean()


# --- 2. buying with the live quote ------------------------------------------------------------


@pytest.mark.browser
def test_an_admin_buys_at_the_better_quantity_the_live_quote_suggests(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    org = make_org("Acme")
    make_content(2, title="Data protection essentials")
    alice = browse()
    alice.sign_in(admin_of(org))
    alice.expect_balance(credits=0, assigned=0)

    alice.open("/buy")
    page = alice.page
    quantity = page.get_by_test_id("quote-quantity")
    quantity.fill("95")
    expect(page.get_by_test_id("quote-unit-price")).to_have_text("$9.00")
    expect(page.get_by_test_id("quote-total")).to_have_text("$855.00")
    expect(page.get_by_test_id("quote-savings")).to_have_text("$95.00")
    better = page.get_by_test_id("quote-better")
    expect(better).to_contain_text("Buy 100 for less: $850.00")
    alice.shot("buy")

    # One click takes the better quantity, and the quote follows.
    better.get_by_role("button", name="Take 100").click()
    expect(quantity).to_have_value("100")
    expect(page.get_by_test_id("quote-unit-price")).to_have_text("$8.50")
    expect(page.get_by_test_id("quote-total")).to_have_text("$850.00")
    expect(page.get_by_test_id("quote-savings")).to_have_text("$150.00")
    expect(better).to_have_count(0)

    page.get_by_test_id("buy-submit").click()
    expect(page.get_by_test_id("buy-success")).to_contain_text("Bought 100 credits for $850.00.")
    alice.expect_balance(credits=100, assigned=0)  # the new balance, in the layout
    alice.shot("bought")
    alice.on_receipt()
    receipt = ok(org.api.get(org.path("/invoices")))["data"][0]
    assert receipt["kind"] == "purchase" and receipt["total_cents"] == 85_000
    alice.at(f"/settings/billing/invoices/{pk(receipt['id'])}")
    expect(page.locator("body")).to_contain_text(receipt["number"])
    expect(page.locator("body")).to_contain_text("$850.00")
    alice.shot("invoice")

    alice.open("/")
    alice.expect_balance(credits=100, assigned=0)
    assert org.balance()["credits"] == 100
    alice.assert_clean()


# --- 3. assigning with the preview ------------------------------------------------------------


@pytest.mark.browser
def test_an_admin_assigns_a_course_to_several_employees_after_seeing_the_preview(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    org = make_org("Acme")
    course = make_content(2, title="Fire safety")
    make_content(0, title="Welcome to Acme")
    for name in ("Ada Lovelace", "Grace Hopper", "Katherine Johnson", "Alan Turing"):
        hire(org, name)
    org.buy(5)
    alice = browse()
    alice.sign_in(admin_of(org))
    alice.open("/assign")
    page = alice.page

    page.get_by_label("Content", exact=True).select_option(str(pk(course)))
    page.get_by_role("checkbox", name="Ada Lovelace").check()
    page.get_by_role("checkbox", name="Grace Hopper").check()
    preview = page.get_by_test_id("assign-preview")
    expect(preview.get_by_test_id("preview-count")).to_have_text("2")
    expect(preview.get_by_test_id("preview-reserved")).to_have_text("4")
    expect(preview.get_by_test_id("preview-available-after")).to_have_text("1")
    expect(preview.get_by_test_id("preview-billed")).to_have_text("0 credits ($0.00)")

    # Select all: four employees now, more than the org holds; warned, not blocked.
    page.get_by_label("Select all shown").check()
    expect(page.locator("input.js-employee:checked")).to_have_count(4)
    expect(preview.get_by_test_id("preview-count")).to_have_text("4")
    expect(preview.get_by_test_id("preview-reserved")).to_have_text("8")
    expect(preview.get_by_test_id("preview-available-after")).to_have_text("-3")
    expect(preview.get_by_test_id("preview-billed")).to_have_text("3 credits ($30.00)")
    expect(preview).to_contain_text("This assigns more than you hold")
    alice.shot("assign")

    page.get_by_test_id("assign-submit").click()
    alice.at("/assignments")
    expect(alice.message()).to_contain_text("Assigned Fire safety to 4 employee(s).")
    rows = page.get_by_test_id("assignment-row")
    expect(rows).to_have_count(4)
    expect(page.locator("[data-testid=assignment-row][data-status=assigned]")).to_have_count(4)
    alice.expect_balance(credits=5, assigned=8)
    balance = org.balance()
    assert (balance["credits"], balance["assigned"], balance["available"]) == (5, 8, -3)
    alice.assert_clean()


# --- 4. the red Total Balance icon ------------------------------------------------------------


def background(locator: Locator) -> str:
    return str(locator.evaluate("element => getComputedStyle(element).backgroundColor"))


@pytest.mark.browser
def test_the_total_balance_turns_red_when_assigned_reaches_credits_and_clears_on_buying(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    org = make_org("Acme")
    course = make_content(1, title="Fire safety")
    ada = hire(org, "Ada Lovelace")
    hire(org, "Grace Hopper")
    org.buy(2)
    org.assign(course, [ada])
    alice = browse()
    alice.sign_in(admin_of(org))
    total = alice.icon("total")
    expect(total).to_have_attribute("data-at-risk", "false")
    assert background(total) == "rgb(255, 255, 255)"

    # Assigning the second credit makes assigned reach credits: at risk, and red.
    alice.open(f"/assign?content={pk(course)}")
    alice.page.get_by_role("checkbox", name="Grace Hopper").check()
    expect(alice.page.get_by_test_id("preview-available-after")).to_have_text("0")
    alice.page.get_by_test_id("assign-submit").click()
    alice.at("/assignments")
    alice.open("/")
    expect(total).to_have_attribute("data-at-risk", "true")
    assert background(total) == "rgb(198, 40, 40)"
    alice.expect_balance(credits=2, assigned=2)
    assert org.balance()["at_risk"] is True

    # The reason shows on focus (and hover), with what to buy.
    reason = total.get_by_role("note")
    expect(reason).to_be_hidden()
    total.focus()
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("At risk: 0 available with 2 assigned.")
    expect(reason).to_contain_text("Buy 1 for $10.00.")
    alice.shot("marketplace-at-risk")

    # The icon links to buying; buying credits clears it.
    total.click()
    alice.at("/buy")
    alice.page.get_by_test_id("quote-quantity").fill("10")
    expect(alice.page.get_by_test_id("quote-total")).to_have_text("$100.00")
    alice.page.get_by_test_id("buy-submit").click()
    alice.on_receipt()
    alice.open("/")
    expect(total).to_have_attribute("data-at-risk", "false")
    assert background(total) == "rgb(255, 255, 255)"
    expect(total.get_by_role("note")).to_have_count(0)
    alice.expect_balance(credits=12, assigned=2)
    assert org.balance()["at_risk"] is False
    alice.assert_clean()


# --- 5. a learner starts ----------------------------------------------------------------------


@pytest.mark.browser
def test_a_learner_starts_an_assignment_and_the_admin_sees_the_credits_spent(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    org = make_org("Acme")
    course = make_content(2, title="Anti-bribery")
    welcome = make_content(0, title="Welcome to Acme")
    lee = org.employee("Lee Learner", "lee@acme.example")
    add_user(org, "learner", "lee@acme.example", "Lee Learner")
    org.buy(5)
    assignment = org.assign(course, [lee])["data"][0]["id"]
    org.assign(welcome, [lee])

    alice = browse()
    alice.sign_in(admin_of(org))
    alice.expect_balance(credits=5, assigned=2)

    learner = browse()
    learner.sign_in("lee@acme.example")
    learner.at("/learn")
    page = learner.page
    expect(page.get_by_test_id("start-button")).to_have_count(2)
    start = page.locator(f'[data-testid=start-button][data-assignment-id="{assignment}"]')
    expect(start).to_have_count(1)
    learner.shot("learn")

    start.click()
    learner.at("/learn")
    expect(learner.message()).to_contain_text("Started. Enjoy the course!")
    expect(start).to_have_count(0)
    expect(page.get_by_test_id("start-button")).to_have_count(1)  # the free one is left
    expect(page.locator("tr", has_text="Anti-bribery")).to_contain_text("started")

    # The admin's balance on reload: the 2 credits are spent, no longer reserved.
    alice.page.reload()
    alice.expect_balance(credits=3, assigned=0)
    assert ok(org.api.get(org.path(f"/assignments/{assignment}")))["status"] == "started"
    alice.assert_clean()
    learner.assert_clean()


# --- 6. reassign, cancel, deactivate ----------------------------------------------------------


def rows_of(page: Page, employee: str) -> Locator:
    """The assignment rows of one employee (by the first cell: other cells list names too)."""
    first_cell = page.locator("td:first-child", has_text=employee)
    return page.get_by_test_id("assignment-row").filter(has=first_cell)


@pytest.mark.browser
def test_an_admin_reassigns_cancels_and_deactivates_an_employee_releasing_reservations(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    org = make_org("Acme")
    ethics = make_content(1, title="Ethics")
    security = make_content(2, title="Security basics")
    ada = hire(org, "Ada Lovelace")
    grace = hire(org, "Grace Hopper")
    hire(org, "Linus Torvalds")
    org.buy(10)
    org.assign(ethics, [ada, grace])
    org.assign(security, [ada])
    alice = browse()
    alice.sign_in(admin_of(org))
    alice.open("/assignments")
    page = alice.page
    alice.expect_balance(credits=10, assigned=4)
    expect(page.get_by_test_id("assignment-row")).to_have_count(3)
    alice.shot("assignments")

    # Reassign Grace's Ethics to Linus: the reservation moves, the balance does not change.
    row = rows_of(page, "Grace Hopper")
    expect(row).to_have_count(1)
    moved_id = row.get_attribute("data-assignment-id")
    row.get_by_label("Reassign to").select_option(label="Linus Torvalds")
    row.get_by_test_id("reassign-button").click()
    alice.at("/assignments")
    expect(alice.message()).to_contain_text("Assignment moved.")
    moved = page.locator(f"[data-testid=assignment-row][data-assignment-id='{moved_id}']")
    expect(moved.locator("td").first).to_have_text("Linus Torvalds")
    expect(rows_of(page, "Grace Hopper")).to_have_count(0)
    alice.expect_balance(credits=10, assigned=4)

    # Cancel it: its credit is free again.
    moved.get_by_test_id("cancel-button").click()
    expect(alice.message()).to_contain_text("Assignment cancelled")
    expect(moved).to_have_attribute("data-status", "cancelled")
    alice.expect_balance(credits=10, assigned=3)

    # Deactivate Ada: the confirmation lists the reservations it releases first.
    alice.open("/employees")
    alice.shot("employees")
    page.get_by_test_id("employee-row").filter(has_text="Ada Lovelace").get_by_test_id(
        "deactivate-link"
    ).click()
    alice.at(f"/employees/{pk(ada)}/deactivate")
    expect(page.get_by_test_id("release-count")).to_have_text("3")
    expect(page.locator("main li")).to_have_text(["Ethics (1)", "Security basics (2)"])
    alice.shot("deactivate")
    page.get_by_test_id("deactivate-confirm").click()
    alice.at("/employees")
    expect(alice.message()).to_contain_text("Ada Lovelace deactivated")
    expect(page.get_by_test_id("employee-row").filter(has_text="Ada Lovelace")).to_contain_text(
        "deactivated"
    )
    alice.expect_balance(credits=10, assigned=0)
    assert org.balance()["assigned"] == 0
    alice.assert_clean()


# --- 7. downloads -----------------------------------------------------------------------------


@pytest.mark.browser
def test_an_admin_downloads_the_ledger_as_csv_and_an_invoice_as_pdf(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    from pypdf import PdfReader

    from learncredits.credits.ledger_export import LEDGER_FIELDS

    org = make_org("Acme")
    course = make_content(2, title="Fire safety")
    ada, grace = hire(org, "Ada Lovelace"), hire(org, "Grace Hopper")
    org.buy(60)
    org.buy(40)
    first = org.assign(course, [ada, grace])["data"][0]["id"]
    ok(org.act(first, "start"))
    entries = ok(org.api.get(org.path("/ledger"), limit=500))["data"]
    invoices = ok(org.api.get(org.path("/invoices")))["data"]
    assert len(invoices) == 2

    alice = browse()
    alice.sign_in(admin_of(org))
    alice.open("/settings/billing")
    page = alice.page
    expect(page.get_by_role("heading", name="Settings > Billing")).to_be_visible()
    expect(page.get_by_test_id("usage-chart")).to_be_visible()
    alice.shot("billing")

    with page.expect_download() as csv_download:
        page.get_by_test_id("ledger-csv").click()
    download = csv_download.value
    assert download.suggested_filename == f"ledger-org_{pk(org.id)}.csv"
    raw = Path(download.path()).read_bytes()
    text = raw.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(LEDGER_FIELDS)
    assert len(text.splitlines()) == 1 + len(entries) == 6  # 2 purchases, 2 reserves, 1 consume
    assert sorted(row[0] for row in rows[1:]) == sorted(e["id"] for e in entries)
    # The same bytes as the API's CSV: the page and the API agree to the credit.
    assert raw == org.api.get(org.path("/ledger"), format="csv").raw

    newest = invoices[0]
    with page.expect_download() as pdf_download:
        page.get_by_test_id("invoice-pdf").first.click()
    download = pdf_download.value
    assert download.suggested_filename == f"{newest['number']}.pdf"
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"%PDF")
    text = "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
    assert newest["number"] in text
    assert "$400.00" in text  # 40 credits, below the first volume tier: $10.00 each
    alice.assert_clean()


# --- 8. the operator console ------------------------------------------------------------------


@pytest.mark.browser
def test_an_operator_adjusts_credits_with_a_required_reason_in_the_console(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle]
) -> None:
    from django.contrib.auth import get_user_model

    org = make_org("Acme")
    email = admin_of(org)
    get_user_model().objects.create_superuser("ops", "ops@learncredits.example", PASSWORD)

    ops = browse()
    ops.open("/admin/login/?next=/admin/")
    page = ops.page
    page.locator("#id_username").fill("ops")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    ops.at("/admin/")
    ops.open(f"/admin/tenancy/organization/{pk(org.id)}/change/")
    page.get_by_role("link", name="Adjust credits").click()
    adjust_path = f"/admin/tenancy/organization/{pk(org.id)}/adjust/"
    ops.at(adjust_path)
    # (.first: the console template prints this title twice, see the report)
    expect(page.get_by_role("heading", name="Adjust credits of Acme").first).to_be_visible()

    # No reason: the browser will not send the form, and a blank one the server refuses.
    credits, reason = page.locator("#id_credits"), page.locator("#id_reason")
    credits.fill("25")
    page.get_by_test_id("adjust-submit").click()
    ops.at(adjust_path)
    assert reason.evaluate("field => field.validity.valueMissing") is True
    reason.fill("   ")
    page.get_by_test_id("adjust-submit").click()
    ops.at(adjust_path)
    expect(page.locator(".errorlist")).to_contain_text("This field is required.")
    assert org.balance()["credits"] == 0

    ops.open(adjust_path)
    credits.fill("25")
    reason.fill("Goodwill after the March outage")
    ops.shot("admin-adjust")
    page.get_by_test_id("adjust-submit").click()
    ops.at(f"/admin/tenancy/organization/{pk(org.id)}/change/")
    expect(page.locator(".messagelist")).to_contain_text("Adjusted Acme by 25 credits.")
    assert org.balance()["credits"] == 25

    alice = browse()
    alice.sign_in(email)
    alice.expect_balance(credits=25, assigned=0)
    alice.open("/settings/billing")
    entry = alice.page.locator("table.data tr", has_text="Goodwill after the March outage")
    expect(entry).to_contain_text("operator:ops")
    ops.assert_clean()
    alice.assert_clean()


# --- dates in the org's time zone -------------------------------------------------------------


@pytest.mark.browser
def test_billing_and_assignments_show_times_in_the_orgs_time_zone(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    """Dates are shown in the org's time zone; the ledger's header names that zone."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    zone = "Pacific/Auckland"  # 12 or 13 hours from UTC: the hour always differs
    org = make_org("Kiwi Learning", timezone=zone)
    course = make_content(1, title="Fire safety")
    org.buy(3)
    started = org.assign(course, [hire(org, "Ada Lovelace")])["data"][0]["id"]
    started_at = ok(org.act(started, "start"))["started_at"]
    newest = ok(org.api.get(org.path("/ledger")))["data"][0]

    def local(stamp: str) -> str:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")

    alice = browse()
    alice.sign_in(admin_of(org))
    alice.open("/settings/billing")
    ledger = alice.page.locator("table.data", has_text="Credits after")
    expect(ledger.locator("th").first).to_have_text(f"When ({zone})")
    expect(ledger.locator("tbody tr").first.locator("td").first).to_have_text(
        local(newest["created_at"])
    )
    alice.open("/assignments")
    started_cell = alice.page.get_by_test_id("assignment-row").get_by_test_id("started-at")
    expect(started_cell.locator("time")).to_have_text(local(started_at))
    alice.assert_clean()


# --- 9. on a phone ----------------------------------------------------------------------------


def phone_admin(browse: Callable[..., Visitor], make_org: Any, make_content: Any) -> Visitor:
    """An admin signed in on a phone, in an org whose names are long, as real ones are."""
    org = make_org("Acme Corporation International")
    course = make_content(3, title="Data protection essentials for customer-facing staff")
    make_content(0, title="Welcome to Acme")
    people = [hire(org, name) for name in ("Ada Lovelace", "Grace Hopper", "Alan Turing")]
    org.buy(120)
    started = org.assign(course, people)["data"][0]["id"]
    ok(org.act(started, "start"))
    phone = browse(PHONE)
    phone.sign_in(admin_of(org))
    return phone


def sideways_overflow(phone: Visitor, path: str) -> str | None:
    """None if the page fits the phone's width, else what sticks out."""
    phone.open(path)
    expect(phone.icon("credits")).to_have_text("117")
    width, inner, culprits = phone.page.evaluate(
        """() => {
            const inner = window.innerWidth, culprits = [];
            for (const element of document.querySelectorAll("body *")) {
                const box = element.getBoundingClientRect();
                if (box.width === 0 || box.right <= inner + 1) continue;
                let parent = element.parentElement, scrolls = false;
                while (parent && !scrolls) {
                    scrolls = getComputedStyle(parent).overflowX !== "visible";
                    parent = parent.parentElement;
                }
                if (!scrolls) culprits.push(`${element.tagName.toLowerCase()}`
                    + `${element.name ? "[name=" + element.name + "]" : ""}`
                    + ` ${Math.round(box.width)}px wide`);
            }
            return [document.documentElement.scrollWidth, inner, culprits.slice(0, 5)];
        }"""
    )
    if width <= inner + 1:
        return None
    return f"{path}: {width}px of content in a {inner}px window ({', '.join(culprits)})"


@pytest.mark.browser
def test_the_marketplace_and_billing_are_readable_on_a_phone(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    phone = phone_admin(browse, make_org, make_content)
    for path, name in [("/", "phone-marketplace"), ("/settings/billing", "phone-billing")]:
        assert sideways_overflow(phone, path) is None
        phone.shot(name)
    phone.assert_clean()


@pytest.mark.browser
def test_the_other_admin_pages_fit_a_phone_too(
    browse: Callable[..., Visitor], make_org: Callable[..., OrgHandle], make_content: Any
) -> None:
    phone = phone_admin(browse, make_org, make_content)
    paths = ["/buy", "/assign", "/assignments", "/employees"]
    overflowing = [problem for path in paths if (problem := sideways_overflow(phone, path))]
    assert overflowing == [], "\n".join(overflowing)
    phone.assert_clean()
