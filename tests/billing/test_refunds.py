"""Refunds of unconsumed credits and credit notes for monthly invoice lines, through the API.

Money returned is counted on the provider's side (the test provider's own ``TestRefund``
table), never trusted from ours. A crash is a provider that does its work and then raises
a BaseException, as a process killed right after the provider answered would.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pypdf
import pytest
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learncredits.billing import payments, refunds
from learncredits.billing.collection import collect_invoice
from learncredits.billing.models import (
    Invoice,
    InvoiceLine,
    InvoicePayment,
    Refund,
    TestPaymentIntent,
    TestRefund,
)
from learncredits.credits.models import CreditLot, Event, LedgerEntry, LotDraw
from learncredits.credits.verify import verify_ledger
from learncredits.notify.delivery import run_once
from tests.billing.test_billing import at, pk, utc
from tests.conftest import Api, Crash, OrgHandle, Response, install_crashing_provider, ok

CN_NUMBER = re.compile(r"^CN-(\d{4})-(\d{6})$")


# --- helpers ---------------------------------------------------------------------------------


def refused(response: Response, status: int, code: str) -> None:
    assert (response.status, response.code) == (status, code), (response.status, response.body)


def refund(org: OrgHandle, purchase_id: str, credits: Any, reason: Any = "unused") -> Response:
    body: dict[str, Any] = {"credits": credits}
    if reason is not None:
        body["reason"] = reason
    return org.operator.post(org.path(f"/purchases/{purchase_id}/refund"), body)


def credit_note(org: OrgHandle, invoice_id: str, assignment_ids: list[str]) -> Response:
    body = {"assignment_ids": assignment_ids, "reason": "disputed"}
    return org.operator.post(org.path(f"/invoices/{invoice_id}/credit-note"), body)


def money_back(intent_id: str | None = None) -> int:
    """Cents refunded, as the provider counts them."""
    found = TestRefund.objects.all()
    if intent_id is not None:
        found = found.filter(intent_id=intent_id)
    return int(found.aggregate(total=Sum("amount_cents"))["total"] or 0)


def statement(org: OrgHandle, period: str) -> dict[str, Any]:
    return ok(org.api.get(org.path("/statement"), period=period))


def assert_identity(s: dict[str, Any]) -> None:
    assert s["deferred_closing_cents"] == (
        s["deferred_opening_cents"]
        + s["purchased_cents"]
        - s["recognized_cents"]
        - s["refunded_cents"]
    ), s
    assert s["closing_credits"] == (
        s["opening_credits"]
        + s["purchased_credits"]
        + s["granted_credits"]
        - s["consumed_credits"]
        - s["refunded_credits"]
    ), s


def ledger_ok() -> None:
    _, mismatches = verify_ledger()
    assert mismatches == []


def billing_rows() -> tuple[int, ...]:
    """What a refused refund or credit note must not add to (billing is not in the shared
    snapshot, which covers the credits, tenancy, catalog and api tables)."""
    return (
        Invoice.objects.count(),
        InvoiceLine.objects.count(),
        Refund.objects.count(),
        TestRefund.objects.count(),
        Event.objects.count(),
    )


def start_new(org: OrgHandle, content_id: str, name: str = "Learner") -> dict[str, Any]:
    employee = org.employee(name)
    assignment = org.assign(content_id, [employee])["data"][0]
    return ok(org.act(assignment["id"], "start"))


def monthly_invoice(
    make_org: Callable[..., OrgHandle],
    make_content: Callable[..., str],
    operator: Api,
    costs: list[int],
    *,
    paid: bool,
) -> tuple[OrgHandle, dict[str, Any], list[str]]:
    """An org with no credits whose started assignments (one per cost) are all overage,
    its monthly invoice for 2026-05 (paid or not), and the assignment ids in line order."""
    with at(utc(2026, 5, 10)):
        org = make_org("Overage Co", billing_email="ap@overage.example")
        started = [
            start_new(org, make_content(cost, f"Course {n}"), f"Learner {n}")
            for n, cost in enumerate(costs)
        ]
    with at(utc(2026, 6, 2)):
        body = ok(operator.post("/billing/close-period", {"period": "2026-05"}))
        assert body["invoices_issued"] == 1
        (monthly,) = [
            i for i in ok(org.api.get(org.path("/invoices")))["data"] if i["kind"] == "monthly"
        ]
        if paid:
            assert collect_invoice(pk("invoice", monthly["id"])) == "paid"
        monthly = ok(org.api.get(org.path(f"/invoices/{monthly['id']}")))
    return org, monthly, [a["id"] for a in started]


@pytest.fixture
def crash_after_refund(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make the test provider crash right after it refunded, ``times`` times."""
    arm = install_crashing_provider(monkeypatch, "test", payments.TestProvider)
    return lambda times=1: arm("refund", times)


# --- refunds of purchases --------------------------------------------------------------------


def test_refunding_part_of_a_purchase_takes_credits_back_and_returns_its_money(org):
    with at(utc(2026, 3, 10)):
        bought = org.buy(10)  # 10 credits at $10.00
        note = ok(refund(org, bought["id"], 4), 201)

    assert CN_NUMBER.match(note["number"]), note["number"]
    assert (note["kind"], note["status"], note["period"]) == ("credit_note", "issued", "2026-03")
    assert note["credits_invoice_id"] == bought["invoice_id"]
    assert [
        (li["quantity"], li["unit_price_cents"], li["amount_cents"]) for li in note["lines"]
    ] == [(4, -1000, -4000)]
    assert note["total_cents"] == -4000
    assert note["amount_due_cents"] == 0

    assert org.balance()["credits"] == 6
    ledger = ok(org.api.get(org.path("/ledger")))["data"]
    (entry,) = [e for e in ledger if e["type"] == "refund"]
    assert (entry["credits_delta"], entry["purchase_id"], entry["credits_after"]) == (
        -4,
        bought["id"],
        6,
    )
    # The money, counted at the provider: 4 x the lot's unit price, on the purchase's intent.
    assert money_back(bought["provider_reference"]) == 4000
    assert ok(org.api.get(org.path(f"/purchases/{bought['id']}")))["refunded_credits"] == 4

    # The receipt stands as issued; it now has a credit note.
    receipt = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))
    assert (receipt["total_cents"], receipt["status"]) == (10000, "paid")
    listed = {i["number"] for i in ok(org.api.get(org.path("/invoices")))["data"]}
    assert {receipt["number"], note["number"]} <= listed

    with at(utc(2026, 3, 20)):
        s = statement(org, "2026-03")
    assert (s["refunded_credits"], s["refunded_cents"]) == (4, 4000)
    assert (s["purchased_cents"], s["recognized_cents"], s["deferred_closing_cents"]) == (
        10000,
        0,
        6000,
    )
    assert_identity(s)
    ledger_ok()


def test_credit_notes_have_their_own_gapless_series(org):
    with at(utc(2026, 4, 1)):
        first = org.buy(10)
        a = ok(refund(org, first["id"], 1), 201)
        b = ok(refund(org, first["id"], 2), 201)
        second = org.buy(5)
    na, nb = (int(CN_NUMBER.match(n["number"]).group(2)) for n in (a, b))  # type: ignore[union-attr]
    assert nb == na + 1
    receipts = [
        ok(org.api.get(org.path(f"/invoices/{p['invoice_id']}")))["number"] for p in (first, second)
    ]
    # The invoice series did not skip a number for the credit notes.
    assert int(receipts[1][-6:]) == int(receipts[0][-6:]) + 1
    assert money_back() == 3000
    assert org.balance()["credits"] == 12


def test_a_refund_draws_that_purchases_own_lot_not_the_oldest(org, operator):
    with at(utc(2026, 2, 3)):
        cheap = org.buy(100)  # $8.50 a credit (the 100 tier)
        dear = org.buy(10)  # $10.00 a credit, a newer lot
        ok(operator.post(org.path("/adjustments"), {"credits": 3, "reason": "goodwill"}), 201)
        ok(refund(org, dear["id"], 7), 201)
    assert dear["unit_price_cents"] == 1000 and cheap["unit_price_cents"] < 1000
    dear_lot = CreditLot.objects.get(purchase_id=pk("purchase", dear["id"]))
    cheap_lot = CreditLot.objects.get(purchase_id=pk("purchase", cheap["id"]))
    assert (dear_lot.remaining, cheap_lot.remaining) == (3, 100)
    (draw,) = LotDraw.objects.filter(entry__type=LedgerEntry.Type.REFUND)
    assert (draw.lot_id, draw.quantity) == (dear_lot.pk, 7)
    assert money_back(dear["provider_reference"]) == 7000
    assert money_back(cheap["provider_reference"]) == 0
    with at(utc(2026, 2, 20)):
        s = statement(org, "2026-02")
    assert (s["refunded_cents"], s["recognized_cents"]) == (7000, 0)
    assert_identity(s)
    ledger_ok()


def test_reserved_and_consumed_credits_are_not_refundable(org, make_content, snapshot):
    with at(utc(2026, 1, 5)):
        bought = org.buy(10)
        start_new(org, make_content(3, "Started"))  # 3 consumed from the lot
        employee = org.employee("Reserved")
        org.assign(make_content(5, "Reserved"), [employee])  # 5 reserved: 2 available
    before, rows = snapshot(), billing_rows()
    refused(refund(org, bought["id"], 3), 409, "refund_exceeds_available")
    refused(refund(org, bought["id"], 8), 409, "refund_exceeds_available")
    assert (snapshot(), billing_rows()) == (before, rows)
    with at(utc(2026, 1, 6)):
        ok(refund(org, bought["id"], 2), 201)
    assert org.balance()["credits"] == 5
    assert org.balance()["assigned"] == 5
    assert money_back() == 2000
    ledger_ok()


def test_more_than_the_lot_still_holds_is_refused(org, snapshot):
    with at(utc(2026, 1, 5)):
        first = org.buy(10)
        org.buy(20)  # plenty available, but not of the first purchase
        ok(refund(org, first["id"], 6), 201)
    before, rows = snapshot(), billing_rows()
    refused(refund(org, first["id"], 5), 409, "refund_exceeds_available")
    refused(refund(org, first["id"], 11), 409, "refund_exceeds_available")
    assert (snapshot(), billing_rows()) == (before, rows)
    with at(utc(2026, 1, 6)):
        ok(refund(org, first["id"], 4), 201)
    refused(refund(org, first["id"], 1), 409, "refund_exceeds_available")
    assert money_back() == 10000
    ledger_ok()


@pytest.mark.parametrize(
    ("credits", "reason"),
    [(0, "x"), (-1, "x"), (-10, "x"), (1.5, "x"), ("2", "x"), (2, None), (2, ""), (2, "   ")],
)
def test_bad_refund_requests_are_validation_errors_and_write_nothing(
    org, snapshot, credits, reason
):
    bought = org.buy(10)
    before, rows = snapshot(), billing_rows()
    refused(refund(org, bought["id"], credits, reason), 422, "validation_error")
    assert (snapshot(), billing_rows()) == (before, rows)


def test_a_failed_purchase_cannot_be_refunded(make_org, snapshot):
    org = make_org("Declined", billing_email="ap+decline@example.com")
    declined = org.api.post(org.path("/purchases"), {"quantity": 10})
    assert declined.status == 402
    purchase_id = declined.body["purchase_id"]
    before, rows = snapshot(), billing_rows()
    refused(refund(org, purchase_id, 1), 409, "invalid_state")
    assert (snapshot(), billing_rows()) == (before, rows)


def test_refunds_are_for_the_operator_and_the_purchase_must_be_the_orgs(make_org):
    a, b = make_org("A"), make_org("B")
    bought = a.buy(10)
    refused(
        a.api.post(a.path(f"/purchases/{bought['id']}/refund"), {"credits": 1, "reason": "x"}),
        403,
        "forbidden",
    )
    refused(refund(b, bought["id"], 1), 404, "not_found")
    refused(refund(a, "pur_999999", 1), 404, "not_found")
    assert money_back() == 0 and a.balance()["credits"] == 10


def test_a_refund_that_crashes_after_the_provider_call_returns_the_money_once(
    org, crash_after_refund
):
    with at(utc(2026, 7, 1)):
        bought = org.buy(10)
    crash_after_refund()
    with at(utc(2026, 7, 1, 13)), pytest.raises(Crash):
        refund(org, bought["id"], 4)
    # The credit side was committed before the provider was called; the row is pending.
    (pending,) = Refund.objects.all()
    assert pending.status == "pending"
    assert org.balance()["credits"] == 6
    assert money_back() == 4000

    # Carried on by the worker's sweep (or any retry): the same reference, the same refund.
    with at(utc(2026, 7, 1, 14)):
        assert refunds.resume_pending_refunds() == 1
        assert refunds.resume_pending_refunds() == 0
    pending.refresh_from_db()
    assert pending.status == "done" and pending.provider_reference.startswith("tre_")
    assert (money_back(), TestRefund.objects.count()) == (4000, 1)
    assert org.balance()["credits"] == 6
    ledger_ok()


def test_a_retry_with_the_same_idempotency_key_carries_the_crashed_refund_on(
    org, crash_after_refund
):
    """Refunds keep their own Idempotency-Key (the middleware leaves them alone, as it does
    purchases): a retry finds the pending refund instead of refunding again."""
    bought = org.buy(10)
    path = org.path(f"/purchases/{bought['id']}/refund")
    crash_after_refund()
    with pytest.raises(Crash):
        org.operator.post(path, {"credits": 4, "reason": "unused"}, idem="r1")
    again = ok(org.operator.post(path, {"credits": 4, "reason": "unused"}, idem="r1"), 201)
    replay = ok(org.operator.post(path, {"credits": 4, "reason": "unused"}, idem="r1"), 201)
    assert again["id"] == replay["id"]
    refused(
        org.operator.post(path, {"credits": 5, "reason": "x"}, idem="r1"),
        422,
        "idempotency_key_reused",
    )
    assert (money_back(), TestRefund.objects.count(), Refund.objects.count()) == (4000, 1, 1)
    assert org.balance()["credits"] == 6


# --- credit notes for monthly invoice lines --------------------------------------------------


def test_crediting_lines_of_a_paid_invoice_refunds_them_once(make_org, make_content, operator):
    org, monthly, assignments = monthly_invoice(
        make_org, make_content, operator, [2, 3, 5], paid=True
    )
    assert (monthly["status"], monthly["total_cents"]) == ("paid", 10000)
    intent = TestPaymentIntent.objects.get(status="succeeded", amount_cents=10000)
    with at(utc(2026, 6, 5)):
        note = ok(credit_note(org, monthly["id"], [assignments[2], assignments[0]]), 201)
    assert note["credits_invoice_id"] == monthly["id"]
    assert [(li["quantity"], li["amount_cents"], li["assignment_id"]) for li in note["lines"]] == [
        (5, -5000, assignments[2]),
        (2, -2000, assignments[0]),
    ]
    assert note["total_cents"] == -7000
    assert money_back(f"tpi_{intent.pk}") == 7000

    # Twice is refused, also together with a line not credited yet; nothing moves.
    rows = billing_rows()
    refused(credit_note(org, monthly["id"], [assignments[0]]), 409, "invalid_state")
    refused(credit_note(org, monthly["id"], [assignments[1], assignments[2]]), 409, "invalid_state")
    assert billing_rows() == rows
    with at(utc(2026, 6, 6)):
        ok(credit_note(org, monthly["id"], [assignments[1]]), 201)
    assert money_back() == 10000
    after = ok(org.api.get(org.path(f"/invoices/{monthly['id']}")))
    assert (after["status"], after["amount_due_cents"], after["total_cents"]) == ("paid", 0, 10000)


def test_crediting_lines_of_an_unpaid_invoice_lowers_what_is_due(make_org, make_content, operator):
    org, monthly, assignments = monthly_invoice(
        make_org, make_content, operator, [2, 3], paid=False
    )
    assert (monthly["status"], monthly["amount_due_cents"]) == ("open", 5000)
    with at(utc(2026, 6, 5)):
        ok(credit_note(org, monthly["id"], [assignments[1]]), 201)
        assert ok(org.api.get(org.path(f"/invoices/{monthly['id']}")))["amount_due_cents"] == 2000
        ok(credit_note(org, monthly["id"], [assignments[0]]), 201)
        after = ok(org.api.get(org.path(f"/invoices/{monthly['id']}")))
    assert (after["status"], after["amount_due_cents"]) == ("credited", 0)
    assert (money_back(), Refund.objects.count()) == (0, 0)


def test_credit_note_requests_naming_other_lines_are_refused(make_org, make_content, operator):
    org, monthly, assignments = monthly_invoice(make_org, make_content, operator, [2], paid=False)
    bought = org.buy(5)
    other = org.assign(make_content(1, "Other"), [org.employee("Other")])["data"][0]["id"]
    rows = billing_rows()
    refused(credit_note(org, monthly["id"], [other]), 422, "validation_error")
    refused(
        credit_note(org, monthly["id"], [assignments[0], assignments[0]]), 422, "validation_error"
    )
    refused(credit_note(org, monthly["id"], []), 422, "validation_error")
    refused(credit_note(org, monthly["id"], ["asg_nope"]), 404, "not_found")
    refused(credit_note(org, bought["invoice_id"], [assignments[0]]), 409, "invalid_state")
    refused(credit_note(org, "inv_99999999", [assignments[0]]), 404, "not_found")
    refused(
        org.api.post(
            org.path(f"/invoices/{monthly['id']}/credit-note"),
            {"assignment_ids": assignments, "reason": "x"},
        ),
        403,
        "forbidden",
    )
    assert billing_rows() == rows


# --- documents, email and events -------------------------------------------------------------


def pdf_text(raw: bytes) -> str:
    assert raw.startswith(b"%PDF"), raw[:20]
    reader = pypdf.PdfReader(io.BytesIO(raw))
    return re.sub(r"\s+", " ", "\n".join(page.extract_text() for page in reader.pages))


def test_a_credit_note_is_a_document_an_email_and_an_event(org, mailoutbox):
    hook = {"url": "https://example.com/hook", "events": ["credit_note.issued"]}
    ok(org.api.post(org.path("/webhooks"), hook), 201)
    with at(utc(2026, 8, 3)):
        bought = org.buy(10)
        note = ok(refund(org, bought["id"], 3), 201)
    receipt = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))

    text = pdf_text(ok_raw(org.api.get(org.path(f"/invoices/{note['id']}/pdf"))))
    html = re.sub(
        r"\s+", " ", ok_raw(org.api.get(org.path(f"/invoices/{note['id']}/html"))).decode()
    )
    for shown in (text, html):
        assert "Credit note" in shown
        assert note["number"] in shown
        assert receipt["number"] in shown
        assert "-$30.00" in shown

    (event,) = Event.objects.filter(type="credit_note.issued")
    assert event.data["number"] == note["number"]
    assert event.data["credits_invoice_number"] == receipt["number"]
    assert event.data["total_cents"] == -3000
    with at(utc(2026, 8, 3, 13)):
        run_once(utc(2026, 8, 3, 13))
    (mail,) = [m for m in mailoutbox if note["number"] in m.subject]
    assert "billing@example.com" in mail.to or "billing@example.com" in mail.recipients()
    assert receipt["number"] in mail.body


def ok_raw(response: Response) -> bytes:
    assert response.status == 200, response.status
    return response.raw


def test_settings_billing_lists_credit_notes(org, operator):
    user = {
        "email": "boss@example.com",
        "name": "Boss",
        "role": "admin",
        "password": "a-Long-enough-pass-42",
    }
    ok(operator.post(org.path("/users"), user), 201)
    with at(utc(2026, 8, 3)):
        bought = org.buy(10)
        note = ok(refund(org, bought["id"], 3), 201)
    admin = Client()
    admin.force_login(get_user_model().objects.get(username="boss@example.com"))
    page = admin.get("/settings/billing")
    assert page.status_code == 200
    text = page.content.decode()
    assert note["number"] in text
    assert "credit note for" in text


# --- properties ------------------------------------------------------------------------------


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    quantity=st.sampled_from([5, 10, 60, 120]),
    consume=st.integers(0, 10),
    asks=st.lists(st.integers(-2, 130), max_size=5),
)
def test_a_receipt_and_its_credit_notes_never_sum_below_zero(
    make_org, make_content, quantity, consume, asks
):
    with at(utc(2026, 9, 2)):
        org = make_org("Prop")
        bought = org.buy(quantity)
        if consume:
            start_new(org, make_content(consume, f"C{consume}"))
        for ask in asks:
            response = refund(org, bought["id"], ask)
            assert response.status in (201, 409, 422), response.body
    receipt = Invoice.objects.get(pk=pk("invoice", bought["invoice_id"]))
    notes = sum(receipt.credit_notes.values_list("total_cents", flat=True))
    assert receipt.total_cents + notes >= 0
    assert money_back(bought["provider_reference"]) == -notes <= bought["total_cents"]
    with at(utc(2026, 9, 20)):
        assert_identity(statement(org, "2026-09"))
    ledger_ok()


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    paid=st.booleans(),
    picks=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=3), max_size=4),
)
def test_a_monthly_invoice_and_its_credit_notes_never_sum_below_zero(
    make_org, make_content, operator, paid, picks
):
    org, monthly, assignments = monthly_invoice(
        make_org, make_content, operator, [1, 2, 4], paid=paid
    )
    with at(utc(2026, 6, 5)):
        for pick in picks:
            response = credit_note(org, monthly["id"], [assignments[i] for i in pick])
            assert response.status in (201, 409, 422), response.body
        after = ok(org.api.get(org.path(f"/invoices/{monthly['id']}")))
    invoice = Invoice.objects.get(pk=pk("invoice", monthly["id"]))
    credited = sum(invoice.credit_notes.values_list("total_cents", flat=True))
    assert invoice.total_cents + credited >= 0
    intents = InvoicePayment.objects.filter(invoice=invoice, approved=True)
    returned = sum(
        money_back(reference) for reference in intents.values_list("reference", flat=True)
    )
    assert returned == (-credited if paid else 0)
    assert after["amount_due_cents"] == (0 if paid else invoice.total_cents + credited)
