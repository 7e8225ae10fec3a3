"""The card an organization pays with, kept at the payment provider (never here).

With the ``stripe`` provider every charge uses the org's default card at Stripe: each org
gets a Stripe customer the first time one is needed (``ensure_stripe_customer``), and the
dashboard's card form (Stripe.js) or the API attaches a card to it. Only Stripe's ids reach
us; we keep the customer id on the organization and nothing about the card. With the built-in
``test`` provider there is no card to keep: its billing-email triggers play the card.

Like every provider call, these never run inside a database transaction: the customer is
created at Stripe first, then stored by a conditional update, so two requests racing to
create one agree on the one stored first (the other customer is left empty at Stripe).
"""

from __future__ import annotations

import logging

from django.conf import settings

from learncredits.audit import trail as audit
from learncredits.billing import stripe_provider
from learncredits.billing.payments import ProviderCallInTransaction, in_transaction
from learncredits.billing.stripe_provider import CardInfo
from learncredits.domain.errors import InvalidState, PaymentFailed, PaymentMethodRequired
from learncredits.tenancy.models import Organization

logger = logging.getLogger(__name__)

STRIPE = "stripe"


def keeps_a_card(provider_name: str | None = None) -> bool:
    """Whether the provider charges a card kept on file (and so one must be saved first)."""
    return (provider_name or settings.LEARNCREDITS_PAYMENT_PROVIDER) == STRIPE


def _outside_transaction(what: str) -> None:
    if in_transaction():
        raise ProviderCallInTransaction(f"{what} calls Stripe; commit first")


def _require_stripe() -> None:
    if not keeps_a_card():
        raise InvalidState(
            "no card is kept with the test payment provider: its charges need no card "
            "(the billing email's +decline, +insufficient or +3ds play one)"
        )


def ensure_stripe_customer(org: Organization) -> str:
    """The org's Stripe customer id, creating the customer at Stripe the first time.

    Never inside a transaction (a customer is not undone by a rollback). The id is stored
    only where none is yet (``WHERE stripe_customer_id IS NULL``): if another request stored
    one first, that one is used and ours stays unused at Stripe, with no card and no charge.
    """
    if org.stripe_customer_id:
        return org.stripe_customer_id
    _outside_transaction("ensure_stripe_customer")
    created = stripe_provider.ensure_customer(org.pk, org.billing_email, org.name)
    stored = Organization.objects.filter(pk=org.pk, stripe_customer_id__isnull=True).update(
        stripe_customer_id=created
    )
    if not stored:
        logger.info("org %s got a Stripe customer concurrently; %s left unused", org.pk, created)
    org.stripe_customer_id = (
        Organization.objects.filter(pk=org.pk).values_list("stripe_customer_id", flat=True).get()
    )
    return str(org.stripe_customer_id)


def card_on_file(org: Organization) -> CardInfo | None:
    """The card charges use, or None (also for an org that has no Stripe customer yet)."""
    _require_stripe()
    if not org.stripe_customer_id:
        return None
    _outside_transaction("card_on_file")
    return stripe_provider.default_card(org.stripe_customer_id)


def save_card(org: Organization, payment_method: str, *, actor: str) -> CardInfo:
    """Make ``payment_method`` (a PaymentMethod made by Stripe.js) the org's card, replacing
    any card before it; a card refused on attach is ``PaymentFailed`` with its decline code,
    and leaves the card on file as it was."""
    _require_stripe()
    customer = ensure_stripe_customer(org)
    try:
        card = stripe_provider.attach_card(customer, payment_method)
    except stripe_provider.CardDeclined as exc:
        raise PaymentFailed(
            f"the card was declined: {exc.message}", decline_code=exc.decline_code
        ) from exc
    except stripe_provider.StripeProviderError as exc:
        if isinstance(exc, stripe_provider.StripeUnavailable | stripe_provider.StripeNotConfigured):
            raise
        # Stripe refused the id itself (unknown, already used, of another account).
        raise PaymentFailed(
            f"Stripe refused this payment method: {exc}", decline_code="invalid_payment_method"
        ) from exc
    audit.record(
        actor,
        "payment_method.save",
        org_id=org.pk,
        target=f"org_{org.pk}",
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
    )
    return card


def remove_card(org: Organization, *, actor: str) -> None:
    """Remove the card on file: later charges need another card first."""
    _require_stripe()
    if not org.stripe_customer_id:
        return
    _outside_transaction("remove_card")
    if stripe_provider.default_card(org.stripe_customer_id) is None:
        return  # nothing on file: nothing to remove, nothing to audit
    stripe_provider.detach_default_card(org.stripe_customer_id)
    audit.record(actor, "payment_method.remove", org_id=org.pk, target=f"org_{org.pk}")


def require_card(org: Organization, provider_name: str) -> None:
    """Refuse a purchase before it is opened when the provider needs a card and the org has
    none: nothing would be charged, and no failed purchase should be left behind."""
    if not keeps_a_card(provider_name):
        return
    if card_on_file(org) is None:
        raise PaymentMethodRequired(
            "no card on file: add one (PUT /orgs/{org_id}/payment-method, or Settings > "
            "Payment method in the dashboard) before buying"
        )


def setup_form(org: Organization) -> str:
    """A SetupIntent's client secret for the dashboard's card form."""
    _require_stripe()
    return stripe_provider.setup_intent(ensure_stripe_customer(org))
