"""No secret we hand out is kept in clear, and expired idempotency records are purged.

The scan test drives the HTTP API the way an integrator does (API keys and webhooks created
with and without ``Idempotency-Key``, replayed; a user with a password; sign-ins), then reads
every column of every row of every table, found both from the models and from the database's
own table list, so a table added later is scanned without touching this file. None of the
secrets may appear, neither as given nor as the hex or base64 of their bytes.

Stored secrets are Fernet-encrypted with a key derived from ``SECRET_KEY``; rotating
``SECRET_KEY`` into ``SECRET_KEY_FALLBACKS`` keeps them readable, and a token under an
unknown key is refused with a clear error, never replayed and never a 500.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import importlib
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.core.exceptions import FieldError
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client, override_settings
from django.utils import timezone
from standardwebhooks import Webhook

from learncredits import ids, secrets_at_rest
from learncredits.api import housekeeping
from learncredits.api.housekeeping import purge_expired_idempotency_records
from learncredits.api.models import IdempotencyRecord
from learncredits.notify.models import WebhookEndpoint
from learncredits.ops.management.commands import worker
from learncredits.secrets_at_rest import UndecryptableSecret
from learncredits.tenancy.models import ApiKey, SsoConfig
from tests.conftest import Api, OrgHandle, Response, ok

pytestmark = pytest.mark.django_db

PASSWORD = "Plain-Text-Never-Stored-7391"
WRONG_PASSWORD = "Almost-The-Password-7391"
SSO_CLIENT_SECRET = "oidc-Client-Secret-Never-Stored-5120"
HOOK_URL = "http://127.0.0.1:9/hooks/learncredits"
ROTATED_KEY = "rotated-" + "k" * 60


# --- scanning the whole database ----------------------------------------------------------------


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (dict, list)):
        return json.dumps(value).encode()
    return str(value).encode()


def all_tables() -> list[str]:
    """Every model's table and every table the database lists (apps without models, tables
    made by raw SQL or a third party): a table added later is scanned automatically."""
    listed = set(connection.introspection.table_names())
    from_models = {m._meta.db_table for m in django_apps.get_models(include_auto_created=True)}
    assert from_models <= listed, f"model tables missing from the database: {from_models - listed}"
    return sorted(listed | from_models)


def dump_database() -> dict[str, bytes]:
    """Each table's every column of every row (text, char, binary and the rest), as bytes."""
    dump: dict[str, bytes] = {}
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in all_tables():
            cursor.execute(f"SELECT * FROM {quote(table)}")
            dump[table] = b"\x1f".join(_as_bytes(v) for row in cursor.fetchall() for v in row)
    return dump


def encodings(secret: str) -> dict[str, bytes]:
    """The secret as given and the ways its bytes could be written down instead."""
    forms: dict[str, bytes] = {"plain": secret.encode()}
    raw = [secret.encode()]
    for prefix in ("whsec_", "lc_"):
        if secret.startswith(prefix):
            rest = secret.removeprefix(prefix)
            if prefix == "lc_":  # lc_<public lookup prefix>_<secret>: the prefix is public
                rest = rest.partition("_")[2]
            forms["secret part"] = rest.encode()
            forms["secret head"] = rest[:16].encode()
            forms["secret tail"] = rest[-16:].encode()
            raw.append(rest.encode())
            for altchars in (None, b"-_"):
                padded = rest + "=" * (-len(rest) % 4)
                with contextlib.suppress(binascii.Error):
                    raw.append(base64.b64decode(padded, altchars=altchars, validate=True))
    for n, data in enumerate(raw):
        forms[f"hex {n}"] = data.hex().encode()
        forms[f"HEX {n}"] = data.hex().upper().encode()
        forms[f"base64 {n}"] = base64.b64encode(data).rstrip(b"=")
        forms[f"base64url {n}"] = base64.urlsafe_b64encode(data).rstrip(b"=")
    return forms


def leaks(dump: dict[str, bytes], secrets: list[str]) -> list[str]:
    found = []
    for secret in secrets:
        for form, needle in encodings(secret).items():
            for table, content in dump.items():
                if needle in content:
                    found.append(f"{secret[:12]}... ({form}) in table {table}")
    return found


# --- the scenario -----------------------------------------------------------------------------


def replayed(api: Api, path: str, body: Any, idem: str, first: Response) -> None:
    again = api.post(path, body, idem=idem)
    assert again.status == first.status, (again.status, again.body)
    assert again.raw == first.raw
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers.get("Idempotent-Replayed") == "true"


def create_key(org: OrgHandle, name: str, idem: str | None = None) -> Response:
    return org.operator.post(org.path("/api-keys"), {"name": name}, idem=idem)


def create_hook(org: OrgHandle, idem: str | None = None) -> Response:
    return org.api.post(org.path("/webhooks"), {"url": HOOK_URL, "events": []}, idem=idem)


def sign_in(username: str, password: str) -> bool:
    client = Client()
    client.post("/login", {"username": username, "password": password})
    return "_auth_user_id" in client.session


@pytest.fixture
def handed_out(org: OrgHandle) -> Iterator[list[str]]:
    """Run the scenario; yield every secret the service handed out or was handed."""
    secrets = [org.key]
    plain_key = ok(create_key(org, "plain"), 201)
    secrets.append(plain_key["key"])
    first = create_key(org, "idempotent", idem="key-1")
    secrets.append(ok(first, 201)["key"])
    replayed(org.operator, org.path("/api-keys"), {"name": "idempotent"}, "key-1", first)

    secrets.append(ok(create_hook(org), 201)["secret"])
    first = create_hook(org, idem="hook-1")
    secrets.append(ok(first, 201)["secret"])
    body = {"url": HOOK_URL, "events": []}
    replayed(org.api, org.path("/webhooks"), body, "hook-1", first)

    user = {"email": "pat@example.com", "name": "Pat", "role": "admin", "password": PASSWORD}
    first = org.operator.post(org.path("/users"), user, idem="user-1")
    ok(first, 201)
    replayed(org.operator, org.path("/users"), user, "user-1", first)
    secrets.append(PASSWORD)
    assert not sign_in("pat@example.com", WRONG_PASSWORD)  # a near miss, recorded by axes
    secrets.append(WRONG_PASSWORD)
    assert sign_in("pat@example.com", PASSWORD)  # a session row

    # Single sign-on's client secret: sent to the provider, so encrypted, not hashed.
    sso = {
        "issuer": "https://idp.example.com",
        "client_id": "client-1",
        "client_secret": SSO_CLIENT_SECRET,
        "email_domains": ["example.com"],
    }
    answer = ok(org.api.put(org.path("/sso"), sso))
    assert SSO_CLIENT_SECRET not in json.dumps(answer)
    secrets.append(SSO_CLIENT_SECRET)
    yield secrets


def test_no_secret_is_stored_in_clear_anywhere(handed_out: list[str]) -> None:
    dump = dump_database()
    assert leaks(dump, handed_out) == []
    # The scan is not vacuous: it reads the tables holding the secrets, and it does find
    # what is stored in clear on purpose (the webhook URL, the API keys' public prefixes).
    assert IdempotencyRecord.objects.count() == 3
    assert WebhookEndpoint._meta.db_table in dump and IdempotencyRecord._meta.db_table in dump
    assert HOOK_URL.encode() in dump[WebhookEndpoint._meta.db_table]
    prefix = handed_out[1].split("_")[1]
    assert prefix.encode() in dump[ApiKey._meta.db_table]
    assert leaks({"planted": handed_out[-1].encode()}, handed_out[-1:])  # the matcher matches


def test_the_scan_catches_a_secret_written_in_clear(handed_out: list[str]) -> None:
    """Negative control: a secret put back in clear (its hex, here) is found."""
    record = IdempotencyRecord.objects.order_by("pk").first()
    assert record is not None
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        body=json.dumps({"leak": handed_out[0].encode().hex()}).encode()
    )
    found = leaks(dump_database(), handed_out)
    table = IdempotencyRecord._meta.db_table
    assert f"{handed_out[0][:12]}... (hex 0) in table {table}" in found
    assert all(f.startswith(handed_out[0][:12]) and f.endswith(table) for f in found), found


def test_the_fingerprint_of_a_request_with_a_password_is_keyed(org: OrgHandle) -> None:
    """A bare SHA-256 of a body with a password could be brute-forced from a dump."""
    body = {"email": "sam@example.com", "name": "Sam", "role": "admin", "password": PASSWORD}
    ok(org.operator.post(org.path("/users"), body, idem="user-2"), 201)
    path = f"/api/v1{org.path('/users')}".encode()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    bare = hashlib.sha256(b"POST\n" + path + b"\n" + canonical).hexdigest()
    record = IdempotencyRecord.objects.get(key="user-2")
    assert len(record.request_hash) == 64 and record.request_hash != bare


def test_sso_client_secret_is_encrypted_and_read_back_in_clear(org: OrgHandle) -> None:
    body = {
        "issuer": "https://idp.example.com",
        "client_id": "client-1",
        "client_secret": SSO_CLIENT_SECRET,
        "email_domains": ["example.com"],
    }
    ok(org.api.put(org.path("/sso"), body))
    config = SsoConfig.objects.get()
    assert config.client_secret == SSO_CLIENT_SECRET
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(SsoConfig._meta.db_table)
        cursor.execute(f"SELECT client_secret FROM {table} WHERE id = %s", [config.pk])
        (stored,) = cursor.fetchone()
    assert stored.startswith("gAAAAA") and SSO_CLIENT_SECRET not in stored
    assert secrets_at_rest.decrypt_text(stored) == SSO_CLIENT_SECRET
    with pytest.raises(FieldError, match="Unsupported lookup"):
        SsoConfig.objects.filter(client_secret=SSO_CLIENT_SECRET).exists()


def test_webhook_secret_is_encrypted_and_still_signs(org: OrgHandle) -> None:
    created = ok(create_hook(org), 201)
    endpoint = WebhookEndpoint.objects.get(pk=ids.decode("webhook", created["id"]))
    assert endpoint.secret == created["secret"]
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(WebhookEndpoint._meta.db_table)
        cursor.execute(f"SELECT secret FROM {table} WHERE id = %s", [endpoint.pk])
        (stored,) = cursor.fetchone()
    assert stored.startswith("gAAAAA") and "whsec_" not in stored
    assert secrets_at_rest.decrypt_text(stored) == created["secret"]
    now = timezone.now()
    signature = Webhook(endpoint.secret).sign("msg_1", now, "{}")
    assert Webhook(created["secret"]).sign("msg_1", now, "{}") == signature
    with pytest.raises(FieldError, match="Unsupported lookup"):
        WebhookEndpoint.objects.filter(secret=created["secret"]).exists()


# --- key rotation -------------------------------------------------------------------------------


def test_replay_and_signing_survive_rotating_secret_key(org: OrgHandle) -> None:
    old_key = settings.SECRET_KEY
    first_key = create_key(org, "before rotation", idem="rot-key")
    first_hook = create_hook(org, idem="rot-hook")
    hook_secret = ok(first_hook, 201)["secret"]
    keys_before = ApiKey.objects.count()
    with override_settings(SECRET_KEY=ROTATED_KEY, SECRET_KEY_FALLBACKS=[old_key]):
        replayed(
            org.operator, org.path("/api-keys"), {"name": "before rotation"}, "rot-key", first_key
        )
        body = {"url": HOOK_URL, "events": []}
        replayed(org.api, org.path("/webhooks"), body, "rot-hook", first_hook)
        refused = org.operator.post(org.path("/api-keys"), {"name": "other"}, idem="rot-key")
        assert (refused.status, refused.code) == (422, "idempotency_key_reused")
        endpoint = WebhookEndpoint.objects.get(pk=ids.decode("webhook", first_hook.body["id"]))
        assert endpoint.secret == hook_secret
        # What is written now is under the new key alone: readable without the fallback.
        after = create_key(org, "after rotation", idem="rot-after")
        token = IdempotencyRecord.objects.get(key="rot-key").body
        moved = secrets_at_rest.reencrypt(token)
    assert ApiKey.objects.count() == keys_before + 1
    with override_settings(SECRET_KEY=ROTATED_KEY, SECRET_KEY_FALLBACKS=[]):
        replayed(
            org.operator, org.path("/api-keys"), {"name": "after rotation"}, "rot-after", after
        )
        assert secrets_at_rest.decrypt(moved) == first_key.raw


def test_a_replay_under_a_lost_key_is_refused_clearly(
    org: OrgHandle, caplog: pytest.LogCaptureFixture
) -> None:
    first = create_key(org, "lost", idem="lost-key")
    ok(first, 201)
    keys_before = ApiKey.objects.count()
    with (
        override_settings(SECRET_KEY=ROTATED_KEY, SECRET_KEY_FALLBACKS=[]),
        caplog.at_level(logging.ERROR, logger="learncredits.api.middleware"),
    ):
        again = create_key(org, "lost", idem="lost-key")
    assert again.status == 422, (again.status, again.body)
    assert again.headers["Content-Type"].startswith("application/problem+json")
    assert again.code == "idempotency_key_reused"
    assert "can no longer be replayed" in again.body["detail"]
    assert first.body["key"] not in again.raw.decode()
    assert ApiKey.objects.count() == keys_before  # no second effect
    assert "SECRET_KEY_FALLBACKS" in caplog.text


def test_decrypt_refuses_a_wrong_key_or_a_tampered_token() -> None:
    token = secrets_at_rest.encrypt(b"whsec_example")
    assert secrets_at_rest.decrypt(memoryview(token)) == b"whsec_example"
    tampered = token[:-2] + (b"A" if token[-2:-1] != b"A" else b"B") + token[-1:]
    for bad in (tampered, b"not a token", b""):
        with pytest.raises(UndecryptableSecret):
            secrets_at_rest.decrypt(bad)
    with override_settings(SECRET_KEY=ROTATED_KEY, SECRET_KEY_FALLBACKS=[]):
        with pytest.raises(UndecryptableSecret, match="SECRET_KEY_FALLBACKS"):
            secrets_at_rest.decrypt(token)
        with pytest.raises(UndecryptableSecret):
            secrets_at_rest.decrypt_text("whsec_é-not-a-token")


def test_a_record_with_a_bare_sha256_fingerprint_still_replays(org: OrgHandle) -> None:
    """Records stored before fingerprints were keyed (encrypted by migration) keep working
    until they expire."""
    first = create_key(org, "legacy", idem="legacy-key")
    path = f"/api/v1{org.path('/api-keys')}".encode()
    bare = hashlib.sha256(b"POST\n" + path + b'\n{"name":"legacy"}').hexdigest()
    IdempotencyRecord.objects.filter(key="legacy-key").update(request_hash=bare)
    replayed(org.operator, org.path("/api-keys"), {"name": "legacy"}, "legacy-key", first)


# --- the data migrations ------------------------------------------------------------------------


def historical_apps(app: str, migration: str) -> Any:
    """The models as the named migration sees them (before it runs)."""
    loader = MigrationLoader(connection, replace_migrations=True)
    return loader.project_state((app, migration), at_end=False).apps


def test_webhook_secret_migration_encrypts_and_its_reverse_decrypts(org: OrgHandle) -> None:
    module = importlib.import_module("learncredits.notify.migrations.0003_encrypt_webhook_secrets")
    old = historical_apps("notify", "0003_encrypt_webhook_secrets")
    plain = "whsec_" + base64.b64encode(b"s" * 32).decode()
    stored = old.get_model("notify", "WebhookEndpoint").objects.create(
        org_id=ids.decode("org", org.id), url=HOOK_URL, events=[], secret=plain
    )
    module.encrypt_secrets(old, None)
    raw = old.get_model("notify", "WebhookEndpoint").objects.get(pk=stored.pk).secret
    assert raw != plain and secrets_at_rest.decrypt_text(raw) == plain
    assert WebhookEndpoint.objects.get(pk=stored.pk).secret == plain
    module.encrypt_secrets(old, None)  # a second run changes nothing
    assert WebhookEndpoint.objects.get(pk=stored.pk).secret == plain
    module.decrypt_secrets(old, None)
    assert old.get_model("notify", "WebhookEndpoint").objects.get(pk=stored.pk).secret == plain


def test_idempotency_migration_encrypts_and_its_reverse_decrypts(org: OrgHandle) -> None:
    module = importlib.import_module("learncredits.api.migrations.0002_encrypt_stored_answers")
    old = historical_apps("api", "0002_encrypt_stored_answers")
    record_model = old.get_model("api", "IdempotencyRecord")
    record = record_model.objects.create(
        scope="operator", key="old", request_hash="0" * 64, status_code=201, body=b'{"k":"lc_x"}'
    )
    module.encrypt_answers(old, None)
    stored = bytes(record_model.objects.get(pk=record.pk).body)
    assert b"lc_x" not in stored and secrets_at_rest.decrypt(stored) == b'{"k":"lc_x"}'
    module.decrypt_answers(old, None)
    assert bytes(record_model.objects.get(pk=record.pk).body) == b'{"k":"lc_x"}'


# --- purging expired idempotency records --------------------------------------------------------


def _records(n: int, age: timedelta) -> None:
    now = timezone.now()
    IdempotencyRecord.objects.bulk_create(
        IdempotencyRecord(
            scope="org_1",
            key=f"k-{age.total_seconds()}-{i}",
            request_hash="0" * 64,
            status_code=201,
            body=secrets_at_rest.encrypt(b"{}"),
            created_at=now - age,
        )
        for i in range(n)
    )


def test_purge_deletes_only_expired_records_in_bounded_batches(settings: Any) -> None:
    ttl = timedelta(seconds=settings.LEARNCREDITS_IDEMPOTENCY_TTL_SECONDS)
    _records(5, ttl + timedelta(minutes=1))
    _records(2, ttl - timedelta(minutes=1))
    assert purge_expired_idempotency_records(batch_size=2, max_batches=1) == 2
    assert IdempotencyRecord.objects.count() == 5
    assert purge_expired_idempotency_records(batch_size=2) == 3
    assert IdempotencyRecord.objects.count() == 2
    assert purge_expired_idempotency_records() == 0
    # Seen from two minutes later, the young ones have expired too.
    assert purge_expired_idempotency_records(now=timezone.now() + timedelta(minutes=2)) == 2
    assert IdempotencyRecord.objects.count() == 0


def test_a_purged_key_runs_again_as_new(org: OrgHandle, settings: Any) -> None:
    first = ok(create_key(org, "again", idem="purged"), 201)
    later = timezone.now() + timedelta(seconds=settings.LEARNCREDITS_IDEMPOTENCY_TTL_SECONDS + 1)
    assert purge_expired_idempotency_records(now=later) == 1
    second = create_key(org, "again", idem="purged")
    assert ok(second, 201)["key"] != first["key"]
    assert "Idempotent-Replayed" not in second.headers


class _Passes:
    """A stop event for the worker's loop that lets it make ``n`` passes."""

    def __init__(self, n: int) -> None:
        self.left = n

    def wait(self, timeout: float) -> bool:
        self.left -= 1
        return self.left < 0


def test_the_worker_outbox_loop_purges_expired_records(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    passes: list[str] = []
    monkeypatch.setattr(worker, "close_old_connections", lambda: None)  # keep the test's
    monkeypatch.setattr("learncredits.notify.delivery.run_once", lambda: passes.append("outbox"))
    ttl = timedelta(seconds=settings.LEARNCREDITS_IDEMPOTENCY_TTL_SECONDS)
    _records(3, ttl + timedelta(hours=1))
    _records(1, timedelta(0))
    worker._drain_outbox(_Passes(1), 0)
    assert passes == ["outbox"]
    assert IdempotencyRecord.objects.count() == 1


def test_the_worker_purges_every_housekeeping_interval_not_every_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(worker, "close_old_connections", lambda: None)
    monkeypatch.setattr("learncredits.notify.delivery.run_once", lambda: calls.append("outbox"))
    monkeypatch.setattr(
        housekeeping, "purge_expired_idempotency_records", lambda: calls.append("purge") or 0
    )
    worker._drain_outbox(_Passes(3), 0)
    assert calls == ["outbox", "purge", "outbox", "outbox"]
    monkeypatch.setattr(worker, "HOUSEKEEPING_EVERY", 0.0)
    calls.clear()
    worker._drain_outbox(_Passes(2), 0)
    assert calls == ["outbox", "purge", "outbox", "purge"]


def test_a_failing_purge_does_not_stop_the_outbox(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken() -> int:
        calls.append("purge")
        raise RuntimeError("database went away")

    monkeypatch.setattr(worker, "close_old_connections", lambda: None)
    monkeypatch.setattr(worker, "HOUSEKEEPING_EVERY", 0.0)
    monkeypatch.setattr("learncredits.notify.delivery.run_once", lambda: calls.append("outbox"))
    monkeypatch.setattr(housekeeping, "purge_expired_idempotency_records", broken)
    worker._drain_outbox(_Passes(2), 0)
    assert calls == ["outbox", "purge", "outbox", "purge"]
