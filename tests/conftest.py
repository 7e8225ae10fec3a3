"""Shared fixtures: an API client per caller, and factories that go through the HTTP API.

Tests talk to the service the way integrators do (HTTP, JSON, bearer tokens), so the same
tests prove the contract on SQLite and on PostgreSQL (see scripts/run_tests.py).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client, override_settings

OPERATOR_TOKEN = "test-operator-token"
ON_POSTGRES = os.environ.get("LEARNCREDITS_TEST_DB") == "postgres"


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


@dataclass
class Api:
    """A caller of /api/v1 with one bearer token (or none)."""

    token: str | None
    client: Client = field(default_factory=lambda: Client(raise_request_exception=False))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idem: str | None = None,
        content_type: str = "application/json",
    ) -> Response:
        extra: dict[str, str] = {}
        if self.token is not None:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        if idem is not None:
            extra["HTTP_IDEMPOTENCY_KEY"] = idem
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        data: bytes | str | None = (
            raw if raw is not None else (None if body is None else json.dumps(body))
        )
        url = "/api/v1" + path
        method = method.lower()
        if method == "get":
            response = self.client.get(url, params or {}, **extra)
        else:
            response = getattr(self.client, method)(
                url, data=data or b"", content_type=content_type, **extra
            )
        content = b"".join(response.streaming_content) if response.streaming else response.content
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = None
        return Response(response.status_code, parsed, dict(response.items()), content)

    def get(self, path: str, **params: Any) -> Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("PATCH", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("PUT", path, body, **kwargs)


def ok(response: Response, status: int = 200) -> Any:
    """The body of a response that must have this status (shows the body if not)."""
    assert response.status == status, (response.status, response.body)
    return response.body


def lands_on_billing_with_its_receipt(client: Client, response: Any) -> str:
    """A paid purchase from the dashboard redirects to the billing page, whose ``buy-success``
    message links to the receipt; answers that link so a test can open the receipt."""
    assert response.status_code == 302 and response["Location"] == "/settings/billing", (
        response.status_code,
        response.get("Location"),
    )
    html = client.get(response["Location"]).content.decode()
    message = re.search(r'data-testid="buy-success">(.*?)</li>', html, re.S)
    assert message is not None, "no buy-success message on the billing page"
    link = re.search(r'href="(/settings/billing/invoices/\d+)"', message.group(1))
    assert link is not None, message.group(1)
    return link.group(1)


@dataclass
class OrgHandle:
    id: str
    key: str
    api: Api
    operator: Api

    def path(self, suffix: str = "") -> str:
        return f"/orgs/{self.id}{suffix}"

    def balance(self) -> dict[str, Any]:
        return ok(self.api.get(self.path("/balance")))

    def employee(self, name: str = "Employee", email: str | None = None) -> str:
        email = email or f"{name.lower().replace(' ', '.')}.{os.urandom(4).hex()}@example.com"
        return ok(self.api.post(self.path("/employees"), {"name": name, "email": email}), 201)["id"]

    def buy(self, quantity: int) -> dict[str, Any]:
        return ok(self.api.post(self.path("/purchases"), {"quantity": quantity}), 201)

    def assign(self, content_id: str, employee_ids: list[str]) -> dict[str, Any]:
        body = {"content_id": content_id, "employee_ids": employee_ids}
        return ok(self.api.post(self.path("/assignments"), body), 201)

    def act(self, assignment_id: str, verb: str, body: Any = None) -> Response:
        return self.api.post(self.path(f"/assignments/{assignment_id}/{verb}"), body)


SIGNED_IN_PASSWORD = "a long enough password 42"


def signed_in(org: OrgHandle, role: str = "admin", email: str | None = None) -> Client:
    """A dashboard client signed in as a new user of the org with this role, added the way
    an operator adds one (through the API); named "Pat <Role>", with a fresh email unless
    one is given. Its user's id: ``client.session[SESSION_KEY]``."""
    email = email or f"{role}.{uuid.uuid4().hex[:6]}@example.com"
    body = {
        "email": email,
        "name": f"Pat {role.title()}",
        "role": role,
        "password": SIGNED_IN_PASSWORD,
    }
    ok(org.operator.post(org.path("/users"), body), 201)
    client = Client()
    client.force_login(get_user_model().objects.get(username=email))
    return client


@pytest.fixture(scope="session")
def django_db_modify_db_settings_xdist_suffix(request: pytest.FixtureRequest) -> None:
    """Under pytest-xdist (make test-fast), each worker its own test database. pytest-django
    recognises SQLite only by Django's own engine name, so for our queued SQLite backend it
    would name a file after the database's path; SQLite's test database is in memory and
    already private to each worker process, so only the others get the worker's suffix."""
    from django.conf import settings as django_settings

    worker = getattr(request.config, "workerinput", {}).get("workerid")
    if not worker:
        return
    for database in django_settings.DATABASES.values():
        test = database.setdefault("TEST", {})
        if test.get("NAME") == ":memory:" or (
            not test.get("NAME") and database["ENGINE"].endswith("sqlite3")
        ):
            continue
        test["NAME"] = f"{test.get('NAME') or 'test_' + database['NAME']}_{worker}"


@pytest.fixture(autouse=True)
def _operator_token(settings: Any) -> None:
    settings.LEARNCREDITS_OPERATOR_TOKEN = OPERATOR_TOKEN
    # Test receivers listen on loopback; tests of the production refusal switch this off.
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def operator(db: None) -> Api:
    return Api(OPERATOR_TOKEN)


@pytest.fixture
def anonymous(db: None) -> Api:
    return Api(None)


@pytest.fixture
def make_org(operator: Api) -> Callable[..., OrgHandle]:
    def make(
        name: str = "Org", billing_email: str = "billing@example.com", **extra: Any
    ) -> OrgHandle:
        org = ok(
            operator.post("/orgs", {"name": name, "billing_email": billing_email, **extra}), 201
        )
        key = ok(operator.post(f"/orgs/{org['id']}/api-keys", {"name": "test"}), 201)["key"]
        return OrgHandle(id=org["id"], key=key, api=Api(key), operator=operator)

    return make


@pytest.fixture
def org(make_org: Callable[..., OrgHandle]) -> OrgHandle:
    return make_org("Acme")


@pytest.fixture
def make_content(operator: Api) -> Callable[..., str]:
    def make(credit_cost: int = 1, title: str = "Course", **extra: Any) -> str:
        body = {"title": title, "premium": credit_cost > 0, "credit_cost": credit_cost, **extra}
        return ok(operator.post("/content", body), 201)["id"]

    return make


def rolled_back_like_autocommit() -> Any:
    """A transaction the test rolls back, which the code under test treats as autocommit, as
    it treats Django's TestCase's own: durable blocks and payment-provider calls run in it
    (both refuse to run inside a real transaction)."""
    block = transaction.atomic()
    block._from_testcase = True
    return block


@contextmanager
def around_the_balance_check(using: Any = None) -> Iterator[None]:
    """Lets a test write the balance around the ledger, as a bug or a hand-written statement
    would, to show what the offline checks then find. On PostgreSQL the database itself
    refuses such a commit (a deferred trigger compares each balance with its newest ledger
    entry); this session stops queuing that check for the writes made inside the block.
    SQLite has no such trigger: nothing to do there."""
    db = using or connection
    if db.vendor != "postgresql":
        yield
        return
    with db.cursor() as cursor:
        # Checks already queued by this transaction's earlier writes run now, while the
        # balance still agrees; at the commit they would read the tampered row.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with db.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


@contextmanager
def module_world(django_db_blocker: Any) -> Iterator[None]:
    """For a module-scoped fixture: objects built once for the whole module inside a
    transaction that is rolled back at the end (each test then runs in its own savepoint),
    with the operator token set and webhooks to private addresses allowed."""
    with (
        django_db_blocker.unblock(),
        override_settings(
            LEARNCREDITS_OPERATOR_TOKEN=OPERATOR_TOKEN, LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE=True
        ),
    ):
        outer = rolled_back_like_autocommit()
        outer.__enter__()
        try:
            yield
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


def table_snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every learncredits table: compare before and after to prove no change."""
    tables = [
        t
        for t in connection.introspection.table_names()
        if t.split("_", 1)[0] in {"tenancy", "catalog", "credits", "api", "auth"}
    ]
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    with connection.cursor() as cursor:
        for table in sorted(tables):
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            snapshot[table] = [tuple(row) for row in cursor.fetchall()]
    return snapshot


@pytest.fixture
def snapshot() -> Iterator[Callable[[], dict[str, list[tuple[Any, ...]]]]]:
    yield table_snapshot


CHROMIUM = os.environ.get("LEARNCREDITS_CHROMIUM", "/usr/bin/chromium")


def browser_missing() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (Debian package 'chromium')"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Tests marked postgres_only are skipped on SQLite (they need row locks and real
    concurrent connections); scripts/run_tests.py runs them in the PostgreSQL half.

    Tests marked browser need Chromium: without it they are skipped with the reason, unless
    LEARNCREDITS_REQUIRE_BROWSER=1 (set by .ci/run), which makes them fail instead."""
    skip_pg = pytest.mark.skip(reason="PostgreSQL only (runs in the PostgreSQL half)")
    missing = browser_missing()
    for item in items:
        if "postgres_only" in item.keywords and not ON_POSTGRES:
            item.add_marker(skip_pg)
        required = os.environ.get("LEARNCREDITS_REQUIRE_BROWSER") == "1"
        if "browser" in item.keywords and missing and not required:
            # When required, the test runs and fails on launching the browser, saying why.
            item.add_marker(pytest.mark.skip(reason=f"browser test SKIPPED: {missing}"))


# --- live servers on SQLite -----------------------------------------------------------------
# live_server needs a transactional database, which Django empties after each test with
# DELETE; on SQLite the append-only triggers (learncredits.db.append_only) refuse that, and
# every such test would error at teardown. (PostgreSQL empties with TRUNCATE, which fires no
# row trigger.) So, on SQLite only, `flushable` drops the DELETE triggers just before the
# flush and puts the very same SQL back before the next test and at the end of the session.


def _delete_triggers() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?",
            ["%no_delete"],
        )
        return dict(cursor.fetchall())


def _restore(triggers: dict[str, str]) -> None:
    present = _delete_triggers()
    with connection.cursor() as cursor:
        for name, sql in triggers.items():
            if name not in present:
                cursor.execute(sql)


@pytest.fixture(scope="session")
def _append_only_triggers(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[dict[str, str]]:
    if connection.vendor != "sqlite":
        yield {}
        return
    with django_db_blocker.unblock():
        triggers = _delete_triggers()
    assert triggers, "expected the append-only DELETE triggers"
    yield triggers
    with django_db_blocker.unblock():
        _restore(triggers)


@pytest.fixture
def flushable(_append_only_triggers: dict[str, str], django_db_blocker: Any) -> Iterator[None]:
    """Use with live_server / transactional_db: lets Django empty the tables afterwards."""
    if not _append_only_triggers:
        yield
        return
    with django_db_blocker.unblock():
        _restore(_append_only_triggers)
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        for name in _append_only_triggers:
            cursor.execute(f'DROP TRIGGER IF EXISTS "{name}"')


# --- processes and threads shared by the concurrency, server and fault tests -----------------

HOST = "127.0.0.1"


def console_script() -> str:
    """The installed ``learncredits`` command, as an operator runs it."""
    beside_python = Path(sys.executable).parent / "learncredits"
    found = str(beside_python) if beside_python.exists() else shutil.which("learncredits")
    assert found, "the learncredits console script is not installed"
    return found


# The test run's own database settings: a service a test starts must not inherit them.
_THE_TEST_RUNS_OWN = frozenset({"DATABASE_URL", "LEARNCREDITS_TEST_DB", "DJANGO_SETTINGS_MODULE"})


def service_env(database_url: str, *, drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """The environment of a ``learncredits`` process a test starts: this process's, without
    the test run's database settings (nor ``drop``), on ``database_url``, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _THE_TEST_RUNS_OWN and key not in drop
    }
    env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def run_threads(
    n: int,
    work: Callable[[int, Any], Any],
    *,
    setup: Callable[[int], Any] | None = None,
    timeout: float = 60.0,
) -> list[Any]:
    """Run ``work(i, setup(i))`` in ``n`` threads released together by a barrier.

    ``setup`` (building a client, say) runs before the barrier so that the requests
    themselves start at once. Every thread closes its database connection when done.
    Returns the results in thread order; any exception in a thread fails the test.
    """
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    failures: list[str] = []

    def body(i: int) -> None:
        try:
            state = setup(i) if setup else None
            barrier.wait(timeout=30)
            results[i] = work(i, state)
        except BaseException:
            failures.append(f"thread {i}:\n{traceback.format_exc()}")
            barrier.abort()
        finally:
            connection.close()

    threads = [
        threading.Thread(target=body, args=(i,), name=f"lc-{i}", daemon=True) for i in range(n)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {timeout}s (a deadlock?): {stuck}"
    assert not failures, "\n".join(failures)
    return results


# --- crashes at the payment provider -------------------------------------------------------------


class Crash(BaseException):
    """The process died here: nothing after this line ran, nothing was answered."""


def install_crashing_provider(
    monkeypatch: pytest.MonkeyPatch, name: str, base: type
) -> Callable[..., None]:
    """Replace the payment provider ``name`` by ``base`` made to crash right after one of its
    steps did its work (the money moved; our side never heard). Returns ``arm(step, times=1)``
    for ``step`` in create_intent, confirm, refund."""
    from learncredits.billing import payments

    armed: dict[str, int] = {}

    def maybe(step: str) -> None:
        if armed.get(step):
            armed[step] -= 1
            raise Crash(step)

    class Crashing(base):  # type: ignore[misc, valid-type]
        def create_intent(self, request: Any) -> Any:
            outcome = super().create_intent(request)
            maybe("create_intent")
            return outcome

        def confirm(self, intent_id: str) -> Any:
            outcome = super().confirm(intent_id)
            maybe("confirm")
            return outcome

        def refund(self, intent_id: str, amount_cents: int, reference: str) -> str:
            refund_id = super().refund(intent_id, amount_cents, reference)
            maybe("refund")
            return str(refund_id)

    monkeypatch.setitem(payments._PROVIDERS, name, Crashing)

    def arm(step: str, times: int = 1) -> None:
        armed[step] = times

    return arm


def migrate(env: dict[str, str], cwd: Path) -> None:
    """Create the database named by ``env`` with the installed command, as an operator does
    before ``serve``; fails the test with the command's own error output."""
    migrated = subprocess.run(
        [console_script(), "migrate", "--verbosity", "0"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr


def wait_until_serving(
    process: subprocess.Popen[bytes], port: int, path: str, log: Path, seconds: float = 120
) -> None:
    """Wait until a ``learncredits serve`` just started answers ``path`` with 200; fails the
    test with the end of its log if it exits or does not come up in time."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)


# --- services some process-starting tests need ------------------------------------------------

REDIS_URL = os.environ.get("LEARNCREDITS_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def redis_missing(url: str = REDIS_URL) -> str | None:
    """Why the Redis tests cannot run here, or None when Redis answers PING at ``url``."""
    try:
        import redis
    except ImportError:
        return "the redis package is not installed"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"no Redis answering at {url} ({exc}); set LEARNCREDITS_TEST_REDIS_URL"
    return None


def skip_unless_required(reason: str, variable: str) -> None:
    """Skip the test for a missing service, or fail it when ``variable`` is 1 (set by .ci/run):
    in CI a missing service is a broken machine, not a test to leave out."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but {reason}", pytrace=False)
    pytest.skip(reason)
