"""Every dashboard page checked by axe-core, at a desktop's and a phone's width.

axe-core (the npm package, tests/axe/: ``npm ci`` from the committed package-lock.json the
first time, as tests/oidc does for its provider) is read from disk and run inside each page
with ``page.evaluate``: evaluating through the DevTools protocol is not subject to the site's
Content-Security-Policy, so the pages are checked exactly as served, CSP on (no
``bypass_csp``), and ``add_script_tag`` (an inline script the CSP would refuse) is not needed.

A violation of impact "serious" or "critical" fails the test, listed with its rule, impact
and the nodes it found. The pages to visit are checked against the access table
(``tenancy/access.py``): each dashboard URL name is either visited here or named in
``NOT_A_PAGE`` with the reason (a POST, a download, a fragment of another page, a redirect),
so a new page without an accessibility check fails ``test_every_dashboard_page_is_checked``.

At a phone's width every page must also fit the window (no sideways scrolling of the page)
and every table's last column must be visible or reachable by scrolling the table's own
frame (which is then focusable and named). A page that passes is saved to docs/screenshots/
as ``<page>.png`` and ``phone-<page>.png``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from learncredits.tenancy import access
from tests.conftest import OrgHandle, ok, skip_unless_required
from tests.npm import npm_ci
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    DESKTOP,
    PASSWORD,
    PHONE,
    SHOTS,
    Visitor,
    _flushable,
    _quick_passwords,
    add_user,
    browse,
    chromium,
    hire,
    pk,
)

with contextlib.suppress(ImportError):  # without it, the browser marker skips, saying why
    from playwright.sync_api import Page, expect

AXE_DIR = Path(__file__).resolve().parents[1] / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("serious", "critical")

# --- which pages ------------------------------------------------------------------------------

# Dashboard URL names that are not pages a person looks at, and why; every other name of the
# access table must have a check below.
NOT_A_PAGE: dict[str, str] = {
    "web:sso_start": "a redirect to the org's identity provider",
    "web:logout": "a POST (the account menu's button)",
    "web:buy_quote": "a fragment of /buy, checked there (the live quote)",
    "web:assign_preview": "a fragment of /assign, checked there (the preview)",
    "web:ledger_csv": "a CSV download",
    "web:audit_csv": "a CSV download",
    "web:invoice_pdf": "a PDF download",
    "web:assignment_action": "a POST (cancel, reassign)",
    "web:employee_reactivate": "a POST",
    "web:department_edit": "a POST",
    "web:alert_recipients": "a POST (the billing page's alert recipients form, checked there)",
}


@dataclass(frozen=True)
class Check:
    """One page to check: its screenshot name, the URL name it stands for, who opens it and
    where (``{invoice}``, ``{employee}``, ``{intent}`` are filled from the world), the status
    it answers, and what to do on it first (so a fragment it loads is checked too)."""

    name: str
    route: str | None  # None: an error page, which no URL name stands for
    who: str
    path: str
    status: int = 200
    ready: Callable[[Page, World], None] | None = None


@dataclass
class World:
    """The organizations the pages show, and the ids their paths need."""

    org: OrgHandle
    course: str
    invoice: int
    employee: int
    intent: str


def preview_shown(page: Page, world: World) -> None:
    """The assign page with content and two people chosen, so the preview is checked too."""
    page.get_by_label("Content", exact=True).select_option(str(pk(world.course)))
    page.get_by_role("checkbox", name="Ada Lovelace").check()
    page.get_by_role("checkbox", name="Grace Hopper").check()
    expect(page.get_by_test_id("preview-count")).to_have_text("2")


def quote_shown(page: Page, world: World) -> None:
    """The buy page with a quantity whose quote suggests a better one."""
    page.get_by_test_id("quote-quantity").fill("95")
    expect(page.get_by_test_id("quote-better")).to_be_visible()


def at_risk_shown(page: Page, world: World) -> None:
    """The at-risk state: the red Total Balance with its reason (shown on focus) and the
    banner offering what clears it."""
    expect(page.get_by_test_id("alert-banner")).to_be_visible()
    total = page.get_by_test_id("balance-total")
    expect(total).to_have_attribute("data-at-risk", "true")
    total.focus()
    expect(total.get_by_role("note")).to_be_visible()


CHECKS: list[Check] = [
    Check("login", "web:login", "visitor", "/login"),
    Check("login-password", "web:login", "visitor", "/login?password=1"),
    Check("password-reset", "web:password_reset", "visitor", "/password-reset"),
    Check("password-reset-sent", "web:password_reset_done", "visitor", "/password-reset/sent"),
    Check("password-reset-link", "web:password_reset_confirm", "visitor", "/reset/MQ/bad-token/"),
    Check("password-reset-done", "web:password_reset_complete", "visitor", "/reset/done"),
    Check("sso-expired", "web:sso_callback", "visitor", "/login/sso/callback", status=400),
    Check("marketplace", "web:marketplace", "admin", "/"),
    Check("marketplace-at-risk", "web:marketplace", "risky", "/", ready=at_risk_shown),
    Check("buy", "web:buy", "admin", "/buy", ready=quote_shown),
    Check("buy-3ds", "web:test_authenticate", "risky", "/payments/test/authenticate/{intent}"),
    Check("assign", "web:assign", "admin", "/assign", ready=preview_shown),
    Check("assignments", "web:assignments", "admin", "/assignments"),
    Check("employees", "web:employees", "admin", "/employees"),
    Check("deactivate", "web:employee_deactivate", "admin", "/employees/{employee}/deactivate"),
    Check("departments", "web:departments", "admin", "/departments"),
    Check("team", "web:team", "admin", "/settings/team"),
    Check("billing", "web:billing", "admin", "/settings/billing"),
    Check("invoice", "web:invoice", "admin", "/settings/billing/invoices/{invoice}"),
    Check("payment-method", "web:payment_method", "admin", "/settings/payment"),
    Check("audit", "web:audit", "admin", "/settings/audit"),
    Check("sso-settings", "web:sso_settings", "admin", "/settings/sso"),
    Check("learn", "web:learn", "learner", "/learn"),
    Check("profile", "web:profile", "learner", "/settings/profile"),
    Check("password", "web:password", "learner", "/settings/password"),
    Check("not-found", None, "admin", "/no-such-page", status=404),
    Check("forbidden", None, "billing", "/assign", status=403),
]


def test_every_dashboard_page_is_checked() -> None:
    """Each page of the access table has an axe check here, or a reason it has none."""
    checked = {check.route for check in CHECKS if check.route}
    pages = {name for name in access.PAGES if name.startswith("web:")}
    assert not checked & set(NOT_A_PAGE), "both checked and excused"
    assert sorted(pages - checked - set(NOT_A_PAGE)) == [], "pages with no accessibility check"
    assert sorted((checked | set(NOT_A_PAGE)) - pages) == [], "names the access table lacks"


# --- axe-core ---------------------------------------------------------------------------------


def ensure_axe() -> str:
    """axe-core's source, ``npm ci``-installed into tests/axe the first time."""
    if not AXE_JS.exists():
        if shutil.which("npm") is None:
            skip_unless_required(
                "accessibility test SKIPPED: no npm on PATH (Debian package 'npm')",
                "LEARNCREDITS_REQUIRE_BROWSER",
            )
        npm_ci(AXE_DIR, AXE_JS)
    return AXE_JS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def axe_source() -> str:
    return ensure_axe()


def axe_violations(page: Page, source: str) -> list[str]:
    """The serious and critical violations axe finds on the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    found = page.evaluate(
        """async (impacts) => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations
                .filter((v) => impacts.includes(v.impact))
                .map((v) => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map((n) => n.target.join(" ") + ": "
                        + (n.failureSummary || "").replace(/\\s+/g, " ").slice(0, 300)),
                }));
        }""",
        list(FAILING_IMPACTS),
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']}\n      " + "\n      ".join(v["nodes"][:8])
        for v in found
    ]


# --- phones: the page fits, and every table's last column can be reached ----------------------

PHONE_FIT = """() => {
    const inner = window.innerWidth, problems = [];
    const width = document.documentElement.scrollWidth;
    if (width > inner) {
        const out = [...document.querySelectorAll("body *")]
            .filter((e) => e.getBoundingClientRect().right > inner + 0.5)
            .filter((e) => !e.closest(".table-frame"))
            .slice(-3).map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : ""));
        problems.push(`the page is ${width}px wide in a ${inner}px window (${out.join(", ")})`);
    }
    document.querySelectorAll("table").forEach((table, index) => {
        const row = (table.tHead && table.tHead.rows[0]) || table.rows[0];
        if (!row || !table.getClientRects().length) return;
        const cell = row.cells[row.cells.length - 1];
        const label = `table ${index + 1} (${(row.textContent || "").trim().slice(0, 40)})`;
        const inside = () => {
            const box = cell.getBoundingClientRect();
            return box.left >= -0.5 && box.right <= inner + 0.5;
        };
        if (inside()) return;
        let frame = table.parentElement;
        while (frame && frame !== document.body
               && !["auto", "scroll"].includes(getComputedStyle(frame).overflowX)) {
            frame = frame.parentElement;
        }
        if (!frame || frame === document.body) {
            problems.push(`${label}: its last column is cut off and no frame scrolls it`);
            return;
        }
        if (frame.tabIndex !== 0 || !(frame.getAttribute("aria-label")
                                      || frame.getAttribute("aria-labelledby"))) {
            problems.push(`${label}: its scrolling frame is not focusable and named`);
        }
        const before = frame.scrollLeft;
        frame.scrollLeft = frame.scrollWidth;
        const reached = inside();
        frame.scrollLeft = before;
        if (!reached) problems.push(`${label}: its last column is out of reach`);
    });
    return problems;
}"""


# --- the world the pages show -----------------------------------------------------------------


def build_world(make_org: Callable[..., OrgHandle], make_content: Any) -> World:
    """One org with a bit of everything, and a second one at risk with a card asking 3-D
    Secure (its payment waits on the test provider's stand-in page)."""
    org = make_org("Acme Corporation International", billing_email="billing@acme.example")
    course = make_content(3, title="Data protection essentials for customer-facing staff")
    fire = make_content(1, title="Fire safety")
    make_content(0, title="Welcome to Acme")
    sales = ok(org.api.post(org.path("/departments"), {"name": "Sales", "budget_credits": 40}), 201)
    people = [hire(org, n) for n in ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Lee Learner")]
    ok(org.api.patch(org.path(f"/employees/{people[0]}"), {"department_id": sales["id"]}))
    org.buy(120)
    org.buy(30)
    first = org.assign(fire, people[:3])["data"]
    ok(org.act(first[0]["id"], "start"))
    ok(org.act(first[1]["id"], "start"))
    ok(org.act(first[1]["id"], "complete"))
    org.assign(course, people[2:])
    add_user(org, "admin", "alice@acme.example", "Alice Admin")
    add_user(org, "billing", "bob@acme.example", "Bob Billing")
    add_user(org, "learner", "lee@acme.example", "Lee Learner")
    invoices = ok(org.api.get(org.path("/invoices")))["data"]

    risky = make_org("Beta Learning", billing_email="billing+3ds@beta.example")
    ok(risky.operator.post(risky.path("/adjustments"), {"credits": 2, "reason": "trial"}), 201)
    risky.assign(make_content(2, title="Ethics"), [hire(risky, "Rita Risk")])
    add_user(risky, "admin", "carol@beta.example", "Carol Admin")
    waiting = ok(risky.api.post(risky.path("/purchases"), {"quantity": 5}), 201)
    assert waiting["next_action"], waiting
    intent = urlsplit(waiting["next_action"]["url"]).path.rsplit("/", 1)[1]
    return World(
        org=org,
        course=course,
        invoice=pk(invoices[0]["id"]),
        employee=pk(people[2]),
        intent=intent,
    )


PEOPLE = {
    "admin": "alice@acme.example",
    "billing": "bob@acme.example",
    "learner": "lee@acme.example",
    "risky": "carol@beta.example",
    "visitor": None,
}


@dataclass
class Round:
    """One width's visit of every page: the people signed in, what was found."""

    browse: Callable[..., Visitor]
    viewport: dict[str, int]
    people: dict[str, Visitor] = field(default_factory=dict)

    def visitor(self, who: str) -> Visitor:
        if who not in self.people:
            visitor = self.browse(self.viewport)
            email = PEOPLE[who]
            if email:
                visitor.sign_in(email, PASSWORD)
            self.people[who] = visitor
        return self.people[who]


def expected_error(visitor: Visitor, status: int) -> None:
    """An error page answers its status on purpose; Chromium logs that as a console error,
    which is expected there only."""
    said = f"the server responded with a status of {status}"
    visitor.problems[:] = [p for p in visitor.problems if said not in p]


def check_pages(round_: Round, world: World, axe: str, phone: bool) -> None:
    failures: list[str] = []
    ids = {"invoice": world.invoice, "employee": world.employee, "intent": world.intent}
    for check in CHECKS:
        visitor = round_.visitor(check.who)
        page = visitor.page
        answer = page.goto(visitor.base + check.path.format(**ids))
        assert answer is not None and answer.status == check.status, (check.name, answer)
        page.wait_for_load_state("load")
        if check.status != 200:
            expected_error(visitor, check.status)
        if check.ready:
            check.ready(page, world)
        found = axe_violations(page, axe)
        if phone:
            found += [f"phone: {problem}" for problem in page.evaluate(PHONE_FIT)]
        found += visitor.problems
        visitor.problems.clear()
        if found:
            failures.append(f"{check.name} ({check.path}):\n  " + "\n  ".join(found))
            continue
        SHOTS.mkdir(parents=True, exist_ok=True)
        name = f"phone-{check.name}" if phone else check.name
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert failures == [], "\n".join(failures)


@pytest.mark.browser
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_every_page_passes_axe(
    width: str,
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    make_content: Any,
    axe_source: str,
) -> None:
    world = build_world(make_org, make_content)
    viewport = PHONE if width == "phone" else DESKTOP
    check_pages(Round(browse, viewport), world, axe_source, phone=width == "phone")


@pytest.mark.browser
def test_the_axe_check_finds_what_it_should(
    chromium: Any,  # noqa: F811  (the fixture imported above)
    axe_source: str,
) -> None:
    """The check itself: on a page with known faults, axe reports them as serious or
    critical (so a clean page above is clean, not an axe that did not run)."""
    context = chromium.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.set_content(
            '<html><body><main><h1>Faults</h1><img src="data:,">'
            '<p style="color:#ccc;background:#fff">faint</p>'
            '<label>Nameless</label><input id="x"></main></body></html>'
        )
        found = "\n".join(axe_violations(page, axe_source))
    finally:
        context.close()
    for rule in ("image-alt (critical)", "color-contrast (serious)", "html-has-lang (serious)"):
        assert rule in found, found


# --- the usage chart --------------------------------------------------------------------------

CHART_FACTS = """() => {
    const svg = document.querySelector("svg[data-testid=usage-chart]");
    const texts = [...svg.querySelectorAll("text")].map((text) => {
        const m = text.getScreenCTM();
        const size = parseFloat(getComputedStyle(text).fontSize);
        return {scaleX: m.a, scaleY: m.d, px: size * m.a, text: text.textContent};
    });
    const months = [...svg.querySelectorAll("g.month")].map((g) => ({
        month: g.dataset.month,
        values: [g.dataset.consumed, g.dataset.overage, g.dataset.held].map(Number),
        heights: [...g.querySelectorAll("rect")].map((r) => r.height.baseVal.value),
    }));
    const rows = [...document.querySelectorAll("[data-testid=usage-table] tbody tr")].map(
        (tr) => [...tr.cells].map((cell) => cell.textContent.trim()));
    return {
        aspect: svg.getAttribute("preserveAspectRatio"),
        width: svg.getBoundingClientRect().width,
        inner: window.innerWidth,
        texts, months, rows,
    };
}"""


@pytest.mark.browser
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_usage_chart_is_undistorted_legible_named_and_backed_by_its_numbers(
    width: str,
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    make_content: Any,
) -> None:
    from datetime import date

    org = make_org("Acme", billing_email="billing@acme.example")
    course = make_content(2, title="Fire safety")
    people = [hire(org, n) for n in ("Ada Lovelace", "Grace Hopper", "Alan Turing")]
    org.buy(3)
    for made in org.assign(course, people)["data"]:  # 6 credits started on 3: overage
        ok(org.act(made["id"], "start"))
    add_user(org, "admin", "alice@acme.example", "Alice Admin")
    alice = browse(PHONE if width == "phone" else DESKTOP)
    alice.sign_in("alice@acme.example")
    alice.open("/settings/billing")
    page = alice.page

    chart = page.get_by_role("img", name="Usage, last 12 months")
    expect(chart).to_have_attribute("data-testid", "usage-chart")
    described = chart.evaluate(
        "svg => svg.getAttribute('aria-describedby').split(' ')"
        ".map((id) => document.getElementById(id).textContent).join(' ')"
    )
    assert "The table below holds the same numbers" in described
    facts = page.evaluate(CHART_FACTS)

    # Scaled as a whole, never stretched: each label as wide as it is tall, and legible.
    assert facts["aspect"] in (None, "xMidYMid meet"), facts["aspect"]
    assert facts["width"] <= facts["inner"]
    assert len(facts["texts"]) == len(facts["months"]) == 12
    for text in facts["texts"]:
        assert text["scaleX"] == pytest.approx(text["scaleY"]), text
        assert text["px"] >= 10, text

    # The table holds the chart's numbers, the bars are drawn to one scale, and both are the
    # API's report.
    table = {row[0]: [int(cell) for cell in row[1:4]] for row in facts["rows"]}
    assert {m["month"]: m["values"] for m in facts["months"]} == table
    peak = max(max(m["values"]) for m in facts["months"])
    for month in facts["months"]:
        expected = [round(100 * value / peak) for value in month["values"]]
        assert month["heights"] == expected, month
    first = date.fromisoformat(facts["months"][0]["month"] + "-01")
    report = ok(
        org.api.get(
            org.path("/usage"),
            **{"from": first.isoformat(), "to": date.today().isoformat(), "granularity": "month"},
        )
    )["data"]
    assert {
        p["date"][:7]: [p["consumed_credits"], p["overage_credits"], p["credits"]] for p in report
    } == table
    this_month = table[facts["months"][-1]["month"]]
    assert this_month[0] > 0 and this_month[1] > 0, this_month  # something to draw
    alice.assert_clean()


# --- keyboard alone ---------------------------------------------------------------------------


def focused(target: Any) -> bool:
    return bool(target.evaluate("element => element === document.activeElement"))


def tab_to(page: Page, target: Any, *, backwards: bool = False, limit: int = 80) -> None:
    """Press Tab (or Shift+Tab) until ``target`` has the focus; fail if it never does."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(limit):
        if focused(target):
            return
        page.keyboard.press(key)
    raise AssertionError(f"{key} never reached {target} in {limit} presses")


def assert_focus_ring(target: Any) -> None:
    """The focused element shows the keyboard focus ring (:focus-visible, app.css)."""
    ring = target.evaluate(
        """element => {
            const style = getComputedStyle(element);
            return [element.matches(":focus-visible"), style.outlineStyle,
                    parseFloat(style.outlineWidth)];
        }"""
    )
    assert ring[0] is True and ring[1] != "none" and ring[2] >= 2, ring


def keyboard_sign_in(visitor: Visitor, email: str) -> None:
    """The sign-in form by keyboard: each step's field has the focus when it opens."""
    page = visitor.page
    visitor.open("/login")
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(email)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")


@pytest.mark.browser
def test_an_admin_buys_credits_with_the_keyboard_alone(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    make_content: Any,
) -> None:
    org = make_org("Acme", billing_email="billing@acme.example")
    make_content(2, title="Fire safety")
    add_user(org, "admin", "alice@acme.example", "Alice Admin")
    alice = browse()
    keyboard_sign_in(alice, "alice@acme.example")
    alice.at("/")
    page = alice.page

    # The first Tab shows the skip link, with the focus ring.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    assert_focus_ring(skip)
    assert skip.bounding_box()["y"] >= 0  # type: ignore[index]

    nav_buy = page.get_by_role("navigation", name="Main").get_by_role("link", name="Buy credits")
    tab_to(page, nav_buy)
    assert_focus_ring(nav_buy)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    alice.at("/buy")

    quantity, submit = page.get_by_test_id("quote-quantity"), page.get_by_test_id("buy-submit")
    tab_to(page, quantity)
    page.keyboard.type("95")
    expect(page.get_by_test_id("quote-better")).to_contain_text("Buy 100 for less")
    tab_to(page, submit)
    assert_focus_ring(submit)
    # She changes her mind: back to the quantity, and a round 20 instead.
    tab_to(page, quantity, backwards=True)
    page.keyboard.press("Control+A")
    page.keyboard.type("20")
    expect(page.get_by_test_id("quote-total")).to_have_text("$200.00")
    tab_to(page, submit)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    alice.at("/settings/billing")
    expect(page.get_by_test_id("buy-success")).to_contain_text("Bought 20 credits for $200.00.")
    alice.expect_balance(credits=20, assigned=0)
    assert org.balance()["credits"] == 20
    alice.assert_clean()


@pytest.mark.browser
def test_an_admin_assigns_with_the_keyboard_alone(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    make_content: Any,
) -> None:
    org = make_org("Acme", billing_email="billing@acme.example")
    make_content(1, title="Anti-bribery")
    course = make_content(2, title="Fire safety")
    for name in ("Ada Lovelace", "Grace Hopper", "Alan Turing"):
        hire(org, name)
    org.buy(10)
    add_user(org, "admin", "alice@acme.example", "Alice Admin")
    alice = browse()
    keyboard_sign_in(alice, "alice@acme.example")
    page = alice.page

    menu = page.get_by_role("navigation", name="Main")
    tab_to(page, menu.get_by_role("link", name="Assign", exact=True))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    alice.at("/assign")

    content = page.get_by_label("Content", exact=True)
    tab_to(page, content)
    assert_focus_ring(content)
    page.keyboard.type("Fire")  # a closed select takes the option whose label begins so
    expect(content).to_have_value(str(pk(course)))
    for name in ("Ada Lovelace", "Grace Hopper"):
        box = page.get_by_role("checkbox", name=name)
        tab_to(page, box)
        page.keyboard.press("Space")
        expect(box).to_be_checked()
    assert_focus_ring(page.get_by_role("checkbox", name="Grace Hopper"))
    expect(page.get_by_test_id("preview-count")).to_have_text("2")
    expect(page.get_by_test_id("preview-reserved")).to_have_text("4")

    submit = page.get_by_test_id("assign-submit")
    tab_to(page, submit)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    alice.at("/assignments")
    expect(alice.message()).to_contain_text("Assigned Fire safety to 2 employee(s).")
    expect(page.get_by_test_id("assignment-row")).to_have_count(2)
    alice.expect_balance(credits=10, assigned=4)
    alice.assert_clean()


@pytest.mark.browser
def test_a_learner_starts_a_course_with_the_keyboard_alone(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    make_content: Any,
) -> None:
    org = make_org("Acme", billing_email="billing@acme.example")
    course = make_content(2, title="Anti-bribery")
    lee = org.employee("Lee Learner", "lee@acme.example")
    add_user(org, "learner", "lee@acme.example", "Lee Learner")
    org.buy(5)
    assignment = org.assign(course, [lee])["data"][0]["id"]
    learner = browse(PHONE)  # on a phone, too
    keyboard_sign_in(learner, "lee@acme.example")
    learner.at("/learn")
    page = learner.page

    start = page.locator(f'[data-testid=start-button][data-assignment-id="{assignment}"]')
    tab_to(page, start)
    assert_focus_ring(start)
    with page.expect_navigation():
        page.keyboard.press("Space")
    learner.at("/learn")
    expect(learner.message()).to_contain_text("Started. Enjoy the course!")
    expect(page.locator("tr", has_text="Anti-bribery")).to_contain_text("started")
    assert ok(org.api.get(org.path(f"/assignments/{assignment}")))["status"] == "started"
    learner.assert_clean()


@pytest.mark.browser
def test_a_wide_table_on_a_phone_scrolls_in_its_frame_by_keyboard(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org("Acme", billing_email="billing@acme.example")
    org.buy(10)
    add_user(org, "admin", "alice@acme.example", "Alice Admin")
    phone = browse(PHONE)
    phone.sign_in("alice@acme.example")
    phone.open("/settings/billing")
    page = phone.page
    ledger = page.get_by_role("region", name="Ledger")
    expect(ledger).to_have_attribute("tabindex", "0")  # wider than the phone: focusable
    tab_to(page, ledger, limit=150)
    assert_focus_ring(ledger)
    assert ledger.evaluate("frame => frame.scrollLeft") == 0
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    assert ledger.evaluate("frame => frame.scrollLeft") > 0
    expect(ledger.get_by_role("columnheader", name="Reason")).to_be_in_viewport()
    # On a desktop the same frame does not scroll, so it is not a tab stop.
    page.set_viewport_size({"width": DESKTOP["width"], "height": DESKTOP["height"]})
    expect(ledger).not_to_have_attribute("tabindex", "0")
    phone.assert_clean()
