"""The bank test with faults: a reusable load-and-fault harness (docs/reliability.md).

It builds everything it needs and tears it all down again:

1. a throwaway PostgreSQL cluster of its own (initdb into a temporary directory, a free
   loopback port, fsync on), never the machine's shared server;
2. ``learncredits migrate`` against it, then ``learncredits serve --workers N --threads T
   --no-worker`` on a free loopback port, rate limiting off;
3. a few orgs, each with an API key, employees and an initial purchase, and some content,
   all made through the HTTP API;
4. many client threads doing a random mix of purchases, bulk assigns, starts, completes,
   cancels, reassigns, operator adjustments and balance reads. Every write carries an
   ``Idempotency-Key`` and is retried with the same key and body after a timeout, a dropped
   or refused connection or a 5xx, until it gets a definitive answer (2xx or 4xx) or its
   retry budget runs out (then it is *unacknowledged*). A few writes are *abandoned* on
   purpose: sent, then not waited for, and never retried;
5. meanwhile a fault thread SIGKILLs gunicorn worker processes and restarts the private
   PostgreSQL;
6. afterwards, the invariants (``check``): ``verify-ledger`` clean; no negative balance in
   the ledger; every acknowledged write present exactly once, every unacknowledged one at
   most once; every balance read consistent; per org, credits + consumed - purchased -
   granted == 0 from the ledger.

The short form is tests/bank/test_bank.py (``make test``). The long form::

    .venv/bin/python -m tests.bank.harness --long [--json report.json]

prints the same report after several minutes of load and faults.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.pgcluster import (
    HOST,
    ClusterError,
    ClusterUnavailable,
    PrivatePostgres,
    find_pg_bin,
    free_port,
)

DB_NAME = "bank"
# 4xx codes the random mix is expected to provoke (a definitive, harmless refusal).
EXPECTED_CODES = {
    "invalid_state",
    "insufficient_credits",
    "employee_inactive",
    "refund_exceeds_available",
}
# Content made at setup: (title, credit cost); cost 0 is free content.
CONTENT = [("Compliance 101", 1), ("Safety", 2), ("Privacy", 3), ("Leadership", 5), ("Intro", 0)]
# After a PostgreSQL restart has completed, 5xx answers are still expected for this long
# (requests already queued or in flight when it happened); later ones are anomalies.
FAULT_GRACE_SECONDS = 5.0


# The private PostgreSQL cluster lives in tests/pgcluster.py (shared with the replica and
# failover tests); the harness's names for its errors are kept.
HarnessUnavailable = ClusterUnavailable
HarnessError = ClusterError


def log_line(message: str) -> None:
    print(f"[bank {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the server under test -----------------------------------------------------------------


def learncredits_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "learncredits.cli", *args]


def server_env(database_url: str, operator_token: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LEARNCREDITS_ACCESS_LOG", "PYTEST_CURRENT_TEST", "PYTEST_VERSION")
    }
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="learncredits.settings",
        LEARNCREDITS_OPERATOR_TOKEN=operator_token,
        # Empty switches the per-key request budgets off (settings.py).
        LEARNCREDITS_RATE_LIMIT="",
        LEARNCREDITS_RATE_LIMIT_OPERATOR="",
        LEARNCREDITS_PAYMENT_PROVIDER="test",
        PYTHONUNBUFFERED="1",
    )
    return env


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the gunicorn master's workers), from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class Server:
    """``learncredits serve`` in its own process group: the gunicorn master is the process
    itself (serve runs gunicorn in-process), its children are the web workers."""

    def __init__(
        self,
        database_url: str,
        token: str,
        workers: int,
        threads: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.token = token
        self.extra_env = extra_env or {}
        self.workers = workers
        self.threads = threads
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None

    def start(self, timeout: float = 90) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="lc-bank-srv-"))
        self.port = free_port()
        log = (self.workdir / "server.log").open("wb")
        self.proc = subprocess.Popen(
            learncredits_cmd(
                "serve",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--no-worker",
            ),
            cwd=self.workdir,
            env={**server_env(self.database_url, self.token), **self.extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_healthy(timeout)

    def log_tail(self, lines: int = 40) -> str:
        if self.workdir is None or not (self.workdir / "server.log").exists():
            return ""
        text = (self.workdir / "server.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self) -> list[int]:
        return children_of(self.proc.pid) if self.alive() and self.proc else []

    def healthy(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            auth = {"Authorization": f"Bearer {self.token}"}
            conn.request("GET", "/api/v1/pricing", headers=auth)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_healthy(self, timeout: float, full: bool = False) -> None:
        """Until the API answers 200 (and, with ``full``, every worker is back)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"learncredits serve exited:\n{self.log_tail()}")
            if self.healthy() and (not full or len(self.worker_pids()) >= self.workers):
                return
            time.sleep(0.2)
        raise HarnessError(f"learncredits serve not healthy after {timeout}s:\n{self.log_tail()}")

    def kill_random_worker(self, rng: random.Random) -> int | None:
        pids = self.worker_pids()
        if not pids:
            return None
        pid = rng.choice(pids)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        if self.proc is not None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Workers may outlive a killed master for a moment: sweep the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# --- the client --------------------------------------------------------------------------------


class TransportFailure(Exception):
    """No HTTP answer: ``reason`` is timeout, dropped (reset, closed, broken) or refused."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Reply:
    status: int
    body: Any
    replayed: bool


class Http:
    """One keep-alive loopback connection (one per client thread); reconnects on failure."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(
        self,
        method: str,
        path: str,
        token: str,
        body: Any = None,
        key: str | None = None,
        wait: float | None = None,
    ) -> Reply:
        """One attempt. ``wait`` overrides how long to wait for the answer once the
        request is sent (a tiny one abandons the request)."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, "/api/v1" + path, body=data, headers=headers)
            if wait is not None and self.conn.sock is not None:
                self.conn.sock.settimeout(wait)
            response = self.conn.getresponse()
            raw = response.read()
            if wait is not None and self.conn.sock is not None:
                self.conn.sock.settimeout(self.timeout)
        except TimeoutError as exc:
            self.close()
            raise TransportFailure("timeout", repr(exc)) from None
        except ConnectionRefusedError as exc:
            self.close()
            raise TransportFailure("refused", repr(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportFailure("dropped", repr(exc)) from None
        if response.will_close:
            self.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = {"raw": raw[:500].decode(errors="replace")}
        return Reply(response.status, parsed, response.getheader("Idempotent-Replayed") == "true")


# --- what the clients did ------------------------------------------------------------------------


@dataclass
class Write:
    """One logical write: one Idempotency-Key, however many attempts it took."""

    kind: str
    org: str  # public org id ("" for writes outside an org)
    path: str
    body: dict[str, Any]
    key: str
    operator: bool = False
    setup: bool = False  # made while building the world, before the load and the faults
    attempts: int = 0
    status: int | None = None
    response: Any = None
    replayed: bool = False
    abandoned: bool = False
    last_failure: str = ""
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and self.status < 500


@dataclass
class Read:
    org: str
    status: int | None
    body: Any
    attempts: int = 1


@dataclass
class Fault:
    kind: str  # "worker_kill" or "pg_restart"
    at: float  # seconds since the load started
    ended: float
    detail: str


@dataclass
class Journal:
    """Everything the clients and the fault thread did, for the checks and the report."""

    writes: list[Write] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    server_errors: list[tuple[float, str, int, str]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def count(self, label: str) -> None:
        with self.lock:
            self.statuses[label] += 1


@dataclass
class Budget:
    attempts: int = 40
    seconds: float = 30.0


def backoff(attempt: int, rng: random.Random) -> float:
    return min(1.0, 0.05 * 2 ** min(attempt, 5)) * (0.5 + rng.random())


def send_write(
    http_: Http,
    journal: Journal,
    write: Write,
    token: str,
    budget: Budget,
    rng: random.Random,
    abandon_wait: float | None = None,
) -> Write:
    """Send ``write`` until a definitive answer (2xx or 4xx), with the same key and body
    on every attempt; ``abandon_wait`` sends it once and waits only that long."""
    journal.writes.append(write)
    deadline = time.monotonic() + budget.seconds
    while True:
        write.attempts += 1
        try:
            reply = http_.call("POST", write.path, token, write.body, write.key, wait=abandon_wait)
        except TransportFailure as exc:
            reason = exc.reason
            journal.count(f"transport:{reason}")
        else:
            journal.count(str(reply.status))
            if reply.status < 500:
                write.status, write.response, write.replayed = (
                    reply.status,
                    reply.body,
                    reply.replayed,
                )
                return write
            reason = "5xx"
            with journal.lock:
                journal.server_errors.append(
                    (journal.now(), write.path, reply.status, json.dumps(reply.body)[:300])
                )
        write.last_failure = reason
        if abandon_wait is not None:
            write.abandoned = True
            http_.close()
            return write
        if write.attempts >= budget.attempts or time.monotonic() >= deadline:
            return write
        write.retries[reason] = write.retries.get(reason, 0) + 1
        time.sleep(backoff(write.attempts, rng))


def send_read(
    http_: Http,
    journal: Journal,
    org: str,
    path: str,
    token: str,
    budget: Budget,
    rng: random.Random,
) -> Read:
    deadline = time.monotonic() + budget.seconds
    read = Read(org, None, None, 0)
    while True:
        read.attempts += 1
        try:
            reply = http_.call("GET", path, token)
        except TransportFailure as exc:
            journal.count(f"transport:{exc.reason}")
        else:
            journal.count(str(reply.status))
            if reply.status < 500:
                read.status, read.body = reply.status, reply.body
                break
            with journal.lock:
                journal.server_errors.append(
                    (journal.now(), path, reply.status, json.dumps(reply.body)[:300])
                )
        if read.attempts >= budget.attempts or time.monotonic() >= deadline:
            break
        time.sleep(backoff(read.attempts, rng))
    journal.reads.append(read)
    return read


# --- the world the clients act on ----------------------------------------------------------------


@dataclass
class OrgState:
    id: str
    key: str
    employees: list[str] = field(default_factory=list)
    assignments: list[str] = field(default_factory=list)
    purchases: list[str] = field(default_factory=list)  # paid ones, to refund from
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_assignments(self, ids: list[str]) -> None:
        with self.lock:
            self.assignments.extend(ids)

    def add_purchase(self, purchase_id: str) -> None:
        with self.lock:
            self.purchases.append(purchase_id)

    def pick_purchase(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(self.purchases) if self.purchases else None

    def pick_assignment(self, rng: random.Random) -> str | None:
        """A known assignment, recent ones likelier (older ones are mostly settled)."""
        with self.lock:
            if not self.assignments:
                return None
            back = min(len(self.assignments) - 1, int(rng.expovariate(1 / 25)))
            return self.assignments[-1 - back]


@dataclass
class Config:
    duration: float = 8.0
    clients: int = 32
    orgs: int = 4
    employees: int = 16
    workers: int = 3
    server_threads: int = 4
    worker_kills: int = 3  # spread over the run (when kill_interval is 0)
    kill_interval: float = 0.0  # seconds between kills (long form), jittered
    pg_restarts: int = 1
    pg_restart_mode: str = "immediate"
    timeout: float = 5.0
    retry_attempts: int = 40
    retry_seconds: float = 30.0
    abandon_rate: float = 0.02
    abandon_wait: float = 0.005
    seed: int | None = None

    @classmethod
    def long(cls) -> Config:
        return cls(duration=240.0, clients=48, kill_interval=5.0, pg_restarts=2)


# Relative weights of the random mix.
MIX = {
    "purchase": 10,
    "assign": 22,
    "start": 18,
    "complete": 6,
    "cancel": 12,
    "reassign": 8,
    "adjust": 6,
    "refund": 3,
    "balance": 18,
}


class BankRun:
    """The whole apparatus: ``with BankRun(config) as bank: bank.setup(); bank.load();
    report = bank.check()``. Leaving the block stops the server (its whole process group)
    and removes the private cluster, also on failure."""

    def __init__(self, config: Config, log: Callable[[str], None] = log_line) -> None:
        self.config = config
        self.log = log
        seed = config.seed if config.seed is not None else random.randrange(2**32)
        self.seed = seed
        self.rng = random.Random(seed)
        self.token = f"bank-operator-{uuid.uuid4().hex}"
        self.journal = Journal()
        self.orgs: list[OrgState] = []
        self.contents: list[tuple[str, int]] = []
        self.budget = Budget(config.retry_attempts, config.retry_seconds)
        self.timings: dict[str, float] = {}
        self.load_seconds = 0.0
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise HarnessUnavailable(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in "
                "/usr/lib/postgresql/*/bin or on PATH; set LEARNCREDITS_PG_BIN"
            )
        self.pg = PrivatePostgres(bin_dir, dbname=DB_NAME, name="bank-pg")
        self.server: Server | None = None
        self.workdir: Path | None = None

    # lifecycle

    def __enter__(self) -> BankRun:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timed(self, label: str, started: float) -> None:
        self.timings[label] = round(time.monotonic() - started, 2)

    def start(self) -> None:
        # The working directory of the commands (settings put ./var there), not the repo's.
        self.workdir = Path(tempfile.mkdtemp(prefix="lc-bank-cmd-"))
        t = time.monotonic()
        self.pg.start()
        self._timed("postgres_start", t)
        self.log(f"private PostgreSQL on {HOST}:{self.pg.port} in {self.pg.root}")
        t = time.monotonic()
        self.run_command("migrate", "--verbosity", "0", "--skip-checks", timeout=300)
        self._timed("migrate", t)
        t = time.monotonic()
        server = Server(self.pg.url, self.token, self.config.workers, self.config.server_threads)
        self.server = server
        server.start()
        self._timed("server_start", t)
        master = server.proc.pid if server.proc else None
        self.log(
            f"learncredits serve on {HOST}:{server.port}, gunicorn master pid {master}, "
            f"workers {server.worker_pids()}"
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.pg.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def run_command(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            learncredits_cmd(*args),
            env=server_env(self.pg.url, self.token),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # setup, through the API (every write with its own Idempotency-Key, journalled)

    def _http(self) -> Http:
        assert self.server is not None
        return Http(self.server.port, self.config.timeout)

    def post(
        self, http_: Http, kind: str, org: str, path: str, body: dict[str, Any], token: str
    ) -> Any:
        key = str(uuid.uuid4())
        write = Write(kind, org, path, body, key, operator=token == self.token, setup=True)
        send_write(http_, self.journal, write, token, self.budget, self.rng)
        if write.status is None or write.status >= 300:
            raise HarnessError(f"setup {kind} {path} failed: {write.status} {write.response}")
        return write.response

    def configure(self, http_: Http, method: str, path: str, body: dict[str, Any]) -> None:
        """An operator's setting made before the load (not a write the checks account for)."""
        reply = http_.call(method, path, self.token, body)
        if reply.status != 200:
            raise HarnessError(f"setup {method} {path} failed: {reply.status} {reply.body}")

    def create_org(
        self, http_: Http, name: str, employees: int, credits: int, taxed: bool = False
    ) -> OrgState:
        org = self.post(
            http_, "org", "", "/orgs", {"name": name, "billing_email": "b@example.com"}, self.token
        )
        if taxed:
            # Half the orgs pay sales tax, at a rate whose tax is often a fraction of a cent:
            # the money checks then cover amounts charged and refunded with tax.
            tax = {"tax": {"country": "US", "region": "NY"}}
            self.configure(http_, "PATCH", f"/orgs/{org['id']}", tax)
        key = self.post(
            http_, "api_key", org["id"], f"/orgs/{org['id']}/api-keys", {"name": "bank"}, self.token
        )["key"]
        state = OrgState(org["id"], key)
        for i in range(employees):
            body = {"name": f"Employee {i}", "email": f"e{i}.{uuid.uuid4().hex[:8]}@example.com"}
            emp = self.post(http_, "employee", state.id, f"/orgs/{state.id}/employees", body, key)
            state.employees.append(emp["id"])
        if credits:
            path = f"/orgs/{state.id}/purchases"
            bought = self.post(http_, "purchase", state.id, path, {"quantity": credits}, key)
            state.add_purchase(str(bought["id"]))
        return state

    def setup(self) -> None:
        t = time.monotonic()
        http_ = self._http()
        rate = {"country": "US", "region": "NY", "name": "Sales tax", "rate_bps": 887}
        self.configure(
            http_, "PUT", "/tax/rates", {"rates": [{**rate, "effective_from": "2020-01-01"}]}
        )
        for title, cost in CONTENT:
            body = {"title": title, "premium": cost > 0, "credit_cost": cost}
            item = self.post(http_, "content", "", "/content", body, self.token)
            self.contents.append((item["id"], cost))
        http_.close()
        errors: list[BaseException] = []

        def make(i: int) -> None:
            client = self._http()
            try:
                self.orgs.append(
                    self.create_org(
                        client, f"Bank org {i}", self.config.employees, 100, taxed=i % 2 == 1
                    )
                )
            except BaseException as exc:
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=make, args=(i,)) for i in range(self.config.orgs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        if errors:
            raise errors[0]
        self._timed("setup", t)
        self.log(
            f"setup: {len(self.orgs)} orgs x {self.config.employees} employees, "
            f"{len(self.contents)} content items"
        )

    # the load

    def _one(self, http_: Http, rng: random.Random, kind: str) -> None:
        org = rng.choice(self.orgs)
        base = f"/orgs/{org.id}"
        abandon = self.config.abandon_wait if rng.random() < self.config.abandon_rate else None

        def write(
            kind: str, path: str, body: dict[str, Any], key: str = "", operator: bool = False
        ) -> Write:
            token = self.token if operator else org.key
            w = Write(kind, org.id, base + path, body, key or str(uuid.uuid4()), operator=operator)
            return send_write(http_, self.journal, w, token, self.budget, rng, abandon)

        if kind == "balance":
            send_read(http_, self.journal, org.id, base + "/balance", org.key, self.budget, rng)
            return
        if kind == "purchase":
            quantity = rng.choice([1, 2, 5, 10, 20, 25, 40, 50, 60])
            w = write("purchase", "/purchases", {"quantity": quantity})
            if w.status == 201 and isinstance(w.response, dict):
                org.add_purchase(str(w.response.get("id")))
            return
        if kind == "refund":
            purchase = org.pick_purchase(rng)
            if purchase is not None:  # an operator gives a few unused credits back
                body = {"credits": rng.randint(1, 3), "reason": "bank refund"}
                write("refund", f"/purchases/{purchase}/refund", body, operator=True)
            return
        if kind == "adjust":
            # An operator correction, up or down; the reason names the key, so that the
            # check finds the ledger entries each key produced.
            credits = rng.randint(1, 15) if rng.random() < 0.65 else -rng.randint(1, 12)
            key = str(uuid.uuid4())
            body = {"credits": credits, "reason": f"bank {key}"}
            write("adjust", "/adjustments", body, key=key, operator=True)
            return
        assignment = org.pick_assignment(rng)
        if kind == "assign" or assignment is None:
            content_id, _ = rng.choice(self.contents)
            employees = rng.sample(org.employees, rng.randint(1, min(4, len(org.employees))))
            body = {"content_id": content_id, "employee_ids": employees}
            w = write("assign", "/assignments", body)
            if w.status == 201 and isinstance(w.response, dict):
                org.add_assignments([a["id"] for a in w.response.get("data", [])])
            return
        if kind == "reassign":
            body = {"employee_id": rng.choice(org.employees)}
            write("reassign", f"/assignments/{assignment}/reassign", body)
            return
        write(kind, f"/assignments/{assignment}/{kind}", {})

    def _client(self, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        http_ = self._http()
        kinds = list(MIX)
        weights = [MIX[k] for k in kinds]
        try:
            while not stop.is_set():
                self._one(http_, rng, rng.choices(kinds, weights)[0])
        finally:
            http_.close()

    def fault_schedule(self) -> list[tuple[float, str]]:
        """(seconds after the start, "worker_kill" | "pg_restart"), within the first 80%
        of the run so that the end of the run shows the recovered steady state."""
        cfg, rng = self.config, self.rng
        lo, hi = 0.12 * cfg.duration, 0.8 * cfg.duration
        plan: list[tuple[float, str]] = []
        if cfg.kill_interval > 0:
            t = lo
            while t < hi:
                plan.append((t, "worker_kill"))
                t += cfg.kill_interval * rng.uniform(0.6, 1.4)
        else:
            for i in range(cfg.worker_kills):
                slot = (hi - lo) / max(1, cfg.worker_kills)
                plan.append((lo + slot * (i + rng.uniform(0.1, 0.9)), "worker_kill"))
        for i in range(cfg.pg_restarts):
            span = 0.6 * cfg.duration / cfg.pg_restarts
            plan.append((0.2 * cfg.duration + span * (i + rng.uniform(0.3, 0.7)), "pg_restart"))
        return sorted(plan)

    def _faults(self, stop: threading.Event, plan: list[tuple[float, str]]) -> None:
        assert self.server is not None
        for at, kind in plan:
            if stop.wait(max(0.0, at - self.journal.now())):
                return
            started = self.journal.now()
            if kind == "worker_kill":
                pid = self.server.kill_random_worker(self.rng)
                if pid is None:
                    self.log("fault: no worker to kill (all respawning)")
                    continue
                detail = f"SIGKILL worker pid {pid}"
            else:
                try:
                    took = self.pg.restart(self.config.pg_restart_mode)
                except HarnessError as exc:
                    self.log(f"fault: PostgreSQL restart failed: {exc}")
                    raise
                detail = f"pg_ctl restart -m {self.config.pg_restart_mode}: {took:.2f}s"
            fault = Fault(kind, round(started, 2), round(self.journal.now(), 2), detail)
            self.journal.faults.append(fault)
            self.log(f"fault at {fault.at:.1f}s: {detail}")

    def load(self) -> None:
        """Run the clients and the fault threads for ``duration`` seconds, then let every
        client finish its current write (retrying within its budget)."""
        cfg = self.config
        stop = threading.Event()
        plan = self.fault_schedule()
        self.journal.t0 = time.monotonic()
        seeds = [self.rng.randrange(2**32) for _ in range(cfg.clients)]
        clients = [
            threading.Thread(target=self._client, args=(stop, seed), daemon=True) for seed in seeds
        ]
        fault_errors: list[BaseException] = []

        def faults(kind: str) -> None:
            try:
                self._faults(stop, [(t, k) for t, k in plan if k == kind])
            except BaseException as exc:
                fault_errors.append(exc)

        # One thread per kind of fault: workers keep being killed while PostgreSQL restarts.
        fault_threads = [
            threading.Thread(target=faults, args=(kind,), daemon=True)
            for kind in ("worker_kill", "pg_restart")
        ]
        self.log(
            f"load: {cfg.clients} clients for {cfg.duration:.0f}s, faults planned: "
            + ", ".join(f"{k}@{t:.1f}s" for t, k in plan)
        )
        for thread in clients:
            thread.start()
        for thread in fault_threads:
            thread.start()
        time.sleep(cfg.duration)
        stop.set()
        for thread in fault_threads:
            thread.join(180)
        drain = cfg.retry_seconds + 2 * cfg.timeout + 10
        for thread in clients:
            thread.join(max(0.1, drain - (time.monotonic() - self.journal.t0 - cfg.duration)))
        self.load_seconds = round(self.journal.now(), 2)
        stuck = sum(thread.is_alive() for thread in clients)
        if stuck:
            raise HarnessError(f"{stuck} client threads still running after the drain")
        if fault_errors:
            raise fault_errors[0]
        assert self.server is not None
        # The server must recover on its own: every worker back, the API answering 200.
        self.server.wait_healthy(60, full=True)
        self.log(f"load done in {self.load_seconds:.1f}s; server healthy again")

    # the checks

    def verify_ledger(self) -> tuple[int, str]:
        result = self.run_command("verify-ledger", "--skip-checks", timeout=300)
        return result.returncode, (result.stdout + result.stderr).strip()

    def check(self) -> dict[str, Any]:
        t = time.monotonic()
        # Purchases whose requests died mid-way are settled from the provider's state, as the
        # worker does after 15 minutes; then every purchase must be paid or failed.
        reconciled = self.run_command("reconcile-payments", "--older-than-minutes", "0")
        if reconciled.returncode != 0:
            raise HarnessError(f"reconcile-payments failed: {reconciled.stderr[-2000:]}")
        with self.pg.connect() as conn:
            anomalies = check_invariants(conn, self.journal)
        code, output = self.verify_ledger()
        if code != 0:
            for line in output.splitlines():
                if line.startswith("MISMATCH"):
                    anomalies.add("verify_ledger_mismatch", line)
            if not any(line.startswith("MISMATCH") for line in output.splitlines()):
                anomalies.add("verify_ledger_failed", output[-500:])
        self._timed("check", t)
        return self.report(anomalies, code, output)

    def report(self, anomalies: Anomalies, verify_code: int, verify_output: str) -> dict[str, Any]:
        journal = self.journal
        writes = journal.writes
        load_writes = [w for w in writes if not w.setup]
        by_kind = Counter(w.kind for w in load_writes)
        by_kind["balance"] = len(journal.reads)
        retries: Counter[str] = Counter()
        for w in writes:
            retries.update(w.retries)
        read_retries = sum(r.attempts - 1 for r in journal.reads)
        unacked = [w for w in writes if not w.acknowledged]
        faults = Counter(f.kind for f in journal.faults)
        outside = outside_fault_windows(journal)
        return {
            "seed": self.seed,
            "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
            "config": asdict(self.config),
            "load_seconds": self.load_seconds,
            "timings": self.timings,
            "operations": {
                "total": len(load_writes) + len(journal.reads),
                "writes": len(load_writes),
                "reads": len(journal.reads),
                "setup_writes": len(writes) - len(load_writes),
                "by_kind": dict(sorted(by_kind.items())),
                "per_second": round(
                    (len(load_writes) + len(journal.reads)) / max(self.load_seconds, 0.001), 1
                ),
            },
            "acknowledged": sum(w.acknowledged for w in writes),
            "unacknowledged": {
                "total": len(unacked),
                "abandoned": sum(w.abandoned for w in unacked),
                "budget_exhausted": sum(not w.abandoned for w in unacked),
                "applied": anomalies.stats.get("unacked_applied", 0),
                "not_applied": anomalies.stats.get("unacked_not_applied", 0),
            },
            "retries": {
                "total": sum(retries.values()) + read_retries,
                "writes": dict(sorted(retries.items())),
                "reads": read_retries,
            },
            "replayed_answers": sum(w.replayed for w in writes),
            "http": dict(sorted(journal.statuses.items())),
            "server_errors": {
                "total": len(journal.server_errors),
                "outside_fault_windows": len(outside),
                "examples": sorted(
                    {f"{status} {body}" for _, _, status, body in journal.server_errors}
                )[:3],
            },
            "faults": {
                "worker_kills": faults["worker_kill"],
                "pg_restarts": faults["pg_restart"],
                "events": [asdict(f) for f in journal.faults],
            },
            "checked": dict(anomalies.checked),
            "anomalies": {
                "total": anomalies.total,
                "by_kind": dict(sorted(anomalies.by_kind.items())),
                "examples": anomalies.examples[:40],
            },
            "verify_ledger": {"exit_code": verify_code, "output": verify_output[-2000:]},
        }


def outside_fault_windows(journal: Journal) -> list[tuple[float, str, int, str]]:
    """5xx answers not explained by a PostgreSQL restart (a worker kill drops connections;
    it is no excuse for a 5xx)."""
    windows = [
        (f.at - 0.5, f.ended + FAULT_GRACE_SECONDS)
        for f in journal.faults
        if f.kind == "pg_restart"
    ]
    return [e for e in journal.server_errors if not any(lo <= e[0] <= hi for lo, hi in windows)]


# --- the invariants ----------------------------------------------------------------------


class Anomalies:
    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.examples: list[str] = []
        self.stats: Counter[str] = Counter()
        self.checked: Counter[str] = Counter()

    def add(self, kind: str, detail: str) -> None:
        self.by_kind[kind] += 1
        if self.by_kind[kind] <= 5:
            self.examples.append(f"{kind}: {detail}")

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def _pk(public_id: Any, prefix: str) -> int | None:
    if not isinstance(public_id, str) or not public_id.startswith(prefix + "_"):
        return None
    digits = public_id[len(prefix) + 1 :]
    return int(digits) if digits.isdigit() else None


def _org_pk(public_id: str) -> int:
    pk = _pk(public_id, "org")
    assert pk is not None, public_id
    return pk


def _check_purchase_write(a: Anomalies, w: Write, row: tuple[Any, ...] | None) -> None:
    """A purchase as the client saw it against the purchase its key names."""
    if not w.acknowledged:
        a.stats["unacked_applied" if row else "unacked_not_applied"] += 1
        return
    if w.status == 201:
        said = w.response.get("id") if isinstance(w.response, dict) else None
        if row is None or f"pur_{row[0]}" != said:
            a.add("acknowledged_write_missing", f"purchase {w.path} key={w.key}: {row}")
        elif w.response.get("status") == "paid" and row[2] != "paid":
            a.add("acknowledged_answer_differs", f"purchase {said}: said paid, db {row[2]}")
    elif w.status == 402:
        if row is None or row[2] != "failed":
            a.add("acknowledged_answer_differs", f"purchase key={w.key}: 402, db {row}")
    elif row is not None:
        a.add("unexpected_refusal", f"purchase {w.path}: {w.status} {w.response}, db {row}")


def _check_refund_write(a: Anomalies, w: Write, row: tuple[Any, ...] | None) -> None:
    """A refund as the operator saw it against the refund its key names."""
    if not w.acknowledged:
        a.stats["unacked_applied" if row else "unacked_not_applied"] += 1
        return
    if w.status == 201:
        said = w.response.get("id") if isinstance(w.response, dict) else None
        if row is None or f"inv_{row[5]}" != said:
            a.add("acknowledged_write_missing", f"refund {w.path} key={w.key}: {row}")
    elif row is not None:
        a.add("refund_refused_but_made", f"refund {w.path}: {w.status} {w.response}, db {row}")


def decrypt(body: Any) -> bytes:
    """A stored idempotent answer in clear (they are encrypted at rest with a key derived
    from SECRET_KEY, which the servers got from this process's environment)."""
    from learncredits.secrets_at_rest import decrypt as decrypt_at_rest

    return decrypt_at_rest(bytes(body))


def check_invariants(conn: psycopg.Connection[Any], journal: Journal) -> Anomalies:
    """Compare what the clients were told with what the database holds (module docstring)."""
    a = Anomalies()
    rows = conn.execute(
        "SELECT scope, key, status_code, body FROM api_idempotencyrecord"
    ).fetchall()
    records: dict[str, tuple[str, int, Any]] = {}
    for scope, key, status, body in rows:
        try:
            parsed = json.loads(decrypt(body)) if body else None
        except ValueError:
            parsed = None
        if key in records:
            a.add("duplicate_idempotency_key", key)
        records[key] = (scope, status, parsed)
    purchases = {
        r[0]: r
        for r in conn.execute(
            # What the card was asked for: the net total and the tax on it.
            "SELECT id, org_id, status, quantity, idempotency_key,"
            " total_cents + tax_cents, provider_reference FROM credits_purchase"
        ).fetchall()
    }
    # Purchases keep their Idempotency-Key on the purchase row, not in the idempotency table
    # (they call the payment provider, never inside the request's transaction).
    purchase_by_key = {row[4]: row for row in purchases.values() if row[4]}
    intents = conn.execute(
        "SELECT id, reference, amount_cents, status FROM billing_testpaymentintent"
    ).fetchall()
    refund_rows = conn.execute(
        "SELECT id, purchase_id, amount_cents, status, idempotency_key, credit_note_id, credits"
        " FROM billing_refund"
    ).fetchall()
    refund_by_key = {row[4]: row for row in refund_rows if row[4]}
    returned_at_provider: Counter[str] = Counter()
    for intent_id, amount in conn.execute(
        "SELECT intent_id, amount_cents FROM billing_testrefund"
    ).fetchall():
        returned_at_provider[str(intent_id)] += amount
    assignments = {
        r[0]: r
        for r in conn.execute(
            "SELECT id, org_id, status, credit_cost, charged_credits, overage_credits"
            " FROM credits_assignment"
        ).fetchall()
    }
    ledger = conn.execute(
        "SELECT id, org_id, type, credits_delta, assigned_delta, overage_credits, credits_after,"
        " assigned_after, assignment_id, purchase_id, reason FROM credits_ledgerentry ORDER BY id"
    ).fetchall()
    invoices = conn.execute("SELECT number, kind, purchase_id FROM billing_invoice").fetchall()
    balances = {
        r[0]: (r[1], r[2])
        for r in conn.execute("SELECT org_id, credits, assigned FROM credits_balance").fetchall()
    }
    a.checked.update(
        idempotency_records=len(records),
        purchases=len(purchases),
        assignments=len(assignments),
        ledger_entries=len(ledger),
        orgs=len(balances),
        invoices=len(invoices),
        balance_reads=len(journal.reads),
    )

    # Credits never negative.
    for entry in ledger:
        if entry[6] < 0 or entry[7] < 0:
            a.add("negative_balance_in_ledger", f"led_{entry[0]} after={entry[6]},{entry[7]}")
    for org_id, (credits, assigned) in balances.items():
        if credits < 0 or assigned < 0:
            a.add("negative_balance", f"org_{org_id}: {credits},{assigned}")

    # Every acknowledged write present exactly once (its claim holds the answer the client
    # got); every unacknowledged one at most once (the unique claim, and the effect checks
    # below: no effect without a claim).
    writes_by_key: dict[str, Write] = {}
    for w in journal.writes:
        if w.key in writes_by_key:
            a.add("client_reused_key", w.key)
        writes_by_key[w.key] = w
        record = records.get(w.key)
        if w.kind == "purchase":
            _check_purchase_write(a, w, purchase_by_key.get(w.key))
            continue
        if w.kind == "refund":
            _check_refund_write(a, w, refund_by_key.get(w.key))
            continue
        if w.acknowledged:
            if record is None:
                a.add("acknowledged_write_missing", f"{w.kind} {w.path} key={w.key}")
            elif record[1] != w.status or record[2] != w.response:
                a.add(
                    "acknowledged_answer_differs",
                    f"{w.kind} {w.path}: client got {w.status} {w.response}, "
                    f"stored {record[1]} {record[2]}",
                )
            if w.status >= 400:  # type: ignore[operator]
                code = w.response.get("code") if isinstance(w.response, dict) else None
                if code not in EXPECTED_CODES:
                    a.add("unexpected_refusal", f"{w.kind} {w.path}: {w.status} {w.response}")
        else:
            a.stats["unacked_applied" if record else "unacked_not_applied"] += 1
    for key in records:
        if key not in writes_by_key:
            a.add("claim_without_write", key)

    def answer(w: Write) -> tuple[int, Any] | None:
        """The definitive answer the server committed for this write, if any."""
        if w.kind == "refund":
            return None  # checked against the refund rows (_check_refund_write)
        if w.kind == "purchase":
            row = purchase_by_key.get(w.key)
            if row is None or row[2] != "paid":
                return None
            return 201, {"id": f"pur_{row[0]}"}
        record = records.get(w.key)
        return (record[1], record[2]) if record else None

    # Purchases: each paid purchase belongs to exactly one claimed 201 answer, and back.
    purchase_refs: Counter[int] = Counter()
    assignment_refs: Counter[int] = Counter()
    adjustment_entries: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for entry in ledger:
        if entry[2] == "adjustment":
            adjustment_entries[str(entry[10])].append(entry)
    for w in journal.writes:
        committed = answer(w)
        if w.kind == "purchase" and committed and committed[0] == 201:
            pk = _pk(committed[1].get("id"), "pur")
            row = purchases.get(pk)
            purchase_refs[pk] += 1  # type: ignore[index]
            if row is None:
                a.add("answered_purchase_missing", f"{committed[1].get('id')} key={w.key}")
            elif row[1] != _org_pk(w.org) or row[2] != "paid" or row[3] != w.body["quantity"]:
                a.add("answered_purchase_wrong", f"{row} for {w.org} {w.body}")
        if w.kind == "assign" and committed and committed[0] == 201:
            for item in committed[1].get("data", []):
                pk = _pk(item.get("id"), "asg")
                assignment_refs[pk] += 1  # type: ignore[index]
                row = assignments.get(pk)
                if row is None or row[1] != _org_pk(w.org):
                    a.add("answered_assignment_missing", f"{item.get('id')} key={w.key}")
        if w.kind == "adjust":
            entries = adjustment_entries.pop(w.body["reason"], [])
            if committed and committed[0] == 201:
                ok = (
                    len(entries) == 1
                    and f"led_{entries[0][0]}" == committed[1].get("id")
                    and entries[0][3] == w.body["credits"]
                    and entries[0][1] == _org_pk(w.org)
                )
                if not ok:
                    a.add("adjustment_not_once", f"key={w.key}: {len(entries)} entries")
            elif entries:
                a.add(
                    "adjustment_without_claim",
                    f"key={w.key}: {len(entries)} entries, answer {committed}",
                )
        if w.acknowledged and w.status == 200 and isinstance(w.response, dict):
            row = assignments.get(_pk(w.response.get("id"), "asg"))
            said = w.response.get("status")
            expected = {
                "start": {"started", "completed"},
                "complete": {"completed"},
                "cancel": {"cancelled"},
            }.get(w.kind)
            if expected and said in expected and (row is None or row[2] not in expected):
                a.add("acknowledged_transition_lost", f"{w.kind} {w.path}: said {said}, db {row}")
    for reason, entries in adjustment_entries.items():
        a.add("adjustment_nobody_asked_for", f"{len(entries)} entries, reason {reason!r}")
    for pk, row in purchases.items():
        if row[2] == "paid" and purchase_refs[pk] != 1:
            a.add("paid_purchase_not_claimed_once", f"pur_{pk}: {purchase_refs[pk]} claims")
        if row[2] == "pending":
            a.add("pending_purchase_left", f"pur_{pk}")
    for pk, count in purchase_refs.items():
        if count > 1:
            a.add("purchase_answered_twice", f"pur_{pk}: {count}")
    # Money: exactly one succeeded charge per paid purchase, of its total; none for a purchase
    # that is not paid; so the money taken equals the money the paid purchases say.
    succeeded: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for intent in intents:
        if intent[3] == "succeeded":
            succeeded[str(intent[1])].append(intent)
    for pk, row in purchases.items():
        charges = succeeded.pop(f"pur_{pk}", [])
        want = 1 if row[2] == "paid" else 0
        if len(charges) != want or (want and charges[0][2] != row[5]):
            a.add("purchase_charged_wrong", f"pur_{pk} {row[2]}: {len(charges)} charges")
        if want and row[6] != f"tpi_{charges[0][0] if charges else '?'}":
            a.add("purchase_reference_wrong", f"pur_{pk}: {row[6]}")
    for reference, charges in succeeded.items():
        if reference.startswith("pur_"):
            a.add("charge_without_purchase", f"{reference}: {len(charges)} charges")
    a.checked.update(charges=sum(1 for i in intents if i[3] == "succeeded"))
    # Money back: each purchase's refunds at the provider are exactly its done refunds, and no
    # refund is left pending once reconciled; so charges - refunds at the provider equal paid
    # purchases - refunds in our books, to the cent.
    ours: Counter[int] = Counter()
    for _, purchase_pk, amount, status, _, _, _ in refund_rows:
        if status != "done":
            a.add("refund_left_pending", f"purchase {purchase_pk}: {amount} cents {status}")
        elif purchase_pk is not None:
            ours[purchase_pk] += amount
    taken = given_back = books = 0
    for pk, row in purchases.items():
        if row[2] != "paid":
            continue
        at_provider = returned_at_provider.pop(str(row[6]), 0)
        if at_provider != ours[pk]:
            a.add("refund_money_differs", f"pur_{pk}: provider {at_provider}, ours {ours[pk]}")
        taken += row[5]
        given_back += at_provider
        books += row[5] - ours[pk]
    for intent_id, amount in returned_at_provider.items():
        a.add("refund_without_purchase", f"{intent_id}: {amount} cents")
    if taken - given_back != books:
        a.add("money_differs", f"charged {taken} - refunded {given_back} != books {books}")
    a.checked.update(refunds=len(refund_rows))
    # One receipt per paid purchase, and invoice numbers without gaps or repeats.
    receipts = Counter(purchase for _, kind, purchase in invoices if kind == "purchase")
    for pk, row in purchases.items():
        if receipts[pk] != (1 if row[2] == "paid" else 0):
            a.add("receipt_not_once", f"pur_{pk} {row[2]}: {receipts[pk]} receipts")
    by_year: dict[str, list[int]] = defaultdict(list)
    for number, _, _ in invoices:
        prefix, _, serial = str(number).rpartition("-")
        by_year[prefix].append(int(serial) if serial.isdigit() else -1)
    for prefix, serials in by_year.items():
        if sorted(serials) != list(range(1, len(serials) + 1)):
            a.add("invoice_numbers_not_gapless", f"{prefix}: {len(serials)} invoices")
    for pk in assignments:
        if assignment_refs[pk] != 1:
            a.add("assignment_not_claimed_once", f"asg_{pk}: {assignment_refs[pk]} claims")

    # Ledger effects per purchase and per assignment: exactly the entries their state implies.
    per_purchase: Counter[int] = Counter()
    per_assignment: dict[int, Counter[str]] = defaultdict(Counter)
    consume_of: dict[int, tuple[Any, ...]] = {}
    for entry in ledger:
        if entry[2] == "purchase":
            per_purchase[entry[9]] += 1
        if entry[8] is not None:
            per_assignment[entry[8]][entry[2]] += 1
            if entry[2] == "consume":
                consume_of[entry[8]] = entry
    for pk, row in purchases.items():
        want = 1 if row[2] == "paid" else 0
        if per_purchase[pk] != want:
            a.add("purchase_credited_wrong", f"pur_{pk} {row[2]}: {per_purchase[pk]} entries")
    for pk, (_, _, status, cost, charged, overage) in assignments.items():
        seen = per_assignment[pk]
        premium = 1 if cost > 0 else 0
        wanted = {
            "reserve": premium,
            "consume": premium if status in ("started", "completed") else 0,
            "release": premium if status == "cancelled" else 0,
        }
        for kind, n in wanted.items():
            if seen[kind] != n:
                a.add(f"{kind}_not_once", f"asg_{pk} {status}: {seen[kind]} {kind} entries")
        entry = consume_of.get(pk)
        if entry and (entry[4] != -cost or -entry[3] != charged or entry[5] != overage):
            a.add("consume_amount_wrong", f"asg_{pk}: entry {entry[3:6]} vs {cost},{charged}")

    # Per org: the ledger chains, the identity, and the balance rows.
    by_org: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for entry in ledger:
        by_org[entry[1]].append(entry)
    history: dict[int, set[tuple[int, int]]] = {}
    open_reserved: Counter[int] = Counter()
    for _, org_id, status, cost, _, _ in assignments.values():
        if status == "assigned":
            open_reserved[org_id] += cost
    for org_id, (credits, assigned) in balances.items():
        entries = by_org.get(org_id, [])
        seen_states = {(0, 0)}
        prev = (0, 0)
        breaks = 0
        sums: Counter[str] = Counter()
        for entry in entries:
            _, _, kind, d_credits, d_assigned, _, after_c, after_a, _, _, _ = entry
            if (prev[0] + d_credits, prev[1] + d_assigned) != (after_c, after_a):
                breaks += 1
            prev = (after_c, after_a)
            seen_states.add(prev)
            if kind == "purchase":
                sums["purchased"] += d_credits
            elif kind in ("adjustment", "grant") and d_credits > 0:
                sums["granted"] += d_credits
            elif kind in ("consume", "adjustment") and d_credits <= 0:
                sums["consumed"] -= d_credits
            elif kind == "refund":
                sums["refunded"] -= d_credits
            elif d_credits:
                a.add("unexpected_credit_entry", f"led_{entry[0]} {kind} {d_credits}")
        history[org_id] = seen_states
        if breaks:
            a.add("ledger_chain_broken", f"org_{org_id}: {breaks} entries do not follow on")
        identity = (
            credits + sums["consumed"] + sums["refunded"] - sums["purchased"] - sums["granted"]
        )
        if identity != 0:
            a.add(
                "identity_violated",
                f"org_{org_id}: credits {credits} + consumed {sums['consumed']} + refunded "
                f"{sums['refunded']} - purchased {sums['purchased']} - granted "
                f"{sums['granted']} = {identity}",
            )
        if assigned != open_reserved[org_id]:
            a.add(
                "assigned_mismatch",
                f"org_{org_id}: assigned {assigned}, open reservations {open_reserved[org_id]}",
            )
        a.stats[f"final:org_{org_id}"] = credits

    # Every balance the server answered: never negative, available = credits - assigned, and
    # a state the org's ledger actually passed through (a committed state, not a torn one).
    for read in journal.reads:
        if read.status is None:
            a.stats["reads_unanswered"] += 1
            continue
        body = read.body if isinstance(read.body, dict) else {}
        if read.status != 200:
            a.add("balance_read_refused", f"{read.org}: {read.status} {read.body}")
            continue
        credits, assigned = body.get("credits"), body.get("assigned")
        if not isinstance(credits, int) or not isinstance(assigned, int):
            a.add("balance_read_malformed", f"{read.org}: {body}")
            continue
        if credits < 0 or assigned < 0:
            a.add("balance_read_negative", f"{read.org}: {body}")
        if body.get("available") != credits - assigned:
            a.add("balance_read_inconsistent", f"{read.org}: {body}")
        if (credits, assigned) not in history.get(_org_pk(read.org), set()):
            a.add("balance_read_not_in_ledger", f"{read.org}: {credits},{assigned}")

    outside = outside_fault_windows(journal)
    for at, path, status, body in outside[:5]:
        a.add("server_error_outside_fault", f"at {at:.1f}s {path}: {status} {body}")
    if len(outside) > 5:
        a.by_kind["server_error_outside_fault"] += len(outside) - 5
    return a


# --- the report --------------------------------------------------------------------------


def format_report(report: dict[str, Any], title: str = "bank test with faults") -> str:
    cfg = report["config"]
    ops = report["operations"]
    un = report["unacknowledged"]
    retries = report["retries"]
    faults = report["faults"]
    anomalies = report["anomalies"]
    verify = report["verify_ledger"]
    restarts = [e["detail"] for e in faults["events"] if e["kind"] == "pg_restart"]
    examples = report["server_errors"]["examples"]
    lines = [
        f"== {title} (seed {report['seed']}) ==",
        f"setup: {cfg['orgs']} orgs x {cfg['employees']} employees; server: "
        f"{cfg['workers']} gunicorn workers x {cfg['server_threads']} threads on a private "
        f"PostgreSQL; {cfg['clients']} client threads for {cfg['duration']:.0f}s "
        f"(load phase incl. drain {report['load_seconds']:.1f}s)",
        f"operations: {ops['total']} ({ops['per_second']}/s): writes {ops['writes']}, "
        f"balance reads {ops['reads']}; "
        + ", ".join(f"{k} {v}" for k, v in ops["by_kind"].items()),
        f"answers: {report['acknowledged']} writes acknowledged (incl. {ops['setup_writes']} "
        f"setup), {report['replayed_answers']} of them replayed from the idempotency record; "
        f"{un['total']} unacknowledged ({un['abandoned']} abandoned on purpose, "
        f"{un['budget_exhausted']} out of retry budget): {un['applied']} applied, "
        f"{un['not_applied']} not applied",
        f"retries: {retries['total']} (writes: "
        + (", ".join(f"{k} {v}" for k, v in retries["writes"].items()) or "none")
        + f"; reads: {retries['reads']})",
        f"server errors: {report['server_errors']['total']} 5xx answers, "
        f"{report['server_errors']['outside_fault_windows']} outside the PostgreSQL restart "
        f"windows{'; e.g. ' + examples[0] if examples else ''}",
        f"http: {report['http']}",
        f"faults: {faults['worker_kills']} worker SIGKILLs, {faults['pg_restarts']} "
        f"PostgreSQL restarts ({'; '.join(restarts) or 'none'})",
        f"checked: {report['checked']}",
        f"verify-ledger: exit {verify['exit_code']}: {verify['output'].splitlines()[-1:] or ''}",
        f"anomalies: {anomalies['total']} {anomalies['by_kind'] or ''}",
    ]
    lines += [f"  - {example}" for example in anomalies["examples"][:20]]
    lines.append(f"timings: {report['timings']}")
    return "\n".join(lines)


def run_bank(config: Config, log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """Build, load, fault, check and tear down; returns the report."""
    started = time.monotonic()
    with BankRun(config, log) as bank:
        bank.setup()
        bank.load()
        report = bank.check()
    report["total_seconds"] = round(time.monotonic() - started, 1)
    return report


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """So that a SIGTERM to the CLI still stops the server and removes the cluster."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="the long form (4 min, 48 clients)")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--orgs", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--kill-interval", type=float, help="seconds between worker kills")
    parser.add_argument("--worker-kills", type=int, help="kills over the run (no interval)")
    parser.add_argument("--pg-restarts", type=int)
    parser.add_argument("--pg-restart-mode", choices=["fast", "immediate"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    config = Config.long() if args.long else Config()
    for name in (
        "duration",
        "clients",
        "orgs",
        "workers",
        "kill_interval",
        "worker_kills",
        "pg_restarts",
        "pg_restart_mode",
        "seed",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.worker_kills is not None and args.kill_interval is None:
        config.kill_interval = 0.0
    try:
        with _sigterm_as_exit():
            report = run_bank(config)
    except HarnessUnavailable as exc:
        print(f"bank test cannot run here: {exc}", file=sys.stderr)
        return 2
    print(format_report(report, "bank test with faults, long form" if args.long else "bank test"))
    load = ", ".join(f"{x:.1f}" for x in report["machine"]["load_average"])
    print(
        f"total: {report['total_seconds']}s on {report['machine']['cpus']} CPUs "
        f"(load average at the end: {load})"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    ok = report["anomalies"]["total"] == 0 and report["verify_ledger"]["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
