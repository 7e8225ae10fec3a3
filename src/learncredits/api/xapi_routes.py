"""xAPI statement endpoints (docs/api.md): HTTP Basic auth with the org id and one of its keys."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router

from learncredits import ids
from learncredits.api.auth import authorize
from learncredits.api.schemas import Problem
from learncredits.domain.errors import MalformedRequest, Unauthenticated, ValidationFailed
from learncredits.integrations import xapi
from learncredits.tenancy.models import Organization
from learncredits.tenancy.services import authenticate_token, get_org

router = Router(tags=["xapi"], auth=None)
VERSION = "1.0.3"


def _org(request: HttpRequest) -> Organization:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        user = password = ""
    org_pk = ids.decode("org", user)
    principal = authenticate_token(password) if scheme.lower() == "basic" and password else None
    if principal is None or org_pk is None or principal.org_id != org_pk:
        raise Unauthenticated("HTTP Basic auth with the org id and one of its API keys")
    authorize(request, principal)
    return get_org(org_pk)


def _check_version(request: HttpRequest) -> None:
    version = request.headers.get("X-Experience-API-Version", "")
    if not version.startswith("1.0"):
        raise ValidationFailed("X-Experience-API-Version 1.0.x is required")


def _body(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("the body is not valid JSON") from None


def _versioned(response: HttpResponse) -> HttpResponse:
    response["X-Experience-API-Version"] = VERSION
    return response


XAPI_ERRORS = {400: Problem, 401: Problem, 403: Problem, 409: Problem, 413: Problem, 422: Problem}


@router.post("/xapi/statements", response={200: list[str], **XAPI_ERRORS})
def post_statements(request: HttpRequest) -> HttpResponse:
    """One statement or a list; answers the statement ids (xAPI 1.0.3)."""
    org = _org(request)
    _check_version(request)
    statement_ids = xapi.receive_many(org, _body(request))
    return _versioned(JsonResponse(statement_ids, safe=False))


@router.put("/xapi/statements", response={204: None, **XAPI_ERRORS})
def put_statement(request: HttpRequest, statementId: str) -> HttpResponse:
    org = _org(request)
    _check_version(request)
    xapi.receive(org, _body(request), statementId)
    return _versioned(HttpResponse(status=204))
