"""The tax profile on Settings > Billing, the tax on the buy page's quote, and the tax in the
emails of taxed documents (dashboard pages through Django's test client, emails through the
worker's outbox pass)."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import Client

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.billing import tax as billing_tax
from learncredits.billing.invoicing import receipt_of
from learncredits.catalog.services import current_price_book
from learncredits.credits import accounts
from learncredits.credits.models import Event, Purchase
from learncredits.domain import pricing
from learncredits.domain.money import format_cents
from learncredits.notify.delivery import run_once
from learncredits.notify.emails import compose
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle, ok

PASSWORD = "a-Long-enough-pass-42"
GERMAN_VAT = [
    {
        "country": "DE",
        "region": None,
        "name": "VAT",
        "rate_bps": 1900,
        "effective_from": date(2020, 1, 1),
    }
]


# --- helpers ---------------------------------------------------------------------------------


def _user(org: OrgHandle, operator: Any, email: str, role: str) -> Client:
    body = {"email": email, "name": email.split("@")[0], "role": role, "password": PASSWORD}
    ok(operator.post(f"/orgs/{org.id}/users", body), 201)
    client = Client()
    client.force_login(get_user_model().objects.get(username=email))
    return client


@pytest.fixture
def admin(org: OrgHandle, operator: Any) -> Client:
    return _user(org, operator, "boss@example.com", "admin")


def _org_row(org: OrgHandle) -> Organization:
    pk = ids.decode("org", org.id)
    assert pk is not None
    return Organization.objects.get(pk=pk)


def _profile(org: OrgHandle) -> tuple[str, str, str, bool]:
    row = _org_row(org)
    return (row.tax_country, row.tax_region, row.tax_id, row.tax_exempt)


def _tax_post(client: Client, **fields: str) -> Any:
    return client.post("/settings/billing", {"form": "tax", **fields})


def _testid(html: str, testid: str) -> str | None:
    """The text inside the element with this data-testid (tags removed), or None."""
    found = re.search(
        rf'<(\w+)[^>]*data-testid="{re.escape(testid)}"[^>]*>(.*?)</\1>', html, re.DOTALL
    )
    if found is None:
        return None
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(2))).strip()


def _tax_updates(org: OrgHandle) -> int:
    return AuditEvent.objects.filter(action="org.update", org_id=_org_row(org).pk).count()


def _set_german(org: OrgHandle, **extra: Any) -> None:
    accounts.update_org_settings(_org_row(org), {"tax": {"country": "DE", **extra}}, actor="test")


def _quote_cents(quantity: int) -> int:
    return pricing.quote(current_price_book(), quantity).total_cents


# --- Settings > Billing: the tax profile --------------------------------------------------------


def test_an_admin_saves_a_tax_profile_and_it_is_stored_normalized(org, admin):
    page = admin.get("/settings/billing")
    assert page.status_code == 200
    html = page.content.decode()
    assert "No tax profile" in _testid(html, "tax-profile")
    for hook in ("tax-country", "tax-region", "tax-id", "tax-exempt", "tax-submit"):
        assert f'data-testid="{hook}"' in html, hook
    assert 'data-testid="tax-remove"' not in html

    response = _tax_post(admin, country=" de ", region="de-by", tax_id="de 136 695 976")
    assert response.status_code == 302 and response["Location"] == "/settings/billing"
    assert _profile(org) == ("DE", "BY", "DE136695976", False)
    user = get_user_model().objects.get(username="boss@example.com")
    update = AuditEvent.objects.filter(action="org.update", org_id=_org_row(org).pk).get()
    assert update.actor == f"user:usr_{user.pk}"
    assert update.details["after"]["tax_id"] == "DE136695976"

    html = admin.get("/settings/billing").content.decode()
    shown = _testid(html, "tax-profile")
    assert "Germany (DE), region BY" in shown and "DE136695976" in shown
    assert "not exempt" in shown
    assert "Tax profile saved." in html
    # The help names the number Germany asks for and its format.
    assert "DE followed by 9 digits" in _testid(html, "tax-id-help")
    assert 'value="DE136695976"' in html
    assert 'data-testid="tax-remove"' in html

    # Exempt is a checkbox: ticked, then saved as true.
    ok_response = _tax_post(admin, country="DE", region="", tax_id="", exempt="on")
    assert ok_response.status_code == 302
    assert _profile(org) == ("DE", "", "", True)
    assert "tax exempt" in _testid(admin.get("/settings/billing").content.decode(), "tax-profile")


def test_an_invalid_tax_id_is_refused_with_the_expected_format_and_changes_nothing(org, admin):
    _set_german(org, tax_id="DE136695976")
    before, updates = _profile(org), _tax_updates(org)

    response = _tax_post(admin, country="DE", region="", tax_id="DE12345", exempt="on")
    assert response.status_code == 422
    html = response.content.decode()
    assert re.search(
        r'<li class="error"[^>]*>[^<]*DE followed by 9 digits, e\.g\. DE136695976', html
    )
    assert _profile(org) == before
    assert _tax_updates(org) == updates
    # The page still shows the saved profile, and the form keeps what was typed.
    assert "DE136695976" in _testid(html, "tax-profile")
    assert 'value="DE12345"' in html
    assert "Tax profile saved." not in html


def test_a_region_that_is_not_of_the_country_is_refused(org, admin):
    before, updates = _profile(org), _tax_updates(org)

    response = _tax_post(admin, country="DE", region="NY", tax_id="")
    assert response.status_code == 422
    assert "is not a subdivision of DE" in response.content.decode()

    response = _tax_post(admin, country="DE", region="US-NY", tax_id="")
    assert response.status_code == 422
    assert "has the country prefix US, but the country is DE" in response.content.decode()

    response = _tax_post(admin, country="XX", region="", tax_id="")
    assert response.status_code == 422
    assert "ISO 3166-1 alpha-2 code" in response.content.decode()

    assert _profile(org) == before == ("", "", "", False)
    assert _tax_updates(org) == updates


def test_a_learner_cannot_post_the_tax_profile(org, operator):
    _set_german(org, tax_id="DE136695976")
    before, updates = _profile(org), _tax_updates(org)
    learner = _user(org, operator, "lee@example.com", "learner")

    for fields in (
        {"country": "FR", "region": "", "tax_id": "", "exempt": "on"},
        {"action": "remove"},
    ):
        response = _tax_post(learner, **fields)
        assert response.status_code == 302 and response["Location"].endswith("/learn")
    assert _profile(org) == before
    assert _tax_updates(org) == updates


def test_an_admin_removes_the_tax_profile(org, admin):
    _set_german(org, region="BY", tax_id="DE136695976", exempt=True)

    response = _tax_post(admin, action="remove")
    assert response.status_code == 302
    assert _profile(org) == ("", "", "", False)
    assert billing_tax.profile_of(_org_row(org)) is None
    html = admin.get("/settings/billing").content.decode()
    assert "No tax profile" in _testid(html, "tax-profile")
    assert 'data-testid="tax-remove"' not in html


# --- the buy page's quote ----------------------------------------------------------------------


def test_the_quote_shows_tax_only_for_an_org_with_a_tax_profile(org, admin):
    billing_tax.set_rates(GERMAN_VAT, actor="test")
    net = _quote_cents(10)
    vat = (net * 19 + 50) // 100  # 19%, half up

    for url in ("/buy/quote?quantity=10", "/buy?quantity=10"):
        html = admin.get(url).content.decode()
        assert _testid(html, "quote-total") == format_cents(net)
        assert _testid(html, "quote-tax") is None
        assert _testid(html, "quote-total-with-tax") is None

    _set_german(org)  # a consumer in Germany: German VAT
    for url in ("/buy/quote?quantity=10", "/buy?quantity=10"):
        html = admin.get(url).content.decode()
        assert _testid(html, "quote-total") == format_cents(net)  # still the net total
        assert _testid(html, "quote-tax") == format_cents(vat)
        assert _testid(html, "quote-total-with-tax") == format_cents(net + vat)
        assert "VAT 19% (DE)" in html

    _set_german(org, exempt=True)  # exempt: the quote says so, and adds nothing
    html = admin.get("/buy/quote?quantity=10").content.decode()
    assert _testid(html, "quote-tax") == format_cents(0)
    assert _testid(html, "quote-total-with-tax") == format_cents(net)
    assert "Tax exempt" in _testid(html, "quote-tax-note")


def test_buying_with_tax_says_the_amount_charged_including_tax(org, admin):
    billing_tax.set_rates(GERMAN_VAT, actor="test")
    net = _quote_cents(10)
    vat = (net * 19 + 50) // 100

    def buy() -> tuple[Purchase, str]:
        response = admin.post("/buy", {"quantity": "10", "purchase_key": uuid.uuid4().hex})
        assert response.status_code == 302  # to the billing page, not followed here
        purchase = Purchase.objects.filter(org=_org_row(org)).latest("pk")
        said = [str(m) for m in get_messages(response.wsgi_request)]
        text, link = said[-1].split(" <a ", 1)  # the newest, and its link to the receipt
        assert f"Receipt {receipt_of(purchase).number}</a>" in link
        return purchase, text

    purchase, said = buy()  # no profile: no tax, the message as before
    assert (purchase.total_cents, purchase.tax_cents) == (net, 0)
    assert said == f"Bought 10 credits for {format_cents(net)}."

    _set_german(org)
    purchase, said = buy()
    assert (purchase.total_cents, purchase.tax_cents) == (net, vat)
    assert said == (
        f"Bought 10 credits for {format_cents(net + vat)} "
        f"({format_cents(net)} plus {format_cents(vat)} tax)."
    )


# --- emails ------------------------------------------------------------------------------------


def test_the_receipt_email_of_a_taxed_purchase_shows_subtotal_tax_and_total(
    make_org, operator, mailoutbox
):
    billing_tax.set_rates(GERMAN_VAT, actor="test")
    taxed = make_org("Taxed GmbH", billing_email="ap@taxed.example")
    untaxed = make_org("Untaxed Inc", billing_email="ap@untaxed.example")
    _set_german(taxed)
    net = _quote_cents(10)
    vat = (net * 19 + 50) // 100
    taxed.buy(10)
    untaxed.buy(10)
    run_once()

    def receipt(to: str) -> Any:
        [mail] = [m for m in mailoutbox if m.to == [to] and "receipt" in m.subject]
        return mail

    mail = receipt("ap@taxed.example")
    assert f"Subtotal: {format_cents(net)} USD" in mail.body
    assert f"Tax:      {format_cents(vat)} USD" in mail.body
    assert f"Total:    {format_cents(net + vat)} USD" in mail.body
    [(html, _)] = mail.alternatives
    assert f"subtotal {format_cents(net)}, tax {format_cents(vat)}, total" in html
    assert f"<strong>{format_cents(net + vat)}</strong>" in html

    plain = receipt("ap@untaxed.example")  # no tax: the email reads as it always did
    assert f"Total:  {format_cents(net)} USD" in plain.body
    assert "Tax:" not in plain.body and "Subtotal" not in plain.body
    [(plain_html, _)] = plain.alternatives
    assert "subtotal" not in plain_html


def test_document_emails_show_tax_only_when_the_event_carries_it(org):
    row = _org_row(org)
    old = {
        "number": "INV-2026-000001",
        "kind": "purchase",
        "period": "2026-01",
        "total_cents": 10000,
        "currency": "USD",
    }
    message = compose(Event(org=row, type="invoice.issued", data=old))
    assert message is not None
    assert "Total:  $100.00 USD" in message.text and "Tax" not in message.text
    assert "subtotal" not in message.html

    note = {
        "number": "CN-2026-000001",
        "kind": "credit_note",
        "credits_invoice_number": "INV-2026-000001",
        "subtotal_cents": -5000,
        "tax_cents": -950,
        "total_cents": -5950,
        "currency": "USD",
        "reason": "refund",
        "refunded": True,
    }
    message = compose(Event(org=row, type="credit_note.issued", data=note))
    assert message is not None
    assert "Subtotal: -$50.00 USD" in message.text
    assert "Tax:      -$9.50 USD" in message.text
    assert "Total:    -$59.50 USD" in message.text
    assert "subtotal -$50.00, tax -$9.50, total <strong>-$59.50</strong>" in message.html

    untaxed_note = {**note, "subtotal_cents": -5000, "tax_cents": 0, "total_cents": -5000}
    message = compose(Event(org=row, type="credit_note.issued", data=untaxed_note))
    assert message is not None
    assert "Total:  -$50.00 USD" in message.text and "Tax" not in message.text
