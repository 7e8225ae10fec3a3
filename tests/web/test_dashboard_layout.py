"""The layout every dashboard page shares: the organization's name and the signed-in user's
account menu in the header, the three balance icons leading to buying, the at-risk banner
(present only while at risk, offering the quantity that clears it), and where a purchase
lands (the billing page with a success message linking to the receipt). Both databases."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from learncredits.billing.models import Invoice
from learncredits.credits.models import Purchase
from learncredits.domain.balance import AlertThreshold, Counters, credits_to_leave_risk
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle, ok, signed_in

pytestmark = pytest.mark.django_db


def hooks(html: str) -> set[str]:
    return set(re.findall(r'data-testid="([a-z-]+)"', html))


def test_the_header_names_the_org_and_the_signed_in_user(org: OrgHandle) -> None:
    admin = signed_in(org, "admin")
    html = admin.get("/").content.decode()
    name = Organization.objects.get(pk=int(org.id.split("_")[1])).name
    assert re.search(rf'data-testid="org-name">{re.escape(name)}<', html)
    assert 'data-testid="account-menu"' in html and "Pat Admin" in html
    assert "Sign out" in html


def test_every_balance_icon_leads_to_buying(org: OrgHandle) -> None:
    html = signed_in(org, "admin").get("/").content.decode()
    section = html[html.index('<section class="balance"') : html.index("</section>")]
    assert section.count('href="/buy"') == 4  # the three icons and the "Buy credits" action
    assert "balance-buy" in hooks(section)
    # A manager sees the balance but may not buy: no buying action is offered to them.
    manager = signed_in(org, "manager").get("/").content.decode()
    assert "balance-buy" not in hooks(manager)


def test_the_banner_appears_only_while_at_risk_and_offers_the_quantity_that_clears_it(
    org: OrgHandle, make_content: Any
) -> None:
    admin = signed_in(org, "admin")
    assert "alert-banner" not in hooks(admin.get("/").content.decode())
    course = make_content(3)
    org.buy(4)
    org.assign(course, [org.employee("A")])  # 3 of 4 reserved: 1 available, threshold 0
    assert "alert-banner" not in hooks(admin.get("/").content.decode())
    org.assign(course, [org.employee("B")])  # 6 reserved, 4 held: at risk
    balance = org.balance()
    assert balance["at_risk"] is True
    html = admin.get("/").content.decode()
    assert "alert-banner" in hooks(html)
    needed = credits_to_leave_risk(
        Counters(balance["credits"], balance["assigned"]), AlertThreshold()
    )
    assert f'href="/buy?quantity={needed}"' in html
    assert f"{balance['assigned']} credits are reserved" in html
    bought = admin.post("/buy", {"quantity": str(needed), "purchase_key": uuid.uuid4().hex})
    assert bought.status_code == 302
    assert "alert-banner" not in hooks(admin.get("/").content.decode())


def test_a_purchase_lands_on_billing_with_a_message_linking_to_its_receipt(
    org: OrgHandle,
) -> None:
    admin = signed_in(org, "admin")
    landed = admin.post("/buy", {"quantity": "7", "purchase_key": uuid.uuid4().hex}, follow=True)
    assert landed.redirect_chain[-1][0] == "/settings/billing"
    html = landed.content.decode()
    receipt = Invoice.objects.get(purchase=Purchase.objects.get(quantity=7))
    success = re.search(r'<li class="[^"]*"[^>]*data-testid="buy-success">(.*?)</li>', html)
    assert success is not None
    assert "Bought 7 credits" in success.group(1)
    assert f'href="/settings/billing/invoices/{receipt.pk}">Receipt {receipt.number}</a>' in (
        success.group(1)
    )
    assert 'data-testid="balance-credits">7<' in html  # the new balance, in the layout


def test_the_forecast_says_more_than_a_year_rather_than_a_far_off_date(
    org: OrgHandle, make_content: Any
) -> None:
    admin = signed_in(org, "admin")
    org.buy(1000)
    started = org.assign(make_content(1), [org.employee("Slow")])["data"][0]["id"]
    ok(org.act(started, "start"))  # 1 credit in 90 days: 999 left last for about 245 years
    forecast = ok(org.api.get(org.path("/forecast")))
    assert forecast["runs_out_on"] > "2100-01-01"  # the API keeps the date
    html = admin.get("/settings/billing").content.decode()
    assert 'data-testid="forecast-runs-out">more than a year<' in html

    for name in ("A", "B", "C"):  # 301 credits a quarter: about 299 days left, a date
        busy = org.assign(make_content(100), [org.employee(name)])["data"][0]["id"]
        ok(org.act(busy, "start"))
    soon = ok(org.api.get(org.path("/forecast")))["runs_out_on"]
    html = admin.get("/settings/billing").content.decode()
    assert f'data-testid="forecast-runs-out">{soon}<' in html


def test_the_ledger_names_people_keys_and_the_operator(org: OrgHandle, make_org: Any) -> None:
    from learncredits.tenancy.actors import actor_names
    from learncredits.tenancy.models import ApiKey

    admin = signed_in(org, "admin")
    admin.post("/buy", {"quantity": "3", "purchase_key": uuid.uuid4().hex})  # by the person
    org.buy(2)  # by the org's key
    ok(org.operator.post(org.path("/adjustments"), {"credits": 1, "reason": "goodwill"}), 201)
    html = admin.get("/settings/billing").content.decode()
    key = ApiKey.objects.get(org_id=int(org.id.split("_")[1]))
    cells = re.findall(r'<td title="([^"]+)">([^<]+)</td>', html)
    by = dict(cells)
    user_actor = next(a for a in by if a.startswith("user:"))
    assert by[user_actor] == "Pat Admin"
    assert by[f"api_key:key_{key.pk}"] == f"API key {key.name}"
    assert by["operator"] == "Operator"

    # Another org's people and keys are not named (their strings stay as recorded).
    other = make_org("Other")
    other_key = ApiKey.objects.get(org_id=int(other.id.split("_")[1]))
    mine = Organization.objects.get(pk=int(org.id.split("_")[1]))
    strangers = [f"api_key:key_{other_key.pk}", "user:usr_999999", "scim:token_x"]
    assert actor_names(mine, strangers) == {s: s for s in strangers}


def test_an_admin_sets_the_orgs_time_zone_on_settings_billing(org: OrgHandle) -> None:
    admin = signed_in(org, "admin")
    row = Organization.objects.get(pk=int(org.id.split("_")[1]))
    form = {
        "form": "alerts",
        "billing_email": row.billing_email,
        "alert_threshold": "0",
        "timezone": "Pacific/Auckland",
    }
    assert admin.post("/settings/billing", form).status_code == 302
    row.refresh_from_db()
    assert row.timezone == "Pacific/Auckland"
    assert ok(org.api.get(org.path("")))["timezone"] == "Pacific/Auckland"
    page = admin.get("/settings/billing").content.decode()
    assert 'value="Pacific/Auckland" list="timezones"' in page

    refused = admin.post(
        "/settings/billing", {**form, "timezone": "Mars/Olympus_Mons"}, follow=True
    )
    assert "Mars/Olympus_Mons" in refused.content.decode()  # the error names the value
    row.refresh_from_db()
    assert row.timezone == "Pacific/Auckland"  # nothing changed
