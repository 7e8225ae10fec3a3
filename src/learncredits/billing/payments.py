"""Payment providers: the one interface every charge goes through.

A charge is a payment intent with the provider, in three steps that each survive a crash:
``create_intent`` (unconfirmed, carrying our reference in its metadata), then our row stores
the intent's id and commits, then ``confirm``. A retry finds the stored id and continues with
``retrieve``/``confirm``, so one purchase can never become two charges, even with a provider
that ignores idempotency keys. An intent created but never stored is never confirmed: it
charges nothing.

No provider call may run inside a database transaction: a charge is not undone by a
rollback, and a lock held across a network call stalls every other writer. ``get_provider``
hands out providers wrapped in a guard that refuses any call made inside one.

``TestProvider`` is the built-in provider for development, demos and tests. It keeps its
intents in its own table (``billing.TestPaymentIntent``), as a real provider keeps them on its
side, so tests can count charges. It approves every charge except for organizations whose
billing email's local part carries a trigger: ``+decline`` (declined, ``card_declined``),
``+insufficient`` (declined, ``insufficient_funds``), ``+3ds`` (the charge needs the customer
to authenticate before it succeeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from django.conf import settings
from django.db import connection
from django.utils import timezone


class PaymentStatus(StrEnum):
    OPEN = "open"  # created, not confirmed yet (or still processing)
    REQUIRES_ACTION = "requires_action"  # the customer must authenticate (3-D Secure)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class PaymentRequest:
    """What to charge. ``reference`` names our row (``pur_12``, ``inv_7.attempt_2``) and is
    kept in the intent's metadata, so the provider's side can always be matched to ours."""

    reference: str
    org_id: int
    customer: str  # the org's customer at the provider; "" where the provider needs none
    billing_email: str
    amount_cents: int
    currency: str
    description: str
    # Charged with nobody at the keyboard (auto top-up, monthly collection): a card that asks
    # for authentication fails (``authentication_required``) instead of waiting for it.
    off_session: bool = False


@dataclass(frozen=True)
class PaymentOutcome:
    intent_id: str
    status: PaymentStatus
    amount_cents: int = 0
    decline_code: str = ""
    failure_reason: str = ""
    # Where the customer completes authentication (REQUIRES_ACTION).
    action_url: str = ""


class PaymentProvider(Protocol):
    name: str

    def create_intent(self, request: PaymentRequest) -> PaymentOutcome:
        """A new unconfirmed intent (status OPEN); nothing is charged yet."""
        ...

    def confirm(self, intent_id: str) -> PaymentOutcome:
        """Charge the intent. Confirming one that already succeeded charges nothing more."""
        ...

    def retrieve(self, intent_id: str) -> PaymentOutcome:
        """The intent's state at the provider, changing nothing."""
        ...

    def cancel(self, intent_id: str) -> None:
        """Give up an unconfirmed intent (one that lost a race to be stored)."""
        ...

    def refund(self, intent_id: str, amount_cents: int, reference: str) -> str:
        """Give ``amount_cents`` of a succeeded intent back; the refund's id. ``reference``
        names our refund row: the same reference again is the same refund, not a second."""
        ...


class ProviderCallInTransaction(RuntimeError):
    """A provider was called inside a database transaction: a programming error."""


def in_transaction() -> bool:
    """Whether a transaction of ours is open on the default connection. The test suite's
    own per-test transaction (Django's TestCase) does not count: it stands for autocommit."""
    blocks = connection.atomic_blocks
    return bool(blocks) and not getattr(blocks[-1], "_from_testcase", False)


class _Guarded:
    """Forwards to a provider, refusing any call made inside a database transaction."""

    def __init__(self, inner: PaymentProvider) -> None:
        self._inner = inner
        self.name = inner.name

    def _check(self, what: str) -> None:
        if in_transaction():
            raise ProviderCallInTransaction(
                f"{self.name}.{what} called inside a database transaction; commit first"
            )

    def create_intent(self, request: PaymentRequest) -> PaymentOutcome:
        self._check("create_intent")
        return self._inner.create_intent(request)

    def confirm(self, intent_id: str) -> PaymentOutcome:
        self._check("confirm")
        return self._inner.confirm(intent_id)

    def retrieve(self, intent_id: str) -> PaymentOutcome:
        self._check("retrieve")
        return self._inner.retrieve(intent_id)

    def cancel(self, intent_id: str) -> None:
        self._check("cancel")
        self._inner.cancel(intent_id)

    def refund(self, intent_id: str, amount_cents: int, reference: str) -> str:
        self._check("refund")
        return self._inner.refund(intent_id, amount_cents, reference)


# --- the built-in test provider ------------------------------------------------------------------

DECLINE_TRIGGERS = {"+decline": "card_declined", "+insufficient": "insufficient_funds"}
AUTHENTICATE_TRIGGER = "+3ds"
TEST_INTENT_PREFIX = "tpi_"
TEST_REFUND_PREFIX = "tre_"


def _outcome(intent: object) -> PaymentOutcome:
    from learncredits.billing.models import TestPaymentIntent

    assert isinstance(intent, TestPaymentIntent)
    return PaymentOutcome(
        intent_id=f"{TEST_INTENT_PREFIX}{intent.pk}",
        status=PaymentStatus(intent.status),
        amount_cents=intent.amount_cents,
        decline_code=intent.decline_code,
        failure_reason=(
            f"{intent.decline_code.replace('_', ' ')} (test card)" if intent.decline_code else ""
        ),
        action_url=(
            f"{settings.LEARNCREDITS_BASE_URL}/payments/test/authenticate/"
            f"{TEST_INTENT_PREFIX}{intent.pk}"
            if intent.status == PaymentStatus.REQUIRES_ACTION
            else ""
        ),
    )


class TestProvider:
    """A provider with state of its own, in its own table, so tests can count charges."""

    name = "test"
    __test__ = False  # not a test class, whatever its name says

    def _get(self, intent_id: str) -> object:
        from learncredits.billing.models import TestPaymentIntent

        pk = intent_id.removeprefix(TEST_INTENT_PREFIX)
        found = TestPaymentIntent.objects.filter(pk=int(pk) if pk.isascii() and pk.isdigit() else 0)
        intent = found.first()
        if intent is None:
            raise LookupError(f"no test payment intent {intent_id}")
        return intent

    def create_intent(self, request: PaymentRequest) -> PaymentOutcome:
        from learncredits.billing.models import TestPaymentIntent

        local_part = request.billing_email.partition("@")[0].lower()
        intent = TestPaymentIntent.objects.create(
            reference=request.reference,
            org_id=request.org_id,
            amount_cents=request.amount_cents,
            currency=request.currency,
            card=next(
                (
                    trigger
                    for trigger in (*DECLINE_TRIGGERS, AUTHENTICATE_TRIGGER)
                    if trigger in local_part
                ),
                "",
            ),
        )
        return _outcome(intent)

    def confirm(self, intent_id: str) -> PaymentOutcome:
        from learncredits.billing.models import TestPaymentIntent

        intent = self._get(intent_id)
        assert isinstance(intent, TestPaymentIntent)
        if intent.status != PaymentStatus.OPEN:
            return _outcome(intent)  # confirming twice charges once
        if intent.card in DECLINE_TRIGGERS:
            status, code = PaymentStatus.FAILED, DECLINE_TRIGGERS[intent.card]
        elif intent.card == AUTHENTICATE_TRIGGER:
            status, code = PaymentStatus.REQUIRES_ACTION, ""
        else:
            status, code = PaymentStatus.SUCCEEDED, ""
        # Conditional, like a provider's own state machine: two confirmations racing on one
        # intent charge it once.
        TestPaymentIntent.objects.filter(pk=intent.pk, status=PaymentStatus.OPEN).update(
            status=status, decline_code=code, confirmed_at=timezone.now()
        )
        return self.retrieve(intent_id)

    def retrieve(self, intent_id: str) -> PaymentOutcome:
        return _outcome(self._get(intent_id))

    def cancel(self, intent_id: str) -> None:
        from learncredits.billing.models import TestPaymentIntent

        intent = self._get(intent_id)
        TestPaymentIntent.objects.filter(
            pk=getattr(intent, "pk", 0), status=PaymentStatus.OPEN
        ).update(status=PaymentStatus.CANCELED)

    def refund(self, intent_id: str, amount_cents: int, reference: str) -> str:
        """Record money given back in the provider's own table, once per ``reference`` (as a
        provider's idempotency key makes a retried refund the same refund); refuses more
        than the intent took, as a provider does."""
        from django.db.models import Sum

        from learncredits.billing.models import TestPaymentIntent, TestRefund

        intent = self._get(intent_id)
        assert isinstance(intent, TestPaymentIntent)
        found = TestRefund.objects.filter(reference=reference).first()
        if found is None:
            if intent.status != PaymentStatus.SUCCEEDED:
                raise ValueError(f"{intent_id} has not succeeded: nothing to refund")
            given = TestRefund.objects.filter(intent_id=intent_id).aggregate(t=Sum("amount_cents"))
            if amount_cents <= 0 or (given["t"] or 0) + amount_cents > intent.amount_cents:
                raise ValueError(f"cannot refund {amount_cents} of {intent_id}")
            found, _ = TestRefund.objects.get_or_create(
                reference=reference,
                defaults={"intent_id": intent_id, "amount_cents": amount_cents},
            )
        return f"{TEST_REFUND_PREFIX}{found.pk}"

    def authenticate(self, intent_id: str, *, approve: bool) -> PaymentOutcome:
        """The customer's answer to the authentication step (what 3-D Secure does in a
        browser with a real card network)."""
        from learncredits.billing.models import TestPaymentIntent

        intent = self._get(intent_id)
        TestPaymentIntent.objects.filter(
            pk=getattr(intent, "pk", 0), status=PaymentStatus.REQUIRES_ACTION
        ).update(
            status=PaymentStatus.SUCCEEDED if approve else PaymentStatus.FAILED,
            decline_code="" if approve else "authentication_failed",
        )
        return self.retrieve(intent_id)


_PROVIDERS: dict[str, type] = {"test": TestProvider}


def get_provider(name: str | None = None) -> PaymentProvider:
    """The provider by name (a purchase's own, to carry it on), by default the configured one,
    wrapped in the guard against calls inside a transaction."""
    name = name or settings.LEARNCREDITS_PAYMENT_PROVIDER
    if name not in _PROVIDERS and name == "stripe":
        # Imported here, not at the top: stripe_provider imports this module.
        from learncredits.billing.stripe_provider import StripeProvider

        _PROVIDERS["stripe"] = StripeProvider
    provider_cls = _PROVIDERS[name]
    return _Guarded(provider_cls())
