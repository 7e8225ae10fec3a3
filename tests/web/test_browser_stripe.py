"""Settings > Payment method in a real browser, with Stripe played by localstripe.

The page loads localstripe's stand-in Stripe.js from ``STRIPE_JS_URL`` (as production loads
Stripe's own), the admin types a test card into its card form, the script confirms a
SetupIntent at localstripe and posts the PaymentMethod id Stripe made; then the admin buys,
and the charge is counted on localstripe's side. The page must log no console error, which
also catches a content-security-policy that would block Stripe.js.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from learncredits import ids
from learncredits.tenancy.models import Organization
from tests.conftest import OrgHandle, ok
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    Visitor,
    _flushable,
    _quick_passwords,
    admin_of,
    browse,
    chromium,
)

if TYPE_CHECKING:
    from tests.stripe_server import LocalStripe

with contextlib.suppress(ImportError):  # without it, the browser marker skips, saying why
    from playwright.sync_api import expect

pytest_plugins = ["tests.stripe_server"]


@pytest.fixture
def stripe_pages(settings: Any, stripe_settings: LocalStripe) -> LocalStripe:
    """The stripe provider selected, and the CSP letting the page load and talk to
    localstripe's Stripe.js, as settings.py does at start for ``STRIPE_JS_URL``."""
    settings.LEARNCREDITS_PAYMENT_PROVIDER = "stripe"
    split = urlsplit(stripe_settings.js_url)
    origin = f"{split.scheme}://{split.netloc}"
    policy = copy.deepcopy(settings.CONTENT_SECURITY_POLICY)
    for directive in ("script-src", "frame-src", "connect-src"):
        sources = policy["DIRECTIVES"].setdefault(directive, ["'self'"])
        if origin not in sources:
            sources.append(origin)
    settings.CONTENT_SECURITY_POLICY = policy
    return stripe_settings


@pytest.mark.browser
def test_an_admin_saves_a_card_with_stripe_js_then_buys(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    stripe_pages: LocalStripe,
) -> None:
    org = make_org("Acme")
    alice = browse()
    alice.sign_in(admin_of(org))

    alice.open("/settings/payment")
    page = alice.page
    expect(page.get_by_test_id("no-card")).to_be_visible()
    card = page.get_by_test_id("card-element")
    card.get_by_placeholder("number").fill("4242424242424242")
    card.get_by_placeholder("exp_month").fill("12")
    card.get_by_placeholder("exp_year").fill("34")
    card.get_by_placeholder("cvc").fill("123")
    card.get_by_placeholder("postal_code").fill("94105")
    page.get_by_test_id("card-save").click()
    expect(page.get_by_test_id("card-last4")).to_have_text("4242")
    expect(alice.message()).to_contain_text("Saved: visa ending in 4242")
    alice.assert_clean()
    assert ok(org.api.get(org.path("/payment-method")))["last4"] == "4242"

    alice.open("/buy")
    page.get_by_test_id("quote-quantity").fill("10")
    page.get_by_test_id("buy-submit").click()
    alice.on_receipt()
    alice.assert_clean()
    assert org.balance()["credits"] == 10
    customer = Organization.objects.get(pk=ids.decode("org", org.id)).stripe_customer_id
    assert customer
    charged = [pi for pi in stripe_pages.intents_of(customer) if pi.status == "succeeded"]
    assert len(charged) == 1


@pytest.mark.browser
def test_without_a_card_the_buy_form_says_to_add_one(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    stripe_pages: LocalStripe,
) -> None:
    org = make_org("Acme")
    alice = browse()
    alice.sign_in(admin_of(org))
    alice.open("/buy")
    alice.page.get_by_test_id("quote-quantity").fill("10")
    alice.page.get_by_test_id("buy-submit").click()
    expect(alice.message()).to_contain_text("no card on file")
    assert org.balance()["credits"] == 0
