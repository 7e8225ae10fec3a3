"""Refunds from the operator console, and refunds made in Stripe's own dashboard.

The console's refund form calls ``refunds.refund_purchase``, the function behind the API's
refund route, so these tests check the page around it: it is staff only and CSRF-protected,
it shows the credit note's number or the service's reason for refusing, and a refused
refund writes nothing. Money returned is counted on the provider's side (``TestRefund``).

A refund made in Stripe's dashboard arrives as a signed ``charge.refunded`` webhook; it is
recorded for the operator (an audit event naming the purchase and the amount) and changes no
credits. The charge and the refund are real objects at localstripe, the event is signed as
Stripe signs it (localstripe sends no ``charge.refunded`` itself).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.billing import refunds
from learncredits.billing.models import Invoice, Refund, TestRefund
from learncredits.billing.webhook_views import OUTSIDE_REFUND
from learncredits.credits.models import Purchase
from learncredits.tenancy.models import Organization
from tests.billing.test_refunds import billing_rows, ledger_ok, money_back
from tests.billing.test_stripe_provider import sign
from tests.conftest import OrgHandle, ok

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from tests.stripe_server import LocalStripe

pytest_plugins = ["tests.stripe_server"]

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
PASSWORD = "Console-Password-42"


def staff_user(
    username: str = "ops@operator.example", *, superuser: bool = False
) -> AbstractBaseUser:
    """A console user: staff is all the refund form asks; the model lists also want the
    model's view permission, which a superuser has."""
    return get_user_model().objects.create_user(  # type: ignore[attr-defined,no-any-return]
        username, username, PASSWORD, is_staff=True, is_superuser=superuser
    )


def signed_in(user: AbstractBaseUser, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user, backend=MODEL_BACKEND)
    return client


def purchase_pk(public_id: str) -> int:
    return ids.decode("purchase", public_id) or 0


def refund_url(public_id: str) -> str:
    return f"/admin/credits/purchase/{purchase_pk(public_id)}/refund/"


def refund_form(
    client: Client, public_id: str, credits: Any, reason: str = "unused", key: str | None = None
) -> Any:
    """The refund form as a browser submits it: its one-time key taken from the page."""
    page = client.get(refund_url(public_id))
    assert page.status_code == 200
    key = key or page.context["form"].initial["refund_key"]
    return client.post(
        refund_url(public_id), {"credits": credits, "reason": reason, "refund_key": key}
    )


# --- the console's refund form ------------------------------------------------------------------


@pytest.fixture
def bought(org: OrgHandle) -> dict[str, Any]:
    return org.buy(10)  # 10 credits at $10.00, with the test provider


def test_staff_refund_from_the_console_shows_the_credit_note(
    org: OrgHandle, bought: dict[str, Any]
) -> None:
    ops = signed_in(staff_user())
    root = signed_in(staff_user("root@operator.example", superuser=True))
    listed = root.get("/admin/credits/purchase/")
    assert refund_url(bought["id"]).encode() in listed.content  # a paid purchase links to it
    shown = root.get(f"/admin/credits/purchase/{purchase_pk(bought['id'])}/change/")
    assert refund_url(bought["id"]).encode() in shown.content

    done = refund_form(ops, bought["id"], 4, reason="did not need them")
    assert done.status_code == 302
    page = ops.get(done["Location"])
    (refund,) = Refund.objects.filter(purchase_id=purchase_pk(bought["id"]))
    note = refund.credit_note
    assert note.number.startswith("CN-")
    text = page.content.decode()
    assert f"credit note {note.number}" in text  # the message
    assert f'data-testid="credit-note-number">{note.number}<' in text  # the refunds table

    assert (refund.credits, refund.amount_cents, refund.status) == (4, 4000, Refund.Status.DONE)
    assert (refund.actor, refund.reason) == ("operator:ops@operator.example", "did not need them")
    assert org.balance()["credits"] == 6
    assert money_back(bought["provider_reference"]) == 4000  # on the provider's side
    ledger_ok()

    ops = root
    # The credit note is in the console: listed with the invoices, filtered by kind, and
    # found by the number of the receipt it credits.
    receipt = Invoice.objects.get(purchase_id=purchase_pk(bought["id"]))
    notes = ops.get("/admin/billing/invoice/", {"kind": "credit_note"})
    assert [i.number for i in notes.context["cl"].result_list] == [note.number]
    assert note.number in notes.content.decode()
    assert note.number in ops.get("/admin/billing/invoice/", {"q": receipt.number}).content.decode()
    assert ops.get(f"/admin/billing/invoice/{note.pk}/change/").status_code == 200


def test_resubmitting_the_same_form_refunds_once(org: OrgHandle, bought: dict[str, Any]) -> None:
    ops = signed_in(staff_user())
    key = "a1b2c3d4e5f6"
    for _ in range(2):  # a double click, or the browser re-posting the form
        assert refund_form(ops, bought["id"], 3, key=key).status_code == 302
    assert Refund.objects.count() == 1
    assert TestRefund.objects.count() == 1
    assert org.balance()["credits"] == 7


def test_too_many_credits_shows_the_reason_and_changes_nothing(
    org: OrgHandle,
    bought: dict[str, Any],
    snapshot: Callable[[], dict[str, list[tuple[Any, ...]]]],
) -> None:
    ops = signed_in(staff_user())
    before, rows, audit = snapshot(), billing_rows(), AuditEvent.objects.count()
    refused = refund_form(ops, bought["id"], 11)
    assert refused.status_code == 409
    text = refused.content.decode()
    assert "at most 10 credits of this purchase can be refunded" in text
    assert (snapshot(), billing_rows(), AuditEvent.objects.count()) == (before, rows, audit)
    assert org.balance()["credits"] == 10

    blank = refund_form(ops, bought["id"], 2, reason="   ")
    assert blank.status_code in (200, 422)  # the form's own check, or the service's
    assert (snapshot(), billing_rows()) == (before, rows)


def test_an_unpaid_purchase_offers_no_refund(make_org: Callable[..., OrgHandle]) -> None:
    declined = make_org("Declines", billing_email="billing+decline@example.com")
    assert declined.api.post(declined.path("/purchases"), {"quantity": 5}).status == 402
    purchase = Purchase.objects.get(org_id=ids.decode("org", declined.id))
    ops = signed_in(staff_user())
    public = ids.encode("purchase", purchase.pk) or ""
    page = ops.get(refund_url(public))
    assert b'data-testid="refund-not-paid"' in page.content
    rows = billing_rows()
    refused = ops.post(refund_url(public), {"credits": 1, "reason": "x", "refund_key": "k1"})
    assert refused.status_code == 409
    assert "cannot be refunded" in refused.content.decode()
    assert billing_rows() == rows


def test_only_staff_reach_the_refund_form(
    org: OrgHandle, bought: dict[str, Any], snapshot: Callable[[], dict[str, list[tuple[Any, ...]]]]
) -> None:
    ok(
        org.operator.post(
            org.path("/users"),
            {"email": "alice@acme.example", "name": "Alice", "role": "admin", "password": PASSWORD},
        ),
        201,
    )
    org_admin = get_user_model().objects.get(email="alice@acme.example")
    form = {"credits": 2, "reason": "x", "refund_key": "k2"}
    clients = (Client(), signed_in(org_admin))
    before, rows = snapshot(), billing_rows()
    for client in clients:
        for response in (
            client.get(refund_url(bought["id"])),
            client.post(refund_url(bought["id"]), form),
        ):
            assert response.status_code == 302
            assert response["Location"].startswith("/admin/login/")
    assert (snapshot(), billing_rows()) == (before, rows)

    # Staff, but without the CSRF token a browser would send: refused.
    ops = signed_in(staff_user(), csrf=True)
    assert ops.post(refund_url(bought["id"]), form).status_code == 403
    assert billing_rows() == rows


# --- a refund made in Stripe's own dashboard ----------------------------------------------------


@pytest.fixture
def stripe_on(settings: Any, stripe_settings: LocalStripe) -> LocalStripe:
    settings.LEARNCREDITS_PAYMENT_PROVIDER = "stripe"
    return stripe_settings


def charge_refunded(server: LocalStripe, intent_id: str, event_id: str) -> Any:
    """Stripe's ``charge.refunded`` for the intent's charge as localstripe holds it now."""
    latest = server.client().v1.payment_intents.retrieve(intent_id).latest_charge
    latest_id = latest if isinstance(latest, str) else latest.id  # id, or expanded
    charge = server.client().v1.charges.retrieve(latest_id)
    payload = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "charge.refunded",
            "data": {"object": charge.to_dict()},
        },
        default=str,
    ).encode()
    return Client().post(
        "/stripe/webhook",
        payload,
        content_type="application/json",
        headers={"Stripe-Signature": sign(payload, server.webhook_secret)},
    )


def stripe_purchase(org: OrgHandle, quantity: int) -> dict[str, Any]:
    ok(org.api.put(org.path("/payment-method"), {"payment_method": "pm_card_visa"}))
    return ok(org.api.post(org.path("/purchases"), {"quantity": quantity}), 201)


def test_a_refund_made_in_stripes_dashboard_is_recorded_not_applied(
    make_org: Callable[..., OrgHandle], stripe_on: LocalStripe, caplog: pytest.LogCaptureFixture
) -> None:
    org = make_org("Stripe Co")
    bought = stripe_purchase(org, 10)
    intent_id = bought["provider_reference"]
    # Someone refunds $25.00 in Stripe's dashboard: straight at Stripe, not through us.
    stripe_on.client().v1.refunds.create({"payment_intent": intent_id, "amount": 2500})

    with caplog.at_level(logging.WARNING, logger="learncredits.billing.webhook_views"):
        assert charge_refunded(stripe_on, intent_id, "evt_outside_1").status_code == 200
    (event,) = AuditEvent.objects.filter(action=OUTSIDE_REFUND)
    assert (event.actor, event.target, event.org_id) == (
        "stripe",
        bought["id"],
        ids.decode("org", org.id),
    )
    assert event.details["refunded_outside_cents"] == 2500
    assert event.details["intent_id"] == intent_id
    assert any(
        bought["id"] in r.getMessage() and "2500 cents" in r.getMessage() for r in caplog.records
    )
    # No credits moved: an operator decides.
    assert org.balance()["credits"] == 10
    assert not Refund.objects.exists()

    # Stripe delivers the same event again: one record.
    assert charge_refunded(stripe_on, intent_id, "evt_outside_1").status_code == 200
    assert AuditEvent.objects.filter(action=OUTSIDE_REFUND).count() == 1


def test_our_own_refund_echoed_by_stripe_is_not_news(
    make_org: Callable[..., OrgHandle], stripe_on: LocalStripe
) -> None:
    org = make_org("Stripe Co")
    bought = stripe_purchase(org, 10)
    the_org = Organization.objects.get(pk=ids.decode("org", org.id))
    refunds.refund_purchase(
        the_org, purchase_pk(bought["id"]), 3, reason="unused", actor="operator:ops"
    )
    intent_id = bought["provider_reference"]
    assert charge_refunded(stripe_on, intent_id, "evt_ours").status_code == 200
    assert not AuditEvent.objects.filter(action=OUTSIDE_REFUND).exists()

    # Then $10.00 more, in Stripe's dashboard: only that part is reported.
    stripe_on.client().v1.refunds.create({"payment_intent": intent_id, "amount": 1000})
    assert charge_refunded(stripe_on, intent_id, "evt_more").status_code == 200
    (event,) = AuditEvent.objects.filter(action=OUTSIDE_REFUND)
    assert (event.details["refunded_by_us_cents"], event.details["refunded_outside_cents"]) == (
        3000,
        1000,
    )
    assert org.balance()["credits"] == 7
