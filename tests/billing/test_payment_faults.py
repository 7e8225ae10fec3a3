"""A purchase is charged once when the process handling it dies after the charge.

Real processes, real kills: ``learncredits serve`` (gunicorn, one web worker of two
threads) and ``learncredits worker`` run on a SQLite file or on the PostgreSQL test
database, with ``LEARNCREDITS_PAYMENT_PROVIDER=stripe`` pointed at a proxy in front of
localstripe (``tests/stripe_proxy.py``). The proxy forwards a confirmation to localstripe,
gets its answer, and holds it back: the money is taken, and the process that asked has not
heard. In that window the test SIGKILLs the process (the gunicorn web worker serving the
purchase, or the background worker running an auto top-up). Then the purchase is carried
on (the client's retry with the same Idempotency-Key; the next worker's billing tick) and
the charges are counted on localstripe's side, directly (not through the proxy): exactly
one succeeded PaymentIntent for the purchase, the credits once, and ``learncredits
verify-ledger`` clean.

The control shows that the counting sees a duplicate charge: the same kill, retried
without the Idempotency-Key (a new purchase), leaves two succeeded intents.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connection

from tests.conftest import HOST, ON_POSTGRES, console_script, free_port, migrate, service_env
from tests.stripe_proxy import HoldingProxy, holding_proxy

if TYPE_CHECKING:
    from tests.stripe_server import LocalStripe

pytest_plugins = ["tests.stripe_server"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc"),
    # The processes commit for real; on PostgreSQL they share the test database, which is
    # emptied afterwards.
    pytest.mark.django_db(transaction=True),
]

VISA = "pm_card_visa"  # localstripe's 4242: charges succeed
HOLD_SECONDS = 8.0  # at most, per held confirmation; the test releases it once it has killed
WAIT = 60.0  # deadline of every wait


def _wait_for(what: str, check: Callable[[], bool], seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.1)


def _children(pid: int) -> set[int]:
    """Live (not zombie) child processes of ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class Org:
    id: str
    key: str
    email: str


@dataclass
class Service:
    """``learncredits serve`` (no background worker of its own) and the ``learncredits
    worker`` processes a test starts, sharing one database and environment."""

    process: subprocess.Popen[bytes]
    port: int
    operator_token: str
    env: dict[str, str]
    directory: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def call(
        self, token: str, method: str, path: str, body: Any = None, *, key: str | None = None
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        conn = http.client.HTTPConnection(HOST, self.port, timeout=WAIT)
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, "/api/v1" + path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return Answer(response.status, json.loads(raw) if raw else None)

    def ok(self, token: str, method: str, path: str, body: Any = None, *, status: int = 200) -> Any:
        answer = self.call(token, method, path, body)
        assert answer.status == status, (method, path, answer)
        return answer.body

    def answers(self) -> bool:
        assert self.process.poll() is None, self.log()
        try:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def web_workers(self) -> set[int]:
        """The gunicorn web worker processes (serve runs no background worker here)."""
        return _children(self.process.pid)

    def new_org(self, name: str) -> Org:
        email = f"billing.{uuid.uuid4().hex[:12]}@faults.example"
        org = self.ok(
            self.operator_token,
            "POST",
            "/orgs",
            {"name": name, "billing_email": email},
            status=201,
        )
        key = self.ok(
            self.operator_token, "POST", f"/orgs/{org['id']}/api-keys", {"name": "t"}, status=201
        )["key"]
        card = self.ok(key, "PUT", f"/orgs/{org['id']}/payment-method", {"payment_method": VISA})
        assert card["last4"] == "4242"
        return Org(org["id"], key, email)

    def purchases(self, org: Org) -> list[dict[str, Any]]:
        return list(self.ok(org.key, "GET", f"/orgs/{org.id}/purchases?limit=100")["data"])

    def credits(self, org: Org) -> int:
        return int(self.ok(org.key, "GET", f"/orgs/{org.id}/balance")["credits"])

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """``learncredits worker`` with a billing tick every second."""
        with (self.directory / f"{name}.log").open("wb") as sink:
            worker = subprocess.Popen(
                [console_script(), "worker", "--tick", "1", "--interval", "0.2"],
                cwd=self.directory,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(worker)
        return worker

    def log(self, name: str = "server") -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for process in [*self.workers, self.process]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.process]:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)

    def verify_ledger(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [console_script(), "verify-ledger"],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )


def _database_url(directory: Path) -> str:
    if not ON_POSTGRES:
        return f"sqlite:///{directory / 'faults.sqlite3'}"
    # The test database itself: migrated, and emptied by the transactional test afterwards.
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def proxy(localstripe_server: LocalStripe) -> Iterator[HoldingProxy]:
    with holding_proxy(localstripe_server.api_base, HOLD_SECONDS) as running:
        yield running


@pytest.fixture
def service(
    tmp_path: Path, flushable: None, localstripe_server: LocalStripe, proxy: HoldingProxy
) -> Iterator[Service]:
    token = secrets.token_urlsafe(24)
    env = service_env(
        _database_url(tmp_path),
        LEARNCREDITS_OPERATOR_TOKEN=token,
        LEARNCREDITS_RATE_LIMIT="",
        LEARNCREDITS_PAYMENT_PROVIDER="stripe",
        STRIPE_API_BASE=proxy.url,
        STRIPE_SECRET_KEY=localstripe_server.secret_key,
        STRIPE_PUBLISHABLE_KEY=localstripe_server.publishable_key,
        STRIPE_WEBHOOK_SECRET=localstripe_server.webhook_secret,
        STRIPE_JS_URL=localstripe_server.js_url,
        STRIPE_LOCALSTRIPE="true",
    )
    if not ON_POSTGRES:
        migrate(env, tmp_path)
    port = free_port()
    with (tmp_path / "server.log").open("wb") as sink:
        process = subprocess.Popen(
            [
                *(console_script(), "serve", "--host", HOST, "--port", str(port)),
                *("--workers", "1", "--threads", "2", "--no-worker"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Service(process, port, token, env, tmp_path)
    try:
        _wait_for("the server to answer", running.answers, 120)
        _wait_for("one web worker", lambda: len(running.web_workers()) == 1)
        yield running
    finally:
        running.stop()
        if process.poll() is None:  # pragma: no cover - last resort
            os.killpg(process.pid, signal.SIGKILL)


# --- counting at localstripe ---------------------------------------------------------------------


def customer_of(stripe: LocalStripe, org: Org) -> str:
    """The org's Stripe customer, found at localstripe by its (unique) billing email."""
    listed = stripe.client().v1.customers.list({"limit": 100}).auto_paging_iter()
    [customer] = [c.id for c in listed if c.email == org.email]
    return str(customer)


def succeeded_intents(stripe: LocalStripe, org: Org) -> list[Any]:
    """Every succeeded PaymentIntent of the org's customer: the money taken."""
    return [pi for pi in stripe.intents_of(customer_of(stripe, org)) if pi.status == "succeeded"]


def charge_problems(stripe: LocalStripe, service: Service, org: Org) -> list[str]:
    """How localstripe's money and our purchases disagree: every succeeded intent must be
    the intent of a paid purchase (named in its metadata, of its total), and every paid
    purchase must have exactly one."""
    purchases = {p["id"]: p for p in service.purchases(org)}
    problems = []
    by_purchase: dict[str, list[str]] = {}
    for intent in succeeded_intents(stripe, org):
        reference = intent.metadata.to_dict().get("reference", "")
        by_purchase.setdefault(reference, []).append(intent.id)
        purchase = purchases.get(reference)
        if purchase is None:
            problems.append(f"{intent.id} took money for no purchase ({reference!r})")
        elif purchase["status"] != "paid":
            problems.append(f"{intent.id} took money for {reference}, which is not paid")
        elif (purchase["provider_reference"], purchase["total_cents"]) != (
            intent.id,
            intent.amount,
        ):
            problems.append(f"{intent.id} ({intent.amount}) is not the intent of {purchase}")
    for purchase in purchases.values():
        charged = by_purchase.get(purchase["id"], [])
        if purchase["status"] == "paid" and len(charged) != 1:
            problems.append(f"paid purchase {purchase['id']} has {len(charged)} charges")
    return problems


# --- the kill ------------------------------------------------------------------------------------


def buy_and_kill_the_web_worker(
    service: Service, proxy: HoldingProxy, stripe: LocalStripe, org: Org, key: str
) -> tuple[str, dict[str, Any]]:
    """POST a purchase of 10 credits, and SIGKILL the web worker serving it while its
    confirmation is held. Returns the intent confirmed and the purchase left behind (pending)."""
    proxy.arm()
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(
            service.call, org.key, "POST", f"/orgs/{org.id}/purchases", {"quantity": 10}, key=key
        )
        intent_id = proxy.wait_until_holding(WAIT)
        (victim,) = service.web_workers()
        os.kill(victim, signal.SIGKILL)
        proxy.release()
        failure = request.exception(WAIT)
    assert isinstance(failure, (http.client.HTTPException, OSError)), (
        f"the client was answered: {request.result() if failure is None else failure!r}"
    )

    def replaced() -> bool:
        workers = service.web_workers()
        return bool(workers) and victim not in workers and service.answers()

    _wait_for("gunicorn to replace the killed web worker", replaced)
    assert f"(pid:{victim}) was sent SIGKILL" in service.log(), service.log()

    # The window the kill was meant for: charged at localstripe, pending here, no credits.
    [left] = service.purchases(org)
    assert (left["status"], left["provider_reference"]) == ("pending", intent_id)
    assert [pi.id for pi in succeeded_intents(stripe, org)] == [intent_id]
    assert service.credits(org) == 0
    return intent_id, left


def test_a_web_worker_killed_after_the_charge_charges_once(
    service: Service, proxy: HoldingProxy, localstripe_server: LocalStripe
) -> None:
    org = service.new_org("Web kill")
    intent_id, left = buy_and_kill_the_web_worker(
        service, proxy, localstripe_server, org, "fault-web"
    )

    retried = service.call(
        org.key, "POST", f"/orgs/{org.id}/purchases", {"quantity": 10}, key="fault-web"
    )
    assert retried.status == 201, retried
    assert (retried.body["id"], retried.body["status"]) == (left["id"], "paid")
    assert retried.body["provider_reference"] == intent_id
    again = service.call(
        org.key, "POST", f"/orgs/{org.id}/purchases", {"quantity": 10}, key="fault-web"
    )
    assert (again.status, again.body["id"], again.body["status"]) == (201, left["id"], "paid")

    [intent] = succeeded_intents(localstripe_server, org)
    assert intent.id == intent_id
    assert intent.metadata.to_dict()["reference"] == left["id"]
    assert intent.amount == left["total_cents"]
    assert charge_problems(localstripe_server, service, org) == []
    assert [p["id"] for p in service.purchases(org)] == [left["id"]]
    assert service.credits(org) == 10
    assert proxy.confirmed == [intent_id]  # the retry did not confirm again

    service.stop()
    verified = service.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger consistent" in verified.stdout


def test_control_a_retry_without_the_key_is_counted_as_a_second_charge(
    service: Service, proxy: HoldingProxy, localstripe_server: LocalStripe
) -> None:
    """The counting above can fail: a retry that opens a new purchase (no Idempotency-Key)
    charges again, and localstripe shows it."""
    org = service.new_org("Control")
    intent_id, left = buy_and_kill_the_web_worker(
        service, proxy, localstripe_server, org, "fault-control"
    )

    retried = service.call(org.key, "POST", f"/orgs/{org.id}/purchases", {"quantity": 10})
    assert retried.status == 201, retried
    assert retried.body["id"] != left["id"] and retried.body["status"] == "paid"

    charged = succeeded_intents(localstripe_server, org)
    assert sorted(pi.id for pi in charged) == sorted(
        [intent_id, retried.body["provider_reference"]]
    )
    assert len(charged) == 2  # twice the money for one wish of 10 credits
    problems = charge_problems(localstripe_server, service, org)
    assert problems == [f"{intent_id} took money for {left['id']}, which is not paid"]
    assert service.credits(org) == 10


def test_a_background_worker_killed_during_an_auto_top_up_charges_once(
    service: Service, proxy: HoldingProxy, localstripe_server: LocalStripe
) -> None:
    org = service.new_org("Worker kill")
    operator = service.operator_token
    grant = {"credits": 10, "reason": "welcome credits"}
    service.ok(operator, "POST", f"/orgs/{org.id}/adjustments", grant, status=201)
    rule = {
        "enabled": True,
        "below_available": 5,
        "quantity": 20,
        "max_purchases_per_month": 3,
        "max_credits_per_month": 1000,
    }
    service.ok(org.key, "PUT", f"/orgs/{org.id}/auto-top-up", rule)

    proxy.arm()
    first = service.start_worker("worker-1")
    spend = {"credits": -8, "reason": "spent"}  # available 2: below 5, a top-up is queued
    service.ok(operator, "POST", f"/orgs/{org.id}/adjustments", spend, status=201)
    intent_id = proxy.wait_until_holding(WAIT)
    first.send_signal(signal.SIGKILL)
    first.wait(WAIT)
    proxy.release()
    assert first.returncode == -signal.SIGKILL

    [left] = service.purchases(org)
    assert (left["quantity"], left["status"]) == (20, "pending")
    assert left["provider_reference"] == intent_id
    assert [pi.id for pi in succeeded_intents(localstripe_server, org)] == [intent_id]
    assert service.credits(org) == 2

    service.start_worker("worker-2")  # its billing tick carries the pending top-up on
    _wait_for(
        "the next worker to carry the auto top-up on",
        lambda: service.purchases(org)[0]["status"] != "pending",
    )
    [paid] = service.purchases(org)
    assert (paid["id"], paid["status"], paid["provider_reference"]) == (
        left["id"],
        "paid",
        intent_id,
    )
    # Let more ticks run: a paid top-up is not bought again (available is 22 now).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert len(service.purchases(org)) == 1
        time.sleep(0.5)

    [intent] = succeeded_intents(localstripe_server, org)
    assert intent.id == intent_id
    assert intent.metadata.to_dict()["reference"] == left["id"]
    assert intent.amount == left["total_cents"]
    assert charge_problems(localstripe_server, service, org) == []
    assert service.credits(org) == 22
    assert proxy.confirmed == [intent_id]

    service.stop()
    verified = service.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger consistent" in verified.stdout
