"""The PostgreSQL connection health check: free for a healthy idle connection, and a
connection the server has closed is still found and replaced before a request uses it."""

from __future__ import annotations

import select
from collections.abc import Iterator
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections
from django.db.backends.postgresql import base as django_pg

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def second() -> Iterator[object]:
    """A second connection to the test database, like a web thread's own."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def _terminate(wrapper: object) -> None:
    """Terminate the backend of ``wrapper`` from the test's connection; wait until its
    socket has heard about it (the server answers a terminate asynchronously)."""
    raw = wrapper.connection  # type: ignore[attr-defined]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [raw.info.backend_pid])
        assert cursor.fetchone()[0] is True
    poller = select.poll()
    poller.register(raw.fileno(), select.POLLIN)
    assert poller.poll(5000), "the terminated backend's socket never became readable"


@pytest.mark.django_db
def test_a_healthy_idle_connection_is_judged_without_a_query(second, monkeypatch):
    def no_round_trip(self: object) -> bool:
        raise AssertionError("the healthy path ran SELECT 1")

    monkeypatch.setattr(django_pg.DatabaseWrapper, "is_usable", no_round_trip)
    assert second.health_check_enabled
    assert second.is_usable() is True


@pytest.mark.django_db
def test_a_terminated_connection_is_closed_and_replaced_before_use(second):
    _terminate(second)
    second.health_check_done = False
    second.close_if_health_check_failed()
    assert second.connection is None  # found unusable and closed
    with second.cursor() as cursor:  # the next query opens a new connection
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db
def test_a_connection_in_a_transaction_gets_the_full_check(second, monkeypatch):
    calls = []
    original = django_pg.DatabaseWrapper.is_usable

    def counted(self: object) -> bool:
        calls.append(1)
        return original(self)  # type: ignore[arg-type]

    monkeypatch.setattr(django_pg.DatabaseWrapper, "is_usable", counted)
    second.connection.execute("BEGIN")
    assert second.is_usable() is True
    assert calls == [1]
    second.connection.execute("ROLLBACK")


def _get(path: str, token: str) -> tuple[str, bytes]:
    """A request through Django's WSGI handler as gunicorn makes it: unlike the test
    client, this sends request_started, which runs the health check."""
    environ: dict[str, object] = {}
    setup_testing_defaults(environ)
    environ.update({"PATH_INFO": path, "HTTP_AUTHORIZATION": f"Bearer {token}"})
    status: list[str] = []
    body = WSGIHandler()(environ, lambda s, headers, exc=None: status.append(s))
    try:
        return status[0], b"".join(body)
    finally:
        body.close()


@pytest.mark.django_db(transaction=True)
def test_a_request_after_the_server_dropped_its_connection_succeeds(org):
    """The web thread's persistent connection is terminated between two requests (as by
    a server restart or an idle timeout): the second request must not fail."""
    path = "/api/v1" + org.path("/balance")
    first = _get(path, org.key)
    assert first[0].startswith("200")
    connection.ensure_connection()  # the connection the next request will find
    _terminate_own()
    assert _get(path, org.key) == first


def _terminate_own() -> None:
    raw = connection.connection
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [raw.info.backend_pid])
    finally:
        other.close()
    poller = select.poll()
    poller.register(raw.fileno(), select.POLLIN)
    assert poller.poll(5000), "the terminated backend's socket never became readable"
