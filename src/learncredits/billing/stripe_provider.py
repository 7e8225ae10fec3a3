"""Stripe as a payment provider, through the official ``stripe`` library.

``StripeProvider`` implements the ``PaymentProvider`` protocol of ``billing.payments``: a
charge is a Stripe PaymentIntent created unconfirmed (our reference in its metadata), stored
by the caller, then confirmed. Stripe statuses map onto ``PaymentStatus``:

=========================================================  ===============
Stripe                                                     ours
=========================================================  ===============
requires_payment_method, requires_confirmation, processing  OPEN
requires_payment_method with a ``last_payment_error``       FAILED
requires_action                                             REQUIRES_ACTION
succeeded                                                   SUCCEEDED
canceled                                                    CANCELED
=========================================================  ===============

The card charged is the customer's default (``invoice_settings.default_payment_method``),
saved beforehand from the dashboard through a SetupIntent (``setup_intent``, Stripe.js) and
``attach_card``. Cards are only ever handled as Stripe ids: no card number reaches us.

Every call builds its client from Django settings read at call time (``STRIPE_SECRET_KEY``,
``STRIPE_API_BASE``, ...), so nothing is kept in the ``stripe`` module's global state, which
would leak between tests and between configurations. Clients never retry by themselves: a
retried confirmation after a timeout could charge twice; the caller retries with
``retrieve`` instead (see ``billing.payments``). For the same reason a network failure is
raised as ``StripeUnavailable`` ("the outcome is unknown"), never mapped to FAILED.

A confirmation carries a ``return_url`` (``STRIPE_RETURN_URL``, by default
``LEARNCREDITS_BASE_URL`` + ``RETURN_PATH``): Stripe then answers an intent that needs 3-D
Secure with a page to send the customer to (``action_url``), and it is required when the
account's automatic payment methods may redirect.

``STRIPE_LOCALSTRIPE`` (default off) says the API base is localstripe, the emulator the tests
run against, which refuses parameters it does not implement: the intent's ``description``
and the confirmation's ``return_url`` are then left out. Nothing else differs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import stripe
from django.conf import settings
from stripe.params import PaymentIntentConfirmParams, PaymentIntentCreateParams

from learncredits.billing.payments import PaymentOutcome, PaymentRequest, PaymentStatus

logger = logging.getLogger(__name__)

PROVIDER_NAME = "stripe"
DEFAULT_API_BASE = "https://api.stripe.com"
DEFAULT_JS_URL = "https://js.stripe.com/v3/"
# Seconds to connect, then to wait for an answer. Short, so a hung request does not hold a
# worker; long enough for a confirmation, which waits on the card network.
TIMEOUT = (5.0, 30.0)
# Where Stripe sends the customer back after authentication, under LEARNCREDITS_BASE_URL
# (unless STRIPE_RETURN_URL says otherwise); Stripe adds ``?payment_intent=pi_...``.
RETURN_PATH = "/settings/payment"
# The decline code of an intent that could not be charged because no card is on file.
NO_CARD = "no_card_on_file"


# --- errors -------------------------------------------------------------------------------------


class StripeProviderError(RuntimeError):
    """A Stripe call failed. As such (not a subclass): Stripe refused the request, and sending
    it again will not change that."""


class StripeNotConfigured(StripeProviderError):
    """A setting is missing, or Stripe refused our secret key."""


class StripeUnavailable(StripeProviderError):
    """Stripe could not be reached or failed (network, timeout, 5xx, rate limit). The outcome
    of the call is unknown: ``retrieve`` the intent before deciding anything."""


class CardDeclined(StripeProviderError):
    """The card was refused (on attach, or on a charge outside an intent)."""

    def __init__(self, decline_code: str, message: str) -> None:
        super().__init__(f"the card was declined ({decline_code}): {message}")
        self.decline_code = decline_code
        self.message = message


class WebhookSignatureError(StripeProviderError):
    """A webhook whose signature does not verify (or is too old, or is not JSON): refuse it."""


@contextmanager
def _translated() -> Iterator[None]:
    """Stripe's errors as ours, so callers need not import ``stripe``; the original error
    stays as ``__cause__``."""
    try:
        yield
    except StripeProviderError:
        raise
    except stripe.CardError as exc:
        code, message = _card_error(exc)
        raise CardDeclined(code, message) from exc
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
        raise StripeUnavailable(f"Stripe did not answer: {exc.user_message or exc}") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise StripeNotConfigured(f"Stripe refused our key: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        raise StripeProviderError(f"Stripe refused the request: {exc.user_message or exc}") from (
            exc
        )


def _card_error(exc: stripe.CardError) -> tuple[str, str]:
    decline_code = _get(exc.error, "decline_code") or exc.code or "card_declined"
    return str(decline_code), str(exc.user_message or "the card was declined")


# --- configuration ------------------------------------------------------------------------------


def _setting(name: str, default: Any = "") -> Any:
    return getattr(settings, name, default)


@lru_cache(maxsize=8)
def _client_for(secret_key: str, api_base: str) -> stripe.StripeClient:
    # Cached per configuration only: clients hold pooled connections, never settings of their
    # own, so a test that points the settings elsewhere gets another client.
    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": api_base},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=TIMEOUT),
    )


def _client() -> stripe.StripeClient:
    secret_key = str(_setting("STRIPE_SECRET_KEY") or "")
    if not secret_key:
        raise StripeNotConfigured("STRIPE_SECRET_KEY is not set")
    api_base = str(_setting("STRIPE_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    return _client_for(secret_key, api_base)


def _localstripe() -> bool:
    return bool(_setting("STRIPE_LOCALSTRIPE", False))


def _return_url() -> str:
    configured = str(_setting("STRIPE_RETURN_URL") or "")
    base = str(_setting("LEARNCREDITS_BASE_URL", "") or "").rstrip("/")
    return configured or f"{base}{RETURN_PATH}"


@dataclass(frozen=True)
class StripeJsConfig:
    """What a card form in the browser needs (with a SetupIntent's client secret)."""

    publishable_key: str
    js_url: str


def stripe_js_config() -> StripeJsConfig:
    return StripeJsConfig(
        publishable_key=str(_setting("STRIPE_PUBLISHABLE_KEY") or ""),
        js_url=str(_setting("STRIPE_JS_URL") or DEFAULT_JS_URL),
    )


# --- intents ------------------------------------------------------------------------------------


def _plain(obj: stripe.StripeObject | Mapping[str, Any]) -> Mapping[str, Any]:
    """The object's fields as plain dicts (a ``StripeObject`` is not a mapping)."""
    return obj.to_dict() if isinstance(obj, stripe.StripeObject) else obj


def _get(obj: stripe.StripeObject | Mapping[str, Any] | None, name: str) -> Any:
    """A field that may be absent (older API versions, the emulator) or null."""
    return None if obj is None else _plain(obj).get(name)


def outcome_of(intent: stripe.StripeObject | Mapping[str, Any]) -> PaymentOutcome:
    """Our view of a PaymentIntent (from the API or from a webhook's event)."""
    intent = _plain(intent)
    status = str(_get(intent, "status") or "")
    error = _get(intent, "last_payment_error")
    common: dict[str, Any] = {
        "intent_id": str(intent["id"]),
        "amount_cents": int(_get(intent, "amount") or 0),
    }
    if status == "succeeded":
        return PaymentOutcome(status=PaymentStatus.SUCCEEDED, **common)
    if status == "canceled":
        return PaymentOutcome(status=PaymentStatus.CANCELED, **common)
    if status == "requires_action":
        # A redirect (when confirmed with a return_url) gives a URL to send the customer to;
        # ``use_stripe_sdk`` gives none: the page that completes it loads Stripe.js with the
        # intent's client secret (``client_secret``) and calls handleNextAction.
        next_action = _get(intent, "next_action")
        redirect = _get(next_action, "redirect_to_url")
        return PaymentOutcome(
            status=PaymentStatus.REQUIRES_ACTION,
            action_url=str(_get(redirect, "url") or ""),
            **common,
        )
    if status == "requires_payment_method" and error:
        code = _get(error, "decline_code") or _get(error, "code") or "card_declined"
        return PaymentOutcome(
            status=PaymentStatus.FAILED,
            decline_code=str(code),
            failure_reason=str(_get(error, "message") or f"the card was declined ({code})"),
            **common,
        )
    # requires_payment_method, requires_confirmation, processing, requires_capture (never
    # asked for) and any status Stripe adds later: not final.
    return PaymentOutcome(status=PaymentStatus.OPEN, **common)


class StripeProvider:
    """The ``PaymentProvider`` for Stripe. Never call it inside a database transaction (the
    guard of ``payments.get_provider`` refuses that); it opens none itself."""

    name = PROVIDER_NAME

    def create_intent(self, request: PaymentRequest) -> PaymentOutcome:
        """An unconfirmed intent on the customer's default card: nothing is charged yet.

        Without a card on file no intent is made, and the outcome is FAILED
        (``no_card_on_file``, empty ``intent_id``): retrying cannot help until a card is added.
        No idempotency key is sent: a repeated create is a second, unconfirmed intent that
        charges nothing (``payments`` confirms only the stored one)."""
        with _translated():
            client = _client()
            payment_method = (
                _default_payment_method_id(client, request.customer) if request.customer else ""
            )
            if not payment_method:
                return PaymentOutcome(
                    intent_id="",
                    status=PaymentStatus.FAILED,
                    amount_cents=request.amount_cents,
                    decline_code=NO_CARD,
                    failure_reason="no card on file: add one in Settings > Billing",
                )
            params: PaymentIntentCreateParams = {
                "amount": request.amount_cents,
                "currency": request.currency.lower(),
                "customer": request.customer,
                "payment_method": payment_method,
                "confirm": False,
                "metadata": {
                    "reference": request.reference,
                    "org_id": str(request.org_id),
                    # Read back at confirmation: nobody is there to authenticate.
                    "off_session": "true" if request.off_session else "false",
                },
            }
            if not _localstripe():
                params["description"] = request.description
            intent = client.v1.payment_intents.create(params)
            return outcome_of(intent)

    def confirm(self, intent_id: str) -> PaymentOutcome:
        """Charge the intent. A declined card is FAILED with its decline code. Confirming an
        intent that is past confirmation (succeeded, failed, canceled, awaiting
        authentication) raises nothing and charges nothing: its current state is returned."""
        with _translated():
            client = _client()
            params: PaymentIntentConfirmParams = {}
            if not _localstripe():  # localstripe refuses both parameters
                metadata = _get(client.v1.payment_intents.retrieve(intent_id), "metadata")
                if _get(metadata, "off_session") == "true":
                    # An automatic charge: a card that asks for authentication fails at once
                    # (authentication_required) instead of waiting for nobody.
                    params["off_session"] = True
                else:
                    # Where the customer comes back to after authenticating; with it, an
                    # intent that needs authentication answers with a URL to send them to.
                    params["return_url"] = _return_url()
            try:
                intent = client.v1.payment_intents.confirm(intent_id, params)
            except stripe.CardError as exc:
                code, message = _card_error(exc)
                outcome = outcome_of(client.v1.payment_intents.retrieve(intent_id))
                if outcome.status == PaymentStatus.FAILED:
                    return outcome
                return replace(
                    outcome,
                    status=PaymentStatus.FAILED,
                    decline_code=code,
                    failure_reason=message,
                )
            except stripe.InvalidRequestError as exc:
                # Stripe refuses to confirm an intent in a state that cannot be confirmed
                # (``payment_intent_unexpected_state``): look at where it is instead.
                current = client.v1.payment_intents.retrieve(intent_id)
                status = _get(current, "status")
                if status == "requires_confirmation":
                    raise  # a confirmable intent refused: a real error, not a repeat
                outcome = outcome_of(current)
                if outcome.status == PaymentStatus.OPEN and status == "requires_payment_method":
                    # Its card went away (detached) before it was confirmed.
                    return replace(
                        outcome,
                        status=PaymentStatus.FAILED,
                        decline_code=NO_CARD,
                        failure_reason=f"the intent has no card to charge: {exc.user_message}",
                    )
                return outcome
            return outcome_of(intent)

    def refund(self, intent_id: str, amount_cents: int, reference: str) -> str:
        """Give money of a succeeded intent back (``refund_intent``)."""
        return refund_intent(intent_id, amount_cents, reference)

    def retrieve(self, intent_id: str) -> PaymentOutcome:
        """The intent's state at Stripe, changing nothing."""
        with _translated():
            return outcome_of(_client().v1.payment_intents.retrieve(intent_id))

    def cancel(self, intent_id: str) -> None:
        """Give up an unconfirmed intent. Like the test provider, an intent that can no longer
        be canceled (already canceled, succeeded) is left as it is; that is logged, since a
        succeeded intent nobody stored is money to look into."""
        with _translated():
            client = _client()
            try:
                client.v1.payment_intents.cancel(intent_id)
            except stripe.InvalidRequestError:
                status = _get(client.v1.payment_intents.retrieve(intent_id), "status")
                if status != "canceled":
                    logger.warning(
                        "cancel of Stripe intent %s refused: it is %s", intent_id, status
                    )


def client_secret(intent_id: str) -> str:
    """The intent's client secret, for the page where the customer completes authentication
    with Stripe.js (REQUIRES_ACTION with ``use_stripe_sdk``, where there is no URL)."""
    with _translated():
        return str(_client().v1.payment_intents.retrieve(intent_id).client_secret or "")


def refund_intent(intent_id: str, amount_cents: int, reference: str) -> str:
    """Refund part (or all) of a succeeded intent; the refund's id. ``reference`` names our
    row: it goes into the refund's metadata and its idempotency key, so a retried refund is
    the same refund at Stripe, not a second one."""
    with _translated():
        created = _client().v1.refunds.create(
            {
                "payment_intent": intent_id,
                "amount": amount_cents,
                "metadata": {"reference": reference},
            },
            {"idempotency_key": f"learncredits-refund-{reference}-{intent_id}-{amount_cents}"},
        )
        return str(created.id)


# --- customers and cards ------------------------------------------------------------------------


@dataclass(frozen=True)
class CardInfo:
    brand: str
    last4: str
    exp_month: int
    exp_year: int


def _card_info(payment_method: stripe.StripeObject) -> CardInfo:
    card = _get(payment_method, "card") or {}
    return CardInfo(
        brand=str(_get(card, "brand") or ""),
        last4=str(_get(card, "last4") or ""),
        exp_month=int(_get(card, "exp_month") or 0),
        exp_year=int(_get(card, "exp_year") or 0),
    )


def _default_payment_method_id(client: stripe.StripeClient, customer_id: str) -> str:
    customer = client.v1.customers.retrieve(customer_id)
    default = _get(_get(customer, "invoice_settings"), "default_payment_method")
    if isinstance(default, Mapping):  # expanded
        default = default.get("id")
    return str(default or "")


def ensure_customer(org_id: int, email: str, name: str) -> str:
    """A new Stripe customer for the organization; the caller stores its id (and calls this
    only when it has none stored)."""
    with _translated():
        customer = _client().v1.customers.create(
            {"email": email, "name": name, "metadata": {"org_id": str(org_id)}}
        )
        return str(customer.id)


def attach_card(customer_id: str, payment_method_id: str) -> CardInfo:
    """Attach a card (a PaymentMethod made by Stripe.js) and make it the customer's default,
    the card every charge uses. The card it replaces is detached: an organization has one
    card on file. A card refused on attach raises ``CardDeclined`` with its decline code."""
    with _translated():
        client = _client()
        previous = _default_payment_method_id(client, customer_id)
        method = client.v1.payment_methods.attach(payment_method_id, {"customer": customer_id})
        # The attached method's own id: a test alias such as ``pm_card_visa`` attaches a new
        # PaymentMethod each time, so the id given is not always the id attached.
        client.v1.customers.update(
            customer_id, {"invoice_settings": {"default_payment_method": method.id}}
        )
        if previous and previous != method.id:
            client.v1.payment_methods.detach(previous)
        return _card_info(method)


def default_card(customer_id: str) -> CardInfo | None:
    """The card charges use, or None."""
    with _translated():
        client = _client()
        payment_method = _default_payment_method_id(client, customer_id)
        if not payment_method:
            return None
        return _card_info(client.v1.payment_methods.retrieve(payment_method))


def detach_default_card(customer_id: str) -> None:
    """Remove the card on file; later charges fail with ``no_card_on_file`` until another is
    attached."""
    with _translated():
        client = _client()
        payment_method = _default_payment_method_id(client, customer_id)
        if not payment_method:
            return
        client.v1.customers.update(
            customer_id, {"invoice_settings": {"default_payment_method": ""}}
        )
        client.v1.payment_methods.detach(payment_method)


def setup_intent(customer_id: str) -> str:
    """A SetupIntent's client secret, for a Stripe.js card form: the browser sends the card
    to Stripe, never to us, and the card is saved for charges made without the customer
    present (``usage=off_session``). Then ``attach_card`` with the PaymentMethod it made."""
    with _translated():
        created = _client().v1.setup_intents.create(
            {"customer": customer_id, "usage": "off_session"}
        )
        return str(created.client_secret)


# --- webhooks -----------------------------------------------------------------------------------


def parse_webhook(payload: bytes, signature_header: str) -> stripe.Event:
    """The event of a webhook from Stripe, after the library has verified its signature
    (HMAC-SHA256 with ``STRIPE_WEBHOOK_SECRET``, at most five minutes old). Anything else
    raises ``WebhookSignatureError``: an unsigned body must never change a payment."""
    secret = str(_setting("STRIPE_WEBHOOK_SECRET") or "")
    if not secret:
        raise StripeNotConfigured("STRIPE_WEBHOOK_SECRET is not set")
    try:
        event: stripe.Event = stripe.Webhook.construct_event(
            payload,
            signature_header,
            secret,
            api_key=str(_setting("STRIPE_SECRET_KEY") or "") or None,
        )
        return event
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureError(f"bad Stripe webhook signature: {exc}") from exc
    except ValueError as exc:
        raise WebhookSignatureError(f"the Stripe webhook is not a JSON event: {exc}") from exc


@dataclass(frozen=True)
class RefundUpdate:
    """A charge's refunds as Stripe reports them (``charge.refunded``)."""

    charge_id: str
    amount_refunded_cents: int
    fully_refunded: bool


def payment_update(
    event: stripe.StripeObject | Mapping[str, Any],
) -> tuple[str, PaymentOutcome | RefundUpdate] | None:
    """What a verified event says about one of our intents: (intent id, its outcome) for
    ``payment_intent.succeeded`` / ``payment_intent.payment_failed``, (intent id, refunds)
    for ``charge.refunded``; None for any other event (nothing to do)."""
    event = _plain(event)
    kind = _get(event, "type")
    obj = _get(_get(event, "data"), "object")
    if not isinstance(obj, Mapping):
        return None
    if kind == "payment_intent.succeeded":
        return str(obj["id"]), outcome_of(obj)
    if kind == "payment_intent.payment_failed":
        outcome = outcome_of(obj)
        if outcome.status != PaymentStatus.FAILED:
            outcome = replace(
                outcome,
                status=PaymentStatus.FAILED,
                decline_code=outcome.decline_code or "card_declined",
                failure_reason=outcome.failure_reason or "the payment failed",
            )
        return str(obj["id"]), outcome
    if kind == "charge.refunded":
        intent = _get(obj, "payment_intent")
        if isinstance(intent, Mapping):
            intent = intent.get("id")
        if not intent:
            return None
        return str(intent), RefundUpdate(
            charge_id=str(obj["id"]),
            amount_refunded_cents=int(_get(obj, "amount_refunded") or 0),
            fully_refunded=bool(_get(obj, "refunded")),
        )
    return None


if TYPE_CHECKING:
    from learncredits.billing.payments import PaymentProvider

    _conforms: PaymentProvider = StripeProvider()  # mypy checks the protocol here
