"""The invoice PDF is laid out like the HTML invoice: the same line-item columns, figures
right-aligned so that every amount (and the subtotal, tax and total under them) shares the
amount column's right edge, the column headers repeated on every page, and "Page i of N" at
the foot of each page.

The PDF is read back with pdfminer.six, which gives each line of text with its box in
points, so the tests measure where the renderer really put each figure. The long invoice is
a real monthly invoice: 120 overage starts at three retail prices, closed by the operator.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from pdfminer.high_level import extract_pages
from pdfminer.layout import LAParams, LTTextLine

from learncredits.domain.money import format_cents
from tests.billing.test_billing import at, close, invoices, set_retail, utc
from tests.conftest import Api, OrgHandle, ok

# A point or two: the same right edge, allowing for the renderer's rounding.
TOLERANCE = 1.5
MONEY = re.compile(r"^-?\$[\d,]+\.\d\d$")
WHOLE = re.compile(r"^-?\d+$")
PAGE = re.compile(r"^Page (\d+) of (\d+)$")
HEADERS = ["Description", "Credits", "Unit price", "Amount"]
LINES = 120
# Retail prices in force while the overages start: the unit price column holds figures of
# different widths, so a column that shares one right edge is not an accident of equal widths.
RETAIL_CENTS = [1000, 99900, 123456]
COSTS = [1, 12, 150]


@dataclass(frozen=True)
class Text:
    """One line of text the PDF shows, with its box (points from the page's bottom left)."""

    text: str
    x0: float
    x1: float
    y: float


def pdf_pages(raw: bytes) -> list[list[Text]]:
    """Each page's lines of text. Small margins keep the cells of one row apart: a figure is
    its own line, not glued to its neighbour."""
    assert raw.startswith(b"%PDF"), raw[:20]
    params = LAParams(char_margin=0.5, word_margin=0.1, line_margin=0.0, boxes_flow=None)
    pages = []
    for page in extract_pages(io.BytesIO(raw), laparams=params):
        found: list[Text] = []

        def walk(item: Any, found: list[Text] = found) -> None:
            if isinstance(item, LTTextLine):
                text = item.get_text().strip()
                if text:
                    found.append(Text(text, item.x0, item.x1, item.y0))
                return
            for child in item if hasattr(item, "__iter__") else ():
                walk(child)

        walk(page)
        pages.append(found)
    return pages


def rows(page: list[Text]) -> list[list[Text]]:
    """The page's text grouped by baseline, top to bottom, each row left to right."""
    grouped: list[list[Text]] = []
    for text in sorted(page, key=lambda t: (-t.y, t.x0)):
        if grouped and abs(grouped[-1][0].y - text.y) < 1:
            grouped[-1].append(text)
        else:
            grouped.append([text])
    return [sorted(row, key=lambda t: t.x0) for row in grouped]


def header_row(page: list[Text]) -> dict[str, Text]:
    """The line-item table's header on this page, by column name."""
    for row in rows(page):
        if [t.text for t in row] == HEADERS:
            return {t.text: t for t in row}
    raise AssertionError(f"no header row {HEADERS} on the page: {[t.text for t in page]}")


class _HtmlHeaders(HTMLParser):
    """The column headers of the HTML invoice's line-item table, and which are figures."""

    def __init__(self) -> None:
        super().__init__()
        self.in_lines = self.in_th = False
        self.headers: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table" and "lines" in classes:
            self.in_lines = True
        elif tag == "th" and self.in_lines:
            self.in_th = True
            self.headers.append(("", "num" in classes))

    def handle_endtag(self, tag: str) -> None:
        if tag == "th":
            self.in_th = False
        elif tag == "table":
            self.in_lines = False

    def handle_data(self, data: str) -> None:
        if self.in_th:
            text, numeric = self.headers[-1]
            self.headers[-1] = ((text + data).strip(), numeric)


def same_edge(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE


@pytest.fixture
def long_invoice(
    operator: Api, make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> tuple[OrgHandle, dict[str, Any]]:
    """A September invoice of 120 overage lines in New York (two tax lines under them)."""
    ok(
        operator.put(
            "/tax/rates",
            {
                "rates": [
                    {"country": "US", "region": "NY", "name": name, "rate_bps": bps}
                    | {"effective_from": "2020-01-01"}
                    for name, bps in (("Sales tax", 400), ("Local tax", 450))
                ]
            },
        )
    )
    with at(utc(2026, 9, 10)):
        org = make_org("Long Lines Inc")
        ok(org.operator.patch(org.path(), {"tax": {"country": "US", "region": "NY"}}))
        contents = [make_content(cost, f"Course costing {cost}") for cost in COSTS]
        employees = [org.employee(f"Learner {i:03d}") for i in range(LINES)]
    per_price = -(-LINES // len(RETAIL_CENTS))
    for batch, retail in enumerate(RETAIL_CENTS):
        with at(utc(2026, 9, 11 + batch)):
            set_retail(operator, retail)
            chosen = employees[batch * per_price : (batch + 1) * per_price]
            for i, employee in enumerate(chosen):
                (assignment,) = org.assign(contents[i % len(COSTS)], [employee])["data"]
                ok(org.act(assignment["id"], "start"))
    with at(utc(2026, 10, 5)):
        assert close(operator, "2026-09") == 1
    (monthly,) = invoices(org, "monthly")
    full = ok(org.api.get(org.path(f"/invoices/{monthly['id']}")))
    assert len(full["lines"]) == LINES
    return org, full


def pdf_of(org: OrgHandle, invoice_id: str) -> bytes:
    response = org.api.get(org.path(f"/invoices/{invoice_id}/pdf"))
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/pdf"
    return response.raw


def test_the_pdf_columns_are_the_html_columns_with_figures_on_one_right_edge(long_invoice):
    org, invoice = long_invoice
    html = _HtmlHeaders()
    html.feed(org.api.get(org.path(f"/invoices/{invoice['id']}/html")).raw.decode())
    # The HTML invoice's columns, its figures right-aligned: the PDF must have the same.
    assert html.headers == [(h, h != "Description") for h in HEADERS]

    pages = pdf_pages(pdf_of(org, invoice["id"]))
    seen_lines: list[tuple[int, str, str]] = []
    unit_widths: set[float] = set()
    amount_widths: set[float] = set()
    totals: dict[str, Text] = {}
    for number, page in enumerate(pages, start=1):
        head = header_row(page)  # repeated on every page
        credits, unit, amount = head["Credits"], head["Unit price"], head["Amount"]
        # The figures' headers are right-aligned too, and the columns are in order.
        assert head["Description"].x1 < credits.x0 < unit.x0 < amount.x0, number
        for row in rows(page):
            texts = [t.text for t in row]
            figures = [t for t in row if MONEY.match(t.text) or WHOLE.match(t.text)]
            if len(figures) == 3 and WHOLE.match(figures[0].text):
                quantity, price, line_amount = figures
                assert same_edge(quantity.x1, credits.x1), (number, texts, credits)
                assert same_edge(price.x1, unit.x1), (number, texts, unit)
                assert same_edge(line_amount.x1, amount.x1), (number, texts, amount)
                seen_lines.append((int(quantity.text), price.text, line_amount.text))
                unit_widths.add(round(price.x1 - price.x0, 1))
                amount_widths.add(round(line_amount.x1 - line_amount.x0, 1))
            if len(figures) == 1 and MONEY.match(figures[0].text) and figures[0].x0 > unit.x1:
                # A total or tax row: its figure under the amount column's right edge.
                assert same_edge(figures[0].x1, amount.x1), (number, texts, amount)
                totals[texts[0]] = figures[0]

    # Every line was found, in order, with the figures the API gives.
    assert seen_lines == [
        (li["quantity"], format_cents(li["unit_price_cents"]), format_cents(li["amount_cents"]))
        for li in invoice["lines"]
    ]
    # Figures of different widths: one right edge is what right-alignment does.
    assert len(unit_widths) == len(RETAIL_CENTS), unit_widths
    assert len(amount_widths) > 3, amount_widths
    assert totals["Subtotal"].text == format_cents(invoice["subtotal_cents"])
    assert totals["Total (USD)"].text == format_cents(invoice["total_cents"])
    subtotal = format_cents(invoice["subtotal_cents"])
    taxes = [t for label, t in totals.items() if label.endswith(f"on {subtotal}")]
    assert sorted(t.text for t in taxes) == sorted(
        format_cents(t["amount_cents"]) for t in invoice["tax_lines"]
    )


def test_a_long_invoice_numbers_its_pages_i_of_n(long_invoice):
    org, invoice = long_invoice
    pages = pdf_pages(pdf_of(org, invoice["id"]))
    total = len(pages)
    assert total >= 3, total
    for number, page in enumerate(pages, start=1):
        footers = [PAGE.match(t.text) for t in page if PAGE.match(t.text)]
        assert [(int(m[1]), int(m[2])) for m in footers] == [(number, total)], number
        # At the foot of the page, below everything else on it.
        (footer,) = [t for t in page if PAGE.match(t.text)]
        assert footer.y == min(t.y for t in page), number
        header_row(page)
    # The page number is for paper: the web page has none.
    page_html = org.api.get(org.path(f"/invoices/{invoice['id']}/html")).raw.decode()
    assert "Page 1 of" not in page_html


def test_a_one_line_receipt_is_page_1_of_1(make_org):
    with at(utc(2026, 9, 10)):
        org = make_org("Short")
        receipt_id = org.buy(5)["invoice_id"]
    (page,) = pdf_pages(pdf_of(org, receipt_id))
    assert [t.text for t in page if PAGE.match(t.text)] == ["Page 1 of 1"]
    head = header_row(page)
    (line,) = [row for row in rows(page) if row[0].text.startswith("5 credits at $10.00")]
    quantity, price, amount = line[1:]
    assert quantity.text == "5"
    assert same_edge(quantity.x1, head["Credits"].x1)
    assert same_edge(price.x1, head["Unit price"].x1)
    assert same_edge(amount.x1, head["Amount"].x1)
