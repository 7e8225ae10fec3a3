"""Defects an outside probe found, each with the test that would have found its kind:
a start without a secret key, a close of a month that has not begun, inline styles
refused by the page's own Content-Security-Policy."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client

from learncredits import ids
from learncredits.billing.models import Invoice
from learncredits.domain.errors import ValidationFailed
from learncredits.domain.periods import ensure_begun
from learncredits.tenancy import services as tenancy
from tests.conftest import HOST, OrgHandle, console_script, ok
from tests.db.test_sqlite_concurrency import server  # noqa: F401 (a fixture)

# --- SECRET_KEY: no public default outside DEBUG ---------------------------------------------


def _run_check(tmp_path: Path, **env_changes: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SECRET_KEY", "SECRET_KEY_FILE", "DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'check.sqlite3'}", **env_changes)
    return subprocess.run(
        [console_script(), "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_without_a_secret_key_the_service_refuses_to_start_and_says_why(tmp_path):
    refused = _run_check(tmp_path)
    assert refused.returncode != 0
    assert "SECRET_KEY is not set" in refused.stderr
    assert "Traceback" not in refused.stderr  # a message for the operator, not a crash


def test_an_empty_secret_key_is_refused_too(tmp_path):
    refused = _run_check(tmp_path, SECRET_KEY="")
    assert refused.returncode != 0
    assert "SECRET_KEY is not set" in refused.stderr


def test_debug_starts_with_the_development_key(tmp_path):
    started = _run_check(tmp_path, DEBUG="true")
    assert started.returncode == 0, started.stderr


def test_a_key_from_a_file_is_read(tmp_path):
    key_file = tmp_path / "secret-key"
    key_file.write_text("k" * 64 + "\n")
    started = _run_check(tmp_path, SECRET_KEY_FILE=str(key_file))
    assert started.returncode == 0, started.stderr


def test_make_run_generates_a_private_key_file():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = re.search(r"^run:.*?(?=^\S)", makefile, re.M | re.S)
    assert recipe is not None
    assert "$(KEY_FILE)" in recipe.group(0).split("\n")[0]  # a prerequisite of run
    assert recipe.group(0).count("SECRET_KEY_FILE") == 0  # passed through $(RUN_ENV)
    assert recipe.group(0).count("$(RUN_ENV)") == 3


# --- close-period: a month that has not begun is an error ---------------------------------------


@pytest.mark.parametrize(
    ("now", "period", "allowed"),
    [
        (datetime(2026, 12, 2, 12, tzinfo=UTC), "2026-11", True),
        (datetime(2026, 12, 2, 12, tzinfo=UTC), "2026-12", True),  # in progress: allowed
        (datetime(2026, 12, 2, 12, tzinfo=UTC), "2027-01", False),
        (datetime(2026, 12, 2, 12, tzinfo=UTC), "2062-12", False),
        # 11:00 UTC on 31 December is already 1 January somewhere (UTC+14).
        (datetime(2026, 12, 31, 11, tzinfo=UTC), "2027-01", True),
        (datetime(2026, 12, 31, 9, tzinfo=UTC), "2027-01", False),
    ],
)
def test_a_period_must_have_begun_somewhere(now, period, allowed):
    if allowed:
        ensure_begun(period, now)
    else:
        with pytest.raises(ValidationFailed, match="has not begun"):
            ensure_begun(period, now)


def test_the_api_refuses_to_close_a_future_month(operator, org, snapshot):
    with time_machine.travel(datetime(2026, 12, 2, 12, tzinfo=UTC), tick=False):
        before = snapshot()
        refused = operator.post("/billing/close-period", {"period": "2027-01"})
        assert (refused.status, refused.code) == (422, "validation_error")
        assert "has not begun" in refused.body["detail"]
        assert snapshot() == before  # nothing written, not even an audit row of a close
        assert ok(operator.post("/billing/close-period", {"period": "2026-12"}))["period"]


def test_the_command_refuses_to_close_a_future_month(org):
    with time_machine.travel(datetime(2026, 12, 2, 12, tzinfo=UTC), tick=False):
        with pytest.raises(CommandError, match="2027-01 has not begun yet"):
            call_command("close_period", "--period", "2027-01")
        with pytest.raises(CommandError, match="YYYY-MM"):
            call_command("close_period", "--period", "2026-13")


# --- inline styles carry the nonce the page's policy names ---------------------------------------


class _InlineBlocks(HTMLParser):
    """Inline <style> and <script> elements (those without src), with their nonce."""

    def __init__(self) -> None:
        super().__init__()
        self.nonces: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "style" or (tag == "script" and not found.get("src")):
            self.nonces.append((tag, found.get("nonce")))


def assert_inline_blocks_are_allowed(html: str, policy: str) -> int:
    """Every inline block carries a nonce that the policy's directive for it allows."""
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    parser = _InlineBlocks()
    parser.feed(html)
    for tag, nonce in parser.nonces:
        allowed = directives.get(f"{tag}-src", directives.get("default-src", []))
        assert nonce is not None, f"inline <{tag}> without a nonce"
        assert f"'nonce-{nonce}'" in allowed, (tag, nonce, allowed)
    return len(parser.nonces)


@pytest.fixture
def receipt(org: OrgHandle) -> str:
    return org.buy(3)["invoice_id"]


def test_the_api_invoice_page_is_styled_under_its_policy(org, receipt):
    page = org.api.get(org.path(f"/invoices/{receipt}/html"))
    assert page.status == 200
    inline = assert_inline_blocks_are_allowed(
        page.raw.decode(), page.headers["Content-Security-Policy"]
    )
    assert inline >= 1  # the invoice's own <style> is there, and allowed


def test_the_dashboard_invoice_page_is_styled_under_its_policy(org, receipt):
    invoice = Invoice.objects.get(pk=ids.decode("invoice", receipt))
    membership = tenancy.create_user(
        invoice.org,
        email="admin.invoice@example.com",
        name="Admin",
        role="admin",
        password="a long enough password 1",
    )
    client = Client()
    client.force_login(membership.user)
    page = client.get(f"/settings/billing/invoices/{invoice.pk}")
    assert page.status_code == 200
    inline = assert_inline_blocks_are_allowed(
        page.content.decode(), page["Content-Security-Policy"]
    )
    assert inline >= 1


# --- request bodies: JSON in UTF-8 only, chunked bodies read ----------------------------------


def _raw_post(org: OrgHandle, path: str, body: bytes, content_type: str | None) -> Any:
    extra = {"HTTP_AUTHORIZATION": f"Bearer {org.key}"}
    client = Client(raise_request_exception=False)
    if content_type is None:
        # The test client always sends a Content-Type; a body without one is built by hand.
        return client.generic("POST", "/api/v1" + org.path(path), body, content_type="", **extra)
    return client.post("/api/v1" + org.path(path), body, content_type=content_type, **extra)


PURCHASE = b'{"quantity": 5}'


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (PURCHASE, "text/plain"),
        (PURCHASE, "text/plain; charset=utf-8"),
        (PURCHASE, "application/x-www-form-urlencoded"),
        (PURCHASE, "multipart/form-data; boundary=x"),
        (PURCHASE, None),
        (PURCHASE, "application/json; charset=latin-1"),
        (PURCHASE.decode().encode("utf-16"), "application/json"),  # with its BOM
        (PURCHASE.decode().encode("utf-16-le"), "application/json"),  # no BOM: valid UTF-8
        (PURCHASE.decode().encode("utf-32"), "application/json"),
        (PURCHASE.decode().encode("utf-32-be"), "application/json"),
    ],
)
def test_a_body_that_is_not_utf8_json_gets_415_and_buys_nothing(org, body, content_type):
    before = org.balance()
    answer = _raw_post(org, "/purchases", body, content_type)
    assert answer.status_code == 415, answer.content
    assert json.loads(answer.content)["code"] == "unsupported_media_type"
    assert org.balance() == before


def test_bytes_that_are_not_utf8_at_all_are_a_malformed_body(org):
    answer = _raw_post(org, "/purchases", '{"quantity": 5, "x": "é"}'.encode("latin-1"), None)
    assert answer.status_code == 415  # no Content-Type
    answer = _raw_post(
        org, "/purchases", '{"quantity": 5, "x": "é"}'.encode("latin-1"), "application/json"
    )
    assert (answer.status_code, json.loads(answer.content)["code"]) == (400, "validation_error")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"],
)
def test_utf8_json_is_accepted(org, content_type):
    assert _raw_post(org, "/purchases", PURCHASE, content_type).status_code == 201


def test_an_empty_body_needs_no_content_type(org, make_content):
    content = make_content(credit_cost=1)
    org.buy(1)
    assignment = org.assign(content, [org.employee()])["data"][0]["id"]
    started = _raw_post(org, f"/assignments/{assignment}/start", b"", None)
    assert started.status_code == 200, started.content


def test_the_check_covers_every_api_method_with_a_body(org):
    """PATCH and PUT bodies are held to the same rule as POST."""
    client = Client(raise_request_exception=False)
    answer = client.patch(
        "/api/v1" + org.path(""),
        b'{"name": "Renamed"}',
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {org.key}",
    )
    assert answer.status_code == 415


def _chunked_post(port: int, token: str, path: str, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    # The server may answer (413) before reading it all, and close: read the answer anyway.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        conn.request(
            "POST",
            "/api/v1" + path,
            body=iter(pieces),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, json.loads(raw) if raw else None


def test_a_chunked_body_is_read_within_the_same_limit(server):  # noqa: F811 (the fixture)
    """Through the real WSGI server: gunicorn decodes the chunks, the API reads them."""
    status, org = _chunked_post(
        server.port,
        server.operator_token,
        "/orgs",
        json.dumps({"name": "Chunked", "billing_email": "billing@example.com"}).encode(),
    )
    assert status == 201, org
    # A chunked body just under the limit is read whole: padding whitespace is valid JSON.
    limit = 1024 * 1024
    padded = b'{"name": "Renamed"' + b" " * (limit - 40) + b"}"
    assert len(padded) <= limit
    status, renamed = _chunked_post(server.port, server.operator_token, "/orgs", padded)
    assert status == 422, renamed  # read and parsed: "billing_email" is missing
    assert "billing_email" in json.dumps(renamed)
    # Over the limit: 413, whatever the framing. (Just over it: the server answers once it
    # has read one byte past the limit, and the client has sent it all by then.)
    status, refused = _chunked_post(
        server.port, server.operator_token, "/orgs", b'{"name": "' + b"x" * (limit + 65536) + b'"}'
    )
    assert status == 413, refused
    assert refused["code"] == "validation_error"
