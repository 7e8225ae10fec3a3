"""The failover drill: a primary with a synchronous standby (``remote_apply``) under a load
of purchases and starts through the HTTP API is stopped hard, the standby is promoted, and
nothing acknowledged is lost.

``learncredits serve`` is given both nodes in one connection URL
(``host1:port1,host2:port2`` with ``target_session_attrs=read-write``): libpq tries them in
turn and keeps the one that accepts writes, so the service needs no restart; until the
promotion, writes answer 503 (the standby is read-only) and clients retry. Checked on the
promoted node afterwards: every 2xx purchase and start is there, ``verify-ledger`` exits 0,
and invoice (receipt) numbers are gapless. The time from the primary's loss to the first
successful write is printed (docs/scaling.md quotes it).
"""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bank.harness import Server, learncredits_cmd, server_env
from tests.conftest import migrate
from tests.pgcluster import HOST, PrivatePostgres, pg_bin_or_skip

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

CLIENTS = 4
LOAD_BEFORE_SECONDS = 4.0
LOAD_AFTER_SECONDS = 3.0
EMPLOYEES = 80


@dataclass
class Call:
    kind: str  # purchase or start
    target: str  # the purchase's Idempotency-Key, or the assignment id
    sent: float
    status: int | None
    body: Any
    answered: float = 0.0


def call(
    port: int, method: str, path: str, token: str, body: Any = None, key: str | None = None
) -> tuple[int | None, Any]:
    """One attempt; (None, reason) when no HTTP answer came."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, "/api/v1" + path, body=json.dumps(body or {}), headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return None, repr(exc)
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw[:200]


def must(port: int, method: str, path: str, token: str, body: Any = None) -> Any:
    status, answer = call(port, method, path, token, body)
    assert status is not None and status < 300, (method, path, status, answer)
    return answer


@dataclass
class Drill:
    primary: PrivatePostgres
    standby: PrivatePostgres
    server: Server
    token: str
    workdir: Path


@pytest.fixture
def drill() -> Iterator[Drill]:
    bin_dir = pg_bin_or_skip()
    primary = PrivatePostgres(bin_dir, name="failover-primary")
    standby = PrivatePostgres(bin_dir, name="failover-standby")
    server: Server | None = None
    workdir = Path(tempfile.mkdtemp(prefix="lc-failover-cmd-"))
    token = f"failover-operator-{uuid.uuid4().hex}"
    try:
        primary.start(replication=True)
        migrate(server_env(primary.url, token), workdir)
        standby.standby_of(primary)
        with primary.connect() as conn:
            # Synchronous from now on: a commit returns once the standby has applied it.
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("ALTER SYSTEM SET synchronous_commit = 'remote_apply'")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 30
        while True:
            with primary.connect() as conn:
                row = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
            if row and row[0] == "sync":
                break
            assert time.monotonic() < deadline, f"the standby is not synchronous: {row}"
            time.sleep(0.2)
        both = (
            f"postgres://postgres@{HOST}:{primary.port},{HOST}:{standby.port}/{primary.dbname}"
            "?target_session_attrs=read-write&connect_timeout=2"
        )
        server = Server(both, token, workers=2, threads=4)
        server.start()
        yield Drill(primary, standby, server, token, workdir)
    finally:
        if server is not None:
            server.stop()
        standby.stop()
        primary.stop()


def test_failover_to_a_synchronous_standby_loses_no_acknowledged_write(drill: Drill) -> None:
    port, token = drill.server.port, drill.token
    org = must(port, "POST", "/orgs", token, {"name": "Drill", "billing_email": "b@e.com"})
    key = must(port, "POST", f"/orgs/{org['id']}/api-keys", token, {"name": "k"})["key"]
    base = f"/orgs/{org['id']}"
    content = must(
        port, "POST", "/content", token, {"title": "C", "premium": True, "credit_cost": 1}
    )
    must(port, "POST", f"{base}/purchases", key, {"quantity": 200})
    employees = [
        must(port, "POST", f"{base}/employees", key, {"name": f"E{i}", "email": f"e{i}@x.com"})[
            "id"
        ]
        for i in range(EMPLOYEES)
    ]
    assigned = must(
        port,
        "POST",
        f"{base}/assignments",
        key,
        {"content_id": content["id"], "employee_ids": employees},
    )["data"]
    to_start = [a["id"] for a in assigned]
    random.Random(7).shuffle(to_start)
    queue_lock = threading.Lock()
    calls: list[Call] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            sent = time.monotonic()
            if rng.random() < 0.5:
                idem = str(uuid.uuid4())
                status, body = call(
                    port, "POST", f"{base}/purchases", key, {"quantity": rng.randint(1, 3)}, idem
                )
                calls.append(Call("purchase", idem, sent, status, body, time.monotonic()))
            else:
                with queue_lock:
                    if not to_start:
                        continue
                    assignment = to_start.pop()
                status, body = call(port, "POST", f"{base}/assignments/{assignment}/start", key)
                calls.append(Call("start", assignment, sent, status, body, time.monotonic()))
                if status is None or status >= 500:
                    with queue_lock:
                        to_start.insert(0, assignment)  # try it again later
            if status is None or status >= 500:
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    # The standby's lag under this load, as the primary sees it (with remote_apply, each
    # commit waits for it: it is part of every write's latency).
    lags: list[float] = []
    with drill.primary.connect() as conn:
        until = time.monotonic() + LOAD_BEFORE_SECONDS
        while time.monotonic() < until:
            row = conn.execute(
                "SELECT EXTRACT(EPOCH FROM replay_lag) FROM pg_stat_replication"
            ).fetchone()
            if row and row[0] is not None:
                lags.append(float(row[0]))
            time.sleep(0.25)
    lost_at = time.monotonic()
    drill.primary.halt("immediate")
    drill.standby.promote()
    promoted_at = time.monotonic()
    # Load goes on until writes have succeeded again for a while (bounded). A write sent
    # after the loss cannot have reached the old primary: its success is the recovery.
    deadline = promoted_at + 60
    while time.monotonic() < deadline:
        recovered = [c.sent for c in list(calls) if c.sent > promoted_at and _ok(c)]
        if recovered and time.monotonic() - min(recovered) > LOAD_AFTER_SECONDS:
            break
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(40)
    assert not any(t.is_alive() for t in threads), "client threads stuck"

    acknowledged = [c for c in calls if _ok(c)]
    before = [c for c in acknowledged if c.sent < lost_at]
    after_loss = [c for c in calls if c.sent >= lost_at]
    first_write = min((c.answered for c in after_loss if _ok(c)), default=None)
    assert first_write is not None, "no write succeeded after the failover"
    recovery = first_write - lost_at
    print(
        f"\nfailover drill: {len(acknowledged)} writes acknowledged ({len(before)} before the "
        f"loss), {sum(1 for c in calls if not _ok(c))} refused or unanswered; promotion took "
        f"{promoted_at - lost_at:.2f} s; first successful write {recovery:.2f} s after the "
        "primary's loss; standby replay lag under load: "
        + (f"max {max(lags) * 1000:.1f} ms over {len(lags)} samples" if lags else "not sampled")
    )
    assert len(before) >= 10, "too little load before the loss to show anything"

    with drill.standby.connect() as conn:
        (in_recovery,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()  # type: ignore[misc]
        assert not in_recovery
        purchases = {
            row[0]: row[1]
            for row in conn.execute("SELECT id, status FROM credits_purchase").fetchall()
        }
        started = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM credits_assignment WHERE status IN ('started', 'completed')"
            ).fetchall()
        }
        invoice_ids = {row[0] for row in conn.execute("SELECT id FROM billing_invoice")}
        numbers = [
            row[0]
            for row in conn.execute(
                "SELECT number FROM billing_invoice WHERE number LIKE 'INV-%%' ORDER BY number"
            ).fetchall()
        ]
        sequence = dict(
            conn.execute("SELECT year, last_number FROM billing_invoicesequence").fetchall()
        )
    missing = []
    for c in acknowledged:
        pk = int(str(c.body["id"]).split("_", 1)[1])
        if c.kind == "purchase":
            if purchases.get(pk) != c.body["status"]:
                missing.append(("purchase", c.body["id"], purchases.get(pk)))
            receipt = c.body.get("invoice_id")
            if receipt and int(receipt.split("_", 1)[1]) not in invoice_ids:
                missing.append(("receipt", receipt))
        elif pk not in started:
            missing.append(("start", c.body["id"]))
    assert not missing, f"acknowledged writes lost in the failover: {missing[:10]}"

    by_year: dict[int, list[int]] = {}
    for number in numbers:
        _, year, serial = number.split("-")
        by_year.setdefault(int(year), []).append(int(serial))
    for year, serials in by_year.items():
        assert sorted(serials) == list(range(1, len(serials) + 1)), f"gap in {year}'s numbers"
        assert sequence[year] == len(serials), (year, sequence[year], len(serials))

    verified = subprocess.run(
        learncredits_cmd("verify-ledger", "--skip-checks"),
        cwd=drill.workdir,
        env=server_env(drill.standby.url, drill.token),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]


def _ok(c: Call) -> bool:
    return c.status is not None and 200 <= c.status < 300
