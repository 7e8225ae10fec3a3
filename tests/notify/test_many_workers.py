"""Several ``learncredits worker`` processes on one database: every message goes out once per
attempt, and the month-end close issues every invoice once.

- Outbox: three workers drain a burst of 1,000 events (1,000 emails over a real SMTP server,
  1,000 webhooks to a local receiver). The receiver holds one webhook request mid-burst and
  the worker that sent it is SIGKILLed while it waits: the rest of that worker's claimed
  batch is stranded under its lease. The two others deliver everything else once; when the
  lease has ended, the stranded rows are delivered once too. Each email arrives once (by its
  Message-ID), each webhook once (by its ``webhook-id``), plus the one request the killed
  worker had in flight: at-least-once means exactly that one repeat.
- Close: two workers ticking every half second and two ``close-period`` commands started
  together close the same month: one monthly invoice per org and period, numbers gapless.

PostgreSQL only (real concurrent connections and ``SKIP LOCKED``): the workers use the test
database, committed to for real (transactional tests).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from learncredits import ids
from learncredits.billing.models import Invoice, InvoiceSequence, PeriodClose
from learncredits.notify.models import EmailMessage, Event, WebhookDelivery
from tests.conftest import OrgHandle, console_script, ok
from tests.credits.test_outbox import SmtpSink, database_url, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc"),
]

EVENTS = 1000
ORGS = 10
HOLD_AT = 300  # the webhook request the receiver holds (its sender is then killed)


class CountingReceiver:
    """A webhook receiver counting requests by ``webhook-id``. The ``hold_at``-th request is
    kept waiting (not counted) until ``release()``, and the client port it came from is
    kept, so the test can tell which worker process sent it."""

    def __init__(self, hold_at: int) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.received = 0
        self.held_id: str | None = None
        self.held_port: int | None = None
        self.arrived = threading.Event()
        self.gate = threading.Event()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                webhook_id = self.headers["webhook-id"]
                with lock:
                    receiver.received += 1
                    hold = receiver.received == hold_at
                    if hold:
                        receiver.held_id, receiver.held_port = webhook_id, self.client_address[1]
                    else:
                        receiver.counts[webhook_id] += 1
                if hold:
                    receiver.arrived.set()
                    receiver.gate.wait(120)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the sender died while we held it
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def owner_of_local_port(port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the TCP socket whose local port is ``port`` (/proc/net/tcp
    gives the socket's inode, /proc/<pid>/fd the inodes a process holds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else ():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    return None


class Workers:
    """``learncredits worker`` processes on the test database, logging to files."""

    def __init__(self, tmp_path: Path, **extra_env: str) -> None:
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE": "1",
            "DJANGO_SETTINGS_MODULE": "learncredits.settings",
            **extra_env,
        }
        if connection.settings_dict.get("PASSWORD"):
            self.env["PGPASSWORD"] = str(connection.settings_dict["PASSWORD"])
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, tick: float = 0) -> subprocess.Popen[bytes]:
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    *(console_script(), "worker", "--tick", str(tick)),
                    *("--interval", "0.2", "--outbox-interval", "0.2"),
                ],
                env=self.env,
                cwd=self.tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def run(self, *args: str) -> subprocess.Popen[bytes]:
        """Start another ``learncredits`` command with the workers' environment."""
        return subprocess.Popen(
            [console_script(), *args],
            env=self.env,
            cwd=self.tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text()[-2000:]}" for log in self.tmp_path.glob("*.log")
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


@pytest.fixture
def workers(tmp_path: Path, smtp: SmtpSink) -> Iterator[Workers]:
    running = Workers(tmp_path, EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


def org_pk(org: OrgHandle) -> int:
    value = ids.decode("org", org.id)
    assert value is not None
    return value


def _settled(counts: Callable[[], tuple[int, ...]], seconds: float) -> Callable[[], bool]:
    """A condition true once ``counts()`` has not changed for ``seconds``."""
    last: dict[str, Any] = {"value": None, "since": time.monotonic()}

    def check() -> bool:
        value = counts()
        if value != last["value"]:
            last.update(value=value, since=time.monotonic())
            return False
        return time.monotonic() - last["since"] >= seconds

    return check


def test_three_workers_deliver_a_burst_once_with_one_killed_mid_batch(
    workers: Workers, smtp: SmtpSink, make_org: Callable[..., OrgHandle]
) -> None:
    receiver = CountingReceiver(hold_at=HOLD_AT)
    try:
        orgs = [
            make_org(f"Burst {i}", billing_email=f"billing{i}@burst.example") for i in range(ORGS)
        ]
        for org in orgs:
            ok(org.api.post(org.path("/webhooks"), {"url": receiver.url, "events": []}), 201)
        Event.objects.bulk_create(
            Event(
                org_id=org_pk(orgs[n % ORGS]),
                type="invoice.issued",
                data={"number": f"INV-2099-{n:06d}", "kind": "monthly", "total_cents": 100 + n},
            )
            for n in range(EVENTS)
        )
        processes = [workers.start(f"worker{i}") for i in range(3)]

        assert receiver.arrived.wait(180), workers.logs()
        assert receiver.held_port is not None
        victim = owner_of_local_port(receiver.held_port, [p.pid for p in processes])
        assert victim is not None, "no worker holds the held request's connection"
        os.kill(victim, signal.SIGKILL)
        next(p for p in processes if p.pid == victim).wait(30)
        receiver.release()

        # The two others deliver everything but what the dead worker had leased, then idle.
        def progress() -> tuple[int, ...]:
            return (
                EmailMessage.objects.filter(status="succeeded").count(),
                WebhookDelivery.objects.filter(status="succeeded").count(),
            )

        wait_for(
            lambda: (
                WebhookDelivery.objects.count() == EVENTS and EmailMessage.objects.count() == EVENTS
            ),
            "every event dispatched",
            180,
        )
        wait_for(_settled(progress, 3.0), "the surviving workers to finish", 300)
        now = timezone.now()
        stranded = WebhookDelivery.objects.filter(status="pending", claimed_until__gt=now)
        # The held request's row and the rest of its batch: leased to the dead worker.
        assert stranded.count() >= 1
        assert (
            not WebhookDelivery.objects.filter(status="pending")
            .exclude(claimed_until__gt=now)
            .exists()
        )
        assert (
            not EmailMessage.objects.filter(status="pending")
            .exclude(claimed_until__gt=now)
            .exists()
        )

        # Its lease ends (moved into the past rather than waited for); the survivors take over.
        EmailMessage.objects.filter(status="pending").update(
            claimed_until=now - timedelta(seconds=1)
        )
        stranded.update(claimed_until=now - timedelta(seconds=1))
        wait_for(
            lambda: progress() == (EVENTS, EVENTS),
            "the stranded rows to be delivered",
            120,
        )
        workers.stop()

        mails = collections.Counter(m.message_id for m in smtp.received)
        expected_mails = {
            f"<email-{pk}@learncredits>" for pk in EmailMessage.objects.values_list("pk", flat=True)
        }
        assert set(mails) == expected_mails and set(mails.values()) == {1}
        expected_hooks = {f"msg_evt_{pk}" for pk in Event.objects.values_list("pk", flat=True)}
        assert set(receiver.counts) == expected_hooks
        assert set(receiver.counts.values()) == {1}
        # At least once: the request the killed worker had in flight came again, same id.
        assert receiver.held_id in expected_hooks
        assert {(r.status, r.attempts) for r in WebhookDelivery.objects.all()} == {("succeeded", 1)}
        assert {(r.status, r.attempts) for r in EmailMessage.objects.all()} == {("succeeded", 1)}
    finally:
        receiver.close()


def _previous_month(now: datetime) -> tuple[str, datetime]:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    mid_previous = (first - timedelta(days=1)).replace(day=10, hour=12)
    return mid_previous.strftime("%Y-%m"), mid_previous


def test_two_workers_and_two_close_commands_issue_each_monthly_invoice_once(
    workers: Workers, make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    period, moment = _previous_month(datetime.now(UTC))
    with time_machine.travel(moment, tick=False):
        content = make_content(2, "Course")
        orgs = [make_org(f"Close {i}") for i in range(12)]
        for index, org in enumerate(orgs):
            for n in range(index % 3 + 1):
                employee = org.employee(f"Learner {n}")
                assignment = org.assign(content, [employee])["data"][0]
                ok(org.act(assignment["id"], "start"))
    year = datetime.now(UTC).year  # numbers carry the year of issue
    first = (
        InvoiceSequence.objects.filter(year=year).values_list("last_number", flat=True).first() or 0
    ) + 1

    ticking = [workers.start(f"ticker{i}", tick=0.5) for i in range(2)]
    closes = [workers.run("close-period", "--period", period) for _ in range(2)]
    for close in closes:
        out, _ = close.communicate(timeout=240)
        assert close.returncode == 0, out.decode()
    wait_for(
        lambda: PeriodClose.objects.filter(period=period).count() >= len(orgs),
        "the workers' automatic close",
        240,
    )
    assert all(p.poll() is None for p in ticking), workers.logs()
    workers.stop()

    monthly = Invoice.objects.filter(kind="monthly", period=period)
    assert sorted(monthly.values_list("org_id", flat=True)) == sorted(org_pk(o) for o in orgs)
    assert sorted(i.lines.count() for i in monthly) == sorted(i % 3 + 1 for i in range(12))
    numbers = sorted(
        int(n.rsplit("-", 1)[1])
        for n in Invoice.objects.filter(number__startswith=f"INV-{year}-").values_list(
            "number", flat=True
        )
    )
    assert numbers == list(range(first, first + len(numbers)))
    assert len(numbers) == len(orgs)
    assert PeriodClose.objects.filter(period=period).count() == len(orgs)
