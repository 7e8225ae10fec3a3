"""Settings > Payment method: the card the org pays with, saved through Stripe.js.

The card number goes from the browser to Stripe only (Stripe.js confirms a SetupIntent with
the card form); the page then posts the PaymentMethod id Stripe made, and the server
attaches it as the org's card (``billing.payment_methods``), exactly as the API's
``PUT /orgs/{org_id}/payment-method`` does. The same page completes a purchase whose card
asks for 3-D Secure (``?authenticate=pi_...``): Stripe.js shows the bank's step, then the
page posts back and the purchase is carried on from Stripe's own state; a customer sent to
Stripe's own page comes back to it with ``?payment_intent=pi_...`` (set ``STRIPE_RETURN_URL``
to this page) and is carried on the same way.

With the built-in test provider there is no card to keep, and the page says so.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from learncredits.billing import payment_methods, purchases, stripe_provider
from learncredits.billing.payments import get_provider
from learncredits.credits.models import Purchase
from learncredits.domain.errors import DomainError
from learncredits.web.views import _actor, _org, bought, org_admin

TEMPLATE = "web/settings_payment.html"


def _waiting_purchase(request: HttpRequest, intent_id: str) -> Purchase:
    """The org's own Stripe purchase waiting on this intent; 404 for anything else."""
    purchase = Purchase.objects.filter(
        org=_org(request),
        provider=stripe_provider.PROVIDER_NAME,
        provider_reference=intent_id,
    ).first()
    if purchase is None or not intent_id:
        raise Http404("no such payment")
    return purchase


def _authenticated(request: HttpRequest, intent_id: str) -> HttpResponse:
    """After Stripe.js's authentication step: Stripe's own state of the intent decides."""
    purchase = _waiting_purchase(request, intent_id)
    if purchase.status == Purchase.Status.PENDING:
        outcome = get_provider(stripe_provider.PROVIDER_NAME).retrieve(intent_id)
        purchase = purchases.apply_outcome(purchase, outcome)
    if purchase.status == Purchase.Status.PAID:
        return bought(request, purchase)
    if purchase.status == Purchase.Status.FAILED:
        messages.error(request, f"The payment was not completed: {purchase.failure_reason}")
        return redirect("web:buy")
    messages.info(request, "The payment is still waiting for your bank.")
    return redirect(f"/settings/payment?authenticate={intent_id}")


@org_admin
@require_http_methods(["GET", "POST"])
def payment_method(request: HttpRequest) -> HttpResponse:
    """Show the card on file and a card form; save (``action=save``, ``payment_method``) or
    remove (``action=remove``) it; finish a 3-D Secure purchase (``action=authenticated``)."""
    org = _org(request)
    if not payment_methods.keeps_a_card():
        return render(request, TEMPLATE, {"card_needed": False})
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "authenticated":
                return _authenticated(request, request.POST.get("intent", ""))
            if action == "save":
                card = payment_methods.save_card(
                    org, request.POST.get("payment_method", ""), actor=_actor(request)
                )
                messages.success(
                    request, f"Saved: {card.brand} ending in {card.last4}; purchases use it."
                )
            elif action == "remove":
                payment_methods.remove_card(org, actor=_actor(request))
                messages.success(request, "The card was removed.")
            else:
                messages.error(request, "Nothing to do: choose save or remove.")
        except DomainError as exc:
            messages.error(request, exc.detail)
        except stripe_provider.StripeProviderError as exc:
            messages.error(request, f"Stripe could not be reached; try again ({exc}).")
        return redirect("web:payment_method")
    returned = request.GET.get("payment_intent", "")
    if returned:
        # Back from Stripe's own authentication page (a redirect, when STRIPE_RETURN_URL
        # names this page): Stripe's state of the intent decides, as after Stripe.js.
        try:
            return _authenticated(request, returned)
        except stripe_provider.StripeProviderError as exc:
            messages.error(request, f"Stripe could not be reached; try again ({exc}).")
            return redirect(f"/settings/payment?authenticate={returned}")
    context: dict[str, Any] = {"card_needed": True}
    intent_id = request.GET.get("authenticate", "")
    try:
        if intent_id:
            purchase = _waiting_purchase(request, intent_id)
            context["purchase"] = purchase
            if purchase.status == Purchase.Status.PENDING:
                context["payment_secret"] = stripe_provider.client_secret(intent_id)
        context["card"] = payment_methods.card_on_file(org)
        context["setup_secret"] = payment_methods.setup_form(org)
        context["stripe"] = stripe_provider.stripe_js_config()
    except stripe_provider.StripeProviderError as exc:
        messages.error(request, f"Stripe could not be reached; try again shortly ({exc}).")
        context["unavailable"] = True
    return render(request, TEMPLATE, context)
