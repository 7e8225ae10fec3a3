"""The cheaper messages and CSP middlewares (web/headers.py) behave as Django's and
django-csp's own: the same headers, the same messages, on every kind of response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CSPMiddleware
from django.contrib import messages
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory

from learncredits.web.headers import CachedCSPMiddleware, LazyMessageMiddleware

View = Callable[[HttpRequest], HttpResponse]


def _plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain")


def _with_nonce(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"<style nonce='{request.csp_nonce}'></style>")  # type: ignore[attr-defined]


def _customised(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("custom")
    response._csp_update = {"img-src": ["https://img.example.com"]}  # type: ignore[attr-defined]
    return response


def _exempt(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("exempt")
    response._csp_exempt = True  # type: ignore[attr-defined]
    return response


def _headers(middleware: type, view: View, path: str) -> tuple[dict[str, str], str]:
    request = RequestFactory().get(path)
    response = middleware(view)(request)
    nonce = getattr(request, "_csp_nonce", None) or ""
    found = {h: response[h].replace(nonce, "NONCE") if nonce else response[h]
             for h in (HEADER, HEADER_REPORT_ONLY) if h in response}  # fmt: skip
    return found, response.content.decode().replace(nonce, "NONCE") if nonce else ""


CASES = [
    (_plain, "/dashboard"),
    (_plain, "/api/v1/orgs/org_1/balance"),
    (_plain, "/api/v1/docs"),  # excluded by prefix: no header
    (_with_nonce, "/invoices/1"),
    (_customised, "/dashboard"),
    (_exempt, "/dashboard"),
]


@pytest.mark.parametrize(("view", "path"), CASES)
def test_csp_headers_are_the_librarys(view: View, path: str) -> None:
    ours = _headers(CachedCSPMiddleware, view, path)
    assert ours == _headers(CSPMiddleware, view, path)
    if path == "/api/v1/docs" or view is _exempt:
        assert HEADER not in ours[0]
    else:
        assert "default-src 'self'" in ours[0][HEADER]
    if view is _with_nonce:
        assert "'nonce-NONCE'" in ours[0][HEADER] and "NONCE" in ours[1]


@pytest.mark.parametrize(("view", "path"), CASES)
def test_a_changed_policy_and_a_report_only_one_are_followed(
    settings: Any, view: View, path: str
) -> None:
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {
        "EXCLUDE_URL_PREFIXES": ["/api/"],
        "DIRECTIVES": {"default-src": ["'self'"], "report-uri": ["/csp-report"]},
    }
    ours = _headers(CachedCSPMiddleware, view, path)
    assert ours == _headers(CSPMiddleware, view, path)
    if view is _plain and path == "/dashboard":
        assert ours[0] == {
            HEADER: "default-src 'none'",
            HEADER_REPORT_ONLY: "default-src 'self'; report-uri /csp-report",
        }


def test_a_nonce_asked_for_after_the_header_is_written_is_refused() -> None:
    request = RequestFactory().get("/dashboard")
    CachedCSPMiddleware(_plain)(request)
    with pytest.raises(Exception, match="not available after the CSP header"):
        str(request.csp_nonce)  # type: ignore[attr-defined]


# --- messages ---------------------------------------------------------------------------------


def _run(middleware: type, view: View, cookies: dict[str, str]) -> HttpResponse:
    request = RequestFactory().get("/dashboard")
    request.COOKIES.update(cookies)
    response = SessionMiddleware(middleware(view))(request)
    return response


def _add(request: HttpRequest) -> HttpResponse:
    messages.success(request, "Saved.")
    return HttpResponse("added")


def _read(request: HttpRequest) -> HttpResponse:
    return HttpResponse("|".join(str(m) for m in messages.get_messages(request)))


@pytest.mark.django_db
@pytest.mark.parametrize("middleware", [LazyMessageMiddleware, MessageMiddleware])
def test_messages_are_kept_shown_once_and_untouched_when_unused(middleware: type) -> None:
    added = _run(middleware, _add, {})
    cookies = {k: v.value for k, v in added.cookies.items()}
    assert "messages" in cookies
    unused = _run(middleware, _plain, cookies)
    assert "messages" not in unused.cookies  # a request that does not read them keeps them
    shown = _run(middleware, _read, cookies)
    assert shown.content == b"Saved."
    assert shown.cookies["messages"].value == ""  # read once, then cleared


@pytest.mark.django_db
def test_the_store_is_made_only_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    def counting(request: HttpRequest) -> Any:
        made.append(request)
        return default_storage(request)

    monkeypatch.setattr("learncredits.web.headers.default_storage", counting)
    _run(LazyMessageMiddleware, _plain, {})
    assert made == []
    _run(LazyMessageMiddleware, _add, {})
    assert len(made) == 1


@pytest.mark.django_db
def test_an_api_request_builds_neither(monkeypatch: pytest.MonkeyPatch, org: Any) -> None:
    built: list[bool] = []
    monkeypatch.setattr("learncredits.web.headers.default_storage", lambda r: built.append(True))
    response = Client().get(
        "/api/v1" + org.path("/balance"), HTTP_AUTHORIZATION=f"Bearer {org.key}"
    )
    assert response.status_code == 200
    assert built == []
    assert "default-src 'self'" in response[HEADER]
