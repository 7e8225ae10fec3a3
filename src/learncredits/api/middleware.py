"""API middleware: body size limit, problem+json for framework errors, and idempotency.

Idempotency (docs/api.md): the key is claimed by inserting a row that a unique constraint
guards, in the same transaction as the request's effect, and the answer is stored in that
row before commit. Two requests with one key therefore cannot both take effect: the second
waits on the unique index until the first commits, then replays its answer. A crash before
commit leaves neither the effect nor the claim behind, so a retry simply runs again.

The stored answer is encrypted (``learncredits.secrets_at_rest``): it may show a new API
key or webhook secret, which must not sit in the database in clear. The request's
fingerprint is an HMAC keyed from ``SECRET_KEY``, not a bare SHA-256, because a request body
may carry a password and a fast unkeyed hash of it could be brute-forced from a dump.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from learncredits.api.auth import principal_for
from learncredits.api.models import IdempotencyRecord
from learncredits.api.problems import PROBLEM_CONTENT_TYPE, problem, validation_problem
from learncredits.secrets_at_rest import UndecryptableSecret, decrypt, encrypt

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v1/"
MAX_KEY_LENGTH = 255
_FINGERPRINT_SALT = "learncredits.api.idempotency.request"


def _too_large() -> HttpResponse:
    limit = settings.LEARNCREDITS_MAX_BODY_BYTES
    return validation_problem(f"the request body exceeds {limit} bytes", status=413)


class ApiBodyLimitMiddleware:
    """Refuse oversized API bodies with 413, and give framework-made errors our shape."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return validation_problem("Content-Length is not a number", status=400)
        if length > settings.LEARNCREDITS_MAX_BODY_BYTES:
            return _too_large()
        nul = _nul_problem(request)
        if nul is not None:
            return nul
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if response.status_code >= 400 and not content_type.startswith(
            (PROBLEM_CONTENT_TYPE, "application/json")
        ):
            return _as_problem(response)
        return response


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _nul_problem(request: HttpRequest) -> HttpResponse | None:
    """Refuse NUL characters in any text: PostgreSQL cannot store them, and no name, email,
    reason or statement needs one. (SQLite would store them, so the rule is ours, here.)"""
    detail = "text must not contain NUL (U+0000) characters"
    if "%00" in request.META.get("QUERY_STRING", ""):
        return validation_problem(detail)
    try:
        body = request.body
    except RequestDataTooBig:
        return _too_large()
    if b"\\u0000" in body or b"\x00" in body:
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None  # not JSON: the view answers 400 for it
        if _has_nul(parsed):
            return validation_problem(detail)
    return None


def _as_problem(response: HttpResponse) -> HttpResponse:
    status = response.status_code
    if status == 404:
        return problem(404, "not_found", "Not found", "no such endpoint")
    if status == 405:
        out = problem(
            405,
            "method_not_allowed",
            "Method not allowed",
            "this endpoint does not accept that method",
        )
        if response.has_header("Allow"):
            out["Allow"] = response["Allow"]
        return out
    if status == 413:
        return _too_large()
    if status < 500:
        return validation_problem("the request could not be processed", status=status)
    return problem(status, "internal_error", "Internal error", "an unexpected error occurred")


def _canonical_body(body: bytes) -> bytes:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    return json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()


_ORG_PATH = re.compile(r"^/api/v1/orgs/([^/]+)/")


def _scope(principal_scope: str, path: str) -> str:
    """Keys are per org (docs/api.md): the operator's keys are scoped by the org in the path."""
    match = _ORG_PATH.match(path)
    if principal_scope == "operator" and match:
        return f"operator:{match.group(1)[:40]}"
    return principal_scope


def _fingerprints(message: bytes) -> list[str]:
    """The request's fingerprint under ``SECRET_KEY`` first, then under each fallback key, so a
    replay still matches after ``SECRET_KEY`` is rotated into ``SECRET_KEY_FALLBACKS``."""
    keys = (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    found = [
        salted_hmac(_FINGERPRINT_SALT, message, secret=key, algorithm="sha256").hexdigest()
        for key in keys
    ]
    # Records written before fingerprints were keyed hold the bare SHA-256; they expire
    # within one idempotency TTL, after which this entry never matches anything.
    found.append(hashlib.sha256(message).hexdigest())
    return found


# Purchases, refunds and credit notes keep the key on their own rows (billing/purchases.py,
# billing/refunds.py): they call a payment provider, which must never happen inside the
# request's transaction that this middleware holds open, and a retry after a crash must find
# the pending row and carry it on, not start again.
_KEEPS_ITS_OWN_KEY = re.compile(
    r"^/api/v1/orgs/[^/]+/(purchases|purchases/[^/]+/refund|invoices/[^/]+/credit-note)$"
)


class IdempotencyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None or not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            return validation_problem(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
        if _KEEPS_ITS_OWN_KEY.match(request.path):
            return self.get_response(request)
        principal = principal_for(request)
        if principal is None:
            return self.get_response(request)  # the view answers 401
        try:
            body = request.body
        except RequestDataTooBig:
            return _too_large()
        fingerprints = _fingerprints(
            b"POST\n" + request.path.encode() + b"\n" + _canonical_body(body)
        )
        return self._once(request, _scope(principal.scope, request.path), key, fingerprints)

    def _once(
        self, request: HttpRequest, scope: str, key: str, fingerprints: list[str]
    ) -> HttpResponse:
        cutoff = timezone.now() - timedelta(seconds=settings.LEARNCREDITS_IDEMPOTENCY_TTL_SECONDS)
        with transaction.atomic():
            IdempotencyRecord.objects.filter(scope=scope, key=key, created_at__lt=cutoff).delete()
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        scope=scope, key=key, request_hash=fingerprints[0]
                    )
            except IntegrityError:
                return self._replay(scope, key, fingerprints)
            response = self.get_response(request)
            if response.status_code >= 500 or response.streaming:
                transaction.set_rollback(True)
                return response
            record.status_code = response.status_code
            record.content_type = response.get("Content-Type", "application/json")
            record.body = encrypt(response.content)
            record.save(update_fields=["status_code", "content_type", "body"])
            return response

    def _replay(self, scope: str, key: str, fingerprints: list[str]) -> HttpResponse:
        first = IdempotencyRecord.objects.get(scope=scope, key=key)
        try:
            body = decrypt(first.body)
        except UndecryptableSecret:
            # Checked before the fingerprint, which is keyed the same way and so would call
            # this "another request". The first request took effect, but its answer was
            # stored under a key this server no longer has: running it again would repeat
            # the effect, so refuse, and tell the operator why.
            logger.error(
                "idempotency record %s cannot be decrypted; is the old SECRET_KEY missing "
                "from SECRET_KEY_FALLBACKS?",
                first.pk,
            )
            return problem(
                422,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used, and its first answer can no longer "
                "be replayed; check whether the first request took effect before retrying "
                "with a new key",
            )
        if not any(constant_time_compare(first.request_hash, f) for f in fingerprints):
            return problem(
                422,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request",
            )
        response = HttpResponse(body, status=first.status_code, content_type=first.content_type)
        response["Idempotent-Replayed"] = "true"
        return response
