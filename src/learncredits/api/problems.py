"""RFC 9457 problem responses: every error the API gives has this one shape.

Each domain error class maps to one HTTP status, in ``domain/errors.py`` (``http_status``);
the dashboard pages and the operator console answer a refusal with the same status.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse

from learncredits.domain import errors

PROBLEM_CONTENT_TYPE = "application/problem+json"

# The mapping lives with the errors (the pages and the console use it too, without the API).
STATUS_BY_ERROR = errors.STATUS_BY_ERROR
status_for = errors.http_status


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


def from_domain_error(exc: errors.DomainError) -> HttpResponse:
    return problem(status_for(exc), exc.code, exc.title, exc.detail, **exc.extra)


def validation_problem(
    detail: str, problems: list[dict[str, Any]] | None = None, status: int = 422
) -> HttpResponse:
    extra = {"errors": problems} if problems is not None else {}
    return problem(status, "validation_error", "Invalid request", detail, **extra)
