"""Helpers shared by the API's routers: answer schemas, list parameters, cursor pagination."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.db.models import QuerySet
from pydantic import Field

from learncredits.api import schemas as s
from learncredits.domain.errors import ValidationFailed
from learncredits.ids import whole_number

ERRORS: dict[int, Any] = {
    400: s.Problem,
    401: s.Problem,
    403: s.Problem,
    404: s.Problem,
    409: s.Problem,
    413: s.Problem,
    415: s.Problem,
    422: s.Problem,
}


def responses(status: int, schema: Any, *extra: int) -> dict[int, Any]:
    answer: dict[int, Any] = {status: schema}
    answer.update({code: s.Problem for code in (*ERRORS, *extra)})
    return answer


class ListParams(s.Schema):
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=64)


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("cursor is not valid") from None
    value = whole_number(decoded, low=1)
    if value is None:
        raise ValidationFailed("cursor is not valid")
    return value


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def paginate(queryset: QuerySet[Any], params: ListParams, *, oldest_first: bool = False) -> s.Page:
    """Newest first by id (``oldest_first``: the other way); the cursor is the last id seen,
    so pages never shift or repeat. The rows stay model instances: the route's page schema
    answers them."""
    after = _decode_cursor(params.cursor)
    if after is not None:
        queryset = queryset.filter(**{"pk__gt" if oldest_first else "pk__lt": after})
    rows = list(queryset.order_by("pk" if oldest_first else "-pk")[: params.limit + 1])
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    return s.Page(data=rows, next_cursor=_encode_cursor(rows[-1].pk) if more and rows else None)


def content(media_type: str, *, binary: bool = False) -> dict[str, Any]:
    """OpenAPI for an answer that is not JSON (CSV, PDF, HTML), merged into the operation."""
    schema: dict[str, Any] = {"type": "string"}
    if binary:
        schema["format"] = "binary"
    return {"responses": {200: {"content": {media_type: {"schema": schema}}}}}
