"""Buying when the card says no, or asks the cardholder first, in a real browser.

With the built-in test provider, the billing email plays the card: ``+3ds`` asks for 3-D
Secure (the admin is sent to the provider's stand-in page and confirms or refuses there),
``+decline`` is declined. With Stripe, played by localstripe, the cards are localstripe's
test numbers typed into the Stripe.js form on Settings > Payment method: 4000002500003155
asks for 3-D Secure (localstripe's Stripe.js shows its own confirm/fail box, both when the
card is saved and when a charge is authenticated), 4000000000000341 is saved but every
charge is declined.

Each story counts the charges on the provider's side (the test provider's
``TestPaymentIntent`` rows, localstripe's PaymentIntents), never from our own answers.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from learncredits import ids
from learncredits.billing.models import TestPaymentIntent
from learncredits.credits.models import Purchase
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    Visitor,
    _flushable,
    _quick_passwords,
    admin_of,
    browse,
    chromium,
)
from tests.web.test_browser_stripe import stripe_pages  # noqa: F401  (a fixture, found by name)

if TYPE_CHECKING:
    from tests.stripe_server import LocalStripe

with contextlib.suppress(ImportError):  # without it, the browser marker skips, saying why
    from playwright.sync_api import expect

pytest_plugins = ["tests.stripe_server"]

THREE_D_SECURE = "4000002500003155"  # localstripe: every charge asks to authenticate
CHARGE_DECLINED = "4000000000000341"  # localstripe: saved, then every charge declined


@pytest.fixture(autouse=True)
def _our_address(settings: Any, live_server: Any) -> None:
    """Our own address is the live server's, so the page a purchase waiting for 3-D Secure
    sends the admin to (the test provider's stand-in, or Settings > Payment method) is on
    this server."""
    settings.LEARNCREDITS_BASE_URL = live_server.url


def answered(visitor: Visitor, status: int) -> None:
    """The page was answered with this (error) status on purpose, as the buy form answers
    a refused purchase; Chromium logs it as a console error, which is expected here only."""
    expected = f"the server responded with a status of {status}"
    left = [p for p in visitor.problems if expected not in p]
    assert len(left) < len(visitor.problems), f"no {status} answer: {visitor.problems}"
    visitor.problems[:] = left


def org_pk(org: OrgHandle) -> int:
    return ids.decode("org", org.id) or 0


def provider_intents(org: OrgHandle) -> list[TestPaymentIntent]:
    """The org's charges as the test provider keeps them, oldest first."""
    return list(TestPaymentIntent.objects.filter(org_id=org_pk(org)).order_by("pk"))


def buy(visitor: Visitor, quantity: int) -> str:
    """Fill the buy form and submit it; returns the one-time key the form carried."""
    visitor.open("/buy")
    page = visitor.page
    page.get_by_test_id("quote-quantity").fill(str(quantity))
    key = page.locator("input[name=purchase_key]").input_value()
    page.get_by_test_id("buy-submit").click()
    return key


# --- the built-in test provider -----------------------------------------------------------------


@pytest.mark.browser
def test_a_card_that_asks_for_3ds_is_confirmed_on_the_stand_in_page(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org("Acme", billing_email="billing+3ds@acme.example")
    alice = browse()
    alice.sign_in(admin_of(org))

    buy(alice, 10)
    page = alice.page
    expect(page).to_have_url(re.compile(r"/payments/test/authenticate/[^/]+$"))
    expect(page.locator("h1")).to_have_text("Confirm the payment")
    expect(page.locator("body")).to_contain_text("$100.00")
    # Waiting: no credits yet, one intent waiting for the cardholder, nothing charged.
    assert org.balance()["credits"] == 0
    assert [(i.status, i.amount_cents) for i in provider_intents(org)] == [
        ("requires_action", 10000)
    ]
    alice.shot("buy-3ds")

    page.get_by_test_id("authenticate-approve").click()
    alice.on_receipt("Bought 10 credits for $100.00.")
    alice.assert_clean()
    alice.open("/")
    alice.expect_balance(credits=10, assigned=0)
    assert org.balance()["credits"] == 10
    assert [(i.status, i.amount_cents) for i in provider_intents(org)] == [("succeeded", 10000)]
    assert Purchase.objects.get(org_id=org_pk(org)).status == Purchase.Status.PAID


@pytest.mark.browser
def test_refusing_3ds_on_the_stand_in_page_says_so_and_adds_nothing(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org("Acme", billing_email="billing+3ds@acme.example")
    alice = browse()
    alice.sign_in(admin_of(org))

    buy(alice, 10)
    page = alice.page
    expect(page).to_have_url(re.compile(r"/payments/test/authenticate/[^/]+$"))
    page.get_by_test_id("authenticate-refuse").click()
    alice.at("/buy")
    expect(alice.message()).to_contain_text("The payment was not completed")
    alice.assert_clean()
    alice.expect_balance(credits=0, assigned=0)
    assert org.balance()["credits"] == 0
    (intent,) = provider_intents(org)
    assert intent.status != "succeeded"
    assert Purchase.objects.get(org_id=org_pk(org)).status == Purchase.Status.FAILED


@pytest.mark.browser
def test_a_declined_card_says_so_and_the_form_can_be_sent_again(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org("Acme", billing_email="billing+decline@acme.example")
    alice = browse()
    alice.sign_in(admin_of(org))

    first_key = buy(alice, 10)
    page = alice.page
    alice.at("/buy")
    expect(alice.message()).to_contain_text("the payment was declined")
    answered(alice, 402)
    alice.assert_clean()
    expect(alice.message()).to_contain_text("card declined")
    alice.expect_balance(credits=0, assigned=0)
    # The form is back, with the quantity typed and a new one-time key: sending it again is
    # a new attempt, not a replay of the declined purchase.
    expect(page.get_by_test_id("quote-quantity")).to_have_value("10")
    second_key = page.locator("input[name=purchase_key]").input_value()
    assert second_key and second_key != first_key
    alice.shot("buy-declined")

    page.get_by_test_id("buy-submit").click()
    alice.at("/buy")
    expect(alice.message()).to_contain_text("the payment was declined")
    answered(alice, 402)
    alice.assert_clean()
    assert page.locator("input[name=purchase_key]").input_value() not in {first_key, second_key}
    assert org.balance()["credits"] == 0
    assert [(i.status, i.decline_code) for i in provider_intents(org)] == [
        ("failed", "card_declined"),
        ("failed", "card_declined"),
    ]
    statuses = Purchase.objects.filter(org_id=org_pk(org)).values_list("status", flat=True)
    assert list(statuses) == [Purchase.Status.FAILED, Purchase.Status.FAILED]


# --- Stripe, played by localstripe ---------------------------------------------------------------


@pytest.fixture
def stripe_shop(stripe_pages: LocalStripe) -> LocalStripe:  # noqa: F811
    """Stripe selected, played by localstripe, with its Stripe.js allowed on the pages."""
    return stripe_pages


def save_card(visitor: Visitor, number: str, *, authenticate: bool = False) -> None:
    """Type a test card into the Stripe.js form and save it; answer 3-D Secure if asked."""
    visitor.open("/settings/payment")
    page = visitor.page
    card = page.get_by_test_id("card-element")
    card.get_by_placeholder("number").fill(number)
    card.get_by_placeholder("exp_month").fill("12")
    card.get_by_placeholder("exp_year").fill("34")
    card.get_by_placeholder("cvc").fill("123")
    card.get_by_placeholder("postal_code").fill("94105")
    page.get_by_test_id("card-save").click()
    if authenticate:
        page.get_by_role("button", name="Complete authentication").click()
    expect(page.get_by_test_id("card-last4")).to_have_text(number[-4:])
    visitor.assert_clean()


def stripe_intents(server: LocalStripe, org: OrgHandle) -> list[Any]:
    customer = Organization.objects.get(pk=org_pk(org)).stripe_customer_id
    assert customer
    return server.intents_of(customer)


def start_a_3ds_purchase(alice: Visitor, org: OrgHandle) -> Any:
    """Sign in, save the card that asks for 3-D Secure, buy 10 credits: the page that waits
    for the cardholder."""
    alice.sign_in(admin_of(org))
    save_card(alice, THREE_D_SECURE, authenticate=True)
    buy(alice, 10)
    expect(alice.page).to_have_url(re.compile(r"/settings/payment\?authenticate=pi_\w+$"))
    return alice.page


@pytest.mark.browser
def test_stripe_a_3ds_card_is_saved_then_a_purchase_is_authenticated_on_the_page(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    stripe_shop: LocalStripe,
) -> None:
    org = make_org("Acme")
    alice = browse()
    page = start_a_3ds_purchase(alice, org)
    expect(page.get_by_test_id("authenticate-payment")).to_contain_text("$100.00")
    intent_id = page.url.rsplit("=", 1)[1]
    # Waiting for the cardholder: nothing charged at Stripe, no credits here.
    assert [(pi.id, pi.status) for pi in stripe_intents(stripe_shop, org)] == [
        (intent_id, "requires_action")
    ]
    assert org.balance()["credits"] == 0

    page.get_by_test_id("authenticate-start").click()
    page.get_by_role("button", name="Complete authentication").click()
    alice.on_receipt("Bought 10 credits for $100.00.")
    alice.assert_clean()
    alice.open("/")
    alice.expect_balance(credits=10, assigned=0)
    assert org.balance()["credits"] == 10
    charged = [
        (pi.id, pi.amount) for pi in stripe_intents(stripe_shop, org) if pi.status == "succeeded"
    ]
    assert charged == [(intent_id, 10000)]


@pytest.mark.browser
def test_stripe_a_failed_3ds_step_says_so_and_charges_nothing(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    stripe_shop: LocalStripe,
) -> None:
    org = make_org("Acme")
    alice = browse()
    page = start_a_3ds_purchase(alice, org)
    page.get_by_test_id("authenticate-start").click()
    page.get_by_role("button", name="Fail authentication").click()
    alice.at("/buy")
    expect(alice.message()).to_contain_text("The payment was not completed")
    alice.assert_clean()
    assert org.balance()["credits"] == 0
    assert [pi for pi in stripe_intents(stripe_shop, org) if pi.status == "succeeded"] == []
    assert Purchase.objects.get(org_id=org_pk(org)).status == Purchase.Status.FAILED


@pytest.mark.browser
def test_stripe_a_declined_card_shows_the_decline(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    stripe_shop: LocalStripe,
) -> None:
    org = make_org("Acme")
    alice = browse()
    alice.sign_in(admin_of(org))
    save_card(alice, CHARGE_DECLINED)

    first_key = buy(alice, 10)
    page = alice.page
    alice.at("/buy")
    expect(alice.message()).to_contain_text("the payment was declined")
    answered(alice, 402)
    alice.assert_clean()
    alice.expect_balance(credits=0, assigned=0)
    assert page.locator("input[name=purchase_key]").input_value() != first_key
    assert org.balance()["credits"] == 0
    intents = stripe_intents(stripe_shop, org)
    assert len(intents) == 1 and intents[0].status != "succeeded"
    assert Purchase.objects.get(org_id=org_pk(org)).decline_code == "card_declined"
