"""Reads from a streaming replica, end to end: a private primary, a hot standby streaming
from it (tests/pgcluster.py) and ``learncredits serve`` pointed at both, driven over HTTP.

Checked by the ``X-LearnCredits-Read`` header of each answer: the listed reports and lists
come from the replica, the balance and single purchases from the primary; a caller that
just wrote reads the primary for a while; a replica paused past the lag limit, or stopped,
is skipped (quickly); with the primary stopped, the reports still answer 200 from the
replica while writes answer 503 with ``Retry-After``.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bank.harness import Server, server_env
from tests.conftest import migrate
from tests.pgcluster import HOST, PrivatePostgres, pg_bin_or_skip

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

MAX_LAG = 2.0
PIN_SECONDS = 2.0
RETRY_SECONDS = 2.0


@dataclass
class Answer:
    status: int
    read: str | None
    headers: dict[str, str]
    body: Any


@dataclass
class World:
    primary: PrivatePostgres
    replica: PrivatePostgres
    server: Server
    token: str
    org: str
    key: str
    reader: str  # a second key of the same org that never writes
    invoice: str

    def call(self, method: str, path: str, token: str, body: Any = None) -> Answer:
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, "/api/v1" + path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return Answer(
            response.status,
            response.getheader("X-LearnCredits-Read"),
            dict(response.getheaders()),
            parsed,
        )

    def ok(self, method: str, path: str, token: str, body: Any = None, status: int = 200) -> Any:
        answer = self.call(method, path, token, body)
        assert answer.status == status, (method, path, answer.status, answer.body)
        return answer.body

    def reports(self) -> list[str]:
        org = f"/orgs/{self.org}"
        return [
            f"{org}/statement?period={time.strftime('%Y-%m')}",
            f"{org}/statement?period={time.strftime('%Y-%m')}&format=csv",
            f"{org}/usage?from=2024-01-01&to=2024-01-31",
            f"{org}/forecast",
            f"{org}/ledger",
            f"{org}/ledger?format=csv",
            f"{org}/invoices",
            f"{org}/invoices/{self.invoice}",
            f"{org}/invoices/{self.invoice}/pdf",
            f"{org}/purchases",
            f"{org}/assignments",
            f"{org}/employees",
            f"{org}/alerts",
        ]


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    bin_dir = pg_bin_or_skip()
    primary = PrivatePostgres(bin_dir, name="primary")
    replica = PrivatePostgres(bin_dir, name="replica")
    server: Server | None = None
    workdir = Path(tempfile.mkdtemp(prefix="lc-replica-cmd-"))
    token = f"replica-operator-{uuid.uuid4().hex}"
    try:
        primary.start(replication=True)
        migrate(server_env(primary.url, token), workdir)
        replica.standby_of(primary)
        # One web process: the read-your-writes pins live in its (local) cache.
        server = Server(
            primary.url,
            token,
            workers=1,
            threads=4,
            extra_env={
                "DATABASE_REPLICA_URL": replica.url,
                "DATABASE_REPLICA_MAX_LAG": str(MAX_LAG),
                "LEARNCREDITS_READ_YOUR_WRITES_SECONDS": str(PIN_SECONDS),
                "LEARNCREDITS_REPLICA_RETRY_SECONDS": str(RETRY_SECONDS),
            },
        )
        server.start()
        world = World(primary, replica, server, token, "", "", "", "")
        org = world.ok("POST", "/orgs", token, {"name": "Acme", "billing_email": "b@e.com"}, 201)
        world.org = org["id"]
        world.key = world.ok("POST", f"/orgs/{org['id']}/api-keys", token, {"name": "w"}, 201)[
            "key"
        ]
        world.reader = world.ok("POST", f"/orgs/{org['id']}/api-keys", token, {"name": "r"}, 201)[
            "key"
        ]
        content = world.ok(
            "POST", "/content", token, {"title": "C", "premium": True, "credit_cost": 1}, 201
        )["id"]
        person = {"name": "E", "email": "e@x.com"}
        employee = world.ok("POST", f"/orgs/{world.org}/employees", world.key, person, 201)["id"]
        world.ok("POST", f"/orgs/{world.org}/purchases", world.key, {"quantity": 10}, 201)
        world.ok(
            "POST",
            f"/orgs/{world.org}/assignments",
            world.key,
            {"content_id": content, "employee_ids": [employee]},
            201,
        )
        invoices = world.ok("GET", f"/orgs/{world.org}/invoices", token)["data"]
        assert invoices, "a paid purchase issues a receipt"
        world.invoice = invoices[0]["id"]
        yield world
    finally:
        if server is not None:
            server.stop()
        replica.stop()
        primary.stop()


def replica_caught_up(world: World) -> bool:
    """Whether the replica has replayed everything the primary has written."""
    with world.primary.connect() as conn:
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()  # type: ignore[misc]
    with world.replica.connect() as conn:
        row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()
    return bool(row and row[0])


def test_reports_read_the_replica_and_decisions_the_primary(world: World) -> None:
    wait_for(lambda: replica_caught_up(world), 30, "the replica catches up")
    for path in world.reports():
        answer = world.call("GET", path, world.reader)
        assert answer.status == 200, (path, answer.body)
        assert answer.read == "replica", (path, answer.headers)
    # The operator's list of an org's invoices too (after its own pin has run out).
    time.sleep(PIN_SECONDS)
    assert world.call("GET", f"/orgs/{world.org}/invoices", world.token).read == "replica"
    # What the replica answers is what the primary holds.
    from_replica = world.ok("GET", f"/orgs/{world.org}/purchases", world.reader)
    purchase = from_replica["data"][0]["id"]
    single = world.call("GET", f"/orgs/{world.org}/purchases/{purchase}", world.reader)
    assert (single.status, single.read) == (200, "primary")
    assert single.body == from_replica["data"][0]
    for path in (f"/orgs/{world.org}/balance", f"/orgs/{world.org}", "/pricing"):
        answer = world.call("GET", path, world.reader)
        assert (answer.status, answer.read) == (200, "primary"), path


def test_a_caller_reads_its_own_writes(world: World) -> None:
    wait_for(lambda: replica_caught_up(world), 30, "the replica catches up")
    employees = f"/orgs/{world.org}/employees"
    assert world.call("GET", employees, world.key).read == "replica"
    made = world.ok("POST", employees, world.key, {"name": "New", "email": "new@x.com"}, 201)
    mine = world.call("GET", employees, world.key)
    assert mine.read == "primary"
    assert made["id"] in [e["id"] for e in mine.body["data"]]
    # Another caller of the same org is not pinned; the writer is again once the pin ends.
    assert world.call("GET", employees, world.reader).read == "replica"
    time.sleep(PIN_SECONDS + 0.5)
    assert world.call("GET", employees, world.key).read == "replica"


def test_a_lagging_replica_is_skipped(world: World) -> None:
    ledger = f"/orgs/{world.org}/ledger"
    wait_for(lambda: replica_caught_up(world), 30, "the replica catches up")
    with world.replica.connect() as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        entry = world.ok(
            "POST",
            f"/orgs/{world.org}/adjustments",
            world.token,
            {"credits": 3, "reason": "lag test"},
            201,
        )
        # Once the lag passes the limit (and the once-a-second measure has seen it), the
        # ledger comes from the primary, with the entry the replica has not replayed.
        time.sleep(MAX_LAG + 1.5)
        answer = world.call("GET", ledger, world.reader)
        assert (answer.status, answer.read) == (200, "primary")
        assert answer.body["data"][0]["id"] == entry["id"]
    finally:
        with world.replica.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
    wait_for(lambda: world.call("GET", ledger, world.reader).read == "replica", 15, "replica")
    assert world.ok("GET", ledger, world.reader)["data"][0]["id"] == entry["id"]


def test_a_replica_that_does_not_answer_is_skipped_quickly(world: World) -> None:
    ledger = f"/orgs/{world.org}/ledger"
    world.replica.halt("immediate")
    try:
        started = time.monotonic()
        for _ in range(10):
            answer = world.call("GET", ledger, world.reader)
            assert (answer.status, answer.read) == (200, "primary"), answer.body
        # At most one request pays the failed connection; the breaker spares the rest.
        assert time.monotonic() - started < 5, time.monotonic() - started
    finally:
        world.replica.resume()
    wait_for(lambda: world.call("GET", ledger, world.reader).read == "replica", 30, "replica")


def test_with_the_primary_down_reports_still_answer(world: World) -> None:
    wait_for(lambda: replica_caught_up(world), 30, "the replica catches up")
    time.sleep(PIN_SECONDS)
    world.primary.halt("immediate")
    try:
        for path in world.reports():
            answer = world.call("GET", path, world.reader)
            assert (answer.status, answer.read) == (200, "replica"), (path, answer.body)
        refused = world.call(
            "POST", f"/orgs/{world.org}/employees", world.key, {"name": "X", "email": "x@x.com"}
        )
        assert refused.status == 503, refused.body
        assert refused.body["code"] == "unavailable"
        assert refused.headers.get("Retry-After")
        balance = world.call("GET", f"/orgs/{world.org}/balance", world.reader)
        assert (balance.status, balance.read) == (503, "primary")
    finally:
        world.primary.resume()
