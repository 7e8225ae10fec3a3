"""Recording audit events, with the request's origin taken from a context variable.

The middleware sets who is calling from where for the duration of a request; services call
``record`` without needing the request, so the API, the console and the CLI are all covered
by the one call inside each service.
"""

from __future__ import annotations

import contextvars
import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from learncredits.audit.models import AuditEvent


@dataclass(frozen=True)
class Origin:
    ip_address: str | None
    user_agent: str
    path: str


_origin: contextvars.ContextVar[Origin | None] = contextvars.ContextVar("origin", default=None)


def record(
    actor: str, action: str, *, org_id: int | None = None, target: str = "", **details: Any
) -> AuditEvent:
    origin = _origin.get()
    return AuditEvent.objects.create(
        actor=actor[:200],
        action=action,
        org_id=org_id,
        target=target[:200],
        details=details,
        ip_address=origin.ip_address if origin else None,
        user_agent=origin.user_agent[:300] if origin else "",
        request_path=origin.path[:500] if origin else "",
    )


class AuditOriginMiddleware:
    """Remember where the current request comes from, for ``record``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _origin.set(
            Origin(
                ip_address=request.META.get("REMOTE_ADDR") or None,
                user_agent=request.headers.get("User-Agent", ""),
                path=request.path,
            )
        )
        try:
            return self.get_response(request)
        finally:
            _origin.reset(token)


# --- reading an org's own trail ------------------------------------------------------------

AUDIT_CSV_COLUMNS = ("created_at", "actor", "actor_name", "action", "target", "details", "ip")


def org_trail(org_id: int, *, action: str = "", actor: str = "") -> QuerySet[AuditEvent]:
    """The org's own audit events, newest first; ``action`` keeps those whose action starts
    with it (``user.`` for every user change), ``actor`` one actor's."""
    events = AuditEvent.objects.filter(org_id=org_id)
    if action:
        events = events.filter(action__startswith=action)
    if actor:
        events = events.filter(actor=actor)
    return events.order_by("-id")


class _Echo:
    """A file for csv.writer that hands each written line back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def trail_csv(events: Iterable[AuditEvent], names: Mapping[str, str]) -> Iterator[str]:
    """The events as CSV lines (a header first), each actor also by its display name."""
    writer = csv.writer(_Echo())
    yield writer.writerow(AUDIT_CSV_COLUMNS)
    for e in events:
        yield writer.writerow(
            [
                e.created_at.isoformat(),
                e.actor,
                names.get(e.actor, e.actor),
                e.action,
                e.target,
                json.dumps(e.details, sort_keys=True),
                e.ip_address or "",
            ]
        )
