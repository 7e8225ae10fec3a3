"""SQLite in embedded mode under concurrency.

``learncredits serve --workers 2 --threads 4 --no-worker`` runs on a SQLite FILE (not the
in-memory test database), on a free loopback port. 16 client threads send a random mix of
purchases (each with an Idempotency-Key, some sent twice with the same key), bulk assigns,
starts, cancels and balance reads over HTTP across two orgs. Then:

- no answer is a 5xx and no "database is locked" reaches a client;
- ``learncredits verify-ledger`` is clean;
- for each org, from what the clients were told: credits + consumed - purchased - granted == 0
  (credits from the balance, consumed = the charged credits of the assignments, purchased =
  the acknowledged purchases, granted = the operator's adjustment), credits never negative;
- each acknowledged purchase appears exactly once, and a repeated key never bought twice.

The server is terminated at the end, also on failure.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import secrets
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HOST, console_script, free_port, migrate, service_env, wait_until_serving

pytestmark = pytest.mark.slow  # starts processes: left out of make test-fast

THREADS = 16
REQUESTS_PER_THREAD = 25
EMPLOYEES_PER_ORG = 30
GRANT = 10


@dataclass
class Answer:
    status: int
    body: Any
    raw: bytes


class Http:
    """One keep-alive connection to the server (one per thread)."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection(HOST, port, timeout=90)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        data = None if body is None else json.dumps(body)
        sent = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        sent.update(headers or {})
        self.conn.request(method, "/api/v1" + path, body=data, headers=sent)
        response = self.conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Answer(response.status, parsed, raw)

    def close(self) -> None:
        self.conn.close()


def ok(answer: Answer, status: int = 200) -> Any:
    assert answer.status == status, (answer.status, answer.raw[:500])
    return answer.body


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    operator_token: str
    database: Path
    env: dict[str, str]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def _env(database: Path, token: str) -> dict[str, str]:
    return service_env(
        f"sqlite:///{database}", LEARNCREDITS_OPERATOR_TOKEN=token, LEARNCREDITS_RATE_LIMIT=""
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    database = tmp_path / "embedded.sqlite3"
    token = secrets.token_urlsafe(24)
    env = _env(database, token)
    migrate(env, tmp_path)
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                console_script(),
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                "2",
                "--threads",
                "4",
                "--no-worker",
            ],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Server(process, port, token, database, env, log)
    try:
        wait_until_serving(process, port, "/api/v1/openapi.json", log)
        yield running
    finally:
        running.stop()
        if process.poll() is None:  # pragma: no cover - last resort
            os.killpg(process.pid, signal.SIGKILL)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class OrgState:
    id: str
    key: str
    employees: list[str]
    assignments: list[str] = field(default_factory=list)
    purchases: dict[str, int] = field(default_factory=dict)  # acknowledged id -> quantity
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Tally:
    answers: dict[str, dict[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, answer: Answer) -> None:
        with self.lock:
            by_status = self.answers.setdefault(kind, {})
            by_status[answer.status] = by_status.get(answer.status, 0) + 1
            if answer.status >= 500:
                self.problems.append(f"{kind}: {answer.status} {answer.raw[:300]!r}")
            if b"database is locked" in answer.raw.lower():
                self.problems.append(f"{kind}: 'database is locked' reached a client")


def setup_orgs(server: Server, contents: list[str]) -> list[OrgState]:
    operator = Http(server.port, server.operator_token)
    orgs = []
    try:
        for n in range(2):
            org = ok(
                operator.call(
                    "POST", "/orgs", {"name": f"Embedded {n}", "billing_email": "b@example.com"}
                ),
                201,
            )
            base = f"/orgs/{org['id']}"
            key = ok(operator.call("POST", base + "/api-keys", {"name": "load"}), 201)["key"]
            grant = {"credits": GRANT, "reason": "welcome credits"}
            ok(operator.call("POST", base + "/adjustments", grant), 201)
            employees = [
                ok(
                    operator.call(
                        "POST",
                        base + "/employees",
                        {"name": f"P{i}", "email": f"p{i}.{n}@embedded.example"},
                    ),
                    201,
                )["id"]
                for i in range(EMPLOYEES_PER_ORG)
            ]
            orgs.append(OrgState(org["id"], key, employees))
    finally:
        operator.close()
    return orgs


def client_thread(
    number: int, server: Server, orgs: list[OrgState], contents: list[str], tally: Tally
) -> None:
    rng = random.Random(1000 + number)
    org = orgs[number % len(orgs)]
    client = Http(server.port, org.key)
    base = f"/orgs/{org.id}"
    try:
        for _ in range(REQUESTS_PER_THREAD):
            action = rng.choice(["purchase", "assign", "assign", "start", "cancel", "balance"])
            if action == "purchase":
                quantity = rng.randint(1, 5)
                key = str(uuid.uuid4())
                answer = client.call(
                    "POST", base + "/purchases", {"quantity": quantity}, {"Idempotency-Key": key}
                )
                tally.note(action, answer)
                if answer.status == 201:
                    with org.lock:
                        org.purchases[answer.body["id"]] = quantity
                    if rng.random() < 0.3:  # the same key again: the same purchase, once
                        again = client.call(
                            "POST",
                            base + "/purchases",
                            {"quantity": quantity},
                            {"Idempotency-Key": key},
                        )
                        tally.note("purchase-replay", again)
                        if (again.status, again.body) != (201, answer.body):
                            with tally.lock:
                                tally.problems.append(f"replay differs: {again.raw[:300]!r}")
            elif action == "assign":
                picked = rng.sample(org.employees, rng.randint(1, 3))
                body = {"content_id": rng.choice(contents), "employee_ids": picked}
                answer = client.call("POST", base + "/assignments", body)
                tally.note(action, answer)
                if answer.status == 201:
                    with org.lock:
                        org.assignments.extend(a["id"] for a in answer.body["data"])
            elif action in {"start", "cancel"}:
                with org.lock:
                    candidates = list(org.assignments)
                if not candidates:
                    answer = client.call("GET", base + "/balance")
                    tally.note("balance", answer)
                    continue
                target = rng.choice(candidates)
                answer = client.call("POST", f"{base}/assignments/{target}/{action}")
                tally.note(action, answer)
            else:
                answer = client.call("GET", base + "/balance")
                tally.note(action, answer)
                if answer.status == 200 and answer.body["credits"] < 0:
                    with tally.lock:
                        tally.problems.append(f"negative credits read: {answer.body}")
    except Exception as exc:  # a dropped connection or a timeout is a failure here
        with tally.lock:
            tally.problems.append(f"thread {number}: {type(exc).__name__}: {exc}")
    finally:
        client.close()


def every(client: Http, path: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = ok(client.call("GET", path + query))
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def test_sixteen_threads_on_embedded_sqlite(server):
    operator = Http(server.port, server.operator_token)
    contents = [
        ok(
            operator.call(
                "POST", "/content", {"title": f"Course {c}", "premium": True, "credit_cost": c}
            ),
            201,
        )["id"]
        for c in (1, 2)
    ]
    operator.close()
    orgs = setup_orgs(server, contents)
    tally = Tally()

    threads = [
        threading.Thread(target=client_thread, args=(n, server, orgs, contents, tally))
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "client threads did not finish"

    sent = sum(sum(by_status.values()) for by_status in tally.answers.values())
    print(f"sqlite concurrency: {sent} requests: {tally.answers}")
    assert tally.problems == []
    assert sent >= THREADS * REQUESTS_PER_THREAD
    assert tally.answers.get("purchase", {}).get(201, 0) > 0
    assert tally.answers.get("start", {}).get(200, 0) > 0

    for org in orgs:
        client = Http(server.port, org.key)
        try:
            balance = ok(client.call("GET", f"/orgs/{org.id}/balance"))
            purchases = every(client, f"/orgs/{org.id}/purchases")
            assignments = every(client, f"/orgs/{org.id}/assignments")
        finally:
            client.close()
        listed = [p["id"] for p in purchases]
        assert len(listed) == len(set(listed))  # no purchase twice
        assert set(listed) == set(org.purchases)  # each acknowledged one, and nothing else
        assert all(p["status"] == "paid" for p in purchases)
        purchased = sum(org.purchases.values())
        consumed = sum(a["charged_credits"] for a in assignments)
        assert balance["credits"] >= 0
        assert balance["credits"] + consumed - purchased - GRANT == 0, (balance, consumed)
        open_ = [a for a in assignments if a["status"] == "assigned"]
        assert balance["assigned"] == sum(a["credit_cost"] for a in open_)

    server.stop()
    log = server.log.read_text(errors="replace")
    verified = subprocess.run(
        [console_script(), "verify-ledger"],
        cwd=server.database.parent,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "2 orgs checked, ledger consistent" in verified.stdout
    assert "database is locked" not in log, log[-3000:]
