"""Error pages are the product's, not Django's: 400, 403, 404 and 500 in the layout with a
way back, a favicon on every page, and the API still answering problems in JSON."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.error_page_urls")]


@pytest.fixture
def browser() -> Client:
    client = Client(raise_request_exception=False)
    return client


@pytest.mark.parametrize(
    ("path", "status", "title"),
    [
        ("/no-such-page", 404, "Page not found"),
        ("/fails/403", 403, "Not allowed"),
        ("/fails/400", 400, "Bad request"),
        ("/fails/500", 500, "Something went wrong"),
    ],
)
def test_error_pages_are_in_the_products_layout(
    browser: Client, path: str, status: int, title: str
) -> None:
    answer = browser.get(path)
    assert answer.status_code == status
    html = answer.content.decode()
    assert f'<h1 id="error-title">{title}</h1>' in html
    assert 'class="brand"' in html  # the layout's header
    assert 'href="/"' in html  # a way back
    assert "web/favicon.svg" in html
    assert "Django" not in html and "Traceback" not in html and "a bug" not in html


def test_the_api_keeps_answering_problems_in_json(browser: Client) -> None:
    answer = browser.get("/api/v1/no-such-endpoint")
    assert answer.status_code == 404
    assert answer["Content-Type"] == "application/problem+json"
    assert answer.json()["code"] == "not_found"


def test_the_favicon_is_served_and_favicon_ico_leads_to_it(browser: Client) -> None:
    moved = browser.get("/favicon.ico")
    assert moved.status_code == 301
    icon = browser.get(moved["Location"])
    assert icon.status_code == 200
    body = b"".join(icon.streaming_content) if icon.streaming else icon.content
    assert body.startswith(b"<svg")
