"""Authentication, abuse controls, security headers and the audit trail (docs/security.md).

- Passwords are hashed with Argon2; failed sign-ins are throttled per account and per
  address (django-axes, 5 failures).
- API keys are stored as SHA-256 only, revocable at once, with their last-used time.
- Per-key rate limits answer 429 ``rate_limited`` with ``Retry-After``; bodies over 1 MiB 413.
- Pages and API answers carry CSP (no inline script), frame denial, nosniff and a referrer
  policy; behind TLS (``LEARNCREDITS_HTTPS=true``) HSTS, and ``check --deploy`` is clean.
- Dashboard forms need the CSRF token.
- Operator actions and authorization denials are audited with who, what, when and where;
  the database refuses to update or delete audit rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.tenancy.models import ApiKey, Employee
from tests.conftest import OPERATOR_TOKEN, Api, console_script, ok

pytestmark = pytest.mark.django_db

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
PASSWORD = "Correct-Horse-Battery-42"
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters and lockouts live in the cache: every test starts from zero."""
    cache.clear()
    yield
    cache.clear()


def make_user(org, email: str, role: str = "admin", password: str | None = PASSWORD) -> Any:
    body: dict[str, Any] = {"email": email, "name": "Pat Example", "role": role}
    if password is not None:
        body["password"] = password
    ok(org.operator.post(org.path("/users"), body), 201)
    return get_user_model().objects.get(username=email)


# --- passwords --------------------------------------------------------------------------------


def test_passwords_are_stored_with_argon2(org):
    user = make_user(org, "argon@example.com")
    assert user.password.startswith("argon2$argon2id$"), user.password[:20]
    assert PASSWORD not in user.password
    assert user.check_password(PASSWORD)
    assert not user.check_password(PASSWORD + "x")


# --- sign-in throttling (django-axes) ---------------------------------------------------------


def sign_in(username: str, password: str, ip: str) -> Any:
    client = Client(REMOTE_ADDR=ip)
    response = client.post("/login", {"username": username, "password": password})
    response.signed_in = "_auth_user_id" in client.session
    return response


def assert_signed_in(response: Any) -> None:
    assert response.status_code == 302 and response["Location"] == "/", response.status_code
    assert response.signed_in


def assert_locked_out(response: Any) -> None:
    assert response.status_code == 429, response.status_code
    assert b"Too many failed sign-ins" in response.content
    assert not response.signed_in


def test_five_failures_lock_the_account_and_the_address(org, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    make_user(org, "victim@example.com")
    make_user(org, "neighbour@example.com")
    for n in range(5):
        failed = sign_in("victim@example.com", "wrong-password", "198.51.100.1")
        assert not failed.signed_in
        if n < 4:
            assert failed.status_code == 200  # the form again, with an error
        else:
            assert_locked_out(failed)  # the 5th failure reaches the limit

    # the 6th attempt, with the right password, is refused ...
    assert_locked_out(sign_in("victim@example.com", PASSWORD, "198.51.100.1"))
    # ... for the same account from another address ...
    assert_locked_out(sign_in("victim@example.com", PASSWORD, "198.51.100.2"))
    # ... and for another account from the same address
    assert_locked_out(sign_in("neighbour@example.com", PASSWORD, "198.51.100.1"))
    # another account from another address is not affected
    assert_signed_in(sign_in("neighbour@example.com", PASSWORD, "198.51.100.3"))


def test_failures_spread_over_addresses_still_lock_the_account(org):
    make_user(org, "target@example.com")
    make_user(org, "bystander@example.com")
    for n in range(5):  # no address reaches the limit; the account does
        sign_in("target@example.com", "wrong-password", f"203.0.113.{n + 1}")
    assert_locked_out(sign_in("target@example.com", PASSWORD, "203.0.113.50"))
    assert_signed_in(sign_in("bystander@example.com", PASSWORD, "203.0.113.50"))


def test_failures_spread_over_accounts_still_lock_the_address(org):
    make_user(org, "someone@example.com")
    for n in range(5):  # no account reaches the limit; the address does
        sign_in(f"guess{n}@example.com", "wrong-password", "192.0.2.77")
    assert_locked_out(sign_in("someone@example.com", PASSWORD, "192.0.2.77"))
    assert_signed_in(sign_in("someone@example.com", PASSWORD, "192.0.2.78"))


def test_four_failures_do_not_lock(org):
    make_user(org, "careful@example.com")
    for _ in range(4):
        sign_in("careful@example.com", "wrong-password", "198.51.100.9")
    assert_signed_in(sign_in("careful@example.com", PASSWORD, "198.51.100.9"))


# --- API keys ---------------------------------------------------------------------------------


def all_rows_as_text() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_api_keys_are_stored_hashed(org, operator):
    created = ok(operator.post(org.path("/api-keys"), {"name": "ci"}), 201)
    key = created["key"]
    head, prefix, secret = key.split("_", 2)
    assert head == "lc" and len(secret) >= 40
    ok(Api(key).get(org.path("/balance")))  # used once, so every write path has run

    stored = ApiKey.objects.get(pk=ids.decode("api_key", created["id"]))
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    dump = all_rows_as_text()
    assert prefix in dump  # the dump does see the key's row ...
    for fragment in (key, secret, secret[:16], secret[-16:]):
        assert fragment not in dump  # ... but never the secret
    listed = ok(operator.get(org.path("/api-keys")))["data"]
    assert all("key" not in item and secret not in json.dumps(item) for item in listed)


def test_a_revoked_key_is_refused_at_once(org, operator):
    other = ok(operator.post(org.path("/api-keys"), {"name": "other"}), 201)
    doomed = ok(operator.post(org.path("/api-keys"), {"name": "doomed"}), 201)
    api = Api(doomed["key"])
    ok(api.get(org.path("/balance")))

    revoked = ok(operator.request("DELETE", org.path(f"/api-keys/{doomed['id']}")))
    assert revoked["revoked_at"] is not None

    refused = api.get(org.path("/balance"))
    assert (refused.status, refused.code) == (401, "unauthenticated")
    assert api.post(org.path("/purchases"), {"quantity": 1}).status == 401
    ok(Api(other["key"]).get(org.path("/balance")))  # the org's other keys still work
    ok(org.api.get(org.path("/balance")))
    assert AuditEvent.objects.filter(
        action="api_key.revoke", target=f"key_{ids.decode('api_key', doomed['id'])}"
    ).exists()


def test_revoking_is_operator_only_and_stays_revoked(org, make_org):
    other_org = make_org("Other")
    key = ok(org.operator.post(org.path("/api-keys"), {"name": "k"}), 201)
    path = org.path(f"/api-keys/{key['id']}")
    assert org.api.request("DELETE", path).status == 403
    assert other_org.api.request("DELETE", path).status == 403
    ok(Api(key["key"]).get(org.path("/balance")))
    ok(org.operator.request("DELETE", path))
    again = ok(org.operator.request("DELETE", path))  # idempotent: still revoked
    assert again["revoked_at"] is not None
    assert Api(key["key"]).get(org.path("/balance")).status == 401


def test_last_used_at_is_set_when_a_key_is_used(org, operator, time_machine):
    created = ok(operator.post(org.path("/api-keys"), {"name": "fresh"}), 201)
    pk = ids.decode("api_key", created["id"])
    assert ApiKey.objects.get(pk=pk).last_used_at is None
    time_machine.move_to(timezone.now() + timedelta(days=3), tick=False)
    used_at = timezone.now()
    ok(Api(created["key"]).get(org.path("/balance")))
    assert ApiKey.objects.get(pk=pk).last_used_at == used_at
    listed = {k["id"]: k for k in ok(operator.get(org.path("/api-keys")))["data"]}
    assert listed[created["id"]]["last_used_at"] is not None
    # a later use (beyond the one-minute write coalescing) moves it on
    time_machine.move_to(used_at + timedelta(minutes=5), tick=False)
    ok(Api(created["key"]).get(org.path("/balance")))
    assert ApiKey.objects.get(pk=pk).last_used_at == used_at + timedelta(minutes=5)


# --- per-key rate limits ----------------------------------------------------------------------


def exhaust(api: Api, path: str, budget: int) -> None:
    for n in range(budget):
        response = api.get(path)
        assert response.status == 200, (n, response.body)


def assert_rate_limited(api: Api, path: str) -> int:
    response = api.get(path)
    assert (response.status, response.code) == (429, "rate_limited"), response.body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def test_rate_limit_answers_429_with_retry_after(org, make_org, settings, time_machine):
    settings.LEARNCREDITS_RATE_LIMIT = "5/m"
    time_machine.move_to(timezone.now(), tick=False)
    other = make_org("Unaffected")
    exhaust(org.api, org.path("/balance"), 5)
    retry_after = assert_rate_limited(org.api, org.path("/balance"))
    assert org.api.post(org.path("/purchases"), {"quantity": 1}).status == 429  # writes too
    ok(other.api.get(other.path("/balance")))  # another org's key is not affected
    ok(Api(OPERATOR_TOKEN).get(org.path("/balance")))  # nor the operator
    # once the window has passed, the key works again
    time_machine.move_to(timezone.now() + timedelta(seconds=retry_after + 1), tick=False)
    ok(org.api.get(org.path("/balance")))


def test_rate_limit_is_per_key(org, settings, time_machine):
    """A second key of the same org has its own budget (docs/api.md, "Rate limits";
    settings.py and api/auth.py: "Per-key request budget")."""
    settings.LEARNCREDITS_RATE_LIMIT = "5/m"
    time_machine.move_to(timezone.now(), tick=False)
    second = Api(ok(org.operator.post(org.path("/api-keys"), {"name": "second"}), 201)["key"])
    exhaust(org.api, org.path("/balance"), 5)
    assert_rate_limited(org.api, org.path("/balance"))
    response = second.get(org.path("/balance"))
    assert response.status == 200, (response.status, response.body)


# --- request body size ------------------------------------------------------------------------


def test_a_body_over_one_mib_is_refused_with_413(org, snapshot):
    before = snapshot()
    padding = " " * (MiB + 1 - len('{"name": "x", "email": "x@example.com"}'))
    big = '{"name": "x", "email": "x@example.com"}' + padding
    assert len(big.encode()) == MiB + 1
    for idem in (None, "big-body-1"):
        response = org.api.post(org.path("/employees"), raw=big, idem=idem)
        assert response.status == 413, (response.status, response.body)
        assert response.headers["Content-Type"].startswith("application/problem+json")
    assert snapshot() == before
    # just under the limit, the same body is accepted
    small = '{"name": "x", "email": "x@example.com"}' + " " * 1000
    ok(org.api.post(org.path("/employees"), raw=small), 201)


def test_the_limit_is_one_mib_exactly(org):
    body = '{"quantity": 1}'
    at_limit = body + " " * (MiB - len(body))
    assert len(at_limit) == MiB
    ok(org.api.post(org.path("/purchases"), raw=at_limit), 201)


# --- security headers -------------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def assert_security_headers(response: Any, what: str) -> None:
    headers = {k.lower(): v for k, v in response.items()}
    assert "content-security-policy" in headers, what
    csp = csp_directives(headers["content-security-policy"])
    script_src = csp.get("script-src", csp.get("default-src"))
    assert script_src is not None, what
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, what
    assert csp.get("frame-ancestors") == ["'none'"], what
    assert csp.get("object-src") == ["'none'"], what
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") in {"same-origin", "strict-origin-when-cross-origin"}


def test_security_headers_on_pages_and_api(org):
    anonymous = Client()
    assert_security_headers(anonymous.get("/login"), "sign-in page")
    admin = Client()
    admin.force_login(make_user(org, "headers@example.com"), backend=MODEL_BACKEND)
    for url in ("/", "/buy", "/settings/billing"):
        response = admin.get(url)
        assert response.status_code == 200, url
        assert_security_headers(response, url)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {org.key}")
    assert_security_headers(client.get(f"/api/v1{org.path('/balance')}"), "API 200")
    assert_security_headers(Client().get(f"/api/v1{org.path('/balance')}"), "API 401")
    assert_security_headers(client.get("/api/v1/orgs/org_999999/balance"), "API 404")


def test_no_hsts_in_embedded_http_mode(org):
    response = Client().get("/login")
    assert "Strict-Transport-Security" not in response


def production_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # DJANGO_ALLOW_ASYNC_UNSAFE: set for the browser tests in this process; never in
        # production, and check --deploy rightly refuses it.
        if key
        not in {
            "DATABASE_URL",
            "LEARNCREDITS_TEST_DB",
            "DJANGO_SETTINGS_MODULE",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        }
        and not key.startswith(("LEARNCREDITS_", "AXES_"))
    }
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(64),
        LEARNCREDITS_HTTPS="true",
        ALLOWED_HOSTS="example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        LEARNCREDITS_OPERATOR_TOKEN=secrets.token_urlsafe(32),
    )
    assert len(env["SECRET_KEY"]) >= 60
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = subprocess.run(
        [console_script(), "check", "--deploy", "--fail-level", "WARNING"],
        cwd=tmp_path,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


HTTPS_PROBE = """
import json
from django.test import Client
client = Client(HTTP_HOST="example.com")
secure = client.get("/login", secure=True)
plain = client.get("/login")
api = client.get("/api/v1/openapi.json", secure=True)
print("PROBE " + json.dumps({
    "hsts": secure.get("Strict-Transport-Security"),
    "api_hsts": api.get("Strict-Transport-Security"),
    "plain_status": plain.status_code,
    "plain_location": plain.get("Location"),
    "csrf_cookie_secure": bool(secure.cookies["csrftoken"]["secure"]),
}))
"""


def test_behind_tls_hsts_secure_cookies_and_https_redirect(tmp_path):
    result = subprocess.run(
        [console_script(), "shell", "-c", HTTPS_PROBE],
        cwd=tmp_path,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("PROBE ")]
    probe = json.loads(line.removeprefix("PROBE "))
    for header in (probe["hsts"], probe["api_hsts"]):
        assert header is not None
        max_age = int(re.search(r"max-age=(\d+)", header).group(1))
        assert max_age >= 31_536_000
        assert "includeSubDomains" in header
    assert probe["plain_status"] == 301
    assert probe["plain_location"] == "https://example.com/login"
    assert probe["csrf_cookie_secure"] is True


# --- CSRF -------------------------------------------------------------------------------------


def test_dashboard_posts_need_the_csrf_token(org):
    user = make_user(org, "csrf@example.com")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user, backend=MODEL_BACKEND)
    before = Employee.objects.count()
    form = {"name": "Forged", "email": "forged@example.com"}

    refused = client.post("/employees", form)
    assert refused.status_code == 403
    assert Employee.objects.count() == before
    assert client.post("/buy", {"quantity": "5"}).status_code == 403
    assert ok(org.api.get(org.path("/balance")))["credits"] == 0

    # with the token from the page, the same form goes through (so the refusal was CSRF)
    client.get("/employees")
    token = client.cookies["csrftoken"].value
    accepted = client.post("/employees", {**form, "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302
    assert Employee.objects.count() == before + 1


def test_sign_in_needs_the_csrf_token(org):
    make_user(org, "csrf-login@example.com")
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login", {"username": "csrf-login@example.com", "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


# --- the audit trail --------------------------------------------------------------------------


def call(method: str, path: str, token: str | None, body: Any = None, ip: str = "127.0.0.1"):
    client = Client(REMOTE_ADDR=ip, HTTP_USER_AGENT="audit-test/1.0")
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = json.dumps(body) if body is not None else ""
    response = getattr(client, method.lower())(
        "/api/v1" + path, data=data, content_type="application/json", **extra
    )
    return response.status_code, json.loads(response.content or b"null")


def newest(action: str, **filters: Any) -> AuditEvent:
    event = AuditEvent.objects.filter(action=action, **filters).order_by("-pk").first()
    assert event is not None, (action, filters)
    return event


def assert_who_what_when_where(event: AuditEvent, actor: str, ip: str, since: Any) -> None:
    assert event.actor == actor
    assert event.ip_address == ip
    assert event.user_agent == "audit-test/1.0"
    assert event.created_at >= since
    assert event.request_path.startswith("/api/v1/")


def test_operator_actions_are_audited(db):
    since = timezone.now()
    ip = "203.0.113.10"
    status, org = call(
        "POST", "/orgs", OPERATOR_TOKEN, {"name": "Audited", "billing_email": "a@x.example"}, ip
    )
    assert status == 201
    org_pk = ids.decode("org", org["id"])
    event = newest("org.create", org_id=org_pk)
    assert_who_what_when_where(event, "operator", ip, since)

    status, key = call("POST", f"/orgs/{org['id']}/api-keys", OPERATOR_TOKEN, {"name": "k"}, ip)
    assert status == 201
    key_target = f"key_{ids.decode('api_key', key['id'])}"
    assert_who_what_when_where(newest("api_key.create", target=key_target), "operator", ip, since)
    assert key["key"] not in json.dumps(newest("api_key.create", target=key_target).details)

    body = {"credits": 25, "reason": "goodwill"}
    status, _ = call("POST", f"/orgs/{org['id']}/adjustments", OPERATOR_TOKEN, body, ip)
    assert status == 201
    assert_who_what_when_where(newest("credits.adjust", org_id=org_pk), "operator", ip, since)

    book = {
        "retail_unit_price_cents": 5000,
        "tiers": [
            {"min_quantity": 1, "unit_price_cents": 5000},
            {"min_quantity": 100, "unit_price_cents": 4000},
        ],
    }
    status, _ = call("PUT", "/pricing", OPERATOR_TOKEN, book, ip)
    assert status == 200
    assert_who_what_when_where(newest("pricing.set"), "operator", ip, since)

    status, _ = call("PATCH", f"/orgs/{org['id']}", OPERATOR_TOKEN, {"alert_threshold": 3}, ip)
    assert status == 200
    assert_who_what_when_where(newest("org.update", org_id=org_pk), "operator", ip, since)

    status, _ = call("DELETE", f"/orgs/{org['id']}/api-keys/{key['id']}", OPERATOR_TOKEN, None, ip)
    assert status == 200
    assert_who_what_when_where(newest("api_key.revoke", target=key_target), "operator", ip, since)


def test_denials_are_audited(org, make_org):
    since = timezone.now()
    other = make_org("Other")
    key_pk = ApiKey.objects.get(prefix=org.key.split("_")[1]).pk
    cases = [
        # (token, method, path, body, status, actor, reason)
        (None, "GET", org.path("/balance"), None, 401, "anonymous", "unauthenticated"),
        ("lc_nope_nope", "GET", org.path("/balance"), None, 401, "anonymous", "unauthenticated"),
        (org.key, "POST", "/orgs", {"name": "X", "billing_email": "x@x.example"}, 403,
         f"api_key:key_{key_pk}", "forbidden"),
        (org.key, "GET", other.path("/balance"), None, 404,
         f"api_key:key_{key_pk}", "another org"),
    ]  # fmt: skip
    for n, (token, method, path, body, status, actor, reason) in enumerate(cases):
        ip = f"198.51.100.{60 + n}"
        got, _ = call(method, path, token, body, ip)
        assert got == status, (path, got)
        event = newest("auth.denied", ip_address=ip)
        assert_who_what_when_where(event, actor, ip, since)
        assert event.target == "/api/v1" + path
        assert event.details == {"reason": reason, "method": method}


def test_console_actions_are_audited_with_the_operators_name(org):
    """The operator console goes through the same services: its actions name the operator."""
    staff = get_user_model().objects.create_superuser("ops@example.com", "ops@example.com", "pw")
    client = Client(REMOTE_ADDR="203.0.113.20")
    client.force_login(staff, backend=MODEL_BACKEND)
    actor = "operator:ops@example.com"
    org_pk = ids.decode("org", org.id)

    response = client.post(
        f"/admin/tenancy/organization/{org_pk}/adjust/", {"credits": "7", "reason": "console"}
    )
    assert response.status_code == 302
    assert newest("credits.adjust", org_id=org_pk).actor == actor

    response = client.post(
        "/admin/catalog/pricebook/set/",
        {"retail_unit_price_cents": "5000", "tiers": "1 5000\n10 4500"},
    )
    assert response.status_code == 302, response.content[:500]
    assert newest("pricing.set").actor == actor

    page = client.get("/admin/tenancy/organization/add/").content.decode()
    inline = dict.fromkeys(re.findall(r'name="([\w-]+)-TOTAL_FORMS"', page))
    form = {"name": "Console Org", "billing_email": "c@x.example", "timezone": "UTC"}
    form["alert_threshold"] = "0"
    for prefix in inline:
        form.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    response = client.post("/admin/tenancy/organization/add/", form)
    assert response.status_code == 302, response.content[:500]
    event = newest("org.create")
    assert event.details.get("name") == "Console Org"
    assert (event.actor, event.ip_address) == (actor, "203.0.113.20")


def test_operators_can_read_the_audit_trail_and_others_cannot(org):
    call("GET", org.path("/balance"), None, None, "198.51.100.99")
    staff = get_user_model().objects.create_superuser("ops2@example.com", "ops2@example.com", "pw")
    operator = Client()
    operator.force_login(staff, backend=MODEL_BACKEND)
    page = operator.get("/admin/audit/auditevent/")
    assert page.status_code == 200
    assert b"auth.denied" in page.content and b"org.create" in page.content
    event = AuditEvent.objects.order_by("-pk").first()
    assert operator.get(f"/admin/audit/auditevent/{event.pk}/change/").status_code == 200
    # read-only even for the operator: no add, change or delete through the console
    assert operator.get("/admin/audit/auditevent/add/").status_code == 403
    assert operator.post(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403

    learner_admin = Client()
    learner_admin.force_login(make_user(org, "nosy@example.com"), backend=MODEL_BACKEND)
    refused = learner_admin.get("/admin/audit/auditevent/")
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")


@pytest.fixture
def audit_row(org) -> AuditEvent:
    call("GET", org.path("/balance"), None, None, "198.51.100.200")
    return newest("auth.denied", ip_address="198.51.100.200")


def frozen(event: AuditEvent) -> tuple[Any, ...]:
    return tuple(AuditEvent.objects.filter(pk=event.pk).values_list())


@pytest.mark.parametrize(
    "how",
    [
        "queryset.update",
        "queryset.delete",
        "model.save",
        "model.delete",
        "sql.update",
        "sql.delete",
    ],
)
def test_the_database_refuses_to_change_or_delete_audit_rows(audit_row, how):
    before = frozen(audit_row)
    assert before
    with pytest.raises(DatabaseError), transaction.atomic():
        if how == "queryset.update":
            AuditEvent.objects.filter(pk=audit_row.pk).update(actor="someone else")
        elif how == "queryset.delete":
            AuditEvent.objects.filter(pk=audit_row.pk).delete()
        elif how == "model.save":
            audit_row.actor = "someone else"
            audit_row.save()
        elif how == "model.delete":
            audit_row.delete()
        else:
            with connection.cursor() as cursor:
                if how == "sql.update":
                    cursor.execute(
                        "UPDATE audit_auditevent SET ip_address = NULL WHERE id = %s",
                        [audit_row.pk],
                    )
                else:
                    cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [audit_row.pk])
    assert frozen(audit_row) == before
    # new events can still be appended
    AuditEvent.objects.create(actor="test", action="test.append")
