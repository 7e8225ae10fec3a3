"""Who is calling the API, and which organization they may reach.

An org key reaching into another org gets 404, exactly like an id that does not exist, so
a key can never learn which other org ids exist. An org key on an operator-only endpoint
gets 403.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from ninja.security import HttpBearer

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.domain.errors import Forbidden, NotFound, Unauthenticated
from learncredits.tenancy import access
from learncredits.tenancy.models import Department, Organization
from learncredits.tenancy.services import Principal, authenticate_token, get_org

_CACHE_ATTR = "_learncredits_principal"
logger = logging.getLogger(__name__)


def principal_for(request: HttpRequest) -> Principal | None:
    """Authenticate the bearer token once per request (the middleware and views share it)."""
    if not hasattr(request, _CACHE_ATTR):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        principal = None
        if scheme.lower() == "bearer" and token and len(token) <= 512:
            principal = authenticate_token(token)
        setattr(request, _CACHE_ATTR, principal)
    cached: Principal | None = getattr(request, _CACHE_ATTR)
    return cached


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("rate limited")
        self.retry_after = max(1, retry_after)
        self.detail = f"too many requests for this key; retry after {self.retry_after} s"


# While the cache does not answer, each process tries it again at most this often: the
# requests in between skip the count instead of each waiting for the cache's timeout.
CACHE_RETRY_SECONDS = 5.0
_cache_unusable_until = 0.0


def check_rate(request: HttpRequest, principal: Principal) -> None:
    """Per-key request budget (django-ratelimit, on the configured cache).

    Fails open: when the cache (Redis, with ``CACHE_URL``) cannot be reached the request is
    served uncounted and a warning is logged. The budget protects the service from one
    runaway client; refusing every client's billing calls because the counter store is down
    would turn a cache outage into an API outage. Sign-in throttling does not depend on the
    cache (web/signin.py keeps its budgets in the database)."""
    global _cache_unusable_until
    rate = (
        settings.LEARNCREDITS_RATE_LIMIT_OPERATOR
        if principal.is_operator
        else (settings.LEARNCREDITS_RATE_LIMIT)
    )
    if not rate or time.monotonic() < _cache_unusable_until:
        return
    try:
        usage = get_usage(
            request, group="api", key=lambda _g, _r: principal.label, rate=rate, increment=True
        )
    except Exception as exc:  # the client library's own errors: connection, timeout, protocol
        _cache_unusable_until = time.monotonic() + CACHE_RETRY_SECONDS
        logger.warning(
            "rate limit not counted: the cache did not answer (%s: %s); requests go "
            "uncounted for %.0f s",
            type(exc).__name__,
            exc,
            CACHE_RETRY_SECONDS,
        )
        return
    if usage is not None and usage["should_limit"]:
        raise RateLimited(int(usage["time_left"]))


def record_denial(request: HttpRequest, reason: str, org_id: int | None = None) -> None:
    """Audit an authorization denial: who tried what, from where."""
    principal = getattr(request, _CACHE_ATTR, None)
    actor = principal.label if principal is not None else "anonymous"
    audit.record(
        actor,
        "auth.denied",
        org_id=org_id,
        target=request.path[:200],
        reason=reason,
        method=request.method,
    )


class BearerAuth(HttpBearer):
    """Bearer authentication that answers 401 problem+json instead of ninja's default."""

    def __call__(self, request: HttpRequest) -> Principal:
        principal = principal_for(request)
        if principal is None:
            raise Unauthenticated("a valid bearer token is required")
        check_rate(request, principal)
        authorize(request, principal)
        return principal

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        return principal_for(request)


_API_PREFIX = "api/v1"
_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


def operation(request: HttpRequest) -> str:
    """The operation a request names, as the access table writes it: ``GET /orgs/{org_id}``."""
    match = request.resolver_match
    route = match.route if match is not None else ""
    path = _PARAM.sub(r"{\1}", route.removeprefix(_API_PREFIX))
    return f"{request.method} {path if path.startswith('/') else '/' + path}"


def authorize(request: HttpRequest, principal: Principal) -> None:
    """403 unless the access table lets the caller's role use this operation."""
    name = operation(request)
    if access.may(principal.role, name):
        return
    if access.roles_for(name) == {access.OPERATOR}:
        raise Forbidden("this endpoint is for the operator only")
    raise Forbidden(f"the role {principal.role} may not use this endpoint")


def caller(request: HttpRequest) -> Principal:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    return principal


def require_operator(request: HttpRequest) -> Principal:
    principal = caller(request)
    if not principal.is_operator:
        raise Forbidden("this endpoint is for the operator only")
    return principal


def org_for(request: HttpRequest, org_id: str) -> Organization:
    """The org named in the path, if the caller may reach it; otherwise 404."""
    principal = caller(request)
    pk = ids.decode("org", org_id)
    if pk is None or (not principal.is_operator and principal.org_id != pk):
        if pk is not None and not principal.is_operator:
            record_denial(request, "another org", org_id=principal.org_id)
        raise NotFound("organization not found")
    return principal.org if principal.org is not None else get_org(pk)


def decode_or_404(kind: str, value: str, what: str) -> int:
    pk = ids.decode(kind, value)
    if pk is None:
        raise NotFound(f"{what} not found")
    return pk


def manager_of(request: HttpRequest) -> frozenset[int] | None:
    """A manager key's departments (it acts only for their employees, within budget);
    None for every other caller, who acts for the whole org."""
    principal = caller(request)
    return principal.department_ids if principal.role == "manager" else None


def require_org_admin(request: HttpRequest) -> Principal:
    """The operator, or an org key acting as the org's owner or admin."""
    principal = caller(request)
    if principal.role not in ("operator", "owner", "admin"):
        raise Forbidden("this endpoint is for the organization's admins")
    return principal


def department_filter(request: HttpRequest, org: Organization, value: str | None) -> int | None:
    """The department a ``?department_id=`` names: 404 when it is not the org's (or, for a
    manager, not one of theirs), exactly like an id that does not exist."""
    if value is None:
        return None
    pk = decode_or_404("department", value, "department")
    scope = manager_of(request)
    if (scope is not None and pk not in scope) or not Department.objects.filter(
        org=org, pk=pk
    ).exists():
        raise NotFound("department not found")
    return pk
