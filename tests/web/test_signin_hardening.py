"""Sign-in hardening: the failed sign-in limit holds under concurrency, and an invitation does
not tell an org admin that an email has an account in another org.

- Throttle: every sign-in claims one slot of the account's budget and one of the address's
  budget in the database before its password is checked (web/signin.py), so a burst of
  concurrent attempts gets at most ``AXES_FAILURE_LIMIT`` password checks per account and per
  address, in one process (threads, PostgreSQL) and across the web processes of a real server
  (SQLite file and PostgreSQL). Password checks are counted by wrapping the Argon2 hasher's
  ``verify``; the outcome is never mocked.
- Invitations: an address with an account in another org is answered as a sent invitation
  and that account is left as it was; the API that creates users is the operator's alone.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import Argon2PasswordHasher
from django.core.management import call_command
from django.db import connection
from django.test import Client

from learncredits.audit.models import AuditEvent
from learncredits.tenancy.models import Employee, Membership, SignInThrottle
from tests.conftest import (
    HOST,
    ON_POSTGRES,
    Api,
    OrgHandle,
    console_script,
    free_port,
    migrate,
    ok,
    run_threads,
    service_env,
    wait_until_serving,
)

PASSWORD = "Correct-Horse-Battery-42"
WRONG = "wrong-password"
BURST = 50
LIMIT = 5


# --- counting real password checks -------------------------------------------------------------


class PasswordChecks:
    """Counts calls of the Argon2 hasher's verify (each one is a real password check)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Argon2PasswordHasher.verify
        checks = self

        def verify(hasher: Argon2PasswordHasher, password: str, encoded: str) -> bool:
            with checks._lock:
                checks.count += 1
            return original(hasher, password, encoded)

        monkeypatch.setattr(Argon2PasswordHasher, "verify", verify)


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> PasswordChecks:
    checks = PasswordChecks()
    checks.install(monkeypatch)
    return checks


def make_user(org: OrgHandle, email: str, role: str = "admin") -> Any:
    body = {"email": email, "name": "Pat Example", "role": role, "password": PASSWORD}
    ok(org.operator.post(org.path("/users"), body), 201)
    return get_user_model().objects.get(username=email)


@dataclass
class Attempt:
    status: int
    signed_in: bool


def sign_in(client: Client, username: str, password: str) -> Attempt:
    response = client.post("/login", {"username": username, "password": password})
    return Attempt(response.status_code, "_auth_user_id" in client.session)


def burst_with_the_right_password_inside(
    n: int,
    wrong: Callable[[int], Attempt],
    right: Callable[[], Attempt],
) -> tuple[list[Attempt], Attempt]:
    """``n`` wrong attempts at once and, among them, the right password, sent once LIMIT
    wrong answers have come back (so the budget is spent whatever the interleaving, and the
    right password must be refused rather than being lucky to come first)."""
    answered = threading.Semaphore(0)

    def work(i: int, _: Any) -> Attempt:
        if i == n:
            for _ in range(LIMIT):
                assert answered.acquire(timeout=90), "the wrong attempts did not answer"
            return right()
        try:
            return wrong(i)
        finally:
            answered.release()

    results = run_threads(n + 1, work)
    return results[:n], results[n]


def assert_refused(attempts: list[Attempt]) -> None:
    for attempt in attempts:
        assert attempt.status in (200, 429), attempt.status  # the form again, or locked out
        assert not attempt.signed_in


# --- the limit under concurrency, in one process (threads) --------------------------------------


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_burst_on_one_account_checks_the_password_at_most_the_limit(org, password_checks):
    make_user(org, "victim@example.com")
    bystander = make_user(org, "bystander@example.com")
    password_checks.count = 0

    # Every attempt from its own address: only the account's budget can stop them.
    def wrong(i: int) -> Attempt:
        return sign_in(
            Client(REMOTE_ADDR=f"10.1.{i // 200}.{i % 200 + 1}"), "victim@example.com", WRONG
        )

    def right() -> Attempt:
        return sign_in(Client(REMOTE_ADDR="10.9.9.9"), "victim@example.com", PASSWORD)

    attempts, with_the_password = burst_with_the_right_password_inside(BURST, wrong, right)

    assert password_checks.count == LIMIT  # the first five claims checked; no others
    assert_refused(attempts)
    assert sum(a.status == 429 for a in attempts) >= BURST - LIMIT + 1
    assert (with_the_password.status, with_the_password.signed_in) == (429, False)
    # The budget is per account: another account signs in at once.
    assert sign_in(Client(REMOTE_ADDR="10.9.9.10"), bystander.username, PASSWORD).signed_in


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_burst_from_one_address_over_many_accounts_checks_at_most_the_limit(org, password_checks):
    accounts = [make_user(org, f"member{n}@example.com").username for n in range(10)]
    password_checks.count = 0

    # Five attempts per account (none reaches its own limit alone), all from one address.
    def wrong(i: int) -> Attempt:
        return sign_in(Client(REMOTE_ADDR="192.0.2.10"), accounts[i % len(accounts)], WRONG)

    def right() -> Attempt:
        return sign_in(Client(REMOTE_ADDR="192.0.2.10"), accounts[0], PASSWORD)

    attempts, with_the_password = burst_with_the_right_password_inside(BURST, wrong, right)

    assert password_checks.count == LIMIT
    assert_refused(attempts)
    assert (with_the_password.status, with_the_password.signed_in) == (429, False)
    # The account itself was not locked by the address: from elsewhere it signs in.
    assert sign_in(Client(REMOTE_ADDR="192.0.2.11"), accounts[1], PASSWORD).signed_in


# --- the limit across the web processes of a real server ----------------------------------------

SITECUSTOMIZE = '''
"""Test only: counts the Argon2 password checks of this process in a shared file."""
import os

_path = os.environ.get("LC_TEST_PASSWORD_CHECKS")
if _path:
    from django.contrib.auth import hashers

    _original = hashers.Argon2PasswordHasher.verify

    def _verify(self, password, encoded):
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"check\\n")
        finally:
            os.close(fd)
        return _original(self, password, encoded)

    hashers.Argon2PasswordHasher.verify = _verify
'''


@dataclass
class Server:
    port: int
    token: str
    checks_file: Path

    def checks(self) -> int:
        if not self.checks_file.exists():
            return 0
        return self.checks_file.read_text().count("check\n")

    def api(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        conn.request(
            method,
            "/api/v1" + path,
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        assert response.status == 201, (response.status, raw[:500])
        return json.loads(raw)

    def sign_in_form(self) -> tuple[str, str]:
        """The sign-in form's CSRF cookie and form token."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=90)
        conn.request("GET", "/login")
        response = conn.getresponse()
        html = response.read().decode()
        conn.close()
        cookie = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert cookie and token, html[:500]
        return cookie.group(1), token.group(1)

    def sign_in(self, form: tuple[str, str], username: str, password: str) -> Attempt:
        cookie, token = form
        conn = http.client.HTTPConnection(HOST, self.port, timeout=90)
        body = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": username, "password": password}
        )
        conn.request(
            "POST",
            "/login",
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={cookie}",
            },
        )
        response = conn.getresponse()
        response.read()
        conn.close()
        signed_in = "sessionid=" in (response.getheader("Set-Cookie") or "")
        return Attempt(response.status, signed_in)


def _database_url(tmp_path: Path) -> str:
    if not ON_POSTGRES:
        return f"sqlite:///{tmp_path / 'signin.sqlite3'}"
    # The test database itself: migrated, and emptied by the transactional test afterwards.
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def server(tmp_path: Path, flushable: None) -> Iterator[Server]:
    """``learncredits serve`` with two web processes of four threads, on a SQLite file or
    on the PostgreSQL test database (committed to for real, so the test is transactional),
    counting its password checks in a file."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    token = secrets.token_urlsafe(24)
    checks_file = tmp_path / "password-checks"
    env = service_env(
        _database_url(tmp_path),
        LEARNCREDITS_OPERATOR_TOKEN=token,
        LEARNCREDITS_RATE_LIMIT="",
        LC_TEST_PASSWORD_CHECKS=str(checks_file),
        PYTHONPATH=os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH", "")])),
    )
    env.setdefault("SECRET_KEY", "signin-test-" + secrets.token_urlsafe(48))
    if not ON_POSTGRES:
        migrate(env, tmp_path)
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *(console_script(), "serve", "--host", HOST, "--port", str(port)),
                *("--workers", "2", "--threads", "4", "--no-worker"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_serving(process, port, "/login", log)
        yield Server(port, token, checks_file)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


@pytest.mark.django_db(transaction=True)
def test_several_server_processes_share_one_budget(server):
    org = server.api("POST", "/orgs", {"name": "Acme", "billing_email": "b@example.com"})
    user = {"email": "victim@example.com", "name": "Vic", "role": "admin", "password": PASSWORD}
    server.api("POST", f"/orgs/{org['id']}/users", user)
    assert server.checks() == 0
    # Every thread loads the form first, so that the burst is the sign-ins themselves.
    forms = [server.sign_in_form() for _ in range(BURST + 1)]

    attempts, with_the_password = burst_with_the_right_password_inside(
        BURST,
        lambda i: server.sign_in(forms[i], "victim@example.com", WRONG),
        lambda: server.sign_in(forms[BURST], "victim@example.com", PASSWORD),
    )

    assert server.checks() == LIMIT
    assert_refused(attempts)
    assert (with_the_password.status, with_the_password.signed_in) == (429, False)


# --- the claim itself ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_sign_in_gives_its_slot_back_and_resets_the_account(org, password_checks):
    make_user(org, "pat@example.com")
    for _ in range(4):
        assert sign_in(Client(REMOTE_ADDR="198.51.100.5"), "pat@example.com", WRONG).status == 200
    assert sign_in(Client(REMOTE_ADDR="198.51.100.5"), "pat@example.com", PASSWORD).signed_in
    budgets = {(row.kind, row.value): row.failures for row in SignInThrottle.objects.all()}
    # The account starts again; the address keeps the four failures it made, not the sign-in.
    assert budgets == {("username", "pat@example.com"): 0, ("ip_address", "198.51.100.5"): 4}
    assert password_checks.count == 5


@pytest.mark.django_db
def test_letter_case_does_not_buy_more_guesses(org, password_checks):
    make_user(org, "case@example.com")
    password_checks.count = 0
    for n, spelling in enumerate(["case@example.com", "CASE@example.com", "Case@Example.com"] * 3):
        sign_in(Client(REMOTE_ADDR=f"203.0.113.{n + 1}"), spelling, WRONG)
    answer = sign_in(Client(REMOTE_ADDR="203.0.113.99"), "case@example.com", PASSWORD)
    assert (answer.status, answer.signed_in) == (429, False)
    assert password_checks.count <= LIMIT


@pytest.mark.django_db
def test_the_budget_starts_again_after_the_cool_off(org, time_machine):
    make_user(org, "later@example.com")
    time_machine.move_to("2026-03-02 09:00:00+00:00", tick=False)
    for _ in range(LIMIT):
        sign_in(Client(REMOTE_ADDR="198.51.100.7"), "later@example.com", WRONG)
    time_machine.move_to("2026-03-02 09:14:00+00:00", tick=False)
    assert sign_in(Client(REMOTE_ADDR="198.51.100.7"), "later@example.com", PASSWORD).status == 429
    # A refused attempt restarts the cool-off (as django-axes does by default) ...
    time_machine.move_to("2026-03-02 09:28:00+00:00", tick=False)
    assert sign_in(Client(REMOTE_ADDR="198.51.100.7"), "later@example.com", PASSWORD).status == 429
    # ... and fifteen quiet minutes end it.
    time_machine.move_to("2026-03-02 09:44:00+00:00", tick=False)
    assert sign_in(Client(REMOTE_ADDR="198.51.100.7"), "later@example.com", PASSWORD).signed_in


@pytest.mark.django_db
def test_axes_reset_commands_unlock(org):
    make_user(org, "locked@example.com")
    for _ in range(LIMIT):
        sign_in(Client(REMOTE_ADDR="198.51.100.8"), "locked@example.com", WRONG)
    assert sign_in(Client(REMOTE_ADDR="198.51.100.9"), "locked@example.com", PASSWORD).status == 429
    call_command("axes_reset_username", "locked@example.com", verbosity=0)
    assert sign_in(Client(REMOTE_ADDR="198.51.100.9"), "locked@example.com", PASSWORD).signed_in


# --- invitations do not reveal accounts of other orgs -------------------------------------------


def admin_of(org: OrgHandle, email: str) -> Client:
    client = Client()
    client.force_login(make_user(org, email))
    return client


def invite(admin: Client, email: str, role: str = "learner") -> tuple[int, list[Any], list[str]]:
    response = admin.post(
        "/employees", {"form": "invite", "name": "Sam", "email": email, "role": role}, follow=True
    )
    shown = [str(m) for m in response.context["messages"]]
    return response.status_code, response.redirect_chain, shown


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["learner", "admin"])
def test_inviting_another_orgs_user_looks_like_a_sent_invitation(
    org, make_org, role, mailoutbox, django_capture_on_commit_callbacks
):
    other = make_org("Other")
    elsewhere = make_user(other, "taken@example.com", role="learner")
    before = (elsewhere.password, elsewhere.is_active, elsewhere.membership.org_id)
    admin = admin_of(org, "boss@example.com")
    memberships = Membership.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        fresh = invite(admin, "Fresh@Example.com", role)
        taken = invite(admin, "Taken@Example.com", role)

    assert fresh[0] == taken[0] == 200
    assert fresh[1] == taken[1]  # the same redirect
    assert fresh[2] == ["Invitation sent to fresh@example.com."]
    assert taken[2] == ["Invitation sent to taken@example.com."]
    if role == "learner":  # the employee record the admin sees appears in both cases
        assert Employee.objects.filter(org__name="Acme", email="taken@example.com").exists()
        assert Employee.objects.filter(org__name="Acme", email="fresh@example.com").exists()

    # Nothing happened to the account: same org, password, state; no new membership.
    elsewhere.refresh_from_db()
    assert (elsewhere.password, elsewhere.is_active, elsewhere.membership.org_id) == before
    assert Membership.objects.count() == memberships + 1  # the fresh invitation only
    # The account got no link that could set its password; only a notice.
    to_taken = [m for m in mailoutbox if m.to == ["taken@example.com"]]
    assert len(to_taken) == 1
    assert "/reset/" not in to_taken[0].body and "nothing was changed" in to_taken[0].body
    assert AuditEvent.objects.filter(action="user.invite_existing_account").count() == 1


@pytest.mark.django_db
def test_inviting_ones_own_member_still_says_so(org):
    admin = admin_of(org, "boss@example.com")
    make_user(org, "colleague@example.com", role="learner")
    status, _, shown = invite(admin, "colleague@example.com")
    assert status == 200
    assert shown == ["a user with this email already exists in this organization"]


@pytest.mark.django_db
def test_inviting_an_operator_staff_account_looks_like_a_sent_invitation(org):
    get_user_model().objects.create_user("ops@example.com", "ops@example.com", is_staff=True)
    admin = admin_of(org, "boss@example.com")
    _, _, shown = invite(admin, "ops@example.com", "admin")
    assert shown == ["Invitation sent to ops@example.com."]
    assert not hasattr(get_user_model().objects.get(username="ops@example.com"), "membership")


@pytest.mark.django_db
def test_the_user_creating_api_reveals_nothing_to_keys_that_may_not_use_it(org, make_org):
    """Only the operator and admin keys create users (docs/identity.md, "Roles"); any other
    key gets the same 403 whether the address has an account or not. An admin key is told
    that an address is taken, as the operator is: a known limit (docs/security.md)."""
    other = make_org("Other")
    make_user(other, "taken@example.com")
    billing = Api(
        ok(org.operator.post(org.path("/api-keys"), {"name": "b", "role": "billing"}), 201)["key"]
    )
    body = {"name": "Sam", "role": "learner"}
    taken = billing.post(org.path("/users"), {**body, "email": "taken@example.com"})
    fresh = billing.post(org.path("/users"), {**body, "email": "fresh@example.com"})
    assert (taken.status, taken.body) == (fresh.status, fresh.body)
    assert taken.status == 403
    # The operator, who sees every org, is told plainly; so is an admin key.
    refused = org.operator.post(org.path("/users"), {**body, "email": "taken@example.com"})
    assert (refused.status, refused.code) == (422, "validation_error")
    refused = org.api.post(org.path("/users"), {**body, "email": "taken@example.com"})
    assert (refused.status, refused.code) == (422, "validation_error")
    anonymous = Api(None).post(org.path("/users"), {**body, "email": "taken@example.com"})
    assert anonymous.status == 401
