"""Request bodies the API can trust: chunked bodies read, and JSON only as UTF-8 JSON.

Django sizes a request body by its Content-Length. A body sent with
``Transfer-Encoding: chunked`` has none, so Django read it as empty and the API answered
"body: Field required" to a request that carried one. The WSGI server (gunicorn) decodes the
chunks and marks the stream as terminated (``wsgi.input_terminated``), so the body can be
read to its end, within the same size limit as any other.

The API speaks JSON in UTF-8 (RFC 8259). Python's JSON parser is lenient: it takes bytes in
UTF-16 or UTF-32 and does not look at the Content-Type, so a ``text/plain`` form post or a
UTF-16 body would have bought credits. A body the API would only be guessing at is refused
with 415 instead.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse

from learncredits.api.problems import problem, validation_problem

API_PREFIX = "/api/v1/"
# Methods whose body the API reads; a GET's body is ignored, as HTTP says.
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json_media_type(content_type: str) -> tuple[bool, str]:
    """Whether a Content-Type names JSON in UTF-8; if not, what is wrong with it."""
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        shown = media_type or "none"
        return False, f"the request body must be application/json (Content-Type was {shown})"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False, "the request body must be JSON encoded as UTF-8"
    return True, ""


def _unsupported(detail: str) -> HttpResponse:
    return problem(415, "unsupported_media_type", "Unsupported media type", detail)


def _too_large(request: HttpRequest) -> HttpResponse:
    limit = settings.LEARNCREDITS_MAX_BODY_BYTES
    detail = f"the request body exceeds {limit} bytes"
    if request.path.startswith(API_PREFIX):
        return validation_problem(detail, status=413)
    return HttpResponse(detail, status=413, content_type="text/plain; charset=utf-8")


def _read_chunked_body(request: HttpRequest) -> HttpResponse | None:
    """Read a chunked body to its end (at most the limit) and hand it on as if it had come
    with a Content-Length; a body over the limit is answered 413 without reading the rest."""
    if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    if request.META.get("CONTENT_LENGTH") or not request.META.get("wsgi.input_terminated"):
        # A length was given (HTTP forbids both; the length wins, as in Django), or the
        # server cannot tell where the body ends: leave the request as Django made it.
        return None
    limit = settings.LEARNCREDITS_MAX_BODY_BYTES
    stream = request.META["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        return _too_large(request)
    body = b"".join(chunks)
    request.META["CONTENT_LENGTH"] = str(len(body))
    request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[assignment]
    return None


def _json_body_problem(request: HttpRequest) -> HttpResponse | None:
    """415 for an API body that is not JSON in UTF-8; an empty body needs no media type."""
    if request.method not in _WITH_BODY or not request.path.startswith(API_PREFIX):
        return None
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None  # ApiBodyLimitMiddleware answers 400 for it
    if length == 0 or length > settings.LEARNCREDITS_MAX_BODY_BYTES:
        return None  # nothing to read, or ApiBodyLimitMiddleware answers 413
    is_json, detail = _is_json_media_type(request.META.get("CONTENT_TYPE", ""))
    if not is_json:
        return _unsupported(detail)
    if json.detect_encoding(request.body) not in ("utf-8", "utf-8-sig"):
        # By its byte order mark or its pattern of NUL bytes this is UTF-16 or UTF-32, which
        # Python's parser would decode and accept. Bytes that are merely not valid UTF-8
        # are left to the parser, which answers 400.
        return _unsupported("the request body must be JSON encoded as UTF-8")
    return None


class RequestBodyMiddleware:
    """Runs before anything reads the body (the size limit, the NUL check, the views)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refused = _read_chunked_body(request) or _json_body_problem(request)
        if refused is not None:
            return refused
        return self.get_response(request)
