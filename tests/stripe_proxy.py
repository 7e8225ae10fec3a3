"""An HTTP proxy in front of localstripe that can hold back the answer to a confirmation.

The service under test is pointed at the proxy (``STRIPE_API_BASE``); the proxy forwards
every request to localstripe as it is. After ``arm()``, the next
``POST /v1/payment_intents/{id}/confirm`` is forwarded, localstripe's answer is read, and
then the answer is held back (up to ``hold_seconds``, or until ``release()``): the money is
taken at localstripe, and the process that asked has not heard yet. That is the window in
which a test kills that process.

It runs in a thread of the test on a free port of 127.0.0.1, one connection per request
(HTTP/1.0 answers): nothing is kept between requests but the counts below.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CONFIRM = re.compile(r"^/v1/payment_intents/([^/?]+)/confirm(?:\?.*)?$")
# Hop-by-hop headers and the length, which the proxy sets itself.
NOT_FORWARDED = {
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
}


class HoldingProxy:
    """The proxy's state: what to hold, what was held, what was confirmed."""

    def __init__(self, upstream: str, hold_seconds: float) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream_host: str = parts.hostname
        self.upstream_port: int = parts.port
        self.hold_seconds = hold_seconds
        # Intent ids of every confirmation forwarded, and of those whose answer was held.
        self.confirmed: list[str] = []
        self.held: list[str] = []
        self._lock = threading.Lock()
        self._armed = 0
        self._holding = threading.Event()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stripe-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def arm(self) -> None:
        """Hold the answer to the next confirmation."""
        with self._lock:
            self._armed += 1
            self._holding.clear()
            self._release.clear()

    def wait_until_holding(self, timeout: float) -> str:
        """The id of the intent whose confirmation (done at localstripe) is being held."""
        assert self._holding.wait(timeout), (
            f"no confirmation reached the proxy within {timeout}s (confirmed: {self.confirmed})"
        )
        with self._lock:
            return self.held[-1]

    def release(self) -> None:
        """Let a held answer go now (to whoever is still there to read it)."""
        self._release.set()

    def _after_confirm(self, intent_id: str) -> None:
        with self._lock:
            self.confirmed.append(intent_id)
            if not self._armed:
                return
            self._armed -= 1
            self.held.append(intent_id)
        self._holding.set()
        self._release.wait(self.hold_seconds)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler_for(proxy: HoldingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED}
            upstream = http.client.HTTPConnection(
                proxy.upstream_host, proxy.upstream_port, timeout=30
            )
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                payload = answer.read()
                status, reason, answer_headers = answer.status, answer.reason, answer.getheaders()
            except OSError as exc:
                status, reason, answer_headers = 502, "Bad Gateway", []
                payload = f"proxy: localstripe did not answer: {exc}".encode()
            finally:
                upstream.close()
            confirm = CONFIRM.match(self.path) if self.command == "POST" else None
            if confirm and status == 200:
                proxy._after_confirm(confirm.group(1))
            try:
                self.send_response(status, reason)
                for name, value in answer_headers:
                    if name.lower() not in NOT_FORWARDED:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
            except OSError:
                pass  # the caller died while the answer was held: nobody to tell

        do_GET = do_POST = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def holding_proxy(upstream: str, hold_seconds: float = 8.0) -> Iterator[HoldingProxy]:
    """A running proxy to ``upstream`` (localstripe's API base), stopped afterwards."""
    proxy = HoldingProxy(upstream, hold_seconds)
    proxy.start()  # listening since it was made: no wait
    try:
        yield proxy
    finally:
        proxy.stop()
