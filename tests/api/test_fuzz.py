"""API fuzzing with schemathesis against the served OpenAPI document.

The document is fetched from ``/api/v1/openapi.json`` through the WSGI app, and every
operation in it is called with generated requests (valid and invalid ones), a bounded number
per operation and reproducibly (derandomized), twice: with the operator token, and with an
org's own key. Every answer must be no 5xx, have a documented status code, and have a body
valid against the documented schema.

Requests go through Django's test request handler (wrapped as a WSGI app), so they run inside
the test's transaction: the world (an org with employees, assignments, a purchase, an
invoice and a webhook, so that generated requests can reach real objects) is built once and
rolled back at the end; each operation runs in its own savepoint.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from django.test.client import ClientHandler
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.media_types import is_json
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import OPERATOR_TOKEN, Api, module_world, ok

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 20
XAPI_VERSION = "1.0.3"
RAN: dict[str, int] = {}  # requests sent per "pass operation"


def documented_media_type(ctx: Any, response: Any, case: Any) -> bool | None:
    """The answer's media type is one the document gives for its status (a JSON flavour such
    as application/problem+json counts as the documented application/json), and a body is
    only sent where the document describes one."""
    documented = case.operation.schema.get_content_types(case.operation, response)
    received = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    if not response.content or response.status_code == 204:
        return None
    if not documented:
        raise AssertionError(
            f"{case.operation.label}: {response.status_code} answered a {received!r} body, "
            "but the document describes no body for it"
        )
    if any(d == received or (is_json(d) and is_json(received)) for d in documented):
        return None
    raise AssertionError(
        f"{case.operation.label}: {response.status_code} answered {received!r}; "
        f"documented: {', '.join(documented)}"
    )


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    documented_media_type,
]


class DjangoTestWSGI:
    """Django's test request handler as a WSGI application: requests run in the test's
    database transaction (it leaves connections open, unlike the production handler)."""

    def __init__(self) -> None:
        self.handler = ClientHandler(enforce_csrf_checks=False)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        response = self.handler(environ)
        streaming = response.streaming
        content = b"".join(response.streaming_content) if streaming else response.content
        headers = list(response.items())
        headers += [("Set-Cookie", c.output(header="").strip()) for c in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [content]


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261126,
        "phases": {"coverage": {"enabled": False}},
        "generation": {"max-examples": EXAMPLES_PER_OPERATION},
    }
)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", DjangoTestWSGI(), config=CONFIG)
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    org: str
    key: str
    pools: dict[str, list[str]]  # path parameter name -> real ids it may name


def _build_world() -> World:
    operator = Api(OPERATOR_TOKEN)
    content = [
        ok(
            operator.post(
                "/content",
                {
                    "title": f"Fuzz {n}",
                    "premium": True,
                    "credit_cost": 1,
                    "xapi_activity_id": f"https://fuzz.example/xapi/{n}",
                },
            ),
            201,
        )["id"]
        for n in range(2)
    ]
    org = ok(operator.post("/orgs", {"name": "Fuzz", "billing_email": "fuzz@example.com"}), 201)
    base = f"/orgs/{org['id']}"
    key = ok(operator.post(base + "/api-keys", {"name": "fuzz"}), 201)
    spare = ok(operator.post(base + "/api-keys", {"name": "spare"}), 201)
    api = Api(key["key"])
    purchase = ok(api.post(base + "/purchases", {"quantity": 50}), 201)
    employees = [
        ok(api.post(base + "/employees", {"name": f"E{n}", "email": f"e{n}@fuzz.example"}), 201)[
            "id"
        ]
        for n in range(6)
    ]
    made = ok(
        api.post(base + "/assignments", {"content_id": content[0], "employee_ids": employees}),
        201,
    )
    assignments = [a["id"] for a in made["data"]]
    ok(api.post(f"{base}/assignments/{assignments[1]}/start"))
    ok(api.post(f"{base}/assignments/{assignments[2]}/start"))
    ok(api.post(f"{base}/assignments/{assignments[2]}/complete"))
    ok(api.post(f"{base}/assignments/{assignments[3]}/cancel"))
    webhook = ok(
        api.post(base + "/webhooks", {"url": "https://hooks.fuzz.example/in", "events": []}), 201
    )["id"]
    today = timezone.now().date()
    return World(
        org=org["id"],
        key=key["key"],
        pools={
            "org_id": [org["id"]],
            "employee_id": employees,
            "assignment_id": assignments,
            "purchase_id": [purchase["id"]],
            "invoice_id": [purchase["invoice_id"]],
            "webhook_id": [webhook],
            "key_id": [spare["id"]],
            "content_id": content,
            "period": [today.strftime("%Y-%m"), "2024-02"],
            "format": ["csv", "json", "csv"],
            "from": [(today - timedelta(days=40)).isoformat(), "2024-01-01"],
            "to": [today.isoformat(), "2024-03-31"],
        },
    )


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with module_world(django_db_blocker):
        yield _build_world()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


# --- steering generated requests toward real objects ---------------------------------------------


def _pick(generated: Any, pool: list[str]) -> Any:
    """Three times in four, a real id instead of the generated value (deterministically, from
    the generated value), so that requests reach real objects as well as unknown ones."""
    digest = zlib.crc32(repr(generated).encode())
    if digest % 4 == 0 or not pool:
        return generated
    return pool[digest % len(pool)]


def steer(case: Any, world: World) -> None:
    for name in list(case.path_parameters or {}):
        if name in world.pools:
            case.path_parameters[name] = _pick(case.path_parameters[name], world.pools[name])
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("content_id"), str):
            body["content_id"] = _pick(body["content_id"], world.pools["content_id"])
        if isinstance(body.get("employee_id"), str):
            body["employee_id"] = _pick(body["employee_id"], world.pools["employee_id"])
        if isinstance(body.get("employee_ids"), list):
            body["employee_ids"] = [
                _pick(v, world.pools["employee_id"]) if isinstance(v, str) else v
                for v in body["employee_ids"]
            ]
        if isinstance(body.get("period"), str):
            body["period"] = _pick(body["period"], world.pools["period"])
    query = case.query
    if isinstance(query, dict):
        for name in ("employee_id", "content_id", "period", "format", "from", "to"):
            if isinstance(query.get(name), str):
                query[name] = _pick(query[name], world.pools[name])


def _headers(case: Any, world: World, token: str) -> dict[str, str]:
    if case.path.endswith("/xapi/statements"):
        basic = base64.b64encode(f"{world.org}:{world.key}".encode()).decode()
        return {"Authorization": f"Basic {basic}", "X-Experience-API-Version": XAPI_VERSION}
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_with_the_operator_token(case, world):
    steer(case, world)
    RAN[f"operator {case.operation.label}"] = RAN.get(f"operator {case.operation.label}", 0) + 1
    case.call_and_validate(headers=_headers(case, world, OPERATOR_TOKEN), checks=CHECKS)


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_with_an_org_key(case, world):
    steer(case, world)
    RAN[f"org-key {case.operation.label}"] = RAN.get(f"org-key {case.operation.label}", 0) + 1
    case.call_and_validate(headers=_headers(case, world, world.key), checks=CHECKS)


def test_the_fuzzers_reached_every_operation_of_the_document(request):
    """Not vacuous: both passes sent requests to every operation the document lists (an
    operation stops at its first failure, so one request is the least)."""
    collected = {getattr(item, "originalname", item.name) for item in request.session.items}
    passes = {
        "test_every_operation_with_the_operator_token",
        "test_every_operation_with_an_org_key",
    }
    if not passes <= collected:
        pytest.skip("runs with both fuzz passes")
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert len(labels) >= 45
    for who in ("operator", "org-key"):
        counts = {label: RAN.get(f"{who} {label}", 0) for label in labels}
        assert min(counts.values()) >= 1, counts
    assert sum(RAN.values()) >= len(labels) * 2 * EXAMPLES_PER_OPERATION // 2
    print(f"fuzz: {sum(RAN.values())} requests over {len(labels)} operations x 2 passes")


# --- pinned: what fuzzing found -----------------------------------------------------------------

NUL = "A\u0000B"
TEXT_FIELDS = [
    # (caller, method, path, body): one free-text field carries a NUL character
    ("operator", "POST", "/orgs", {"name": NUL, "billing_email": "nul@example.com"}),
    ("operator", "PATCH", "/orgs/{org}", {"name": NUL}),
    ("operator", "POST", "/orgs/{org}/api-keys", {"name": NUL}),
    ("operator", "POST", "/orgs/{org}/users",
     {"email": "nul@example.com", "name": NUL, "role": "admin"}),
    ("operator", "POST", "/orgs/{org}/adjustments", {"credits": 5, "reason": NUL}),
    ("operator", "POST", "/content", {"title": NUL, "premium": False, "credit_cost": 0}),
    ("org", "POST", "/orgs/{org}/employees", {"name": NUL, "email": "nul@example.com"}),
    ("org", "POST", "/orgs/{org}/webhooks", {"url": "https://hooks.example/" + NUL, "events": []}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("caller", "method", "path", "body"),
    TEXT_FIELDS,
    ids=[f"{m} {p}" for _, m, p, _ in TEXT_FIELDS],
)
def test_a_nul_character_in_text_is_never_a_server_error(org, operator, caller, method, path, body):
    """Found by the fuzzer on PostgreSQL (text columns cannot hold NUL): such text must be
    refused as invalid input (or stored), never answered with a 500."""
    api = operator if caller == "operator" else org.api
    response = api.request(method, path.format(org=org.id), body)
    assert response.status < 500, (response.status, response.body)
    if response.status >= 400:
        assert response.code == "validation_error", response.body


def test_a_nul_character_in_an_xapi_statement_is_never_a_server_error(org):
    statement = {
        "actor": {"mbox": "mailto:learner@example.com", "name": NUL},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/launched"},
        "object": {"id": "https://courses.example.com/xapi/nul"},
    }
    basic = base64.b64encode(f"{org.id}:{org.key}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "X-Experience-API-Version": XAPI_VERSION}
    response = Api(None).request("POST", "/xapi/statements", statement, headers=headers)
    assert response.status < 500, (response.status, response.body)


def test_a_nul_character_in_a_dashboard_form_is_never_a_server_error(org, operator):
    from django.contrib.auth import get_user_model
    from django.test import Client

    body = {"email": "nul-admin@example.com", "name": "Admin", "role": "admin"}
    ok(operator.post(f"/orgs/{org.id}/users", {**body, "password": "Correct-Horse-42"}), 201)
    client = Client(raise_request_exception=False)
    client.force_login(
        get_user_model().objects.get(username=body["email"]),
        backend="django.contrib.auth.backends.ModelBackend",
    )
    response = client.post("/employees", {"name": NUL, "email": "nul-form@example.com"})
    assert response.status_code < 500


def test_every_csv_answer_is_documented(org):
    """Each operation of the document with ``format=csv`` answers text/csv: the document must
    say so for its 200 (the fuzzer finds these at random; this asks every one)."""
    document = Api(None).client.get("/api/v1/openapi.json").json()
    undocumented = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            formats = [
                p
                for p in operation.get("parameters", [])
                if p["name"] == "format" and "csv" in p["schema"].get("enum", [])
            ]
            if not formats:
                continue
            url = path.removeprefix("/api/v1").replace("{org_id}", org.id)
            params = {"format": "csv", "period": "2024-01"}
            response = Api(OPERATOR_TOKEN).get(url, **params)
            assert response.status == 200, (url, response.body)
            assert response.headers["Content-Type"].startswith("text/csv")
            documented = operation["responses"]["200"].get("content", {})
            if "text/csv" not in documented:
                undocumented.append(f"{method.upper()} {path}")
    assert undocumented == []
