"""Template context for every dashboard page: the org and its balance icons."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from learncredits.catalog.services import current_price_book
from learncredits.credits.queries import balance_view
from learncredits.domain import pricing
from learncredits.domain.balance import Counters, credits_to_leave_risk
from learncredits.domain.money import format_cents
from learncredits.tenancy import access


def dashboard(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    membership = getattr(user, "membership", None) if user and user.is_authenticated else None
    if membership is None:
        return {}
    context: dict[str, Any] = {
        "membership": membership,
        "org": membership.org,
        # Which pages the nav offers: the access table's answer for each (tenancy/access.py).
        "can": {
            name.removeprefix("web:"): access.may(membership.role, name) for name in access.PAGES
        },
    }
    if membership.role != "learner":
        balance = balance_view(membership.org)
        context["balance"] = balance
        if balance.at_risk:
            needed = credits_to_leave_risk(
                Counters(balance.credits, balance.assigned), membership.org.alert_line()
            )
            quote = pricing.quote(
                current_price_book(), max(1, min(needed, pricing.MAX_PURCHASE_QUANTITY))
            )
            context["risk_quote"] = {
                "quantity": quote.quantity,
                "total": format_cents(quote.total_cents),
            }
    return context
