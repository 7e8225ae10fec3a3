"""Dashboard and console input with NUL characters is refused before any view sees it:
PostgreSQL cannot store NUL or even compare text with it (a search or a console filter with
``%00`` was a 500), and no name, email, search or reason needs one. The API has its own rule
with its own error shape (api/middleware.py)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict


def _has_nul(data: QueryDict) -> bool:
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in data.lists())


class RejectNulFormsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            return self.get_response(request)
        # An empty query string has nothing to check: it is not parsed for nothing.
        if (request.META.get("QUERY_STRING") and _has_nul(request.GET)) or (
            request.method == "POST" and _has_nul(request.POST)
        ):
            return HttpResponseBadRequest("Text must not contain NUL characters.")
        return self.get_response(request)
