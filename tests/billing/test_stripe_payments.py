"""Purchases with ``LEARNCREDITS_PAYMENT_PROVIDER=stripe``, end to end against a live localstripe.

Cards are saved through the API (or the dashboard's form), purchases go through the same
steps as with the test provider, and every claim about money is checked on localstripe's
side: its succeeded PaymentIntents for a purchase are listed and counted, never trusted
from our answers. Crashes are a provider that does its work and then raises a
BaseException, as in tests/billing/test_payments.py. Nothing that localstripe can play is mocked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.billing import auto_top_up, payment_methods, payments
from learncredits.billing.stripe_provider import StripeProvider
from learncredits.credits.models import Purchase
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Organization
from tests.api.test_hardening import _run_check
from tests.billing.test_stripe_provider import sign
from tests.conftest import (
    Crash,
    OrgHandle,
    install_crashing_provider,
    lands_on_billing_with_its_receipt,
    ok,
)

if TYPE_CHECKING:
    from tests.stripe_server import LocalStripe

pytest_plugins = ["tests.stripe_server"]

VISA = "pm_card_visa"  # 4242: charges succeed
CHARGE_DECLINED = "pm_card_chargeCustomerFail"  # attaches, every charge declined
ATTACH_DECLINED = "pm_card_visa_chargeDeclined"  # refused on attach
THREE_D_SECURE = "4000002500003155"  # charges need the cardholder to authenticate


@pytest.fixture
def stripe_on(settings: Any, stripe_settings: LocalStripe) -> LocalStripe:
    """The stripe provider selected, pointed at localstripe."""
    settings.LEARNCREDITS_PAYMENT_PROVIDER = "stripe"
    return stripe_settings


@pytest.fixture
def org(make_org: Callable[..., OrgHandle], stripe_on: LocalStripe) -> OrgHandle:
    return make_org("Stripe Co")


def the_org(org: OrgHandle) -> Organization:
    return Organization.objects.get(pk=ids.decode("org", org.id))


def save_card(org: OrgHandle, payment_method: str) -> Any:
    return org.api.put(org.path("/payment-method"), {"payment_method": payment_method})


def buy(org: OrgHandle, quantity: int, key: str | None = None) -> Any:
    return org.api.post(org.path("/purchases"), {"quantity": quantity}, idem=key)


def intents_for(server: LocalStripe, org: OrgHandle, purchase_id: str | None = None) -> list[Any]:
    """The org's PaymentIntents at localstripe (for one purchase when named)."""
    customer = the_org(org).stripe_customer_id
    if not customer:
        return []
    return [
        pi
        for pi in server.intents_of(customer)
        if purchase_id is None or pi.metadata.to_dict().get("reference") == purchase_id
    ]


def succeeded(intents: list[Any]) -> list[Any]:
    return [pi for pi in intents if pi.status == "succeeded"]


def webhook(server: LocalStripe, intent_id: str, kind: str = "payment_intent.succeeded") -> Any:
    """Stripe's webhook for the intent as localstripe holds it, signed as Stripe signs."""
    intent = server.client().v1.payment_intents.retrieve(intent_id).to_dict()
    payload = json.dumps(
        {"id": f"evt_{intent_id}", "object": "event", "type": kind, "data": {"object": intent}},
        default=str,
    ).encode()
    return Client().post(
        "/stripe/webhook",
        payload,
        content_type="application/json",
        headers={"Stripe-Signature": sign(payload, server.webhook_secret)},
    )


# --- start-up ------------------------------------------------------------------------------------

STRIPE_KEYS = {
    "STRIPE_SECRET_KEY": "sk_test_x",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_x",
}


@pytest.mark.parametrize("missing", sorted(STRIPE_KEYS))
def test_stripe_without_a_key_refuses_to_start_and_names_it(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in STRIPE_KEYS.items() if k != missing}
    refused = _run_check(tmp_path, DEBUG="true", LEARNCREDITS_PAYMENT_PROVIDER="stripe", **env)
    assert refused.returncode != 0
    assert f"{missing} is not set" in refused.stderr
    assert "Traceback" not in refused.stderr  # a message for the operator, not a crash


def test_stripe_with_its_keys_starts(tmp_path: Path) -> None:
    started = _run_check(
        tmp_path, DEBUG="true", LEARNCREDITS_PAYMENT_PROVIDER="stripe", **STRIPE_KEYS
    )
    assert started.returncode == 0, started.stderr


# --- the card on file ----------------------------------------------------------------------------


def test_a_card_is_saved_shown_and_removed(org: OrgHandle) -> None:
    assert org.api.get(org.path("/payment-method")).status == 404
    saved = ok(save_card(org, VISA))
    assert saved == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}
    assert ok(org.api.get(org.path("/payment-method"))) == saved
    customer = the_org(org).stripe_customer_id
    assert customer and customer.startswith("cus_")

    replaced = ok(org.operator.put(org.path("/payment-method"), {"payment_method": VISA}))
    assert replaced["last4"] == "4242"
    assert the_org(org).stripe_customer_id == customer  # one customer per org

    assert org.api.request("DELETE", org.path("/payment-method")).status == 204
    assert org.api.get(org.path("/payment-method")).status == 404
    assert org.api.request("DELETE", org.path("/payment-method")).status == 204
    actions = list(
        AuditEvent.objects.filter(org_id=the_org(org).pk, action__startswith="payment_method.")
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["payment_method.save", "payment_method.save", "payment_method.remove"]


def test_a_card_declined_on_attach_is_402_with_its_code(org: OrgHandle) -> None:
    refused = save_card(org, ATTACH_DECLINED)
    assert (refused.status, refused.code) == (402, "payment_failed")
    assert refused.body["decline_code"] == "card_declined"
    assert org.api.get(org.path("/payment-method")).status == 404


@pytest.mark.parametrize(
    "body",
    [{"payment_method": "4242424242424242"}, {"payment_method": "pm_"}, {}, {"card": "pm_x"}],
)
def test_a_bad_payment_method_is_422(org: OrgHandle, body: dict[str, Any]) -> None:
    refused = org.api.put(org.path("/payment-method"), body)
    assert (refused.status, refused.code) == (422, "validation_error")
    assert "payment_method" in refused.body["detail"]


def test_the_test_provider_keeps_no_card(make_org: Callable[..., OrgHandle]) -> None:
    org = make_org("Test provider")
    for method in ("PUT", "GET", "DELETE"):
        body = {"payment_method": VISA} if method == "PUT" else None
        refused = org.api.request(method, org.path("/payment-method"), body)
        assert (refused.status, refused.code) == (409, "invalid_state"), method
        assert "no card is kept with the test payment provider" in refused.body["detail"]


def test_the_customer_stored_first_is_the_one_used(org: OrgHandle) -> None:
    """Two requests racing to make the org's customer: the one stored first wins."""
    stale = the_org(org)
    first = payment_methods.ensure_stripe_customer(the_org(org))
    assert stale.stripe_customer_id is None
    assert payment_methods.ensure_stripe_customer(stale) == first
    assert the_org(org).stripe_customer_id == first


# --- purchases -----------------------------------------------------------------------------------


def test_a_purchase_is_one_succeeded_intent_of_its_total(org: OrgHandle, stripe_on: LocalStripe):
    ok(save_card(org, VISA))
    bought = ok(buy(org, 10, "k1"), 201)
    assert bought["status"] == "paid"
    assert bought["provider_reference"].startswith("pi_")
    [intent] = succeeded(intents_for(stripe_on, org, bought["id"]))
    assert (intent.id, intent.amount) == (bought["provider_reference"], bought["total_cents"])
    assert org.balance()["credits"] == 10
    again = buy(org, 10, "k1")  # a retry: the same purchase, no second charge
    assert (again.status, again.body["id"]) == (201, bought["id"])
    assert len(intents_for(stripe_on, org)) == 1
    assert org.balance()["credits"] == 10


def test_without_a_card_a_purchase_is_409_and_nothing_is_opened(
    org: OrgHandle, stripe_on: LocalStripe
) -> None:
    refused = buy(org, 10, "k")
    assert (refused.status, refused.code) == (409, "payment_method_required")
    assert not Purchase.objects.exists()
    assert intents_for(stripe_on, org) == []
    assert org.balance()["credits"] == 0


def test_a_declined_card_is_402_and_nothing_is_charged(org: OrgHandle, stripe_on: LocalStripe):
    ok(save_card(org, CHARGE_DECLINED))
    refused = buy(org, 10, "k")
    assert (refused.status, refused.code) == (402, "payment_failed")
    assert refused.body["decline_code"] == "card_declined"
    again = buy(org, 10, "k")
    assert (again.status, again.body["decline_code"]) == (402, "card_declined")
    assert Purchase.objects.get().status == "failed"
    assert len(intents_for(stripe_on, org)) == 1  # the retry made no second attempt
    assert succeeded(intents_for(stripe_on, org)) == []
    assert org.balance()["credits"] == 0


def test_a_card_removed_after_the_check_fails_the_purchase_without_an_intent(
    org: OrgHandle, stripe_on: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider's "no card" answer (no intent made) fails the purchase; no empty id is
    stored as its intent."""
    ok(save_card(org, VISA))
    real = payment_methods.require_card

    def check_then_lose_the_card(organization: Organization, provider_name: str) -> None:
        real(organization, provider_name)
        payment_methods.remove_card(organization, actor="test")

    monkeypatch.setattr("learncredits.billing.purchases.require_card", check_then_lose_the_card)
    refused = buy(org, 10, "k")
    assert (refused.status, refused.body["decline_code"]) == (402, "no_card_on_file")
    purchase = Purchase.objects.get()
    assert (purchase.status, purchase.provider_reference) == ("failed", "")
    assert intents_for(stripe_on, org) == []


def test_a_card_that_needs_authentication_waits_then_pays_once(
    org: OrgHandle, stripe_on: LocalStripe
) -> None:
    ok(save_card(org, stripe_on.card(THREE_D_SECURE)))
    pending = ok(buy(org, 10, "k"), 201)
    assert pending["status"] == "pending"
    intent_id = pending["provider_reference"]
    assert pending["next_action"]["type"] == "authenticate"
    assert pending["next_action"]["url"].endswith(f"/settings/payment?authenticate={intent_id}")
    assert succeeded(intents_for(stripe_on, org)) == [] and org.balance()["credits"] == 0

    admin = tenancy.create_user(
        the_org(org), email="admin@stripe.example", name="Admin", role="admin", password=None
    )
    client = Client()
    client.force_login(admin.user)
    page = client.get(f"/settings/payment?authenticate={intent_id}")
    assert page.status_code == 200
    assert f'data-client-secret="{intent_id}_secret_' in page.content.decode()
    stripe_on.authenticate(intent_id, success=True)  # what Stripe.js does with the bank
    done = client.post("/settings/payment", {"action": "authenticated", "intent": intent_id})
    lands_on_billing_with_its_receipt(client, done)
    assert len(succeeded(intents_for(stripe_on, org))) == 1
    assert org.balance()["credits"] == 10
    assert webhook(stripe_on, intent_id).status_code == 200  # late webhook: nothing more
    assert org.balance()["credits"] == 10


# --- the webhook ---------------------------------------------------------------------------------


def test_a_webhook_after_the_answer_changes_nothing(org: OrgHandle, stripe_on: LocalStripe):
    ok(save_card(org, VISA))
    bought = ok(buy(org, 10, "k"), 201)
    for _ in range(2):
        assert webhook(stripe_on, bought["provider_reference"]).status_code == 200
    assert org.balance()["credits"] == 10
    assert Purchase.objects.get().status == "paid"


def test_a_webhook_before_the_answer_credits_once(
    org: OrgHandle, stripe_on: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    class WebhookFirst(StripeProvider):
        def confirm(self, intent_id: str) -> payments.PaymentOutcome:
            outcome = super().confirm(intent_id)
            assert webhook(stripe_on, intent_id).status_code == 200  # Stripe was quicker
            assert Purchase.objects.get().status == "paid"
            return outcome

    monkeypatch.setitem(payments._PROVIDERS, "stripe", WebhookFirst)
    ok(save_card(org, VISA))
    bought = ok(buy(org, 10, "k"), 201)
    assert bought["status"] == "paid"
    assert org.balance()["credits"] == 10
    assert len(succeeded(intents_for(stripe_on, org))) == 1


def test_a_webhook_failure_fails_a_pending_purchase(org: OrgHandle, stripe_on: LocalStripe):
    ok(save_card(org, stripe_on.card(THREE_D_SECURE)))
    pending = ok(buy(org, 10, "k"), 201)
    intent_id = pending["provider_reference"]
    stripe_on.authenticate(intent_id, success=False)
    assert webhook(stripe_on, intent_id, "payment_intent.payment_failed").status_code == 200
    purchase = Purchase.objects.get()
    assert purchase.status == "failed"
    assert purchase.decline_code == "payment_intent_authentication_failure"
    assert org.balance()["credits"] == 0


@pytest.mark.parametrize("signature", ["", "t=1,v1=00", "wrong secret"])
def test_a_webhook_that_does_not_verify_is_400(
    org: OrgHandle, stripe_on: LocalStripe, signature: str
) -> None:
    ok(save_card(org, stripe_on.card(THREE_D_SECURE)))
    pending = ok(buy(org, 10, "k"), 201)
    stripe_on.authenticate(pending["provider_reference"], success=True)
    intent = stripe_on.client().v1.payment_intents.retrieve(pending["provider_reference"])
    payload = json.dumps(
        {"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": intent.to_dict()}},
        default=str,
    ).encode()
    if signature == "wrong secret":
        signature = sign(payload, "whsec_someone_else")
    refused = Client().post(
        "/stripe/webhook",
        payload,
        content_type="application/json",
        headers={"Stripe-Signature": signature},
    )
    assert refused.status_code == 400
    assert Purchase.objects.get().status == "pending" and org.balance()["credits"] == 0


def test_an_event_about_something_else_is_acknowledged(stripe_on: LocalStripe, db: None) -> None:
    payload = json.dumps(
        {"id": "evt_2", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}
    ).encode()
    answered = Client().post(
        "/stripe/webhook",
        payload,
        content_type="application/json",
        headers={"Stripe-Signature": sign(payload, stripe_on.webhook_secret)},
    )
    assert answered.status_code == 200


# --- crashes -------------------------------------------------------------------------------------


@pytest.fixture
def crash_after(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make the Stripe provider crash once, right after its ``step`` did its work."""
    return install_crashing_provider(monkeypatch, "stripe", StripeProvider)


def test_a_crash_after_the_charge_is_carried_on_by_the_retry(
    org: OrgHandle, stripe_on: LocalStripe, crash_after: Callable[[str], None]
) -> None:
    ok(save_card(org, VISA))
    crash_after("confirm")
    with pytest.raises(Crash):
        buy(org, 10, "k")
    [purchase] = Purchase.objects.all()
    assert purchase.status == "pending" and purchase.provider_reference.startswith("pi_")
    assert len(succeeded(intents_for(stripe_on, org))) == 1  # the money was taken
    assert org.balance()["credits"] == 0

    retried = ok(buy(org, 10, "k"), 201)
    assert retried["status"] == "paid" and retried["id"] == ids.encode("purchase", purchase.pk)
    assert len(intents_for(stripe_on, org)) == 1
    assert len(succeeded(intents_for(stripe_on, org))) == 1
    assert org.balance()["credits"] == 10


def test_a_crash_before_the_intent_was_stored_charges_only_the_stored_one(
    org: OrgHandle, stripe_on: LocalStripe, crash_after: Callable[[str], None]
) -> None:
    ok(save_card(org, VISA))
    crash_after("create_intent")
    with pytest.raises(Crash):
        buy(org, 10, "k")
    assert Purchase.objects.get().provider_reference == ""
    bought = ok(buy(org, 10, "k"), 201)
    intents = intents_for(stripe_on, org, bought["id"])
    assert len(intents) == 2  # the orphan, never confirmed, and the stored one
    [paid] = succeeded(intents)
    assert paid.id == bought["provider_reference"]
    assert org.balance()["credits"] == 10


# --- auto top-up ---------------------------------------------------------------------------------


def _rule(org: OrgHandle) -> None:
    auto_top_up.configure(
        the_org(org),
        auto_top_up.RuleIn(
            enabled=True,
            below_available=5,
            quantity=20,
            target_available=None,
            max_purchases_per_month=10,
            max_credits_per_month=1000,
        ),
    )


def test_auto_top_up_through_stripe_charges_once(org: OrgHandle, stripe_on: LocalStripe):
    ok(save_card(org, VISA))
    _rule(org)
    organization = the_org(org)
    assert auto_top_up.run_auto_top_up(organization.pk) == "bought 20"
    assert auto_top_up.run_auto_top_up(organization.pk) == "not needed"
    assert len(succeeded(intents_for(stripe_on, org))) == 1
    assert org.balance()["credits"] == 20


def test_auto_top_up_with_a_card_that_needs_authentication_gives_up(
    org: OrgHandle, stripe_on: LocalStripe
) -> None:
    ok(save_card(org, stripe_on.card(THREE_D_SECURE)))
    _rule(org)
    organization = the_org(org)
    assert auto_top_up.run_auto_top_up(organization.pk) == "needs authentication; rule disabled"
    assert Purchase.objects.get().decline_code == "authentication_required"
    assert succeeded(intents_for(stripe_on, org)) == []
    assert [pi.status for pi in intents_for(stripe_on, org)] == ["canceled"]


def test_auto_top_up_without_a_card_is_declined_and_switched_off(
    org: OrgHandle, stripe_on: LocalStripe
) -> None:
    _rule(org)
    assert auto_top_up.run_auto_top_up(the_org(org).pk) == "declined; rule disabled"
    assert Purchase.objects.get().provider_reference == ""
    assert intents_for(stripe_on, org) == []


# --- the dashboard page --------------------------------------------------------------------------


def _admin_client(org: OrgHandle) -> Client:
    admin = tenancy.create_user(
        the_org(org), email="admin@page.example", name="Admin", role="admin", password=None
    )
    client = Client()
    client.force_login(admin.user)
    return client


def test_the_payment_page_saves_a_card_made_by_stripe_js(org: OrgHandle, stripe_on: LocalStripe):
    client = _admin_client(org)
    page = client.get("/settings/payment").content.decode()
    assert 'data-testid="no-card"' in page
    assert f'data-publishable-key="{stripe_on.publishable_key}"' in page
    assert f'<script src="{stripe_on.js_url}"></script>' in page
    # What the page's script does with Stripe.js: confirm the SetupIntent with the card.
    secret = page.split('data-client-secret="', 1)[1].split('"', 1)[0]
    setup = stripe_on.client().v1.setup_intents.confirm(
        secret.split("_secret_")[0], {"payment_method": VISA}
    )
    saved = client.post(
        "/settings/payment", {"action": "save", "payment_method": str(setup.payment_method)}
    )
    assert saved.status_code == 302
    page = client.get("/settings/payment").content.decode()
    assert 'data-testid="card-last4">4242<' in page
    assert ok(org.api.get(org.path("/payment-method")))["last4"] == "4242"
    client.post("/settings/payment", {"action": "remove"})
    assert org.api.get(org.path("/payment-method")).status == 404


def test_the_payment_page_needs_no_card_with_the_test_provider(
    make_org: Callable[..., OrgHandle],
) -> None:
    client = _admin_client(make_org("Test provider"))
    page = client.get("/settings/payment")
    assert page.status_code == 200
    assert 'data-testid="no-card-needed"' in page.content.decode()


# --- monthly collection --------------------------------------------------------------------------


def test_a_monthly_invoice_is_charged_once_and_its_webhook_changes_nothing(
    org: OrgHandle, operator: Any, make_content: Any, stripe_on: LocalStripe
) -> None:
    from learncredits.billing.collection import collect_invoice
    from learncredits.billing.models import InvoicePayment
    from tests.billing.test_payments import _monthly_invoice

    ok(save_card(org, VISA))
    invoice = _monthly_invoice(org, operator, make_content)
    assert collect_invoice(invoice.pk) == "paid"
    [payment] = InvoicePayment.objects.all()
    assert payment.approved and payment.reference.startswith("pi_")
    [intent] = succeeded(intents_for(stripe_on, org))
    assert (intent.id, intent.amount) == (payment.reference, invoice.total_cents)
    assert webhook(stripe_on, intent.id).status_code == 200
    assert InvoicePayment.objects.count() == 1
    assert collect_invoice(invoice.pk) == "paid"
    assert len(intents_for(stripe_on, org)) == 1


def test_coming_back_from_stripes_page_carries_the_purchase_on(
    org: OrgHandle, stripe_on: LocalStripe
) -> None:
    ok(save_card(org, stripe_on.card(THREE_D_SECURE)))
    intent_id = ok(buy(org, 10, "k"), 201)["provider_reference"]
    client = _admin_client(org)
    stripe_on.authenticate(intent_id, success=True)
    back = client.get(f"/settings/payment?payment_intent={intent_id}")
    lands_on_billing_with_its_receipt(client, back)
    assert org.balance()["credits"] == 10
    assert client.get("/settings/payment?payment_intent=pi_not_ours").status_code == 404
