"""The operator console's names and the way from a purchase to its refunds and credit notes.

The operator signs in through the console's own login form. The index page must list every
registered model under the plural written here, so a model registered without a proper
``verbose_name_plural`` (Django's default adds an "s": "webhook deliverys") fails, and so
does a model added to the console without a line here.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from learncredits.billing.models import Invoice, Refund
from tests.billing.test_console_refunds import PASSWORD, purchase_pk, refund_form, staff_user
from tests.conftest import OrgHandle

pytestmark = pytest.mark.django_db

TITLE = "learncredits operator console"

# (app label, model) -> the plural the index shows, capitalised as Django shows it.
PLURALS = {
    ("auth", "Group"): "Groups",
    ("auth", "User"): "Users",
    ("django_tasks_database", "DBTaskResult"): "Task Results",
    ("tenancy", "Organization"): "Organizations",
    ("tenancy", "Employee"): "Employees",
    ("catalog", "Content"): "Content items",
    ("catalog", "PriceBook"): "Price books",
    ("credits", "LedgerEntry"): "Ledger entries",
    ("credits", "Purchase"): "Purchases",
    ("credits", "Assignment"): "Assignments",
    ("credits", "Alert"): "Alerts",
    ("billing", "Invoice"): "Invoices",
    ("billing", "CreditNote"): "Credit notes",
    ("billing", "Refund"): "Refunds",
    ("billing", "TaxRateTable"): "Tax rate tables",
    ("billing", "SellerDetails"): "Seller details",
    ("billing", "InvoicePayment"): "Invoice payments",
    ("notify", "WebhookEndpoint"): "Webhook endpoints",
    ("notify", "WebhookDelivery"): "Webhook deliveries",
    ("audit", "AuditEvent"): "Audit events",
    ("axes", "AccessAttempt"): "Access attempts",
    ("axes", "AccessLog"): "Access logs",
    ("axes", "AccessFailureLog"): "Access failures",
}


def operator() -> Client:
    """The operator, signed in with a password on the console's login page."""
    staff_user("root@operator.example", superuser=True)
    client = Client()
    page = client.get("/admin/login/")
    assert page.status_code == 200
    assert f"<title>Log in | {TITLE}</title>" in page.content.decode()
    signed_in = client.post(
        "/admin/login/?next=/admin/",
        {"username": "root@operator.example", "password": PASSWORD, "next": "/admin/"},
    )
    assert (signed_in.status_code, signed_in["Location"]) == (302, "/admin/")
    return client


def test_the_index_names_the_product_and_every_model_by_its_plural() -> None:
    index = operator().get("/admin/")
    assert index.status_code == 200
    text = index.content.decode()
    assert f"<title>{TITLE}: every organization | {TITLE}</title>" in text
    assert f'<a href="/admin/">{TITLE}</a>' in text  # the header
    assert f"<h1>{TITLE}: every organization</h1>" in text  # the index title

    listed = {
        (app["app_label"], model["object_name"]): model["name"]
        for app in index.context["app_list"]
        for model in app["models"]
    }
    assert listed == PLURALS
    for app in index.context["app_list"]:
        for model in app["models"]:
            assert f'<a href="{model["admin_url"]}">{model["name"]}</a>' in text


@pytest.fixture
def refunded(org: OrgHandle) -> dict[str, Any]:
    """A paid purchase of 10 credits, 4 of them refunded from the console (a credit note)."""
    bought = org.buy(10)
    ops = Client()
    ops.force_login(staff_user(), backend="django.contrib.auth.backends.ModelBackend")
    assert refund_form(ops, bought["id"], 4, reason="did not need them").status_code == 302
    (refund,) = Refund.objects.filter(purchase_id=purchase_pk(bought["id"]))
    return {
        "purchase": purchase_pk(bought["id"]),
        "org": org.id,
        "refund": refund,
        "note": refund.credit_note,
        "receipt": Invoice.objects.get(purchase_id=purchase_pk(bought["id"])),
    }


def _href(kind: str, pk: int) -> str:
    return f'href="/admin/{kind}/{pk}/change/"'


def test_refunds_are_listed_searchable_and_link_to_purchase_and_credit_note(
    refunded: dict[str, Any], make_org: Any
) -> None:
    make_org("Other").buy(3)  # another org's purchase, with no refund
    ops = operator()
    refund, note, purchase = refunded["refund"], refunded["note"], refunded["purchase"]

    listed = ops.get("/admin/billing/refund/")
    assert listed.status_code == 200
    assert [r.pk for r in listed.context["cl"].result_list] == [refund.pk]
    text = listed.content.decode()
    assert _href("credits/purchase", purchase) in text
    assert f'{_href("billing/creditnote", note.pk)} data-testid="refund-credit-note">' in text

    for term in (note.number, "Acme", refunded["org"], f"pur_{purchase}"):
        found = ops.get("/admin/billing/refund/", {"q": term}).context["cl"].result_list
        assert [r.pk for r in found] == [refund.pk], term
    for term in ("Other", "CN-1999-000001", f"pur_{purchase + 1}"):
        assert list(ops.get("/admin/billing/refund/", {"q": term}).context["cl"].result_list) == []

    page = ops.get(f"/admin/billing/refund/{refund.pk}/change/")
    assert page.status_code == 200
    assert _href("credits/purchase", purchase) in page.content.decode()
    assert b'value="Save"' not in page.content  # read-only: refunds go through the form
    assert ops.get("/admin/billing/refund/add/").status_code == 403
    assert ops.post(f"/admin/billing/refund/{refund.pk}/delete/").status_code == 403


def test_credit_notes_are_listed_searchable_and_link_to_invoice_and_refund(
    refunded: dict[str, Any],
) -> None:
    ops = operator()
    note, receipt, refund = refunded["note"], refunded["receipt"], refunded["refund"]

    listed = ops.get("/admin/billing/creditnote/")
    assert listed.status_code == 200
    assert [n.pk for n in listed.context["cl"].result_list] == [note.pk]  # not the receipt
    text = listed.content.decode()
    assert f'{_href("billing/invoice", receipt.pk)} data-testid="credited-invoice">' in text
    assert f'{_href("billing/refund", refund.pk)} data-testid="credit-note-refund">' in text

    for term in (note.number, receipt.number, "Acme", refunded["org"]):
        found = ops.get("/admin/billing/creditnote/", {"q": term}).context["cl"].result_list
        assert [n.pk for n in found] == [note.pk], term
    assert (
        list(ops.get("/admin/billing/creditnote/", {"q": "org_999999"}).context["cl"].result_list)
        == []
    )

    page = ops.get(f"/admin/billing/creditnote/{note.pk}/change/")
    assert page.status_code == 200
    assert _href("billing/invoice", receipt.pk) in page.content.decode()
    assert ops.get("/admin/billing/creditnote/add/").status_code == 403
    # A receipt is not a credit note: its id is not found in this list.
    assert ops.get(f"/admin/billing/creditnote/{receipt.pk}/change/").status_code == 302


def test_purchase_and_invoice_pages_lead_to_their_refunds_and_credit_notes(
    refunded: dict[str, Any],
) -> None:
    ops = operator()
    note, receipt, refund = refunded["note"], refunded["receipt"], refunded["refund"]
    purchase = refunded["purchase"]

    page = ops.get(f"/admin/credits/purchase/{purchase}/change/").content.decode()
    refunds_list = f"/admin/billing/refund/?purchase__id__exact={purchase}"
    assert f'href="{refunds_list}" data-testid="purchase-refunds">1 refund<' in page
    assert f'{_href("billing/invoice", receipt.pk)} data-testid="receipt-link">' in page
    followed = ops.get(refunds_list)
    assert [r.pk for r in followed.context["cl"].result_list] == [refund.pk]

    page = ops.get(f"/admin/billing/invoice/{receipt.pk}/change/").content.decode()
    notes_list = f"/admin/billing/creditnote/?credits_invoice__id__exact={receipt.pk}"
    assert f'href="{notes_list}" data-testid="invoice-credit-notes">1 credit note<' in page
    assert f'href="{refunds_list}" data-testid="invoice-refunds">1 refund<' in page
    assert [n.pk for n in ops.get(notes_list).context["cl"].result_list] == [note.pk]

    page = ops.get(f"/admin/billing/invoice/{note.pk}/change/").content.decode()
    assert f'{_href("billing/refund", refund.pk)} data-testid="invoice-refund">' in page
    assert _href("billing/invoice", receipt.pk) in page  # the invoice it credits
