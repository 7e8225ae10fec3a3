"""Email and the transactional outbox (docs/product.md section 9, docs/integrations.md).

Email goes through a REAL SMTP server: aiosmtpd's ``Controller`` on 127.0.0.1 and a free
port, with Django's SMTP backend pointed at it through the ``settings`` fixture. Actions go
through the HTTP API; the worker's outbox pass is ``learncredits.notify.delivery.run_once``.

Crash safety is shown twice: in process (claim the rows with the worker's own ``_claim`` and
then "die" without sending, let the lease run out, run again) and, on PostgreSQL, with real
processes: a subprocess claims emails and exits hard, a real ``learncredits worker`` is
SIGKILLed while it is in the middle of posting a webhook, and a second worker delivers
everything exactly once.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.db import connection, transaction
from django.utils import timezone

from learncredits import ids
from learncredits.billing.collection import collect_invoice
from learncredits.credits import actions
from learncredits.credits.models import Alert, Balance, Event
from learncredits.notify import delivery
from learncredits.notify.delivery import LEASE, dispatch_events, run_once
from learncredits.notify.models import EmailMessage, WebhookDelivery
from learncredits.tenancy.models import Organization
from tests.conftest import ON_POSTGRES, OrgHandle, free_port, ok
from tests.notify.test_webhooks import Receiver

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
BASE_URL = "https://credits.example.com"
BILLING_LINK = BASE_URL + "/settings/billing"


# --- a real SMTP server on loopback ---------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: MimeMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None and part.get_content_type() == "text/plain"
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None and part.get_content_type() == "text/html"
        return str(part.get_content())


@dataclass
class SmtpSink:
    """An SMTP server (aiosmtpd) that keeps every message it accepts; stop and start it
    again on the same port to play an outage."""

    port: int = field(default_factory=free_port)
    received: list[Mail] = field(default_factory=list)
    controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, MimeMessage)
        self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(settings: Any) -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = sink.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 10
    settings.LEARNCREDITS_BASE_URL = BASE_URL
    yield sink
    sink.stop()


class Outbox:
    """Run the worker's outbox pass and hand back the emails that arrived since last time."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.seen = 0

    def drain(self) -> list[Mail]:
        run_once()
        new = self.sink.received[self.seen :]
        self.seen = len(self.sink.received)
        return new


def org_pk(org: OrgHandle) -> int:
    pk = ids.decode("org", org.id)
    assert pk is not None
    return pk


def add_admin(org: OrgHandle, email_address: str) -> None:
    body = {"email": email_address, "name": "Ada Admin", "role": "admin", "password": "Lc-test-9q!"}
    ok(org.operator.post(org.path("/users"), body), 201)


def assert_common(mail: Mail, recipients: list[str]) -> None:
    """Every email: to the billing email and the admins, both parts, the billing link."""
    assert sorted(mail.rcpt_tos) == sorted(recipients)
    assert sorted(a.strip() for a in str(mail.message["To"]).split(",")) == sorted(recipients)
    assert mail.message.get_content_type() == "multipart/alternative"
    assert BILLING_LINK in mail.text
    assert f'href="{BILLING_LINK}"' in mail.html
    assert "Settings &gt; Billing" in mail.html or "Settings > Billing" in mail.html
    assert re.fullmatch(r"<email-\d+@learncredits>", mail.message_id)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


# --- which emails, to whom, saying what -----------------------------------------------------------


def test_exactly_the_expected_emails_arrive_over_smtp(
    smtp: SmtpSink, make_org: Callable[..., OrgHandle], make_content: Callable[..., str]
) -> None:
    org = make_org("Acme Training", billing_email="billing@acme.example")
    add_admin(org, "admin@acme.example")
    learner = {
        "email": "lee@acme.example",
        "name": "Lee",
        "role": "learner",
        "password": "Lc-test-9q!",
    }
    ok(org.operator.post(org.path("/users"), learner), 201)  # learners get no billing email
    to = ["billing@acme.example", "admin@acme.example"]
    outbox = Outbox(smtp)
    assert outbox.drain() == []

    content = make_content(credit_cost=3)
    emp = [org.employee(f"E{i}") for i in range(9)]

    # A purchase: one receipt.
    org.buy(5)
    [receipt] = outbox.drain()
    assert_common(receipt, to)
    assert re.fullmatch(r"Your learncredits receipt INV-\d{4}-\d{6}", receipt.subject)
    assert receipt.mail_from == "billing@learncredits.localhost"
    for body in (receipt.text, squash(receipt.html)):
        assert "$50.00" in body and "Receipt INV-" in body

    # Not at risk yet: no email.
    [a0] = org.assign(content, [emp[0]])["data"]
    assert outbox.drain() == []

    # Becomes at risk (credits 5, assigned 6, available -1): one email with the numbers and
    # what a top-up back above the threshold costs (2 credits at $10.00).
    [a1] = org.assign(content, [emp[1]])["data"]
    [at_risk] = outbox.drain()
    assert_common(at_risk, to)
    assert at_risk.subject == "Your learncredits balance is running low"
    assert "Credits:   5" in at_risk.text
    assert "Assigned:  6" in at_risk.text
    assert "Available: -1" in at_risk.text
    assert "Buying 2 credits now costs $20.00 ($10.00 each)" in at_risk.text
    html = squash(at_risk.html)
    for words in ("Credits 5", "Assigned 6", "Available -1", "Buying 2 credits now costs $20.00"):
        assert words in html, html

    # Deeper at risk, and a release that does not clear it: no more email.
    [a2] = org.assign(content, [emp[2]])["data"]
    ok(org.act(a2["id"], "cancel"))
    assert outbox.drain() == []

    # A purchase clears it (credits 15, assigned 6): the receipt only.
    org.buy(10)
    [receipt2] = outbox.drain()
    assert "receipt" in receipt2.subject and "$100.00" in receipt2.text

    # At risk again (credits 15, assigned 15): one email again.
    started = [org.assign(content, [e])["data"][0] for e in emp[3:6]]
    [again] = outbox.drain()
    assert again.subject == "Your learncredits balance is running low"
    assert "Credits:   15" in again.text and "Available: 0" in again.text
    assert "Buying 1 credit now costs $10.00" in again.text  # the words agree with the number

    # Start them all and one more: the 6th start runs out, the first overage of the
    # period. (Starting took assigned to 0, so the org is no longer at risk.)
    [a6] = org.assign(content, [emp[6]])["data"]
    assert outbox.drain() == []
    for a in [a0, a1, *started, a6]:
        ok(org.act(a["id"], "start"))
    [overage] = outbox.drain()
    assert_common(overage, to)
    assert overage.subject == "Assignments are now billed at the retail rate"
    assert "3 credits will be billed at the retail rate ($30.00)" in overage.text
    assert "$30.00" in squash(overage.html)
    period = org.balance()["period"]
    assert f"monthly invoice for {period}" in overage.text

    # At risk again (credits 0, assigned 3) and a second overage: the at-risk email only.
    [a7] = org.assign(content, [emp[7]])["data"]
    ok(org.act(a7["id"], "start"))
    [third_at_risk] = outbox.drain()
    assert third_at_risk.subject == "Your learncredits balance is running low"

    # The monthly invoice (6 overage credits at $10.00): one email.
    ok(org.operator.post("/billing/close-period", {"period": period}))
    [invoice_mail] = outbox.drain()
    assert_common(invoice_mail, to)
    number = re.fullmatch(r"Your learncredits invoice (INV-\d{4}-\d{6})", invoice_mail.subject)
    assert number is not None
    assert "$60.00" in invoice_mail.text and f"Period: {period}" in invoice_mail.text
    assert "We will charge your payment method on file." in invoice_mail.text

    # Two declined collections of it: one email each, to the new billing email.
    ok(org.operator.patch(org.path(), {"billing_email": "billing+decline@acme.example"}))
    invoice = ok(org.api.get(org.path("/invoices")))["data"][0]
    assert invoice["kind"] == "monthly" and invoice["number"] == number.group(1)
    invoice_pk = ids.decode("invoice", invoice["id"])
    assert invoice_pk is not None
    assert collect_invoice(invoice_pk) != "paid"
    [declined] = outbox.drain()
    assert_common(declined, ["billing+decline@acme.example", "admin@acme.example"])
    assert declined.subject == f"Payment declined for invoice {number.group(1)}"
    assert "$60.00" in declined.text and "card declined" in declined.text
    assert "We will try again" in declined.text
    collect_invoice(invoice_pk)
    [declined2] = outbox.drain()
    assert declined2.subject == declined.subject
    assert declined2.message_id != declined.message_id

    # Nothing else, ever; and every email is recorded as delivered once.
    assert outbox.drain() == []
    assert outbox.drain() == []
    rows = list(EmailMessage.objects.filter(org_id=org_pk(org)).order_by("pk"))
    assert len(rows) == len(smtp.received) == 9
    assert [m.message_id for m in smtp.received] == [f"<email-{r.pk}@learncredits>" for r in rows]
    for row in rows:
        assert (row.status, row.attempts, row.last_error) == ("succeeded", 1, "")
        assert row.delivered_at is not None and row.event_id is not None
    assert [r.kind for r in rows] == [
        "invoice.issued",
        "balance.at_risk",
        "invoice.issued",
        "balance.at_risk",
        "overage.incurred",
        "balance.at_risk",
        "invoice.issued",
        "invoice.payment_failed",
        "invoice.payment_failed",
    ]


def test_emails_wait_while_the_smtp_server_is_down_and_go_out_once_when_it_is_back(
    smtp: SmtpSink,
    settings: Any,
    make_org: Callable[..., OrgHandle],
    make_content: Callable[..., str],
) -> None:
    settings.LEARNCREDITS_EMAIL_RETRY_SECONDS = [0] * 9
    org = make_org("Outage", billing_email="billing@outage.example")
    add_admin(org, "admin@outage.example")
    org.buy(2)  # a receipt
    org.assign(make_content(credit_cost=3), [org.employee("E")])  # at risk

    smtp.stop()
    for attempt in (1, 2, 3):
        result = run_once()
        assert result["emails_sent"] == 0
        rows = list(EmailMessage.objects.order_by("pk"))
        assert len(rows) == 2
        for row in rows:
            assert row.status == "pending" and row.attempts == attempt
            assert row.last_error and row.delivered_at is None
    assert smtp.received == []

    smtp.start()  # a new server on the same port
    assert run_once()["emails_sent"] == 2
    run_once()
    run_once()
    assert len(smtp.received) == 2
    assert sorted(m.subject.split(" INV-")[0] for m in smtp.received) == [
        "Your learncredits balance is running low",
        "Your learncredits receipt",
    ]
    for mail in smtp.received:
        assert_common(mail, ["billing@outage.example", "admin@outage.example"])
    rows = list(EmailMessage.objects.order_by("pk"))
    assert [m.message_id for m in smtp.received] == [f"<email-{r.pk}@learncredits>" for r in rows]
    for row in rows:
        assert (row.status, row.attempts, row.last_error) == ("succeeded", 4, "")
        assert row.delivered_at is not None
    # Exactly one email per event.
    assert EmailMessage.objects.values("event_id").distinct().count() == 2


def test_a_failed_email_waits_for_its_backoff(smtp: SmtpSink, org: OrgHandle) -> None:
    """With the default schedule (10 s, +-20%), the next pass does not retry at once."""
    org.buy(1)
    dispatch_events()
    smtp.stop()
    t0 = timezone.now()
    run_once(now=t0)
    row = EmailMessage.objects.get()
    assert row.attempts == 1
    assert t0 + timedelta(seconds=8) <= row.next_attempt_at <= t0 + timedelta(seconds=12)
    smtp.start()
    run_once(now=t0 + timedelta(seconds=1))
    assert smtp.received == []
    run_once(now=t0 + timedelta(seconds=13))
    assert len(smtp.received) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("succeeded", 2)


# --- the outbox: written with the change, or not at all -------------------------------------------


def outbox_counts() -> tuple[int, int, int, int]:
    return (
        Event.objects.count(),
        Alert.objects.count(),
        EmailMessage.objects.count(),
        WebhookDelivery.objects.count(),
    )


class Rollback(Exception):
    pass


@pytest.mark.parametrize("roll_back", [True, False])
def test_an_action_that_rolls_back_leaves_nothing_in_the_outbox(
    smtp: SmtpSink, org: OrgHandle, make_content: Callable[..., str], roll_back: bool
) -> None:
    receiver = Receiver()
    try:
        ok(org.api.post(org.path("/webhooks"), {"url": receiver.url, "events": []}), 201)
        content_pk = ids.decode("content", make_content(credit_cost=2))
        employee_pk = ids.decode("employee", org.employee("E"))
        assert content_pk is not None and employee_pk is not None
        the_org = Organization.objects.get(pk=org_pk(org))
        before = outbox_counts()
        assert before == (0, 0, 0, 0)
        try:
            with transaction.atomic():
                actions.adjust_credits(the_org, 1, reason="goodwill", actor="test")
                result = actions.assign_bulk(
                    the_org, content_id=content_pk, employee_ids=[employee_pk], actor="test"
                )  # at risk
                actions.start_assignment(the_org, result.created[0].pk, actor="test")  # overage
                if roll_back:
                    raise Rollback
        except Rollback:
            pass
        run_once()
        run_once()
        if roll_back:
            assert outbox_counts() == (0, 0, 0, 0)
            assert smtp.received == [] and receiver.hits == []
            assert Balance.objects.get(org_id=org_pk(org)).credits == 0
        else:  # the control: the same actions, committed, do reach the outbox
            events, alerts_, emails, webhooks = outbox_counts()
            assert events >= 4 and alerts_ == 2 and emails == 2 and webhooks == events
            assert len(smtp.received) == 2 and len(receiver.hits) == events
    finally:
        receiver.close()


def test_a_refused_bulk_assign_leaves_nothing_in_the_outbox(
    smtp: SmtpSink, org: OrgHandle, make_content: Callable[..., str]
) -> None:
    content = make_content(credit_cost=5)
    good = [org.employee(f"G{i}") for i in range(3)]
    inactive = org.employee("Gone")
    ok(org.api.post(org.path(f"/employees/{inactive}/deactivate")))
    before = outbox_counts()
    # Would reserve 15 credits and make the org at risk, but one id is unknown: all or none.
    missing = org.api.post(
        org.path("/assignments"), {"content_id": content, "employee_ids": [*good, "emp_999999"]}
    )
    assert (missing.status, missing.code) == (404, "not_found")
    refused = org.api.post(
        org.path("/assignments"), {"content_id": content, "employee_ids": [*good, inactive]}
    )
    assert (refused.status, refused.code) == (409, "employee_inactive")
    assert outbox_counts() == before
    run_once()
    assert smtp.received == []
    assert org.balance()["at_risk"] is False


def test_events_are_dispatched_once_even_when_dispatch_runs_again(
    smtp: SmtpSink, org: OrgHandle, make_content: Callable[..., str]
) -> None:
    receiver = Receiver()
    try:
        ok(org.api.post(org.path("/webhooks"), {"url": receiver.url, "events": []}), 201)
        org.buy(1)
        org.assign(make_content(credit_cost=2), [org.employee("E")])
        events = Event.objects.count()
        assert dispatch_events() == events
        assert dispatch_events() == 0
        emails, webhooks = EmailMessage.objects.count(), WebhookDelivery.objects.count()
        assert (emails, webhooks) == (2, events)
        # A dispatcher that crashed before marking its events would see them again: the
        # unique (event, kind) and (endpoint, event) constraints stop a second copy.
        Event.objects.update(dispatched_at=None)
        assert dispatch_events() == events
        assert (EmailMessage.objects.count(), WebhookDelivery.objects.count()) == (2, events)
        run_once()
        run_once()
        assert len(smtp.received) == 2
        assert len(receiver.hits) == events
        assert len({hit.webhook_id for hit in receiver.hits}) == events
    finally:
        receiver.close()


def test_a_worker_that_dies_after_claiming_loses_nothing(
    smtp: SmtpSink, org: OrgHandle, settings: Any
) -> None:
    """The worker claims rows, then is killed before it sends (we call the worker's own
    ``_claim`` and stop there). Nobody sends during the lease; after it, one run delivers
    each row exactly once."""
    receiver = Receiver()
    try:
        ok(org.api.post(org.path("/webhooks"), {"url": receiver.url, "events": []}), 201)
        org.buy(3)  # a receipt email, and two webhooks
        dispatch_events()
        now = timezone.now()
        claimed_mail = delivery._claim(EmailMessage.objects.all(), now, 50)
        claimed_hooks = delivery._claim(WebhookDelivery.objects.all(), now, 50)
        assert (len(claimed_mail), len(claimed_hooks)) == (1, 2)
        # ... and the worker dies here.

        assert run_once() == {"dispatched": 0, "emails_sent": 0, "webhooks_delivered": 0}
        assert smtp.received == [] and receiver.hits == []
        row = EmailMessage.objects.get()
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.claimed_until is not None and row.claimed_until > timezone.now()

        # Email: a pass after the lease has run out (time travel through ``now``).
        later = timezone.now() + LEASE + timedelta(seconds=1)
        assert delivery.send_due_emails(now=later) == 1
        # Webhooks: their lease ends (moved into the past), then a normal pass.
        WebhookDelivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
        assert run_once()["webhooks_delivered"] == 2
        for _ in range(2):
            run_once(now=later + LEASE * 3)
        assert len(smtp.received) == 1
        assert smtp.received[0].message_id == f"<email-{row.pk}@learncredits>"
        assert sorted(receiver.types()) == ["invoice.issued", "purchase.paid"]
        row.refresh_from_db()
        assert (row.status, row.attempts, row.claimed_until) == ("succeeded", 1, None)
        assert {(w.status, w.attempts) for w in WebhookDelivery.objects.all()} == {("succeeded", 1)}
    finally:
        receiver.close()


def test_a_batch_that_would_outlast_its_lease_hands_the_rest_back_unsent(
    org: OrgHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending is sequential: a batch of slow answers could outlast the lease, and another
    worker would claim the rows not yet sent and send them too. The worker stops one
    LEASE_MARGIN before the lease ends and hands the rest back, unsent and uncounted."""
    clock = {"now": 0.0}
    monkeypatch.setattr(delivery, "time", SimpleNamespace(monotonic=lambda: clock["now"]))
    # Never connected to: the sends below go through ``slow_post``.
    url = "http://127.0.0.1:9/hooks"
    ok(org.api.post(org.path("/webhooks"), {"url": url, "events": []}), 201)
    for _ in range(3):
        org.buy(1)  # purchase.paid and invoice.issued each time: six webhooks
    dispatch_events()
    sent: list[str] = []

    def slow_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        sent.append(headers["webhook-id"])
        clock["now"] += 60.0  # each answer just inside a minute
        return 200

    # Lease 5 min, margin 1 min: four sends fit before the cut, two are handed back.
    assert delivery.deliver_due_webhooks(post=slow_post) == 4
    rows = WebhookDelivery.objects.order_by("pk")
    handed_back = [r for r in rows if r.status == "pending"]
    assert [(r.attempts, r.claimed_until) for r in handed_back] == [(0, None)] * 2
    assert delivery.deliver_due_webhooks(post=slow_post) == 2
    assert len(sent) == len(set(sent)) == 6
    assert {(r.status, r.attempts) for r in rows.all()} == {("succeeded", 1)}


# --- real processes (PostgreSQL) ------------------------------------------------------------------

CLAIM_AND_DIE = """
import os, django
django.setup()
from django.utils import timezone
from learncredits.notify import delivery
from learncredits.notify.models import EmailMessage
delivery.dispatch_events()
rows = delivery._claim(EmailMessage.objects.all(), timezone.now(), 50)
print("claimed", len(rows), flush=True)
os._exit(1)  # killed between claim and send
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_killed_worker_processes_lose_nothing(
    smtp: SmtpSink, make_org: Callable[..., OrgHandle], tmp_path: Path
) -> None:
    assert ON_POSTGRES
    receiver = Receiver(hold_first=True)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}",
        "LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE": "1",
        "LEARNCREDITS_BASE_URL": BASE_URL,
        "DJANGO_SETTINGS_MODULE": "learncredits.settings",
        "PYTHONPATH": str(REPO / "src"),
    }
    if connection.settings_dict.get("PASSWORD"):
        env["PGPASSWORD"] = str(connection.settings_dict["PASSWORD"])
    learncredits = str(Path(sys.executable).parent / "learncredits")
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [
                learncredits,
                "worker",
                "--tick",
                "0",
                "--interval",
                "0.2",
                "--outbox-interval",
                "0.2",
            ],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        workers.append(proc)
        return proc

    try:
        org = make_org("Crash", billing_email="billing@crash.example")
        ok(
            org.api.post(org.path("/webhooks"), {"url": receiver.url, "events": ["purchase.paid"]}),
            201,
        )
        org.buy(4)  # one receipt email, one purchase.paid webhook

        # 1. A process dispatches, claims the email and exits hard before sending.
        done = subprocess.run(
            [sys.executable, "-c", CLAIM_AND_DIE],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stderr.decode()
        assert b"claimed 1" in done.stdout
        mail_row = EmailMessage.objects.get()
        assert mail_row.status == "pending" and mail_row.claimed_until is not None

        # 2. A real worker claims the webhook and is SIGKILLed while posting it.
        first = start_worker("worker1")
        assert receiver.arrived.wait(90), (tmp_path / "worker1.log").read_text()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        receiver.release()
        hook_row = WebhookDelivery.objects.get()
        assert (hook_row.status, hook_row.attempts) == ("pending", 0)
        assert hook_row.claimed_until is not None
        assert smtp.received == []  # the email was leased to the dead process

        # 3. The leases run out; a new worker delivers each exactly once.
        past = timezone.now() - timedelta(seconds=1)
        EmailMessage.objects.update(claimed_until=past)
        WebhookDelivery.objects.update(claimed_until=past)
        second = start_worker("worker2")
        wait_for(
            lambda: (
                not EmailMessage.objects.filter(status="pending").exists()
                and not WebhookDelivery.objects.filter(status="pending").exists()
            ),
            "the second worker to deliver",
        )
        second.send_signal(signal.SIGTERM)
        second.wait(30)

        assert len(smtp.received) == 1
        assert smtp.received[0].message_id == f"<email-{mail_row.pk}@learncredits>"
        assert_common(smtp.received[0], ["billing@crash.example"])
        assert [hit.json()["type"] for hit in receiver.hits] == ["purchase.paid"]
        # At least once: the interrupted attempt and the delivery carry one webhook-id.
        assert receiver.held[0].headers["webhook-id"] == receiver.hits[0].webhook_id
        mail_row.refresh_from_db()
        hook_row.refresh_from_db()
        assert (mail_row.status, mail_row.attempts) == ("succeeded", 1)
        assert (hook_row.status, hook_row.attempts, hook_row.last_status_code) == (
            "succeeded",
            1,
            200,
        )
    finally:
        for proc in workers:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
        receiver.close()
