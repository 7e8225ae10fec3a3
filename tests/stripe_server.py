"""localstripe, a Stripe API emulator, as pytest fixtures: tests run the real ``stripe``
library against a live server that keeps state, so they can count what was charged.

Use it from a test module with ``pytest_plugins = ["tests.stripe_server"]`` (importing the
fixture functions by name would shadow them in the test's parameters).

``localstripe_server`` (one per session) starts localstripe on a free port of 127.0.0.1 and
stops it afterwards; ``stripe_settings`` points the Django settings (``STRIPE_API_BASE``,
``STRIPE_SECRET_KEY``, ...) at it for one test. When localstripe cannot start, the tests that
use it are skipped with the reason, unless ``LEARNCREDITS_REQUIRE_STRIPE=1`` (then they fail).

localstripe is started through a few lines of our own rather than its ``localstripe``
command, for two reasons: the command binds every interface (``::``), and its store is
pickled to one fixed file (``/tmp/localstripe.pickle``) on every write, which runs in
parallel (both database halves, other checkouts) would share. Here it listens on a socket
we bound to 127.0.0.1 and handed over, so there is no race for the port either, and keeps
its state in memory only.

What localstripe does and does not do, as far as these tests are concerned:

- It ignores ``Idempotency-Key``: a repeated create is a second object. That is what lets
  the tests see a duplicated charge instead of having it hidden.
- Test cards: ``pm_card_visa`` (4242, charges succeed), ``pm_card_chargeCustomerFail``
  (4000000000000341: attaches, every charge is declined ``card_declined``),
  ``pm_card_visa_chargeDeclined`` (4000000000000002: refused on attach), 3-D Secure cards
  (4000002500003155 and others, created with ``card[number]``): confirming answers
  ``requires_action`` with ``use_stripe_sdk`` (no redirect URL); ``authenticate`` plays the
  customer's answer (localstripe's own ``/_authenticate`` endpoint).
- PaymentIntents cannot be listed by customer (it refuses the filter): ``intents_of`` lists
  them all and filters here. Charges can (``charges_of``).
- It refuses parameters it does not implement, among them a PaymentIntent's
  ``description`` and a confirmation's ``return_url``; ``STRIPE_LOCALSTRIPE = True`` makes
  the provider leave those out.
- Webhooks: ``register_webhook`` makes it POST events (signed like Stripe's, with the
  secret given) to a URL, about a second after they happen. It sends no ``charge.refunded``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

REQUIRE_ENV = "LEARNCREDITS_REQUIRE_STRIPE"
WEBHOOK_ID = "learncredits-tests"  # one registration, replaced by each test that makes one
START_WAIT = 20.0  # seconds for localstripe to answer before giving up

# Runs in the child: localstripe's application on the socket handed over as argv[1], with
# its store kept in memory (no pickle file).
_BOOT = """
import socket, sys
from aiohttp import web
import localstripe.resources as resources
from localstripe import server
resources.Store.dump_to_disk = lambda self: None
sock = socket.socket(fileno=int(sys.argv[1]))
web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)
"""


def _unavailable(reason: str) -> None:
    message = f"localstripe unavailable: {reason}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(message)


@dataclass
class LocalStripe:
    """A running localstripe and what a test needs to talk to it."""

    api_base: str
    js_url: str
    secret_key: str
    publishable_key: str
    webhook_secret: str
    _clients: dict[str, stripe.StripeClient] = field(default_factory=dict, repr=False)

    def client(self) -> stripe.StripeClient:
        """A client of the test's own, to look at localstripe's state directly."""
        if "main" not in self._clients:
            self._clients["main"] = stripe.StripeClient(
                self.secret_key,
                base_addresses={"api": self.api_base},
                max_network_retries=0,
                http_client=stripe.RequestsClient(timeout=10),
            )
        return self._clients["main"]

    def _post(self, path: str, body: dict[str, Any], *, auth: bool = True) -> Any:
        request = urllib.request.Request(
            self.api_base + path,
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.secret_key}"} if auth else {}),
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def intents_of(self, customer_id: str) -> list[Any]:
        """Every PaymentIntent of the customer, newest last ("count charges, never trust
        them"). localstripe cannot filter by customer, so all are listed and filtered."""
        listed = self.client().v1.payment_intents.list({"limit": 100})
        return [pi for pi in listed.auto_paging_iter() if pi.customer == customer_id]

    def charges_of(self, customer_id: str) -> list[Any]:
        listed = self.client().v1.charges.list({"customer": customer_id, "limit": 100})
        return list(listed.auto_paging_iter())

    def card(self, number: str) -> str:
        """A new card PaymentMethod with this test number (what Stripe.js would make)."""
        method = self.client().v1.payment_methods.create(
            {
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        return str(method.id)

    def authenticate(self, intent_id: str, *, success: bool) -> None:
        """The customer's answer to 3-D Secure (what Stripe.js does in the browser)."""
        secret = self.client().v1.payment_intents.retrieve(intent_id).client_secret
        self._post(
            f"/v1/payment_intents/{intent_id}/_authenticate",
            {"client_secret": secret, "success": success, "key": self.publishable_key},
            auth=False,
        )

    def register_webhook(self, url: str, events: list[str] | None = None) -> None:
        """Send events to ``url``, signed with ``webhook_secret`` (replaces the previous
        registration made here)."""
        body: dict[str, Any] = {"url": url, "secret": self.webhook_secret}
        if events is not None:
            body["events"] = events
        self._post(f"/_config/webhooks/{WEBHOOK_ID}", body, auth=False)


def _answers(api_base: str, secret_key: str) -> bool:
    request = urllib.request.Request(
        f"{api_base}/v1/customers?limit=1", headers={"Authorization": f"Bearer {secret_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[LocalStripe]:
    if importlib.util.find_spec("localstripe") is None:
        _unavailable("the localstripe package is not installed (pip install -e '.[dev]')")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(listener.fileno())],
            pass_fds=[listener.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        listener.close()  # the child holds its own copy
        server = LocalStripe(
            api_base=f"http://127.0.0.1:{port}",
            js_url=f"http://127.0.0.1:{port}/js.stripe.com/v3/",
            secret_key="sk_test_" + secrets.token_hex(12),
            publishable_key="pk_test_" + secrets.token_hex(12),
            webhook_secret="whsec_" + secrets.token_hex(16),
        )
        try:
            deadline = time.monotonic() + START_WAIT
            while not _answers(server.api_base, server.secret_key):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace").strip()[-2000:]
                    _unavailable(
                        f"it did not answer on {server.api_base} "
                        f"(exit code {process.poll()}): {output or 'no output'}"
                    )
                time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def stripe_settings(settings: Any, localstripe_server: LocalStripe) -> LocalStripe:
    """The Django settings of the Stripe provider, pointed at localstripe for one test."""
    settings.STRIPE_API_BASE = localstripe_server.api_base
    settings.STRIPE_SECRET_KEY = localstripe_server.secret_key
    settings.STRIPE_PUBLISHABLE_KEY = localstripe_server.publishable_key
    settings.STRIPE_WEBHOOK_SECRET = localstripe_server.webhook_secret
    settings.STRIPE_JS_URL = localstripe_server.js_url
    settings.STRIPE_LOCALSTRIPE = True
    return localstripe_server


@dataclass
class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that keeps every POST it gets (body, signature)."""

    url: str
    received: list[tuple[bytes, str]]
    _arrived: threading.Condition

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> tuple[bytes, str] | None:
        """The first delivery matching ``predicate(body, signature)``, waiting for it up to
        ``timeout`` seconds (localstripe sends about a second after the event)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for delivery in self.received:
                    if predicate(*delivery):
                        return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._arrived.wait(remaining)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    received: list[tuple[bytes, str]] = []
    arrived = threading.Condition()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with arrived:
                received.append((body, self.headers.get("Stripe-Signature", "")))
                arrived.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebhookReceiver(
            url=f"http://127.0.0.1:{httpd.server_address[1]}/stripe/webhook",
            received=received,
            _arrived=arrived,
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
