"""Settings in a real browser (the helpers and fixtures of tests/web/test_browser.py): an admin
sets the org's time zone on Settings > Billing (an unknown zone is refused by name and
nothing changes), then reads the change in the org's own audit trail, filtered, in that time
zone, and downloads it as CSV."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import OrgHandle, ok
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    Visitor,
    _flushable,
    _quick_passwords,
    admin_of,
    browse,
    chromium,
)

with contextlib.suppress(ImportError):
    from playwright.sync_api import expect


def org_settings(org: OrgHandle) -> dict[str, object]:
    return ok(org.operator.get(org.path()))


@pytest.mark.browser
def test_an_admin_sets_the_time_zone_then_reads_it_in_the_audit_trail(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org("Acme")
    alice = browse()
    alice.sign_in(admin_of(org))
    page = alice.page

    # An unknown zone: refused with its name, and the org keeps UTC.
    alice.open("/settings/billing")
    zone = page.get_by_label("Time zone (dates, periods and the forecast)")
    expect(zone).to_have_value("UTC")
    zone.fill("Mars/Olympus_Mons")
    with page.expect_navigation():
        page.get_by_role("button", name="Save").first.click()
    expect(alice.message()).to_contain_text("Mars/Olympus_Mons")
    assert org_settings(org)["timezone"] == "UTC"

    # A real one, typed as a person would (the field offers the IANA names while typing).
    alice.open("/settings/billing")
    zone = page.get_by_label("Time zone (dates, periods and the forecast)")
    zone.fill("Asia/Tokyo")
    with page.expect_navigation():
        page.get_by_role("button", name="Save").first.click()
    expect(alice.message()).to_contain_text("time zone")
    expect(page.get_by_label("Time zone (dates, periods and the forecast)")).to_have_value(
        "Asia/Tokyo"
    )
    assert org_settings(org)["timezone"] == "Asia/Tokyo"
    alice.assert_clean()

    # The audit trail: the change, by Alice by name, at a time shown in Tokyo's offset.
    alice.open("/settings/audit")
    page.get_by_label("Action starts with").fill("org.")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    rows = page.get_by_test_id("audit-row")
    expect(rows.first).to_be_visible()
    assert all("org." in text for text in rows.all_inner_texts())
    expect(rows.first).to_contain_text("Alice Admin")
    stamp = rows.first.locator("time").get_attribute("datetime")
    assert stamp is not None and stamp.endswith("+09:00"), stamp
    alice.shot("audit-filtered")

    with page.expect_download() as waiting:
        page.get_by_test_id("audit-csv").click()
    download = waiting.value
    text = Path(download.path()).read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    assert table and all(row["action"].startswith("org.") for row in table), table[:3]
    assert any("Asia/Tokyo" in ",".join(row.values()) for row in table), table[:3]
    alice.assert_clean()
