"""RFC 9457 problem responses: every error the API gives has this one shape.

Each domain error class maps to one HTTP status here, and only here (``status_for``); the
dashboard pages and the operator console answer a refusal with the same status.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse

from learncredits.domain import errors

PROBLEM_CONTENT_TYPE = "application/problem+json"

STATUS_BY_ERROR: dict[type[errors.DomainError], int] = {
    errors.Unauthenticated: 401,
    errors.PaymentFailed: 402,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.InvalidState: 409,
    errors.InsufficientCredits: 409,
    errors.EmployeeInactive: 409,
    errors.RefundExceedsAvailable: 409,
    errors.PaymentMethodRequired: 409,
    errors.MalformedRequest: 400,
    errors.ValidationFailed: 422,
}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> HttpResponse:
    body: dict[str, Any] = {
        "type": f"https://learncredits.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    response = HttpResponse(
        json.dumps(body, default=str), status=status, content_type=PROBLEM_CONTENT_TYPE
    )
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="learncredits"'
    return response


def status_for(exc: errors.DomainError) -> int:
    """The HTTP status of a refusal, for the API, the dashboard pages and the console alike:
    a client that sees the same refusal through two doors sees the same status."""
    return next((code for cls, code in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 400)


def from_domain_error(exc: errors.DomainError) -> HttpResponse:
    return problem(status_for(exc), exc.code, exc.title, exc.detail, **exc.extra)


def validation_problem(
    detail: str, problems: list[dict[str, Any]] | None = None, status: int = 422
) -> HttpResponse:
    extra = {"errors": problems} if problems is not None else {}
    return problem(status, "validation_error", "Invalid request", detail, **extra)
