"""The org's payment method (the card charges use) in the v1 API.

The card itself stays at the payment provider: a client (Stripe.js, or a server holding a
PaymentMethod id) sends only the provider's id, and gets back what identifies the card to a
person (brand, last four digits, expiry). With the built-in test provider there is no card
to keep, and these endpoints say so (409).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from ninja import Router
from pydantic import Field, StrictStr, field_validator

from learncredits.api.auth import caller, org_for
from learncredits.api.common import responses
from learncredits.api.problems import problem
from learncredits.api.schemas import PaymentMethodOut, StrictIn
from learncredits.billing import payment_methods
from learncredits.billing.stripe_provider import CardInfo, StripeNotConfigured, StripeUnavailable
from learncredits.domain.errors import NotFound

router = Router(tags=["purchases"])

# What Stripe.js and Stripe's API hand out: ``pm_`` then letters, digits and underscores
# (test aliases such as ``pm_card_visa`` included).
PAYMENT_METHOD_ID = re.compile(r"pm_[A-Za-z0-9_]{1,200}")


class PaymentMethodIn(StrictIn):
    payment_method: Annotated[StrictStr, Field(min_length=4, max_length=203)]

    @field_validator("payment_method")
    @classmethod
    def _provider_id(cls, value: str) -> str:
        if not PAYMENT_METHOD_ID.fullmatch(value):
            raise ValueError(
                "must be a Stripe PaymentMethod id (pm_ followed by letters, digits or _), "
                "as Stripe.js returns it; card numbers are never sent here"
            )
        return value


def _provider_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """The provider unreachable or misconfigured is 503 (try again later), not a 500."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return view(request, *args, **kwargs)
        except (StripeUnavailable, StripeNotConfigured) as exc:
            response = problem(
                503,
                "unavailable",
                "Service unavailable",
                f"the payment provider could not be reached; retry shortly ({exc})",
            )
            response["Retry-After"] = "5"
            return response

    return wrapped


@router.put(
    "/orgs/{org_id}/payment-method",
    response=responses(200, PaymentMethodOut, 402, 409, 503),
)
@_provider_errors
def put_payment_method(request: HttpRequest, org_id: str, body: PaymentMethodIn) -> CardInfo:
    """Make a card the org's payment method (replacing the one before): ``payment_method`` is
    the PaymentMethod id Stripe.js made from the card form. A card refused on attach is 402
    ``payment_failed`` with its ``decline_code`` and changes nothing."""
    org = org_for(request, org_id)
    return payment_methods.save_card(org, body.payment_method, actor=caller(request).label)


@router.get(
    "/orgs/{org_id}/payment-method",
    response=responses(200, PaymentMethodOut, 409, 503),
)
@_provider_errors
def get_payment_method(request: HttpRequest, org_id: str) -> CardInfo:
    """The card charges use; 404 when none is on file."""
    org = org_for(request, org_id)
    card = payment_methods.card_on_file(org)
    if card is None:
        raise NotFound("no card on file")
    return card


@router.delete(
    "/orgs/{org_id}/payment-method",
    response=responses(204, None, 409, 503),
)
@_provider_errors
def delete_payment_method(request: HttpRequest, org_id: str) -> HttpResponse:
    """Remove the card on file; purchases then answer 409 ``payment_method_required`` until
    another is saved. Removing when there is none changes nothing (204 as well)."""
    org = org_for(request, org_id)
    payment_methods.remove_card(org, actor=caller(request).label)
    return HttpResponse(status=204)
