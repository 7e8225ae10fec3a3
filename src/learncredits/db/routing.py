"""Reads of reports and lists from a PostgreSQL streaming replica (``DATABASE_REPLICA_URL``).

Why a replica at all: statements, usage, forecasts, ledgers and invoice PDFs are the heavy
reads, and none of them decides anything; served by a replica they take that load off the
primary, which keeps every write and every read a decision depends on (the balance, the
key check of a write, a purchase's status). And with the primary down those GETs still
answer from the replica.

One code path decides it, per request and before anything reads: ``ReadRoutingMiddleware``
looks the request up in ``REPLICA_ROUTES`` (GET/HEAD only) and sets a context variable that
``ReplicaRouter.db_for_read`` returns, so every ORM read of the request, and the raw key
lookup that asks ``read_alias()``, goes to the same place. Everything else reads the
primary. A request is kept on the primary when:

- its caller wrote within ``LEARNCREDITS_READ_YOUR_WRITES_SECONDS`` (a pin kept in the
  cache under a hash of its bearer token or session cookie, so with ``CACHE_URL`` every web
  process sees it): a client that just bought must see its purchase in the list;
- the replica did not answer lately (a short circuit breaker: after a failure it is left
  alone for ``LEARNCREDITS_REPLICA_RETRY_SECONDS``, so each request does not pay the
  connect timeout again), or lags more than ``DATABASE_REPLICA_MAX_LAG`` seconds.

A request that writes anyway (through the ORM) reads the primary from then on. The answer
says where it read: ``X-LearnCredits-Read: primary`` or ``replica``.

Lag is measured on the replica, at most once a second per process: a replica that has
replayed everything it received is current (an idle primary sends no transactions, so the
last replayed transaction's age alone would call a current replica late); otherwise its lag
is the age of the last transaction it replayed. "Everything it received" is replay at or past
the receive position, not equal to it: a restarted replica's receiver starts counting at
the start of the WAL segment it resumes from, behind what was already replayed, and with an
idle primary nothing new would ever arrive to make the two equal again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest, HttpResponse

from learncredits.db import store

logger = logging.getLogger(__name__)

REPLICA_ALIAS = "replica"
READ_HEADER = "X-LearnCredits-Read"
API_PREFIX = "/api/v1/"

# The reports and lists a replica serves (GET and HEAD only): anything not here reads the
# primary. Single purchases and assignments are left out on purpose: clients poll them to
# decide what to do next (has the payment gone through?).
REPLICA_ROUTES = tuple(
    re.compile(API_PREFIX + pattern + "$")
    for pattern in (
        r"orgs/[^/]+/statement",
        r"billing/statement",
        r"orgs/[^/]+/usage",
        r"orgs/[^/]+/forecast",
        r"orgs/[^/]+/ledger",
        r"orgs/[^/]+/invoices",
        r"orgs/[^/]+/invoices/[^/]+",
        r"orgs/[^/]+/invoices/[^/]+/(pdf|html)",
        r"orgs/[^/]+/purchases",
        r"orgs/[^/]+/assignments",
        r"orgs/[^/]+/employees",
        r"orgs/[^/]+/alerts",
        r"orgs/[^/]+/webhooks/[^/]+/deliveries",
    )
)

_read_alias: ContextVar[str] = ContextVar("learncredits_read_alias", default=DEFAULT_DB_ALIAS)

LAG_CHECK_SECONDS = 1.0


def replica_configured() -> bool:
    return REPLICA_ALIAS in settings.DATABASES


def replica_route(request: HttpRequest) -> bool:
    """Whether this request is a report or list the replica may serve."""
    if request.method not in ("GET", "HEAD"):
        return False
    return any(route.match(request.path_info) for route in REPLICA_ROUTES)


def read_alias() -> str:
    """The database alias this request reads from (for raw SQL outside the ORM)."""
    return _read_alias.get()


def reading_from_replica() -> bool:
    return _read_alias.get() == REPLICA_ALIAS


class ReplicaRouter:
    """Reads where the request was routed (the primary unless the middleware chose the
    replica); writes always to the primary, and a write moves the rest of the request's
    reads there too, so it reads what it wrote. The replica is never migrated: it replays
    the primary's schema."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        return _read_alias.get()

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        if _read_alias.get() != DEFAULT_DB_ALIAS:
            _read_alias.set(DEFAULT_DB_ALIAS)
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # the same rows on both

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS


class ReplicaHealth:
    """Whether the replica may serve reads now: not within a breaker's pause after a failure,
    and not lagging past ``DATABASE_REPLICA_MAX_LAG``. Measured at most once a second per
    process, on the calling thread's replica connection; other threads meanwhile use the
    last answer rather than wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = -1e9
        self._usable = False
        self._paused_until = 0.0
        self.last_lag: float | None = None

    def reset(self) -> None:
        with self._lock:
            self._checked_at = -1e9
            self._usable = False
            self._paused_until = 0.0
            self.last_lag = None

    def trip(self, reason: object) -> None:
        """The replica failed: read the primary for a while without trying it again."""
        pause = float(settings.LEARNCREDITS_REPLICA_RETRY_SECONDS)
        logger.warning("replica skipped for %.0f s: %s", pause, reason)
        self._paused_until = time.monotonic() + pause
        self._usable = False
        with contextlib.suppress(DatabaseError):
            connections[REPLICA_ALIAS].close()

    def usable(self) -> bool:
        now = time.monotonic()
        if now < self._paused_until:
            return False
        if now - self._checked_at < LAG_CHECK_SECONDS or not self._lock.acquire(blocking=False):
            return self._usable
        try:
            self._checked_at = now
            try:
                lag = store.replica_lag_seconds(REPLICA_ALIAS)
            except DatabaseError as exc:
                self.last_lag = None
                self.trip(exc)
                return False
            self.last_lag = lag
            limit = float(settings.DATABASE_REPLICA_MAX_LAG)
            # An unknown lag (nothing replayed or received since the replica started) is
            # treated as too much: it may be a backup's worth behind.
            self._usable = lag is not None and lag <= limit
            if not self._usable:
                logger.info("replica lags %s s (limit %s s): reading the primary", lag, limit)
            return self._usable
        finally:
            self._lock.release()


health = ReplicaHealth()


def _pin_key(request: HttpRequest) -> str | None:
    """Who the caller is, without reading the database: a hash of the bearer token, else of
    the session cookie (never the secret itself, which the cache must not hold)."""
    credential = request.headers.get("Authorization", "") or request.COOKIES.get(
        settings.SESSION_COOKIE_NAME, ""
    )
    if not credential:
        return None
    return "lc:read-pin:" + hashlib.sha256(credential.encode()).hexdigest()[:32]


def _pin(request: HttpRequest) -> None:
    seconds = float(settings.LEARNCREDITS_READ_YOUR_WRITES_SECONDS)
    key = _pin_key(request)
    if key is None or seconds <= 0:
        return
    try:
        cache.set(key, 1, timeout=seconds)
    except Exception:  # a cache outage must not fail a write that has already happened
        logger.warning("could not record a read-your-writes pin", exc_info=True)


def _pinned(request: HttpRequest) -> bool:
    key = _pin_key(request)
    if key is None:
        return False
    try:
        return cache.get(key) is not None
    except Exception:
        return True  # unknown: the primary is always right


class ReadRoutingMiddleware:
    """Chooses the database a request reads from, and says which in ``X-LearnCredits-Read``
    (on every GET and HEAD). Writes pin their caller to the primary for a few seconds."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = self.get_response(request)
            if replica_configured() and request.method not in ("OPTIONS", "TRACE"):
                _pin(request)
            return response
        if not (
            replica_configured()
            and replica_route(request)
            and not _pinned(request)
            and health.usable()
        ):
            response = self.get_response(request)
            response[READ_HEADER] = "primary"
            return response
        token = _read_alias.set(REPLICA_ALIAS)
        try:
            response = self.get_response(request)
            served_by_replica = reading_from_replica()
        finally:
            _read_alias.reset(token)
        if (
            served_by_replica
            and response.status_code == 503
            and not response.streaming
            and connections[REPLICA_ALIAS].errors_occurred
        ):
            # The replica failed under this request (the API answers a database error with
            # 503 before it gets here): a GET may simply run again, on the primary.
            health.trip("a request reading from it failed")
            response = self.get_response(request)
            served_by_replica = False
        if served_by_replica and response.streaming:
            response.streaming_content = _streamed_from(  # type: ignore[attr-defined]
                REPLICA_ALIAS,
                response.streaming_content,  # type: ignore[attr-defined]
            )
        response[READ_HEADER] = "replica" if served_by_replica else "primary"
        return response


def _streamed_from(alias: str, chunks: Iterable[Any]) -> Iterator[Any]:
    """A streamed answer (the ledger's CSV) reads as it is sent, after the view and this
    middleware have returned: each chunk is produced reading where the view read."""
    iterator = iter(chunks)
    while True:
        token = _read_alias.set(alias)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        finally:
            _read_alias.reset(token)
        yield chunk
