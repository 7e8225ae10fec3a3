"""Limits hold across web processes: one API key's request budget and one account's sign-in
budget are each spent once, whichever process answers.

Two real ``learncredits serve`` processes share a SQLite file. With ``CACHE_URL`` on Redis,
a key sending requests to both alternately gets its budget of N requests in total; without
it (each process counting in its own memory) the same run gets 2N, which is the failure the
shared cache is there to prevent. Sign-in budgets live in the database and hold either way.

A Redis that does not answer costs the API nothing but the count (rate limits fail open);
that case needs no Redis and runs in the quick suite.

The process tests need Redis (``LEARNCREDITS_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379``): without it they are skipped, unless
``LEARNCREDITS_REQUIRE_REDIS=1`` (set by .ci/run), which fails them instead.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from learncredits.api import auth
from tests.conftest import (
    HOST,
    REDIS_URL,
    OrgHandle,
    console_script,
    free_port,
    migrate,
    redis_missing,
    service_env,
    skip_unless_required,
    wait_until_serving,
)

# The per-key budget the servers get: small, so the test is quick. Per day, so that the
# window (django-ratelimit aligns it to the period) does not roll over during the test.
BUDGET = 12
SIGN_IN_LIMIT = 5  # AXES_FAILURE_LIMIT's default
PASSWORD = "Correct-Horse-Battery-42"
# A database of its own on the shared Redis, and a key prefix of this run's own on top.
REDIS_DB = 11


@dataclass
class Served:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def call(
        self, method: str, path: str, token: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        conn.request(
            method,
            "/api/v1" + path,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        return response.status, (json.loads(raw) if raw else None)

    def sign_in(self, username: str, password: str) -> int:
        """One sign-in through the form (its CSRF cookie and token first); the status."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        conn.request("GET", "/login")
        form = conn.getresponse()
        html = form.read().decode()
        cookie = re.search(r"csrftoken=([^;]+)", form.getheader("Set-Cookie") or "")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert cookie and token, html[:500]
        body = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password}
        )
        conn.request(
            "POST",
            "/login",
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={cookie.group(1)}",
            },
        )
        answer = conn.getresponse()
        answer.read()
        conn.close()
        return answer.status


@dataclass
class Pair:
    """Two web processes on one database, and the operator token they accept."""

    servers: tuple[Served, Served]
    token: str

    def create_org_with_key(self, name: str) -> tuple[str, str]:
        status, org = self.servers[0].call(
            "POST", "/orgs", self.token, {"name": name, "billing_email": "b@example.com"}
        )
        assert status == 201, org
        status, key = self.servers[0].call(
            "POST", f"/orgs/{org['id']}/api-keys", self.token, {"name": "shared"}
        )
        assert status == 201, key
        return org["id"], key["key"]

    def answered_before_the_first_refusal(self, org_id: str, key: str, requests: int) -> int:
        """Sends ``requests`` balance reads alternately to the two servers; returns how many
        were answered 200 before the first 429 (and checks that none was after it)."""
        statuses = [
            self.servers[i % 2].call("GET", f"/orgs/{org_id}/balance", key)[0]
            for i in range(requests)
        ]
        assert set(statuses) <= {200, 429}, statuses
        answered = statuses.index(429) if 429 in statuses else len(statuses)
        assert set(statuses[answered:]) <= {429}, statuses
        return answered


def _start_pair(tmp_path: Path, cache_url: str | None) -> Iterator[Pair]:
    token = secrets.token_urlsafe(24)
    env = service_env(
        f"sqlite:///{tmp_path / 'shared.sqlite3'}",
        drop={"CACHE_URL"},
        LEARNCREDITS_OPERATOR_TOKEN=token,
        LEARNCREDITS_RATE_LIMIT=f"{BUDGET}/d",
        LEARNCREDITS_RATE_LIMIT_OPERATOR="",
    )
    if cache_url:
        env["CACHE_URL"] = cache_url
    migrate(env, tmp_path)
    started: list[Served] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp_path / f"serve-{name}.log"
            with log.open("wb") as sink:
                # One web process each: within a process its threads share the memory cache,
                # so the control run's 2N is exactly one budget per server.
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
            started.append(Served(port, process, log))
        for served in started:
            wait_until_serving(served.process, served.port, "/healthz", served.log)
        yield Pair((started[0], started[1]), token)
    finally:
        for served in started:
            if served.process.poll() is None:
                served.process.send_signal(signal.SIGTERM)
                try:
                    served.process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(served.process.pid, signal.SIGKILL)
                    served.process.wait(30)


@pytest.fixture
def redis_cache_url() -> str:
    missing = redis_missing()
    if missing:
        skip_unless_required(missing, "LEARNCREDITS_REQUIRE_REDIS")
    base = REDIS_URL.rstrip("/").rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    return f"{base}/{REDIS_DB}?key_prefix=lc-test-{secrets.token_hex(6)}"


@pytest.fixture
def with_redis(tmp_path: Path, redis_cache_url: str) -> Iterator[Pair]:
    yield from _start_pair(tmp_path, redis_cache_url)


@pytest.fixture
def without_cache_url(tmp_path: Path) -> Iterator[Pair]:
    yield from _start_pair(tmp_path, None)


@pytest.mark.slow
def test_with_redis_one_key_has_one_budget_across_two_servers(with_redis: Pair) -> None:
    org_id, key = with_redis.create_org_with_key("Shared")
    assert with_redis.answered_before_the_first_refusal(org_id, key, 2 * BUDGET + 4) == BUDGET


@pytest.mark.slow
def test_with_redis_one_account_has_one_sign_in_budget_across_two_servers(
    with_redis: Pair,
) -> None:
    org_id, _ = with_redis.create_org_with_key("Signin")
    user = {"email": "pat@example.com", "name": "Pat", "role": "admin", "password": PASSWORD}
    status, body = with_redis.servers[0].call(
        "POST", f"/orgs/{org_id}/users", with_redis.token, user
    )
    assert status == 201, body

    statuses = [
        with_redis.servers[i % 2].sign_in("pat@example.com", "wrong-password")
        for i in range(2 * SIGN_IN_LIMIT + 2)
    ]
    # The form again after each failure; the failure that spends the account's last slot
    # is answered with the locked-out page (429), and so is every attempt after it, on
    # either server, the right password included.
    assert statuses == [200] * (SIGN_IN_LIMIT - 1) + [429] * (SIGN_IN_LIMIT + 3), statuses
    assert with_redis.servers[1].sign_in("pat@example.com", PASSWORD) == 429


@pytest.mark.slow
def test_control_without_a_shared_cache_each_server_counts_its_own_budget(
    without_cache_url: Pair,
) -> None:
    """What the shared cache prevents: each process's memory counts on its own, so one key
    gets a budget per process."""
    org_id, key = without_cache_url.create_org_with_key("Split")
    answered = without_cache_url.answered_before_the_first_refusal(org_id, key, 2 * BUDGET + 4)
    assert answered == 2 * BUDGET


# --- Redis down: the API keeps answering -------------------------------------------------------


def _unreachable_redis() -> dict[str, Any]:
    """A Redis cache on a port nothing listens on: every call fails to connect."""
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://{HOST}:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }


def test_rate_limits_fail_open_with_a_warning_when_the_cache_is_down(
    org: OrgHandle, settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LEARNCREDITS_RATE_LIMIT = "1/d"
    monkeypatch.setattr(auth, "_cache_unusable_until", 0.0)
    with override_settings(CACHES=_unreachable_redis()), caplog.at_level(logging.WARNING):
        statuses = [org.api.get(org.path("/balance")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    warnings = [r for r in caplog.records if r.name == "learncredits.api.auth"]
    # One warning, then the process leaves the cache alone for a while instead of making
    # every request wait for its timeout.
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "rate limit not counted" in warnings[0].getMessage()


def test_cache_url_redis_selects_djangos_own_redis_backend(tmp_path: Path) -> None:
    script = "import json, learncredits.settings as s; print(json.dumps(s.CACHES['default']))"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(SECRET_KEY="x" * 50, CACHE_URL="redis://cache.internal:6380/3?key_prefix=lc")
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cache = json.loads(out.strip().splitlines()[-1])
    assert cache["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert cache["LOCATION"] == "redis://cache.internal:6380/3"
    assert cache["KEY_PREFIX"] == "lc"
    assert cache["OPTIONS"] == {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
