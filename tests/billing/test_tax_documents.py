"""Every kind of taxed document (receipt, monthly invoice, the credit note of a refund and
the credit note of monthly lines), for each kind of buyer, through every channel it reaches
the customer by: the API, the web page, the PDF, the invoices CSV and the email. Each must
show the seller block, the buyer with its tax id, the subtotal, one line per tax and the
total (and, when no tax is charged for a reason, the reason)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import pypdf
import pytest

from learncredits.domain.money import format_cents
from learncredits.domain.tax import label
from learncredits.notify.delivery import run_once
from tests.billing.test_billing import at, utc
from tests.conftest import Api, OrgHandle, ok

SELLER = {
    "legal_name": "Lernkredite GmbH",
    "address": "Unter den Linden 1\n10117 Berlin",
    "country": "DE",
    "tax_id": "DE136695976",
}


def rate(country: str, region: str | None, name: str, bps: int, since: str) -> dict[str, Any]:
    return {
        "country": country,
        "region": region,
        "name": name,
        "rate_bps": bps,
        "effective_from": since,
    }


RATES = [
    rate("DE", None, "VAT", 1900, "2020-01-01"),
    rate("DE", None, "VAT", 1600, "2026-05-15"),
    rate("FR", None, "VAT", 2000, "2020-01-01"),
    rate("US", "NY", "Sales tax", 400, "2020-01-01"),
    rate("US", "NY", "Local tax", 450, "2020-01-01"),
]

# Each kind of buyer: its profile and the note a document prints when it charges no tax.
KINDS: dict[str, tuple[dict[str, Any], str]] = {
    "domestic business": ({"country": "DE", "tax_id": "DE 136 695 976"}, ""),
    "EU business elsewhere": ({"country": "FR", "tax_id": "FR40303265045"}, "Reverse charge"),
    "US state, two taxes": ({"country": "US", "region": "NY", "tax_id": "91-1144442"}, ""),
    "exempt": ({"country": "FR", "tax_id": "FR40303265045", "exempt": True}, "Tax exempt"),
}


@pytest.fixture
def documents(
    request: pytest.FixtureRequest,
    operator: Api,
    make_org: Callable[..., OrgHandle],
    make_content: Callable[..., str],
    mailoutbox: list[Any],
) -> tuple[OrgHandle, list[dict[str, Any]], list[Any]]:
    """One org of the kind, with one document of each kind, and the emails they caused."""
    profile, _ = KINDS[request.param]
    ok(operator.put("/seller", SELLER))
    ok(operator.put("/tax/rates", {"rates": RATES}))
    with at(utc(2026, 5, 10)):
        org = make_org("Buyer Co", billing_email="ap@buyer.example")
        ok(org.operator.patch(org.path(), {"tax": profile}))
        early = org.assign(make_content(3, "Early"), [org.employee("A")])["data"][0]
        ok(org.act(early["id"], "start"))  # overage before the German cut of the 15th
    with at(utc(2026, 5, 20)):
        late = org.assign(make_content(2, "Late"), [org.employee("B")])["data"][0]
        ok(org.act(late["id"], "start"))  # and after it
        bought = org.buy(10)
        ok(
            org.operator.post(
                org.path(f"/purchases/{bought['id']}/refund"), {"credits": 3, "reason": "unused"}
            ),
            201,
        )
    with at(utc(2026, 6, 2)):
        assert (
            ok(operator.post("/billing/close-period", {"period": "2026-05"}))["invoices_issued"]
            == 1
        )
        listed = ok(org.api.get(org.path("/invoices")))["data"]
        (monthly,) = [i for i in listed if i["kind"] == "monthly"]
        ok(
            operator.post(
                org.path(f"/invoices/{monthly['id']}/credit-note"),
                {"assignment_ids": [late["id"]], "reason": "disputed"},
            ),
            201,
        )
        run_once()
    listed = ok(org.api.get(org.path("/invoices")))["data"]
    assert sorted(i["kind"] for i in listed) == [
        "credit_note",
        "credit_note",
        "monthly",
        "purchase",
    ]
    return org, listed, [m for m in mailoutbox if m.to == ["ap@buyer.example"]]


def what_it_must_show(document: dict[str, Any], note: str) -> list[str]:
    """The words a document must carry in any form: seller, buyer tax id, subtotal, each tax
    line (its label and amount), total and the no-tax reason."""
    shown = [
        SELLER["legal_name"],
        "10117 Berlin",
        SELLER["tax_id"],
        format_cents(document["subtotal_cents"]),
        format_cents(document["total_cents"]),
    ]
    if document["buyer"]["tax_id"]:
        shown.append(document["buyer"]["tax_id"])
    for line in document["tax_lines"]:
        shown.append(label(line["name"], line["rate_bps"], line["country"], line["region"]))
        shown.append(format_cents(line["amount_cents"]))
    if note:
        shown.append(note)
    return shown


def pdf_text(org: OrgHandle, invoice_id: str) -> str:
    response = org.api.get(org.path(f"/invoices/{invoice_id}/pdf"))
    assert response.status == 200
    reader = pypdf.PdfReader(io.BytesIO(response.raw))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("documents", list(KINDS), indirect=True)
def test_every_document_shows_seller_buyer_tax_id_tax_lines_and_total_everywhere(
    documents, request
):
    org, listed, emails = documents
    kind = request.node.callspec.params["documents"]
    profile, note = KINDS[kind]
    taxed = not note
    by_number = {mail.subject.rsplit(" ", 1)[-1]: mail for mail in emails}
    csv_response = org.api.get(org.path("/invoices"), format="csv")
    header, *rows = list(csv.reader(io.StringIO(csv_response.raw.decode())))
    csv_rows = {row[header.index("number")]: dict(zip(header, row, strict=True)) for row in rows}

    for document in listed:
        # The API: the parts add up, and the buyer is who it was at issue.
        assert document["total_cents"] == document["subtotal_cents"] + sum(
            t["amount_cents"] for t in document["tax_lines"]
        )
        assert document["seller"]["tax_id"] == SELLER["tax_id"]
        assert document["buyer"]["country"] == profile["country"]
        assert bool(document["tax_lines"]) is taxed
        if kind == "US state, two taxes":
            assert [t["name"] for t in document["tax_lines"]] == ["Local tax", "Sales tax"]
        if kind == "domestic business" and document["kind"] == "monthly":
            assert [t["rate_bps"] for t in document["tax_lines"]] == [1900, 1600]
        expected = what_it_must_show(document, note)

        text = pdf_text(org, document["id"])
        page = org.api.get(org.path(f"/invoices/{document['id']}/html")).raw.decode()
        page = flat(re.sub(r"<[^>]+>", " ", page))
        for words in expected:
            assert words in text, (document["number"], "PDF", words)
            assert words in page, (document["number"], "HTML", words)

        mail = by_number[document["number"]]
        (html, _) = mail.alternatives[0]
        for words in expected:
            assert words in mail.body, (document["number"], "email", words)
            assert words in flat(html), (document["number"], "email html", words)

        row = csv_rows[document["number"]]
        assert row["seller_name"] == SELLER["legal_name"]
        assert row["seller_tax_id"] == SELLER["tax_id"]
        assert row["seller_address"] == SELLER["address"]
        assert row["buyer_tax_id"] == (document["buyer"]["tax_id"] or "")
        assert (row["subtotal_cents"], row["tax_cents"], row["total_cents"]) == (
            str(document["subtotal_cents"]),
            str(document["tax_cents"]),
            str(document["total_cents"]),
        )
        assert row["tax_lines"] == "; ".join(
            f"{label(t['name'], t['rate_bps'], t['country'], t['region'])}: {t['amount_cents']}"
            for t in document["tax_lines"]
        )
        assert row["reverse_charge"] == ("true" if document["reverse_charge"] else "false")
        assert row["tax_note"] == document["tax_note"]
