"""Webhooks (docs/api.md "Webhooks"): a real HTTP receiver on loopback, Standard Webhooks
signatures.

A ``Receiver`` (http.server in a thread on a free loopback port) records every request and
answers with scripted status codes. Deliveries are made by the outbox exactly as the worker
makes them (``learncredits.notify.delivery.run_once``); every body that arrives is checked
with the ``standardwebhooks`` package. Retry schedules are overridden to zeros with the
``settings`` fixture so that a retry is due on the next pass.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from learncredits import ids
from learncredits.credits.events import WEBHOOK_EVENT_TYPES
from learncredits.credits.models import Event
from learncredits.notify import delivery as delivery_module
from learncredits.notify.delivery import dispatch_events, run_once
from learncredits.notify.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import OrgHandle, ok

pytestmark = pytest.mark.django_db

API_EVENT_TYPES = {
    "purchase.paid",
    "assignment.assigned",
    "assignment.started",
    "assignment.completed",
    "assignment.cancelled",
    "balance.at_risk",
    "balance.recovered",
    "overage.incurred",
    "invoice.issued",
    "credit_note.issued",
}


# --- the receiver ---------------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1. ``script`` holds the statuses of the next answers
    (then ``default``). With ``hold_first``, the first request is kept waiting (its sender
    blocked mid-send) until ``release()``; it is recorded in ``held``, not in ``hits``."""

    default: int = 200
    script: list[int] = field(default_factory=list)
    hold_first: bool = False
    location: str | None = None  # sent with 3xx answers
    hits: list[Hit] = field(default_factory=list)
    held: list[Hit] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    hold = receiver.hold_first and not receiver.held
                    status = (
                        200
                        if hold
                        else (receiver.script.pop(0) if receiver.script else receiver.default)
                    )
                    hit = Hit(self.path, headers, body, status)
                    (receiver.held if hold else receiver.hits).append(hit)
                if hold:
                    receiver.arrived.set()
                    receiver.gate.wait(120)
                try:
                    self.send_response(status)
                    if 300 <= status < 400 and receiver.location:
                        self.send_header("Location", receiver.location)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the sender died while we held it
                    pass

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/learncredits"

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def types(self) -> list[str]:
        return [hit.json()["type"] for hit in self.hits]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def zero_backoff(settings: Any) -> None:
    settings.LEARNCREDITS_WEBHOOK_RETRY_SECONDS = [0] * 10
    settings.LEARNCREDITS_EMAIL_RETRY_SECONDS = [0] * 10


def create_webhook(org: OrgHandle, url: str, events: list[str] | None = None) -> dict[str, Any]:
    return ok(org.api.post(org.path("/webhooks"), {"url": url, "events": events or []}), 201)


def deliveries(org: OrgHandle, webhook_id: str) -> list[dict[str, Any]]:
    return ok(org.api.get(org.path(f"/webhooks/{webhook_id}/deliveries")))["data"]


def verify(secret: str, hit: Hit) -> Any:
    return Webhook(secret).verify(hit.body, hit.headers)


def drive_every_event_type(org: OrgHandle, make_content: Callable[..., str]) -> dict[str, str]:
    """Actions that between them cause each API event type at least once."""
    content = make_content(credit_cost=2)
    e1, e2, e3 = org.employee("W1"), org.employee("W2"), org.employee("W3")
    bought = org.buy(1)  # purchase.paid, invoice.issued (the receipt)
    [a1] = org.assign(content, [e1])["data"]  # assignment.assigned, balance.at_risk
    [a2] = org.assign(content, [e2])["data"]
    ok(org.act(a2["id"], "cancel"))  # assignment.cancelled
    ok(org.act(a1["id"], "start"))  # assignment.started, overage.incurred, balance.recovered
    ok(org.act(a1["id"], "complete"))  # assignment.completed
    refunded = org.buy(1)
    body = {"credits": 1, "reason": "unused"}  # credit_note.issued
    ok(org.operator.post(org.path(f"/purchases/{refunded['id']}/refund"), body), 201)
    org.assign(content, [e3])
    ok(org.operator.post("/billing/close-period", {"period": org.balance()["period"]}))
    return {"purchase": bought["id"], "a1": a1["id"], "a2": a2["id"], "content": content}


# --- signed deliveries ----------------------------------------------------------------------------


def test_signed_deliveries_of_every_event_type_verify_with_standardwebhooks(
    org: OrgHandle, make_content: Callable[..., str], receiver: Receiver
) -> None:
    assert set(WEBHOOK_EVENT_TYPES) == API_EVENT_TYPES
    hook = create_webhook(org, receiver.url)
    assert hook["events"] == []
    made = drive_every_event_type(org, make_content)
    # An internal event (email only) that must never reach a webhook.
    org_pk = ids.decode("org", org.id)
    Event.objects.create(org_id=org_pk, type="invoice.payment_failed", data={"number": "X"})

    run_once()
    assert set(receiver.types()) == API_EVENT_TYPES
    assert "invoice.payment_failed" not in receiver.types()
    # One delivery per webhook event, in the order they happened.
    expected = list(
        Event.objects.filter(org_id=org_pk, type__in=API_EVENT_TYPES)
        .order_by("pk")
        .values_list("pk", "type")
    )
    assert [(hit.webhook_id, hit.json()["type"]) for hit in receiver.hits] == [
        (f"msg_evt_{pk}", t) for pk, t in expected
    ]
    for hit in receiver.hits:
        assert hit.path == "/hooks/learncredits"
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["webhook-signature"].startswith("v1,")
        payload = verify(hook["secret"], hit)
        assert set(payload) == {"type", "timestamp", "data"}
        assert isinstance(payload["data"], dict)
        assert payload["timestamp"].startswith(str(org.balance()["period"][:4]))
    # The data says what happened.
    by_type: dict[str, Any] = {}
    for hit in receiver.hits:  # the first of each type
        by_type.setdefault(hit.json()["type"], hit.json()["data"])
    assert by_type["purchase.paid"]["id"] == made["purchase"]
    assert by_type["purchase.paid"]["quantity"] == 1
    assert by_type["purchase.paid"]["total_cents"] == 1000
    assigned = by_type["assignment.assigned"]
    assert assigned["content_id"] == made["content"]
    assert [a["id"] for a in assigned["assignments"]] == [made["a1"]]
    assert by_type["assignment.cancelled"]["id"] == made["a2"]
    assert by_type["assignment.started"]["id"] == made["a1"]
    assert by_type["assignment.completed"]["id"] == made["a1"]
    assert by_type["assignment.completed"]["status"] == "completed"
    assert by_type["balance.at_risk"]["available"] == -1
    assert by_type["balance.recovered"]["assigned"] == 0
    assert by_type["overage.incurred"]["overage_credits"] == 1
    assert by_type["overage.incurred"]["assignment_id"] == made["a1"]
    invoices = [h.json()["data"] for h in receiver.hits if h.json()["type"] == "invoice.issued"]
    assert [i["kind"] for i in invoices] == ["purchase", "purchase", "monthly"]
    assert by_type["credit_note.issued"]["total_cents"] < 0
    # A tampered body does not verify: the check above is a real one.
    tampered = Hit("/", receiver.hits[0].headers, receiver.hits[0].body + b" ", 200)
    with pytest.raises(WebhookVerificationError):
        verify(hook["secret"], tampered)
    with pytest.raises(WebhookVerificationError):
        verify(create_webhook(org, receiver.url)["secret"], receiver.hits[0])

    # Everything delivered once: nothing more on the next passes.
    count = len(receiver.hits)
    run_once()
    run_once()
    assert len(receiver.hits) == count
    log = deliveries(org, hook["id"])
    assert len(log) == count
    assert {d["status"] for d in log} == {"succeeded"}
    assert {d["attempts"] for d in log} == {1}
    assert {d["last_status_code"] for d in log} == {200}


def test_an_endpoint_gets_only_the_events_it_subscribed_to(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    only = Receiver()
    every = Receiver()
    try:
        subscribed = create_webhook(org, only.url, ["purchase.paid", "assignment.started"])
        assert subscribed["events"] == ["assignment.started", "purchase.paid"]
        create_webhook(org, every.url)
        drive_every_event_type(org, make_content)
        run_once()
        assert set(only.types()) == {"assignment.started", "purchase.paid"}
        assert set(every.types()) == API_EVENT_TYPES
        for hit in only.hits:
            verify(subscribed["secret"], hit)
    finally:
        only.close()
        every.close()


def test_another_orgs_events_never_reach_an_endpoint(
    org: OrgHandle, make_org: Callable[..., OrgHandle], receiver: Receiver
) -> None:
    create_webhook(org, receiver.url)
    make_org("Other").buy(3)
    run_once()
    assert receiver.hits == []
    org.buy(2)
    run_once()
    assert sorted(receiver.types()) == ["invoice.issued", "purchase.paid"]


# --- retries, disabling, deleting -----------------------------------------------------------------


def test_failing_receiver_gets_the_event_with_one_webhook_id_on_every_attempt(
    org: OrgHandle, receiver: Receiver, zero_backoff: None
) -> None:
    hook = create_webhook(org, receiver.url, ["purchase.paid"])
    receiver.script = [500, 500, 503]
    org.buy(7)

    run_once()
    [entry] = deliveries(org, hook["id"])
    assert (entry["event_type"], entry["status"]) == ("purchase.paid", "pending")
    assert (entry["attempts"], entry["last_status_code"]) == (1, 500)
    run_once()
    run_once()
    [entry] = deliveries(org, hook["id"])
    assert (entry["attempts"], entry["last_status_code"]) == (3, 503)
    run_once()  # the receiver is fine now
    [entry] = deliveries(org, hook["id"])
    assert (entry["status"], entry["attempts"], entry["last_status_code"]) == (
        "succeeded",
        4,
        200,
    )
    assert [hit.status for hit in receiver.hits] == [500, 500, 503, 200]
    assert len({hit.webhook_id for hit in receiver.hits}) == 1
    assert len({hit.body for hit in receiver.hits}) == 1  # the same message every time
    for hit in receiver.hits:  # every attempt is signed
        assert verify(hook["secret"], hit)["data"]["quantity"] == 7
    run_once()
    assert len(receiver.hits) == 4
    # The endpoint is healthy again: its failure count was reset.
    endpoint = WebhookEndpoint.objects.get(pk=ids.decode("webhook", hook["id"]))
    assert endpoint.active and endpoint.consecutive_failures == 0


def test_retries_wait_for_the_backoff(org: OrgHandle, receiver: Receiver) -> None:
    """With the default schedule (5 s, +-20%), a failed delivery is not retried at once."""
    hook = create_webhook(org, receiver.url, ["purchase.paid"])
    receiver.script = [500]
    org.buy(1)
    dispatch_events()
    t0 = timezone.now()
    run_once(now=t0)
    run_once(now=t0 + timedelta(seconds=1))
    assert len(receiver.hits) == 1
    row = WebhookDelivery.objects.get(endpoint_id=ids.decode("webhook", hook["id"]))
    assert row.status == "pending"
    assert t0 + timedelta(seconds=4) <= row.next_attempt_at <= t0 + timedelta(seconds=6)
    run_once(now=t0 + timedelta(seconds=7))  # now due
    assert [hit.status for hit in receiver.hits] == [500, 200]
    assert len({hit.webhook_id for hit in receiver.hits}) == 1


def test_endpoint_disabled_after_repeated_failure_and_its_owner_told(
    org: OrgHandle, receiver: Receiver, zero_backoff: None, settings: Any
) -> None:
    settings.LEARNCREDITS_WEBHOOK_DISABLE_AFTER = 3
    ok(
        org.operator.post(
            org.path("/users"),
            {
                "email": "owner@acme.example",
                "name": "Owner",
                "role": "admin",
                "password": "x7-Tq!pl0-zz",
            },
        ),
        201,
    )
    receiver.default = 500
    hook = create_webhook(org, receiver.url, ["purchase.paid"])
    org.buy(1)
    for _ in range(3):
        run_once()
    assert len(receiver.hits) == 3
    [listed] = ok(org.api.get(org.path("/webhooks")))["data"]
    assert listed["active"] is False
    org_pk = ids.decode("org", org.id)
    [disabled] = Event.objects.filter(org_id=org_pk, type="webhook.endpoint_disabled")
    assert disabled.data == {"url": receiver.url, "consecutive_failures": 3}

    mail.outbox.clear()
    run_once()  # sends the email; makes no further request to the switched-off endpoint
    run_once()
    assert len(receiver.hits) == 3
    [email] = [m for m in mail.outbox if "webhook" in m.subject.lower()]
    assert email.subject == "A webhook endpoint was switched off"
    assert sorted(email.to) == ["billing@example.com", "owner@acme.example"]
    assert receiver.url in email.body and "3 times" in email.body
    [html] = [body for body, mime in email.alternatives if mime == "text/html"]
    assert receiver.url in html

    # Later events are not even queued for it.
    org.buy(1)
    run_once()
    assert len(receiver.hits) == 3
    assert len(deliveries(org, hook["id"])) == 1


def test_delivery_log_of_a_disabled_endpoint_reports_the_attempts_really_made(
    org: OrgHandle, receiver: Receiver, zero_backoff: None, settings: Any
) -> None:
    """The log keeps what happened: 3 requests, each answered 500. Giving up the delivery
    afterwards (the endpoint is off) must not invent attempts or erase the status code."""
    settings.LEARNCREDITS_WEBHOOK_DISABLE_AFTER = 3
    receiver.default = 500
    hook = create_webhook(org, receiver.url, ["purchase.paid"])
    org.buy(1)
    for _ in range(5):
        run_once()
    assert len(receiver.hits) == 3
    [entry] = deliveries(org, hook["id"])
    assert entry["last_status_code"] == 500, entry
    assert entry["attempts"] == 3, entry


def test_delete_stops_deliveries(org: OrgHandle, receiver: Receiver) -> None:
    hook = create_webhook(org, receiver.url)
    org.buy(1)  # queued for the endpoint, not yet sent
    dispatch_events()
    response = org.api.request("DELETE", org.path(f"/webhooks/{hook['id']}"))
    assert response.status == 204 and response.raw == b""
    run_once()
    org.buy(1)
    run_once()
    assert receiver.hits == []
    assert ok(org.api.get(org.path("/webhooks")))["data"] == []
    again = org.api.request("DELETE", org.path(f"/webhooks/{hook['id']}"))
    assert (again.status, again.code) == (404, "not_found")
    gone = org.api.get(org.path(f"/webhooks/{hook['id']}/deliveries"))
    assert (gone.status, gone.code) == (404, "not_found")


def test_delivery_refused_at_send_time_when_private_urls_are_no_longer_allowed(
    org: OrgHandle, receiver: Receiver, settings: Any
) -> None:
    hook = create_webhook(org, receiver.url)
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
    org.buy(1)
    run_once()
    assert receiver.hits == []
    rows = WebhookDelivery.objects.filter(endpoint_id=ids.decode("webhook", hook["id"]))
    assert rows.count() == 2
    assert all("non-public" in row.last_error for row in rows)
    assert {row.status for row in rows} == {"pending"}


def test_a_redirect_does_not_carry_a_delivery_to_a_private_address(
    org: OrgHandle, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The private-address refusal must hold for where a delivery really goes. The endpoint
    here stands for a public host (its own URL is let through the check); it answers 302 to
    an internal address (a loopback receiver standing for, say, 169.254.169.254). Following
    that redirect would let anyone probe internal services and read the status code back
    from the delivery log."""
    internal = Receiver()
    public = Receiver(default=302, location=internal.url)
    try:
        hook = create_webhook(org, public.url, ["purchase.paid"])
        settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
        original = delivery_module.check_url

        def check(url: str) -> None:
            if url != public.url:  # everything but the stand-in public host is checked
                original(url)

        monkeypatch.setattr(delivery_module, "check_url", check)
        with pytest.raises(delivery_module.UnsafeUrl):
            check(internal.url)  # the internal address is refused by the check itself
        org.buy(1)
        run_once()
        assert len(public.hits) == 1  # the delivery reached the endpoint
        assert internal.hits == [], "followed a redirect to a private address"
        [entry] = deliveries(org, hook["id"])
        assert entry["status"] != "succeeded"
    finally:
        internal.close()
        public.close()


# --- endpoint management --------------------------------------------------------------------------


def test_secret_is_whsec_and_shown_only_at_creation(org: OrgHandle, receiver: Receiver) -> None:
    created = create_webhook(org, receiver.url, ["invoice.issued"])
    assert set(created) == {"id", "url", "events", "secret"}
    assert created["id"].startswith("whk_")
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert create_webhook(org, receiver.url)["secret"] != secret

    listing = org.api.get(org.path("/webhooks"))
    listed = ok(listing)["data"]
    assert {h["id"] for h in listed} >= {created["id"]}
    assert all("secret" not in h for h in listed)
    assert secret not in listing.raw.decode()
    deliveries_page = org.api.get(org.path(f"/webhooks/{created['id']}/deliveries"))
    assert secret not in deliveries_page.raw.decode()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/hook",
        "http://localhost:8000/hook",
        "http://0.0.0.0/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://127.1/hook",
        "ftp://93.184.215.14/hook",
        "not a url at all",
    ],
)
def test_private_loopback_and_link_local_urls_are_refused_in_production(
    org: OrgHandle, settings: Any, url: str
) -> None:
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
    response = org.api.post(org.path("/webhooks"), {"url": url, "events": []})
    assert (response.status, response.code) == (422, "validation_error"), response.body
    assert WebhookEndpoint.objects.count() == 0


def test_a_public_address_is_accepted_in_production(org: OrgHandle, settings: Any) -> None:
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
    created = create_webhook(org, "https://93.184.215.14/hooks")
    assert created["url"] == "https://93.184.215.14/hooks"


def test_unknown_event_types_are_refused(org: OrgHandle, receiver: Receiver) -> None:
    for events in (["purchase.paid", "purchase.refunded"], ["invoice.payment_failed"], ["*"]):
        response = org.api.post(org.path("/webhooks"), {"url": receiver.url, "events": events})
        assert (response.status, response.code) == (422, "validation_error"), events
    assert WebhookEndpoint.objects.count() == 0


def test_another_orgs_webhook_is_not_found(
    org: OrgHandle, make_org: Callable[..., OrgHandle], receiver: Receiver
) -> None:
    other = make_org("Other")
    theirs = create_webhook(other, receiver.url)
    for response in (
        org.api.request("DELETE", org.path(f"/webhooks/{theirs['id']}")),
        org.api.get(org.path(f"/webhooks/{theirs['id']}/deliveries")),
        org.api.request("DELETE", other.path(f"/webhooks/{theirs['id']}")),
        org.api.get(other.path("/webhooks")),
        org.api.request("DELETE", org.path("/webhooks/whk_999999")),
        org.api.request("DELETE", org.path("/webhooks/nonsense")),
    ):
        assert (response.status, response.code) == (404, "not_found"), response.body
    # Still there for its owner.
    assert [h["id"] for h in ok(other.api.get(other.path("/webhooks")))["data"]] == [theirs["id"]]
    # The operator can manage any org's endpoints.
    assert ok(org.operator.get(other.path("/webhooks")))["data"][0]["id"] == theirs["id"]
