"""Form posts with NUL characters are refused before any view sees them (PostgreSQL cannot
store them; no name, email or reason needs one)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


class RejectNulFormsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and not request.path.startswith("/api/"):
            values = [v for values in request.POST.lists() for v in values[1]]
            if any("\x00" in value for value in values):
                return HttpResponseBadRequest("Text must not contain NUL characters.")
        return self.get_response(request)
