"""Tax through the HTTP API: the seller, the rate schedule, org tax profiles, and the tax on
quotes, purchases, monthly invoices and credit notes for each kind of buyer, down to the
PDF's text. Money charged and refunded is counted at the provider (the test provider's own
tables), never trusted from our rows."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import pypdf
import pytest
from django.db.models import Sum

from learncredits.billing.auto_top_up import run_auto_top_up
from learncredits.billing.collection import collect_invoice
from learncredits.billing.models import (
    Invoice,
    InvoiceTaxLine,
    SellerDetails,
    TaxRateEntry,
    TaxRateTable,
    TestPaymentIntent,
    TestRefund,
)
from learncredits.tenancy.models import Organization
from tests.billing.test_billing import at, pk, utc
from tests.conftest import Api, OrgHandle, Response, ok

SELLER = {
    "legal_name": "Lernkredite GmbH",
    "address": "Unter den Linden 1\n10117 Berlin",
    "country": "DE",
    "tax_id": "DE 136 695 976",
}
RATES = [
    {
        "country": "DE",
        "region": None,
        "name": "VAT",
        "rate_bps": 1900,
        "effective_from": "2020-01-01",
    },
    {
        "country": "FR",
        "region": None,
        "name": "VAT",
        "rate_bps": 2000,
        "effective_from": "2020-01-01",
    },
    {
        "country": "US",
        "region": "NY",
        "name": "Sales tax",
        "rate_bps": 400,
        "effective_from": "2020-01-01",
    },
    # A change in the middle of May 2026 (a cut to 16% in Germany from the 15th).
    {
        "country": "DE",
        "region": None,
        "name": "VAT",
        "rate_bps": 1600,
        "effective_from": "2026-05-15",
    },
]

# Each kind of buyer, its profile, and what 10 credits at $10.00 (a $100.00 subtotal) cost.
KINDS: dict[str, tuple[dict[str, Any], str, list[tuple[str, int, int]]]] = {
    "domestic business": (
        {"country": "DE", "tax_id": "DE136695976"},
        "taxed",
        [("VAT", 1600, 1600)],
    ),
    "EU business elsewhere": (
        {"country": "FR", "tax_id": "FR40303265045"},
        "reverse_charge",
        [],
    ),
    "EU consumer": ({"country": "FR"}, "taxed", [("VAT", 2000, 2000)]),
    "exempt": ({"country": "DE", "tax_id": "DE136695976", "exempt": True}, "exempt", []),
    "US state": ({"country": "US", "region": "NY"}, "taxed", [("Sales tax", 400, 400)]),
}


def refused(response: Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status, response.code) == (status, code), (response.status, response.body)
    return response.body


@pytest.fixture
def taxes(operator: Api) -> None:
    ok(operator.put("/seller", SELLER))
    ok(operator.put("/tax/rates", {"rates": RATES}))


def taxed_org(make_org: Callable[..., OrgHandle], profile: dict[str, Any]) -> OrgHandle:
    org = make_org("Buyer Co", billing_email="ap@buyer.example")
    ok(org.operator.patch(org.path(), {"tax": profile}))
    return org


def charged_cents() -> int:
    """What the provider took: succeeded intents."""
    found = TestPaymentIntent.objects.filter(status="succeeded")
    return int(found.aggregate(total=Sum("amount_cents"))["total"] or 0)


def refunded_cents() -> int:
    return int(TestRefund.objects.aggregate(total=Sum("amount_cents"))["total"] or 0)


def pdf_text(org: OrgHandle, invoice_id: str) -> str:
    response = org.api.get(org.path(f"/invoices/{invoice_id}/pdf"))
    assert response.status == 200
    reader = pypdf.PdfReader(io.BytesIO(response.raw))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


def page(org: OrgHandle, invoice_id: str) -> str:
    """The invoice's web page, without the per-request CSP nonce."""
    html = org.api.get(org.path(f"/invoices/{invoice_id}/html")).raw.decode()
    return re.sub(r' nonce="[^"]*"', "", html)


def tax_lines(document: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(t["name"], t["rate_bps"], t["amount_cents"]) for t in document["tax_lines"]]


def assert_adds_up(document: dict[str, Any]) -> None:
    assert document["total_cents"] == document["subtotal_cents"] + sum(
        t["amount_cents"] for t in document["tax_lines"]
    )
    assert document["tax_cents"] == sum(t["amount_cents"] for t in document["tax_lines"])
    assert document["subtotal_cents"] == sum(line["amount_cents"] for line in document["lines"])


# --- each kind of buyer, through every document ------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_quote_purchase_receipt_and_refund_for_each_kind_of_buyer(kind, taxes, make_org):
    profile, treatment, expected = KINDS[kind]
    with at(utc(2026, 5, 20)):
        org = taxed_org(make_org, profile)
        quote = ok(org.api.get("/pricing/quote", quantity=10))
        tax = sum(amount for *_, amount in expected)
        assert (quote["total_cents"], quote["tax_cents"], quote["total_with_tax_cents"]) == (
            10000,
            tax,
            10000 + tax,
        )

        before = charged_cents()
        bought = org.buy(10)
        assert (bought["total_cents"], bought["tax_cents"], bought["total_with_tax_cents"]) == (
            10000,
            tax,
            10000 + tax,
        )
        # The card pays the tax too: counted at the provider.
        assert charged_cents() - before == 10000 + tax

        receipt = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))
        assert_adds_up(receipt)
        assert (receipt["subtotal_cents"], receipt["total_cents"]) == (10000, 10000 + tax)
        assert tax_lines(receipt) == expected
        assert receipt["tax_treatment"] == treatment
        assert receipt["reverse_charge"] is (treatment == "reverse_charge")
        assert receipt["seller"]["name"] == "Lernkredite GmbH"
        assert receipt["seller"]["tax_id"] == "DE136695976"
        assert receipt["buyer"]["country"] == profile["country"]
        assert receipt["buyer"]["tax_id"] == profile.get("tax_id")

        text = pdf_text(org, bought["invoice_id"])
        assert "Lernkredite GmbH" in text and "DE136695976" in text
        if profile.get("tax_id"):
            assert profile["tax_id"] in text
        for name, bps, amount in expected:
            assert f"{name} {bps // 100}%" in text
            assert f"${amount / 100:,.2f}" in text
        assert f"${(10000 + tax) / 100:,.2f}" in text
        if treatment == "reverse_charge":
            assert "Reverse charge" in text
        if treatment == "exempt":
            assert "Tax exempt" in text

        # A refund of 4 of the 10 credits reverses 4/10 of the tax, and that money goes back.
        back = refunded_cents()
        note = ok(
            org.operator.post(
                org.path(f"/purchases/{bought['id']}/refund"), {"credits": 4, "reason": "unused"}
            ),
            201,
        )
        assert_adds_up(note)
        assert note["subtotal_cents"] == -4000
        assert tax_lines(note) == [(n, b, -(a * 4 // 10)) for n, b, a in expected]
        assert note["total_cents"] == -(4000 + tax * 4 // 10)
        assert refunded_cents() - back == 4000 + tax * 4 // 10
        assert (note["seller"], note["buyer"]) == (receipt["seller"], receipt["buyer"])
        text = pdf_text(org, note["id"])
        assert "Lernkredite GmbH" in text

        # The statement's money stays net; the tax collected is beside it.
        statement = ok(org.api.get(org.path("/statement"), period="2026-05"))
        assert (statement["purchased_cents"], statement["refunded_cents"]) == (10000, 4000)
        assert statement["tax_collected_cents"] == tax - tax * 4 // 10


@pytest.mark.parametrize("kind", list(KINDS))
def test_monthly_invoice_and_its_credit_note_for_each_kind_of_buyer(
    kind, taxes, make_org, make_content, operator
):
    """Overage in May 2026, across the German rate cut of the 15th: each line is taxed at the
    rate of its own day."""
    profile, treatment, _ = KINDS[kind]
    with at(utc(2026, 5, 10)):
        org = taxed_org(make_org, profile)
        early = org.assign(make_content(3, "Early"), [org.employee("A")])["data"][0]
        ok(org.act(early["id"], "start"))  # 3 credits of overage at $10.00
    with at(utc(2026, 5, 20)):
        late = org.assign(make_content(2, "Late"), [org.employee("B")])["data"][0]
        ok(org.act(late["id"], "start"))  # 2 credits
    with at(utc(2026, 6, 2)):
        assert (
            ok(operator.post("/billing/close-period", {"period": "2026-05"}))["invoices_issued"]
            == 1
        )
        (monthly,) = [
            i for i in ok(org.api.get(org.path("/invoices")))["data"] if i["kind"] == "monthly"
        ]
    assert_adds_up(monthly)
    assert monthly["subtotal_cents"] == 5000
    expected = {
        "domestic business": [("VAT", 1900, 570), ("VAT", 1600, 320)],
        "EU business elsewhere": [],
        "EU consumer": [("VAT", 2000, 1000)],
        "exempt": [],
        "US state": [("Sales tax", 400, 200)],
    }[kind]
    assert tax_lines(monthly) == expected
    assert monthly["tax_treatment"] == treatment
    tax = sum(a for *_, a in expected)
    assert monthly["total_cents"] == monthly["amount_due_cents"] == 5000 + tax

    text = pdf_text(org, monthly["id"])
    assert "Lernkredite GmbH" in text
    for name, bps, amount in expected:
        assert f"{name} {bps // 100}%" in text and f"${amount / 100:,.2f}" in text

    # Collected with tax: the provider takes the total.
    with at(utc(2026, 6, 3)):
        before = charged_cents()
        assert collect_invoice(pk("invoice", monthly["id"])) == "paid"
        assert charged_cents() - before == 5000 + tax

        # Crediting the late line (2 of 5 credits) reverses 2/5 of each tax line.
        back = refunded_cents()
        note = ok(
            operator.post(
                org.path(f"/invoices/{monthly['id']}/credit-note"),
                {"assignment_ids": [late["id"]], "reason": "disputed"},
            ),
            201,
        )
    assert_adds_up(note)
    assert note["subtotal_cents"] == -2000
    assert tax_lines(note) == [(n, b, -round(a * 2 / 5)) for n, b, a in expected]
    assert refunded_cents() - back == -note["total_cents"]
    assert note["reverse_charge"] is (treatment == "reverse_charge")

    # The statements: the overage money of May is net; the tax is counted when its documents
    # were issued (the invoice and its credit note, both in June), for the org and in the
    # operator's sum.
    may = ok(org.api.get(org.path("/statement"), period="2026-05"))
    assert (may["overage_cents"], may["tax_collected_cents"]) == (5000, 0)
    june = ok(org.api.get(org.path("/statement"), period="2026-06"))
    assert june["tax_collected_cents"] == tax + note["tax_cents"]
    everyone = ok(operator.get("/billing/statement", period="2026-06"))
    assert everyone["tax_collected_cents"] == tax + note["tax_cents"]


def test_a_new_rate_or_seller_never_changes_an_issued_document(taxes, make_org, operator):
    with at(utc(2026, 5, 20)):
        org = taxed_org(make_org, {"country": "FR"})
        bought = org.buy(10)
        before = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))
        html_before = page(org, bought["invoice_id"])
        ok(
            operator.put(
                "/tax/rates",
                {"rates": [RATES[0], {**RATES[1], "rate_bps": 2500}, *RATES[2:]]},
            )
        )
        ok(operator.put("/seller", {**SELLER, "legal_name": "New Name GmbH"}))
        ok(org.operator.patch(org.path(), {"tax": {"country": "US", "region": "NY"}}))
        after = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))
        assert after == before
        assert page(org, bought["invoice_id"]) == html_before
        # A new purchase uses what is in force now.
        again = org.buy(10)
        receipt = ok(org.api.get(org.path(f"/invoices/{again['invoice_id']}")))
        assert receipt["seller"]["name"] == "New Name GmbH"
        assert tax_lines(receipt) == [("Sales tax", 400, 400)]


def test_an_org_without_a_profile_pays_no_tax_and_its_quote_says_nothing(taxes, org):
    quote = ok(org.api.get("/pricing/quote", quantity=10))
    assert (quote["tax_cents"], quote["total_with_tax_cents"]) == (None, None)
    bought = org.buy(10)
    assert bought["tax_cents"] == 0
    receipt = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))
    assert (receipt["tax_lines"], receipt["tax_treatment"]) == ([], "no_profile")
    assert receipt["seller"]["name"] == "Lernkredite GmbH"


def test_half_a_cent_of_tax_rounds_up(operator, make_org):
    ok(
        operator.put(
            "/pricing",
            {
                "retail_unit_price_cents": 1050,
                "tiers": [{"min_quantity": 1, "unit_price_cents": 1050}],
            },
        )
    )
    ok(
        operator.put(
            "/tax/rates",
            {
                "rates": [
                    {
                        "country": "US",
                        "region": "NY",
                        "name": "Sales tax",
                        "rate_bps": 500,
                        "effective_from": "2020-01-01",
                    }
                ]
            },
        )
    )
    org = taxed_org(make_org, {"country": "US", "region": "NY"})
    bought = org.buy(1)  # $10.50 at 5% is 52.5 cents
    assert (bought["tax_cents"], bought["total_with_tax_cents"]) == (53, 1103)


# --- the operator's side -------------------------------------------------------------------------


def test_seller_and_rates_are_read_back(taxes, operator):
    seller = ok(operator.get("/seller"))
    assert seller == {**SELLER, "tax_id": "DE136695976"}
    table = ok(operator.get("/tax/rates"))
    assert table["version"] is not None
    assert sorted(
        (r["country"], r["region"], r["rate_bps"], r["effective_from"]) for r in table["rates"]
    ) == sorted((r["country"], r["region"], r["rate_bps"], r["effective_from"]) for r in RATES)


def test_tax_endpoints_are_for_the_operator_only(taxes, org):
    refused(org.api.put("/seller", SELLER), 403, "forbidden")
    refused(org.api.put("/tax/rates", {"rates": RATES}), 403, "forbidden")
    refused(org.api.get("/tax/report", period="2026-05"), 403, "forbidden")
    refused(org.api.patch(org.path(), {"tax": {"country": "DE"}}), 403, "forbidden")


def test_tax_report_by_jurisdiction(taxes, make_org, operator):
    with at(utc(2026, 5, 20)):
        for kind in KINDS:
            taxed_org(make_org, KINDS[kind][0]).buy(10)
        report = ok(operator.get("/tax/report", period="2026-05"))
        csv_response = operator.get("/tax/report", period="2026-05", format="csv")
    rows = {(r["country"], r["region"], r["name"], r["rate_bps"]): r for r in report["rows"]}
    assert rows[("DE", None, "VAT", 1600)]["tax_cents"] == 1600
    assert rows[("FR", None, "VAT", 2000)]["tax_cents"] == 2000
    assert rows[("US", "NY", "Sales tax", 400)]["taxable_cents"] == 10000
    assert report["tax_cents"] == 1600 + 2000 + 400
    untaxed = {(u["treatment"], u["country"]): u["net_cents"] for u in report["untaxed"]}
    assert untaxed == {("exempt", "DE"): 10000, ("reverse_charge", "FR"): 10000}
    assert csv_response.status == 200
    parsed = list(csv.reader(io.StringIO(csv_response.raw.decode())))
    assert parsed[0][:3] == ["period", "kind", "country"]
    assert len(parsed) == 1 + len(report["rows"]) + len(report["untaxed"])
    assert sum(int(row[7]) for row in parsed[1:]) == report["tax_cents"]


# --- bad input: clear 4xx, nothing changed -------------------------------------------------------


def tax_state() -> tuple[Any, ...]:
    return (
        list(SellerDetails.objects.values_list()),
        TaxRateTable.objects.count(),
        TaxRateEntry.objects.count(),
        list(Organization.objects.values_list("tax_country", "tax_region", "tax_id", "tax_exempt")),
        Invoice.objects.count(),
        InvoiceTaxLine.objects.count(),
    )


@pytest.mark.parametrize(
    ("profile", "says"),
    [
        ({"country": "XX"}, "ISO 3166-1"),
        ({"country": "DEU"}, "ISO 3166-1"),
        ({"country": "US", "region": "ON"}, "not a subdivision of US"),
        ({"country": "DE", "tax_id": "DE123"}, "DE followed by 9 digits"),
        ({"country": "DE", "tax_id": "FR40303265045"}, "FR"),
        ({"country": "GB", "tax_id": "12345"}, "GB"),
        ({"country": "AU", "tax_id": "123"}, "ABN"),
        ({"country": "DE", "exempt": "yes"}, "exempt"),
        ({"region": "NY"}, "country"),
        ({"country": "DE", "vat": "x"}, "vat"),
    ],
)
def test_a_bad_tax_profile_is_refused_naming_what_is_expected(taxes, org, profile, says):
    before = tax_state()
    body = refused(org.operator.patch(org.path(), {"tax": profile}), 422, "validation_error")
    assert says in body["detail"], body["detail"]
    assert tax_state() == before


def test_a_profile_is_normalized_and_can_be_removed(taxes, org):
    saved = ok(org.operator.patch(org.path(), {"tax": {"country": "de", "tax_id": "136695976"}}))
    assert saved["tax"] == {
        "country": "DE",
        "region": None,
        "tax_id": "DE136695976",
        "exempt": False,
    }
    saved = ok(org.operator.patch(org.path(), {"tax": {"country": "us", "region": "us-ny"}}))
    assert saved["tax"] == {"country": "US", "region": "NY", "tax_id": None, "exempt": False}
    assert ok(org.api.get(org.path()))["tax"]["region"] == "NY"
    assert ok(org.operator.patch(org.path(), {"tax": None}))["tax"] is None


@pytest.mark.parametrize(
    ("rates", "status", "says"),
    [
        ([{**RATES[0], "country": "ZZ"}], 422, "rates[0].country"),
        ([{**RATES[2], "region": "BC"}], 422, "rates[0].region"),
        ([{**RATES[0], "rate_bps": 10_001}], 422, "rate_bps"),
        ([{**RATES[0], "rate_bps": -1}], 422, "rate_bps"),
        ([{**RATES[0], "rate_bps": 19.5}], 422, "rate_bps"),
        ([{**RATES[0], "effective_from": "2020-13-01"}], 422, "effective_from"),
        ([RATES[0], {**RATES[0], "rate_bps": 2000}], 422, "repeats"),
        ([RATES[0], {**RATES[3], "name": "vat"}], 422, "spelled 'VAT'"),
    ],
)
def test_a_bad_rate_table_is_refused_and_the_old_one_stays(taxes, operator, rates, status, says):
    before = tax_state()
    body = refused(operator.put("/tax/rates", {"rates": rates}), status, "validation_error")
    assert says in str(body), body
    assert tax_state() == before


@pytest.mark.parametrize(
    ("seller", "says"),
    [
        ({**SELLER, "country": "Germany"}, "country"),
        ({**SELLER, "tax_id": "DE000"}, "DE followed by 9 digits"),
        ({**SELLER, "legal_name": "   "}, "legal_name"),
        ({**SELLER, "address": "a\x07b"}, "address"),
    ],
)
def test_bad_seller_details_are_refused(taxes, operator, seller, says):
    before = tax_state()
    body = refused(operator.put("/seller", seller), 422, "validation_error")
    assert says in str(body), body
    assert tax_state() == before


# --- the tax report, audited further ---------------------------------------------------------


def test_tax_report_nets_credit_notes_and_its_csv_says_the_same(taxes, make_org, operator):
    """A refund's credit note takes its tax off the jurisdiction's row (and its net off the
    untaxed sales); the CSV carries exactly the JSON's figures."""
    with at(utc(2026, 5, 20)):
        for kind in ("domestic business", "EU business elsewhere"):
            org = taxed_org(make_org, KINDS[kind][0])
            bought = org.buy(10)
            ok(
                org.operator.post(
                    org.path(f"/purchases/{bought['id']}/refund"),
                    {"credits": 4, "reason": "unused"},
                ),
                201,
            )
        report = ok(operator.get("/tax/report", period="2026-05"))
        csv_response = operator.get("/tax/report", period="2026-05", format="csv")
    assert [
        (r["country"], r["region"], r["name"], r["rate_bps"], r["taxable_cents"], r["tax_cents"])
        for r in report["rows"]
    ] == [("DE", None, "VAT", 1600, 6000, 960)]
    assert report["rows"][0]["documents"] == 2  # the receipt and its credit note
    assert report["tax_cents"] == 960
    assert [
        (u["treatment"], u["country"], u["net_cents"], u["documents"]) for u in report["untaxed"]
    ] == [("reverse_charge", "FR", 6000, 2)]
    assert csv_response.headers["Content-Type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(csv_response.raw.decode()))) == [
        [
            "period",
            "kind",
            "country",
            "region",
            "name",
            "rate_bps",
            "net_cents",
            "tax_cents",
            "documents",
        ],
        ["2026-05", "taxed", "DE", "", "VAT", "1600", "6000", "960", "2"],
        ["2026-05", "reverse_charge", "FR", "", "", "0", "6000", "0", "2"],
    ]
    # Another month has nothing.
    assert ok(operator.get("/tax/report", period="2026-04")) == {
        "period": "2026-04",
        "currency": "USD",
        "tax_cents": 0,
        "rows": [],
        "untaxed": [],
    }


def test_a_document_whose_tax_rounds_to_nothing_is_reported_once(taxes, make_org, operator):
    """Two credits at one cent, at 16%, are 0.32 cents of VAT: a tax line of nothing. The
    sale is taxed (at a rate that rounded away), not an untaxed sale: it is counted once."""
    ok(
        operator.put(
            "/pricing",
            {"retail_unit_price_cents": 1, "tiers": [{"min_quantity": 1, "unit_price_cents": 1}]},
        )
    )
    with at(utc(2026, 5, 20)):
        org = taxed_org(make_org, KINDS["domestic business"][0])
        bought = org.buy(2)
        receipt = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))
        report = ok(operator.get("/tax/report", period="2026-05"))
    assert tax_lines(receipt) == [("VAT", 1600, 0)]
    assert [(r["taxable_cents"], r["tax_cents"]) for r in report["rows"]] == [(2, 0)]
    assert report["untaxed"] == []


def test_every_put_of_the_rates_is_a_new_version_and_the_old_one_is_kept(taxes, operator):
    first = ok(operator.get("/tax/rates"))
    second = ok(operator.put("/tax/rates", {"rates": RATES[:1]}))
    assert second["version"] > first["version"]
    assert ok(operator.get("/tax/rates")) == second
    assert len(second["rates"]) == 1
    # The earlier version is history, kept as it was.
    kept = TaxRateEntry.objects.filter(table_id=first["version"]).count()
    assert kept == len(RATES)


def test_an_auto_top_up_charges_the_total_with_tax(taxes, make_org):
    """The worker's purchases are taxed like the customer's own: the card pays the tax."""
    with at(utc(2026, 5, 20)):
        org = taxed_org(make_org, KINDS["EU consumer"][0])  # French VAT, 20%
        rule = {
            "enabled": True,
            "below_available": 5,
            "quantity": 10,
            "max_purchases_per_month": 3,
            "max_credits_per_month": 1000,
        }
        ok(org.api.put(org.path("/auto-top-up"), rule))
        before = charged_cents()
        assert run_auto_top_up(pk("org", org.id)) == "bought 10"
        assert charged_cents() - before == 10000 + 2000
        (bought,) = ok(org.api.get(org.path("/purchases")))["data"]
        receipt = ok(org.api.get(org.path(f"/invoices/{bought['invoice_id']}")))
    assert (bought["tax_cents"], bought["total_with_tax_cents"]) == (2000, 12000)
    assert tax_lines(receipt) == [("VAT", 2000, 2000)]
    assert receipt["total_cents"] == 12000


def test_refunding_a_receipt_piece_by_piece_never_gives_back_more_than_was_charged(
    operator, make_org
):
    """$31.50 at 5% is $1.575 of tax, charged as $1.58. Three refunds of a third each,
    each rounded on its own (52.5 cents up to 53), would give back $1.59, a cent more than
    was charged; taken cumulatively they give back 53, 52 and 53 cents: exactly what was
    charged, as the provider's own records show."""
    ok(
        operator.put(
            "/pricing",
            {
                "retail_unit_price_cents": 1050,
                "tiers": [{"min_quantity": 1, "unit_price_cents": 1050}],
            },
        )
    )
    ny = [
        {
            "country": "US",
            "region": "NY",
            "name": "Sales tax",
            "rate_bps": 500,
            "effective_from": "2020-01-01",
        }
    ]
    ok(operator.put("/tax/rates", {"rates": ny}))
    org = taxed_org(make_org, {"country": "US", "region": "NY"})
    before_charged, before_refunded = charged_cents(), refunded_cents()
    bought = org.buy(3)
    assert (bought["tax_cents"], bought["total_with_tax_cents"]) == (158, 3308)
    notes = [
        ok(
            org.operator.post(
                org.path(f"/purchases/{bought['id']}/refund"), {"credits": 1, "reason": "unused"}
            ),
            201,
        )
        for _ in range(3)
    ]
    assert [n["tax_cents"] for n in notes] == [-53, -52, -53]
    for note in notes:
        assert_adds_up(note)
    assert 3308 + sum(n["total_cents"] for n in notes) == 0
    assert charged_cents() - before_charged == refunded_cents() - before_refunded == 3308
