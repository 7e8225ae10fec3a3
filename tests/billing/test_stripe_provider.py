"""The Stripe provider against a live localstripe: no mocks. Every claim about money is
checked by listing what localstripe holds (intents, charges, refunds) rather than by
trusting what the provider answered: count charges, never trust them.

The tests need no database; they run in both halves of the suite like every other test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

from learncredits.billing import stripe_provider
from learncredits.billing.payments import PaymentRequest, PaymentStatus
from learncredits.billing.stripe_provider import (
    CardDeclined,
    CardInfo,
    RefundUpdate,
    StripeNotConfigured,
    StripeProvider,
    StripeUnavailable,
    WebhookSignatureError,
)

if TYPE_CHECKING:
    from tests.stripe_server import LocalStripe, WebhookReceiver

# The localstripe fixtures (localstripe_server, stripe_settings, webhook_receiver).
pytest_plugins = ["tests.stripe_server"]

VISA = "pm_card_visa"  # 4242: attaches, charges succeed
CHARGE_DECLINED = "pm_card_chargeCustomerFail"  # attaches, every charge declined
ATTACH_DECLINED = "pm_card_visa_chargeDeclined"  # refused on attach
THREE_D_SECURE = "4000002500003155"  # charges need the customer to authenticate

_references = iter(range(1, 1_000_000))


def customer_with(card: str | None, name: str = "Acme Training Co") -> str:
    customer = stripe_provider.ensure_customer(7, "billing@example.com", name)
    if card is not None:
        stripe_provider.attach_card(customer, card)
    return customer


def request_for(customer: str, amount_cents: int = 4500, reference: str = "") -> PaymentRequest:
    return PaymentRequest(
        reference=reference or f"pur_{next(_references)}",
        org_id=7,
        customer=customer,
        billing_email="billing@example.com",
        amount_cents=amount_cents,
        currency="USD",
        description="50 credits",
    )


def succeeded(charges: list[Any]) -> list[Any]:
    return [c for c in charges if c.status == "succeeded"]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header, computed the way Stripe documents it."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


# --- customers and cards ------------------------------------------------------------------------


def test_a_customer_gets_a_card_on_file_and_loses_it(stripe_settings: LocalStripe) -> None:
    customer = customer_with(None)
    assert customer.startswith("cus_")
    stored = stripe_settings.client().v1.customers.retrieve(customer)
    assert (stored.email, stored.name, stored.metadata["org_id"]) == (
        "billing@example.com",
        "Acme Training Co",
        "7",
    )
    assert stripe_provider.default_card(customer) is None

    card = stripe_provider.attach_card(customer, VISA)
    assert card == CardInfo(brand="visa", last4="4242", exp_month=12, exp_year=2030)
    assert stripe_provider.default_card(customer) == card

    stripe_provider.detach_default_card(customer)
    assert stripe_provider.default_card(customer) is None
    stripe_provider.detach_default_card(customer)  # nothing left: nothing to do


def test_a_new_card_replaces_the_one_on_file(stripe_settings: LocalStripe) -> None:
    customer = customer_with(VISA)
    first = stripe_provider.default_card(customer)
    replacement = stripe_settings.card("5555555555554444")
    assert stripe_provider.attach_card(customer, replacement).last4 == "4444"
    assert stripe_provider.default_card(customer) != first
    attached = stripe_settings.client().v1.payment_methods.list(
        {"customer": customer, "type": "card"}
    )
    assert [pm.id for pm in attached.data] == [replacement]  # one card on file


def test_a_card_declined_on_attach_says_why_and_changes_nothing(
    stripe_settings: LocalStripe,
) -> None:
    customer = customer_with(VISA)
    with pytest.raises(CardDeclined) as declined:
        stripe_provider.attach_card(customer, ATTACH_DECLINED)
    assert declined.value.decline_code == "card_declined"
    assert "declined" in declined.value.message
    card = stripe_provider.default_card(customer)
    assert card is not None and card.last4 == "4242"


def test_a_setup_intent_saves_a_card_for_later_charges(stripe_settings: LocalStripe) -> None:
    customer = customer_with(None)
    secret = stripe_provider.setup_intent(customer)
    setup_id = secret.split("_secret_")[0]
    client = stripe_settings.client()
    assert client.v1.setup_intents.retrieve(setup_id).usage == "off_session"
    # What Stripe.js does in the browser with the client secret and the card form:
    confirmed = client.v1.setup_intents.confirm(setup_id, {"payment_method": VISA})
    assert confirmed.status == "succeeded"
    card = stripe_provider.attach_card(customer, str(confirmed.payment_method))
    assert card.last4 == "4242"
    assert stripe_provider.stripe_js_config() == stripe_provider.StripeJsConfig(
        publishable_key=stripe_settings.publishable_key, js_url=stripe_settings.js_url
    )


# --- charges ------------------------------------------------------------------------------------


def test_a_charge_is_created_unconfirmed_then_charged_once(stripe_settings: LocalStripe) -> None:
    customer = customer_with(VISA)
    provider = StripeProvider()
    assert provider.name == stripe_provider.PROVIDER_NAME == "stripe"

    created = provider.create_intent(request_for(customer, 4500, reference="pur_41"))
    assert created.status == PaymentStatus.OPEN
    assert created.intent_id.startswith("pi_") and created.amount_cents == 4500
    [intent] = stripe_settings.intents_of(customer)
    assert intent.id == created.intent_id
    assert intent.status == "requires_confirmation"  # nothing charged
    assert (intent.amount, intent.currency) == (4500, "usd")
    assert dict(intent.metadata.to_dict()) == {
        "reference": "pur_41",
        "org_id": "7",
        "off_session": "false",
    }
    assert stripe_settings.charges_of(customer) == []

    charged = provider.confirm(created.intent_id)
    assert charged.status == PaymentStatus.SUCCEEDED
    assert (charged.intent_id, charged.amount_cents) == (created.intent_id, 4500)
    [charge] = stripe_settings.charges_of(customer)
    assert (charge.status, charge.amount, charge.payment_intent) == (
        "succeeded",
        4500,
        created.intent_id,
    )

    again = provider.confirm(created.intent_id)  # a retry after a lost answer
    assert again.status == PaymentStatus.SUCCEEDED
    assert provider.retrieve(created.intent_id) == charged
    assert len(stripe_settings.intents_of(customer)) == 1
    assert len(succeeded(stripe_settings.charges_of(customer))) == 1


def test_a_repeated_create_is_a_second_intent_that_charges_nothing(
    stripe_settings: LocalStripe,
) -> None:
    """localstripe ignores idempotency keys (as the provider must assume any provider may):
    a create repeated after a crash is a second intent. Only the stored one is confirmed;
    the other is canceled, and only one charge exists."""
    customer = customer_with(VISA)
    provider = StripeProvider()
    request = request_for(customer)
    stored = provider.create_intent(request)
    lost = provider.create_intent(request)
    assert stored.intent_id != lost.intent_id
    assert len(stripe_settings.intents_of(customer)) == 2
    assert stripe_settings.charges_of(customer) == []

    provider.cancel(lost.intent_id)
    assert provider.retrieve(lost.intent_id).status == PaymentStatus.CANCELED
    provider.cancel(lost.intent_id)  # canceling twice is harmless
    assert provider.confirm(lost.intent_id).status == PaymentStatus.CANCELED  # never charges

    assert provider.confirm(stored.intent_id).status == PaymentStatus.SUCCEEDED
    provider.cancel(stored.intent_id)  # too late: left as it is
    assert provider.retrieve(stored.intent_id).status == PaymentStatus.SUCCEEDED
    statuses = sorted(pi.status for pi in stripe_settings.intents_of(customer))
    assert statuses == ["canceled", "succeeded"]
    [charge] = stripe_settings.charges_of(customer)
    assert charge.payment_intent == stored.intent_id


def test_a_declined_charge_fails_with_its_decline_code(stripe_settings: LocalStripe) -> None:
    customer = customer_with(CHARGE_DECLINED)
    provider = StripeProvider()
    created = provider.create_intent(request_for(customer))
    assert created.status == PaymentStatus.OPEN

    failed = provider.confirm(created.intent_id)
    assert failed.status == PaymentStatus.FAILED
    assert failed.decline_code == "card_declined"
    assert "declined" in failed.failure_reason
    assert provider.retrieve(created.intent_id) == failed
    assert provider.confirm(created.intent_id) == failed  # a retry does not charge again
    charges = stripe_settings.charges_of(customer)
    assert [c.status for c in charges] == ["failed"]


def test_a_card_that_needs_authentication_requires_action(stripe_settings: LocalStripe) -> None:
    customer = customer_with(stripe_settings.card(THREE_D_SECURE))
    provider = StripeProvider()
    created = provider.create_intent(request_for(customer))

    pending = provider.confirm(created.intent_id)
    assert pending.status == PaymentStatus.REQUIRES_ACTION
    # localstripe answers with ``use_stripe_sdk`` (no redirect URL): the page completing it
    # uses the client secret with Stripe.js.
    assert pending.action_url == ""
    assert stripe_provider.client_secret(created.intent_id).startswith(created.intent_id)
    assert provider.confirm(created.intent_id).status == PaymentStatus.REQUIRES_ACTION
    assert stripe_settings.charges_of(customer) == []

    stripe_settings.authenticate(created.intent_id, success=True)
    assert provider.retrieve(created.intent_id).status == PaymentStatus.SUCCEEDED
    assert len(succeeded(stripe_settings.charges_of(customer))) == 1


def test_a_failed_authentication_fails_the_charge(stripe_settings: LocalStripe) -> None:
    customer = customer_with(stripe_settings.card(THREE_D_SECURE))
    provider = StripeProvider()
    created = provider.create_intent(request_for(customer))
    assert provider.confirm(created.intent_id).status == PaymentStatus.REQUIRES_ACTION

    stripe_settings.authenticate(created.intent_id, success=False)
    failed = provider.retrieve(created.intent_id)
    assert failed.status == PaymentStatus.FAILED
    assert failed.decline_code == "payment_intent_authentication_failure"
    assert provider.confirm(created.intent_id).status == PaymentStatus.FAILED
    assert stripe_settings.charges_of(customer) == []


def test_without_a_card_no_intent_is_made(stripe_settings: LocalStripe) -> None:
    customer = customer_with(None)
    provider = StripeProvider()
    for request in (request_for(customer), request_for("")):
        outcome = provider.create_intent(request)
        assert outcome.status == PaymentStatus.FAILED
        assert (outcome.intent_id, outcome.decline_code) == ("", stripe_provider.NO_CARD)
    assert stripe_settings.intents_of(customer) == []


def test_a_refund_returns_part_of_a_charge(stripe_settings: LocalStripe) -> None:
    customer = customer_with(VISA)
    provider = StripeProvider()
    created = provider.create_intent(request_for(customer, 9000))
    assert provider.confirm(created.intent_id).status == PaymentStatus.SUCCEEDED

    refund_id = stripe_provider.refund_intent(created.intent_id, 2500, "rfd_3")
    assert refund_id.startswith("re_")
    client = stripe_settings.client()
    [refund] = client.v1.refunds.list({"payment_intent": created.intent_id}).data
    assert (refund.id, refund.amount, refund.metadata["reference"]) == (refund_id, 2500, "rfd_3")
    [charge] = stripe_settings.charges_of(customer)
    assert (charge.amount, charge.amount_refunded, charge.refunded) == (9000, 2500, False)
    # The charge itself stands: the intent is still the one succeeded payment.
    assert provider.retrieve(created.intent_id).status == PaymentStatus.SUCCEEDED


# --- configuration and failures -----------------------------------------------------------------


def test_without_keys_nothing_is_sent(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_WEBHOOK_SECRET = ""
    with pytest.raises(StripeNotConfigured, match="STRIPE_SECRET_KEY"):
        StripeProvider().retrieve("pi_anything")
    with pytest.raises(StripeNotConfigured, match="STRIPE_WEBHOOK_SECRET"):
        stripe_provider.parse_webhook(b"{}", "t=1,v1=00")


def test_an_unreachable_stripe_is_unavailable_not_failed(
    settings: Any,
) -> None:
    """A network failure leaves the outcome unknown: it raises, it is never FAILED."""
    settings.STRIPE_SECRET_KEY = "sk_test_unused"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(StripeUnavailable):
        StripeProvider().confirm("pi_anything")


def test_an_unknown_intent_is_an_error(stripe_settings: LocalStripe) -> None:
    with pytest.raises(stripe_provider.StripeProviderError):
        StripeProvider().retrieve("pi_doesnotexist")


# --- webhooks (signatures need no server) -------------------------------------------------------


@pytest.fixture
def webhook_secret(settings: Any) -> str:
    settings.STRIPE_WEBHOOK_SECRET = "whsec_" + "0123456789abcdef" * 2
    settings.STRIPE_SECRET_KEY = "sk_test_unused"
    return str(settings.STRIPE_WEBHOOK_SECRET)


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": "evt_1", "object": "event", "type": kind, "data": {"object": obj}}
    ).encode()


def test_a_signed_webhook_is_accepted_and_mapped(webhook_secret: str) -> None:
    payload = _event(
        "payment_intent.succeeded",
        {"id": "pi_123", "object": "payment_intent", "status": "succeeded", "amount": 4500},
    )
    event = stripe_provider.parse_webhook(payload, sign(payload, webhook_secret))
    assert event.type == "payment_intent.succeeded"
    intent_id, outcome = stripe_provider.payment_update(event) or ("", None)
    assert intent_id == "pi_123"
    assert outcome is not None and not isinstance(outcome, RefundUpdate)
    assert (outcome.status, outcome.amount_cents) == (PaymentStatus.SUCCEEDED, 4500)


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "changed body", "no signature", "too old", "not json"],
)
def test_a_webhook_that_does_not_verify_is_refused(webhook_secret: str, tamper: str) -> None:
    payload = _event("payment_intent.succeeded", {"id": "pi_123", "status": "succeeded"})
    secret = webhook_secret
    header = sign(payload, secret)
    if tamper == "wrong secret":
        header = sign(payload, "whsec_someone_else")
    elif tamper == "changed body":
        payload = payload.replace(b"pi_123", b"pi_999")
    elif tamper == "no signature":
        header = ""
    elif tamper == "too old":
        header = sign(payload, secret, timestamp=int(time.time()) - 3600)
    elif tamper == "not json":
        payload = b"not json"
        header = sign(payload, secret)
    with pytest.raises(WebhookSignatureError):
        stripe_provider.parse_webhook(payload, header)


def test_failure_and_refund_events_are_mapped(webhook_secret: str) -> None:
    failed = _event(
        "payment_intent.payment_failed",
        {
            "id": "pi_7",
            "object": "payment_intent",
            "status": "requires_payment_method",
            "amount": 1200,
            "last_payment_error": {
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
            },
        },
    )
    event = stripe_provider.parse_webhook(failed, sign(failed, webhook_secret))
    intent_id, outcome = stripe_provider.payment_update(event) or ("", None)
    assert intent_id == "pi_7"
    assert outcome is not None and not isinstance(outcome, RefundUpdate)
    assert (outcome.status, outcome.decline_code, outcome.failure_reason) == (
        PaymentStatus.FAILED,
        "insufficient_funds",
        "Your card has insufficient funds.",
    )

    refunded = _event(
        "charge.refunded",
        {
            "id": "ch_9",
            "object": "charge",
            "payment_intent": "pi_8",
            "amount": 9000,
            "amount_refunded": 2500,
            "refunded": False,
        },
    )
    event = stripe_provider.parse_webhook(refunded, sign(refunded, webhook_secret))
    assert stripe_provider.payment_update(event) == (
        "pi_8",
        RefundUpdate(charge_id="ch_9", amount_refunded_cents=2500, fully_refunded=False),
    )

    other = _event("customer.created", {"id": "cus_1", "object": "customer"})
    event = stripe_provider.parse_webhook(other, sign(other, webhook_secret))
    assert stripe_provider.payment_update(event) is None


def test_localstripe_delivers_a_signed_event_for_a_charge(
    stripe_settings: LocalStripe, webhook_receiver: WebhookReceiver
) -> None:
    """End to end: the emulator signs its own delivery; the library verifies it."""
    stripe_settings.register_webhook(webhook_receiver.url, events=["payment_intent.succeeded"])
    customer = customer_with(VISA)
    provider = StripeProvider()
    created = provider.create_intent(request_for(customer))
    assert provider.confirm(created.intent_id).status == PaymentStatus.SUCCEEDED

    delivery = webhook_receiver.wait_for(lambda body, _: created.intent_id.encode() in body)
    assert delivery is not None, "localstripe sent no payment_intent.succeeded"
    body, signature = delivery
    event = stripe_provider.parse_webhook(body, signature)
    update = stripe_provider.payment_update(event)
    assert update is not None
    intent_id, outcome = update
    assert intent_id == created.intent_id
    assert not isinstance(outcome, RefundUpdate)
    assert outcome.status == PaymentStatus.SUCCEEDED
