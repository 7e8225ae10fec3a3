"""Payments exactly once: every charge counted on the provider's side, across retries and
crashes at each step, never inside a database transaction.

The built-in test provider keeps its intents in its own table, as a real provider keeps them
on its servers; these tests count succeeded intents there and never trust what our side says.
A crash is a provider that does its work and then raises a BaseException, as a process killed
right after the provider answered would: our side never hears the answer.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from learncredits import ids
from learncredits.billing import auto_top_up, payments, purchases
from learncredits.billing.collection import collect_invoice
from learncredits.billing.models import (
    AutoTopUp,
    Invoice,
    InvoiceCharge,
    InvoicePayment,
    TestPaymentIntent,
)
from learncredits.credits.models import Purchase
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Organization
from tests.conftest import (
    ON_POSTGRES,
    Crash,
    OrgHandle,
    install_crashing_provider,
    lands_on_billing_with_its_receipt,
    ok,
)


def charges(reference: str | None = None) -> int:
    succeeded = TestPaymentIntent.objects.filter(status="succeeded")
    if reference is not None:
        succeeded = succeeded.filter(reference=reference)
    return succeeded.count()


@pytest.fixture
def crash_after(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the test provider crash once, right after its ``step`` did its work."""
    return install_crashing_provider(monkeypatch, "test", payments.TestProvider)


def buy(org: OrgHandle, quantity: int, key: str | None) -> Any:
    return org.api.post(org.path("/purchases"), {"quantity": quantity}, idem=key)


def the_org(org: OrgHandle) -> Organization:
    return Organization.objects.get(pk=ids.decode("org", org.id))


# --- the API ---------------------------------------------------------------------------------


def test_a_purchase_is_one_charge_of_its_total(org):
    bought = ok(buy(org, 10, "k1"), 201)
    assert bought["status"] == "paid"
    assert bought["provider_reference"].startswith("tpi_")
    [intent] = TestPaymentIntent.objects.filter(status="succeeded")
    assert (intent.reference, intent.amount_cents) == (bought["id"], bought["total_cents"])
    assert org.balance()["credits"] == 10


def test_a_retry_with_the_same_key_is_the_same_purchase_and_no_second_charge(org):
    first = ok(buy(org, 10, "same"), 201)
    again = buy(org, 10, "same")
    assert again.status == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.body["id"] == first["id"]
    assert charges() == 1
    assert org.balance()["credits"] == 10


def test_the_same_key_with_another_quantity_is_refused_and_charges_nothing(org):
    ok(buy(org, 10, "same"), 201)
    refused = buy(org, 11, "same")
    assert (refused.status, refused.code) == (422, "idempotency_key_reused")
    assert Purchase.objects.count() == 1
    assert charges() == 1


def test_a_crash_after_the_charge_is_carried_on_by_the_retry(org, crash_after):
    """The provider took the money, and the request died before hearing so."""
    crash_after("confirm")
    with pytest.raises(Crash):
        buy(org, 10, "k")
    [purchase] = Purchase.objects.all()
    assert purchase.status == "pending" and purchase.provider_reference
    assert charges() == 1 and org.balance()["credits"] == 0

    retried = ok(buy(org, 10, "k"), 201)
    assert retried["status"] == "paid" and retried["id"] == ids.encode("purchase", purchase.pk)
    assert charges() == 1
    assert org.balance()["credits"] == 10


def test_a_crash_before_the_intent_was_stored_charges_only_the_stored_one(org, crash_after):
    crash_after("create_intent")
    with pytest.raises(Crash):
        buy(org, 10, "k")
    [purchase] = Purchase.objects.all()
    assert purchase.provider_reference == ""  # the orphan intent was never stored
    ok(buy(org, 10, "k"), 201)
    assert TestPaymentIntent.objects.count() == 2  # the orphan, never confirmed
    assert charges() == 1
    assert charges(ids.encode("purchase", purchase.pk)) == 1
    assert org.balance()["credits"] == 10


def test_a_declined_card_is_402_with_its_code_and_a_retry_says_the_same(make_org):
    org = make_org("Declines", billing_email="billing+decline@example.com")
    refused = buy(org, 10, "k")
    assert (refused.status, refused.code) == (402, "payment_failed")
    assert refused.body["decline_code"] == "card_declined"
    again = buy(org, 10, "k")
    assert (again.status, again.body["decline_code"]) == (402, "card_declined")
    assert TestPaymentIntent.objects.count() == 1  # the retry made no second attempt
    assert charges() == 0 and org.balance()["credits"] == 0
    assert Purchase.objects.get().status == "failed"


def test_a_card_that_needs_authentication_waits_then_pays_once(make_org):
    org = make_org("Secure", billing_email="billing+3ds@example.com")
    pending = ok(buy(org, 10, "k"), 201)
    assert pending["status"] == "pending"
    assert pending["next_action"]["type"] == "authenticate"
    intent_id = pending["provider_reference"]
    assert pending["next_action"]["url"].endswith(f"/payments/test/authenticate/{intent_id}")
    assert charges() == 0 and org.balance()["credits"] == 0

    admin = tenancy.create_user(
        the_org(org), email="admin@secure.example", name="Admin", role="admin", password=None
    )
    client = Client()
    client.force_login(admin.user)
    page = client.get(f"/payments/test/authenticate/{intent_id}")
    assert page.status_code == 200
    done = client.post(f"/payments/test/authenticate/{intent_id}", {"answer": "approve"})
    lands_on_billing_with_its_receipt(client, done)
    assert charges() == 1 and org.balance()["credits"] == 10
    again = client.post(f"/payments/test/authenticate/{intent_id}", {"answer": "approve"})
    assert again.status_code == 302
    assert charges() == 1 and org.balance()["credits"] == 10


def test_the_dashboard_form_buys_once_however_often_it_is_sent(org):
    admin = tenancy.create_user(
        the_org(org), email="admin@form.example", name="Admin", role="admin", password=None
    )
    client = Client()
    client.force_login(admin.user)
    form = {"quantity": "5", "purchase_key": "a1b2c3"}
    first = client.post("/buy", form)
    second = client.post("/buy", form)  # a double click, a resubmitted form
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert Purchase.objects.count() == 1 and charges() == 1
    assert org.balance()["credits"] == 5


# --- boundaries ------------------------------------------------------------------------------


def test_a_provider_call_inside_a_transaction_fails_loudly(org):
    provider = payments.get_provider()
    with transaction.atomic(), pytest.raises(payments.ProviderCallInTransaction):
        provider.retrieve("tpi_1")


def test_opening_a_purchase_inside_a_transaction_fails_loudly(org):
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        purchases.purchase_credits(the_org(org), 1, actor="test")
    assert Purchase.objects.count() == 0 and TestPaymentIntent.objects.count() == 0


# --- reconciliation --------------------------------------------------------------------------


def test_reconciliation_settles_what_crashes_left_pending(org, crash_after):
    crash_after("confirm")
    with pytest.raises(Crash):
        buy(org, 10, "charged")  # money taken, answer lost
    crash_after("create_intent")
    with pytest.raises(Crash):
        buy(org, 3, "never-charged")
    assert set(Purchase.objects.values_list("status", flat=True)) == {"pending"}

    assert purchases.reconcile_pending() == {"paid": 0, "failed": 0, "waiting": 0}  # too new
    later = timezone.now() + timedelta(minutes=16)
    counts = purchases.reconcile_pending(now=later)
    assert counts == {"paid": 1, "failed": 1, "waiting": 0}
    paid, failed = Purchase.objects.get(quantity=10), Purchase.objects.get(quantity=3)
    assert (paid.status, failed.status, failed.decline_code) == ("paid", "failed", "abandoned")
    assert charges() == 1 and org.balance()["credits"] == 10
    assert purchases.reconcile_pending(now=later) == {"paid": 0, "failed": 0, "waiting": 0}


# --- auto top-up and monthly collection ------------------------------------------------------


def top_up_20_below_5(organization: Organization) -> None:
    auto_top_up.configure(
        organization,
        auto_top_up.RuleIn(
            enabled=True,
            below_available=5,
            quantity=20,
            target_available=None,
            max_purchases_per_month=10,
            max_credits_per_month=1000,
        ),
    )


def test_auto_top_up_carries_on_a_crashed_charge_instead_of_buying_again(org, crash_after):
    organization = the_org(org)
    top_up_20_below_5(organization)
    crash_after("confirm")
    with pytest.raises(Crash):
        auto_top_up.run_auto_top_up(organization.pk)
    assert charges() == 1 and org.balance()["credits"] == 0
    assert auto_top_up.run_auto_top_up(organization.pk) == "bought 20"
    assert charges() == 1 and org.balance()["credits"] == 20
    assert Purchase.objects.filter(actor=auto_top_up.ACTOR).count() == 1
    assert auto_top_up.run_auto_top_up(organization.pk) == "not needed"


def test_the_database_allows_one_pending_auto_top_up_per_org(org):
    from django.db import IntegrityError

    organization = the_org(org)
    purchases.create_pending(organization, 5, actor=auto_top_up.ACTOR, provider_name="test")
    with pytest.raises(IntegrityError), transaction.atomic():
        purchases.create_pending(organization, 5, actor=auto_top_up.ACTOR, provider_name="test")


def test_a_declined_auto_top_up_switches_the_rule_off(make_org):
    org = make_org("Declines", billing_email="billing+decline@example.com")
    organization = the_org(org)
    top_up_20_below_5(organization)
    assert auto_top_up.run_auto_top_up(organization.pk) == "declined; rule disabled"
    assert not AutoTopUp.objects.get(org=organization).enabled
    assert auto_top_up.run_auto_top_up(organization.pk) == "no rule"
    assert charges() == 0


def _monthly_invoice(org: OrgHandle, operator: Any, make_content: Any) -> Invoice:
    course = make_content(3)
    employee = org.employee()
    assignment = org.assign(course, [employee])["data"][0]["id"]
    ok(org.act(assignment, "start"))  # 3 credits of overage, at retail
    period = timezone.now().strftime("%Y-%m")
    ok(operator.post("/billing/close-period", {"period": period}))
    return Invoice.objects.get(kind=Invoice.Kind.MONTHLY)


def test_a_monthly_collection_that_crashed_after_the_charge_is_not_charged_again(
    org, operator, make_content, crash_after
):
    invoice = _monthly_invoice(org, operator, make_content)
    crash_after("confirm")
    with pytest.raises(Crash):
        collect_invoice(invoice.pk)
    assert charges() == 1 and not InvoicePayment.objects.exists()
    assert collect_invoice(invoice.pk) == "paid"
    assert collect_invoice(invoice.pk) == "paid"
    assert charges() == 1
    [payment] = InvoicePayment.objects.all()
    assert (payment.attempt, payment.approved, payment.amount_cents) == (
        1,
        True,
        invoice.total_cents,
    )
    assert InvoiceCharge.objects.get().status == "done"


# --- real concurrency (PostgreSQL) -----------------------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_racing_retries_with_one_key_charge_once(make_org):
    if not ON_POSTGRES:
        pytest.skip("PostgreSQL only (runs in the PostgreSQL half)")
    org = make_org("Racing")
    results: list[int] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            results.append(buy(org, 7, "racing").status)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results and set(results) == {201}, results
    assert Purchase.objects.count() == 1
    assert charges() == 1
    assert org.balance()["credits"] == 7
