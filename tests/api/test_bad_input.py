"""Bad input on every endpoint (docs/product.md section 12, docs/api.md "Errors"): a clear
error with a stable code, as application/problem+json, and nothing changed in the database.

The tables below are the matrix: who calls, which endpoint, what is wrong, and the exact
status and code expected. Every case runs against one shared world (two orgs with
employees, content, purchases and assignments in every state), built once per module inside
a transaction that is rolled back at the end; each case runs in its own savepoint.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.tenancy.models import ApiKey, Employee
from tests.conftest import OPERATOR_TOKEN, Api, Response, module_world, ok, table_snapshot

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
MAX_BODY = 1024 * 1024
XAPI_VERSION = {"X-Experience-API-Version": "1.0.3"}
ADL = "http://adlnet.gov/expapi/verbs/"


class _Nothing:
    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()  # no body at all / a field left out


@dataclass(frozen=True)
class Lit:
    """A JSON literal written as is, for what json.dumps never writes (``1e3``)."""

    text: str


def to_json(value: Any) -> str:
    if isinstance(value, Lit):
        return value.text
    try:
        return json.dumps(value)
    except TypeError:  # a Lit inside
        pass
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    ids: dict[str, str]
    apis: dict[str, Api]

    def fill(self, value: Any) -> Any:
        """Replace ``{a}``-style placeholders in strings (also inside bodies) by real ids."""
        if isinstance(value, str):
            return re.sub(r"\{(\w+)\}", lambda m: self.ids[m.group(1)], value)
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def statement(statement_id: str | None, email: str, verb: str = "experienced") -> dict[str, Any]:
    """An xAPI statement that changes nothing when applied (the verb is not mapped)."""
    body: dict[str, Any] = {
        "actor": {"mbox": f"mailto:{email}"},
        "verb": {"id": ADL + verb},
        "object": {"id": "https://example.com/xapi/other"},
    }
    if statement_id is not None:
        body["id"] = statement_id
    return body


def _build_org(operator: Api, label: str, name: str, c1: str, c2: str) -> dict[str, str]:
    org = ok(
        operator.post("/orgs", {"name": name, "billing_email": f"billing@{label}.example"}), 201
    )
    created_key = ok(operator.post(f"/orgs/{org['id']}/api-keys", {"name": "test"}), 201)
    key = created_key["key"]
    api = Api(key)
    base = f"/orgs/{org['id']}"
    purchase = ok(api.post(base + "/purchases", {"quantity": 10}), 201)
    assert purchase["invoice_id"], purchase  # its receipt
    emps = [
        ok(api.post(base + "/employees", {"name": n, "email": f"{n}@{label}.example"}), 201)["id"]
        for n in ("e1", "e2", "e3")
    ]
    first = ok(api.post(base + "/assignments", {"content_id": c1, "employee_ids": emps}), 201)
    open_, started, doomed = (a["id"] for a in first["data"])
    ok(api.post(f"{base}/assignments/{started}/start"))
    ok(api.post(f"{base}/employees/{emps[2]}/deactivate"))  # cancels `doomed`
    second = ok(api.post(base + "/assignments", {"content_id": c2, "employee_ids": [emps[0]]}), 201)
    completed = second["data"][0]["id"]
    ok(api.post(f"{base}/assignments/{completed}/complete"))
    ok(
        operator.post(
            base + "/users",
            {"email": f"admin@{label}.example", "name": "Admin", "role": "admin"},
        ),
        201,
    )
    webhook = ok(
        api.post(base + "/webhooks", {"url": f"https://hooks.{label}.example/in", "events": []}),
        201,
    )["id"]
    scim = ok(api.post(base + "/scim-tokens", {"name": "idp"}), 201)["id"]
    department = ok(api.post(base + "/departments", {"name": f"Dept {label}"}), 201)["id"]
    statement_id = f"8b5f0c55-0000-4000-8000-00000000000{label}"  # label is a hex digit
    ok(
        Api(None).request(
            "POST",
            "/xapi/statements",
            statement(statement_id, f"e1@{label}.example"),
            headers={"Authorization": basic(org["id"], key), **XAPI_VERSION},
        )
    )
    return {
        label: org["id"],
        f"{label}_num": org["id"].removeprefix("org_"),
        f"{label}_key": key,
        f"{label}_key_id": created_key["id"],
        f"{label}_emp": emps[0],
        f"{label}_emp2": emps[1],
        f"{label}_emp_inactive": emps[2],
        f"{label}_asg": open_,
        f"{label}_asg_started": started,
        f"{label}_asg_cancelled": doomed,
        f"{label}_asg_completed": completed,
        f"{label}_pur": purchase["id"],
        f"{label}_inv": purchase["invoice_id"],
        f"{label}_whk": webhook,
        f"{label}_stk": scim,
        f"{label}_dep": department,
        f"{label}_stmt": statement_id,
    }


def _build_world() -> World:
    operator = Api(OPERATOR_TOKEN)
    c1 = ok(
        operator.post(
            "/content",
            {
                "title": "Compliance",
                "premium": True,
                "credit_cost": 2,
                "xapi_activity_id": "https://example.com/xapi/compliance",
            },
        ),
        201,
    )["id"]
    c2 = ok(operator.post("/content", {"title": "Safety", "premium": True, "credit_cost": 1}), 201)[
        "id"
    ]
    ids = {"c1": c1, "c2": c2}
    ids.update(_build_org(operator, "a", "Acme", c1, c2))
    ids.update(_build_org(operator, "b", "Beta", c1, c2))
    # A key records when it was last used (at most once a minute); pin that in the future so
    # no request under test writes it, however slowly the suite runs.
    ApiKey.objects.update(last_used_at=timezone.now() + timedelta(days=3650))
    apis = {
        "op": operator,
        "a": Api(ids["a_key"]),
        "b": Api(ids["b_key"]),
        "anon": Api(None),
    }
    return World(ids=ids, apis=apis)


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with module_world(django_db_blocker):
        yield _build_world()


AUDIT_TABLE = "audit_auditevent"  # compared on its own: a refusal may be audited


def _other_tables(known: set[str]) -> list[str]:
    """Tables the shared snapshot leaves out (billing, notify, integrations, the task queue)."""
    names = connection.introspection.table_names()
    skip = {"django_migrations", AUDIT_TABLE}
    return sorted(t for t in names if t not in known and t not in skip)


# The audit trail is compared without its ``auth.denied`` events: recording a refused
# attempt is the one write a refusal may make; any other audit event means something happened.
AUDIT_KEY = f"{AUDIT_TABLE} (without auth.denied)"


def audit_trail_except_denials() -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM {AUDIT_TABLE} WHERE action <> %s ORDER BY 1", ["auth.denied"]
        )
        return [tuple(row) for row in cursor.fetchall()]


def _rows(tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            rows[table] = [tuple(row) for row in cursor.fetchall()]
    return rows


def _all_rows_in_one_query(tables: list[str]) -> dict[str, list[str]]:
    """PostgreSQL: every row of every table (and the audit trail but for denials) as text,
    in one round trip."""
    parts = [(t, f'"{t}"') for t in tables]
    parts.append((AUDIT_KEY, f"(SELECT * FROM {AUDIT_TABLE} WHERE action <> 'auth.denied')"))
    sql = " UNION ALL ".join(
        f"SELECT %s, COALESCE((SELECT array_agg(x::text ORDER BY x::text) FROM {source} x), "
        "'{}'::text[])"
        for _, source in parts
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [name for name, _ in parts])
        return {name: list(rows) for name, rows in cursor.fetchall()}


@pytest.fixture(scope="module")
def table_names(world: World) -> tuple[list[str], list[str]]:
    """(the shared snapshot's tables, the other tables)."""
    known = set(table_snapshot())
    return sorted(known), _other_tables(known)


@pytest.fixture
def everything(
    snapshot: Callable[[], dict[str, Any]], table_names: tuple[list[str], list[str]]
) -> Callable[[], dict[str, Any]]:
    """Every row of every table: the shared ``snapshot()`` plus the tables it leaves out,
    and the audit trail but for denials.

    On PostgreSQL the same rows are read in one query instead of one per table (each case
    reads them twice, and ~50 round trips per read made this file take over a minute);
    test_fast_snapshot_sees_what_the_shared_snapshot_sees keeps the two in step.
    """
    known, others = table_names
    if connection.vendor != "postgresql":
        return lambda: {
            **snapshot(),
            **_rows(others),
            AUDIT_KEY: audit_trail_except_denials(),
        }
    return lambda: _all_rows_in_one_query(sorted(known + others))


@pytest.fixture(scope="module")
def registered(world: World) -> set[tuple[str, str]]:
    from learncredits.api.app import api

    schema = api.get_openapi_schema(path_prefix="")
    return {
        (method.upper(), _normalize(path))
        for path, operations in schema["paths"].items()
        for method in operations
    }


def _normalize(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path.split("?", 1)[0])


# --- one case ---------------------------------------------------------------------------------

AUTH_HEADERS = {
    "bad-token": "Bearer not-a-real-token",
    "forged-key": "Bearer lc_000000000000_forgedsecretforgedsecretforgedsecret00",
    "basic": "Basic b3JnXzE6c2VjcmV0",
    "empty-bearer": "Bearer ",
    "long-token": "Bearer " + "x" * 600,
    "no-scheme": OPERATOR_TOKEN,
}


@dataclass(frozen=True)
class Case:
    who: str  # "op", "a", "b", "anon", or a key of AUTH_HEADERS or XAPI_CALLERS
    method: str
    path: str
    status: int
    code: str
    body: Any = NOTHING
    raw: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


# xAPI callers: HTTP Basic with (org id, key)
XAPI_CALLERS = {
    "xapi-a": ("{a}", "{a_key}"),
    "xapi-a-id-b-key": ("{a}", "{b_key}"),  # a real key, of another org
    "xapi-a-bad-key": ("{a}", "lc_000000000000_forgedsecret"),
    "xapi-b-id-a-key": ("{b}", "{a_key}"),
    "xapi-unknown-org": ("org_999999", "{a_key}"),
    "xapi-operator": ("{a}", OPERATOR_TOKEN),
}


def send(world: World, case: Case) -> Response:
    api = world.apis.get(case.who, world.apis["anon"])
    headers = dict(case.headers)
    if case.who in AUTH_HEADERS:
        headers["Authorization"] = AUTH_HEADERS[case.who]
    if case.who in XAPI_CALLERS:
        user, password = (world.fill(v) for v in XAPI_CALLERS[case.who])
        headers["Authorization"] = basic(user, password)
    raw = case.raw
    if raw is None and case.body is not NOTHING:
        raw = to_json(world.fill(case.body)).encode()
    path = world.fill(case.path)
    params = world.fill(case.params) if case.params else None
    if case.method != "GET" and params:
        path += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return api.request(
        case.method, path, raw=raw, params=params, headers=headers, content_type=case.content_type
    )


def assert_problem(response: Response, status: int, code: str) -> None:
    assert (response.status, response.code) == (status, code), (response.status, response.body)
    assert response.headers["Content-Type"].split(";")[0].strip() == PROBLEM
    body = response.body
    assert isinstance(body, dict)
    for key in ("type", "title", "status", "detail", "code"):
        assert key in body, body
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if status == 401:
        assert response.headers.get("WWW-Authenticate")


def check(world: World, case: Case, everything: Callable[[], Any]) -> None:
    before = everything()
    response = send(world, case)
    assert_problem(response, case.status, case.code)
    assert everything() == before, "a refused request changed the database"


def params_of(cases: list[tuple[str, Case]]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for case_id, case in cases:
        assert case_id not in seen, f"duplicate case id {case_id}"
        seen.add(case_id)
        out.append(pytest.param(case, id=case_id))
    return out


# --- every endpoint ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: Any = NOTHING
    params: dict[str, Any] | None = None
    operator_only: bool = False
    required: tuple[str, ...] = ()
    basic_auth: bool = False  # xAPI: HTTP Basic instead of a bearer token
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def org_scoped(self) -> bool:
        return self.path.startswith("/orgs/{a}")

    def case(self, who: str, status: int, code: str, **changes: Any) -> Case:
        base = Case(
            who=who,
            method=self.method,
            path=self.path,
            status=status,
            code=code,
            body=self.body,
            params=self.params,
            headers=self.headers,
        )
        return replace(base, **changes)


VALID_BOOK = {
    "retail_unit_price_cents": 1000,
    "currency": "USD",
    "tiers": [
        {"min_quantity": 1, "unit_price_cents": 1000},
        {"min_quantity": 50, "unit_price_cents": 900},
    ],
}

# fmt: off
AUTO_TOP_UP = {
    "enabled": True,
    "below_available": 5,
    "quantity": 50,
    "max_purchases_per_month": 2,
    "max_credits_per_month": 200,
}
NEW_STATEMENT = "8b5f0c55-0000-4000-8000-0000000000ff"

ROUTES = [
    # operator only
    Route("POST", "/orgs", {"name": "New", "billing_email": "new@example.com"},
          operator_only=True, required=("name", "billing_email")),
    Route("GET", "/orgs", operator_only=True),
    Route("PATCH", "/orgs/{a}", {"name": "Renamed"}, operator_only=True),
    Route("POST", "/orgs/{a}/api-keys", {"name": "second"}, operator_only=True,
          required=("name",)),
    Route("GET", "/orgs/{a}/api-keys", operator_only=True),
    Route("DELETE", "/orgs/{a}/api-keys/{a_key_id}", operator_only=True),
    Route("POST", "/orgs/{a}/users",
          {"email": "new.admin@example.com", "name": "New Admin", "role": "admin",
           "password": "correct-Horse-battery-9"},
          required=("email", "name", "role")),
    Route("POST", "/orgs/{a}/adjustments", {"credits": 5, "reason": "goodwill"},
          operator_only=True, required=("credits", "reason")),
    Route("POST", "/content", {"title": "New course", "premium": True, "credit_cost": 3},
          operator_only=True, required=("title", "premium", "credit_cost")),
    Route("PUT", "/pricing", VALID_BOOK, operator_only=True,
          required=("retail_unit_price_cents", "tiers")),
    Route("POST", "/billing/close-period", {"period": "2024-01"}, operator_only=True,
          required=("period",)),
    Route("GET", "/billing/statement", params={"period": "2024-01"}, operator_only=True),
    Route("PUT", "/seller",
          {"legal_name": "Seller GmbH", "address": "Berlin", "country": "DE",
           "tax_id": "DE136695976"},
          operator_only=True, required=("legal_name", "address", "country")),
    Route("GET", "/seller", operator_only=True),
    Route("PUT", "/tax/rates",
          {"rates": [{"country": "DE", "name": "VAT", "rate_bps": 1900,
                      "effective_from": "2020-01-01"}]},
          operator_only=True, required=("rates",)),
    Route("GET", "/tax/rates", operator_only=True),
    Route("GET", "/tax/report", params={"period": "2024-01"}, operator_only=True),
    Route("POST", "/orgs/{a}/purchases/{a_pur}/refund", {"credits": 1, "reason": "unused"},
          operator_only=True, required=("credits", "reason")),
    Route("POST", "/orgs/{a}/invoices/{a_inv}/credit-note",
          {"assignment_ids": ["{a_asg}"], "reason": "disputed"}, operator_only=True,
          required=("assignment_ids", "reason")),
    # operator or the org's own key
    Route("GET", "/orgs/{a}"),
    Route("GET", "/orgs/{a}/balance"),
    Route("POST", "/orgs/{a}/employees", {"name": "New Person", "email": "new@a.example"},
          required=("name", "email")),
    Route("GET", "/orgs/{a}/employees"),
    Route("POST", "/orgs/{a}/employees/{a_emp2}/deactivate"),
    Route("POST", "/orgs/{a}/employees/{a_emp2}/reactivate"),
    Route("POST", "/orgs/{a}/scim-tokens", {"name": "Okta"}, required=("name",)),
    Route("DELETE", "/orgs/{a}/scim-tokens/{a_stk}"),
    Route("PATCH", "/orgs/{a}/employees/{a_emp2}", {"name": "e2 renamed"}),
    Route("POST", "/orgs/{a}/departments",
          {"name": "New Dept", "budget_credits": 10, "budget_year_start": "04-01"},
          required=("name",)),
    Route("GET", "/orgs/{a}/departments"),
    Route("GET", "/orgs/{a}/departments/{a_dep}"),
    Route("PATCH", "/orgs/{a}/departments/{a_dep}", {"budget_credits": 50}),
    Route("GET", "/content"),
    Route("GET", "/pricing"),
    Route("GET", "/pricing/quote", params={"quantity": 95}),
    Route("POST", "/orgs/{a}/purchases", {"quantity": 10}, required=("quantity",)),
    Route("GET", "/orgs/{a}/purchases"),
    Route("GET", "/orgs/{a}/purchases/{a_pur}"),
    Route("POST", "/orgs/{a}/assignments", {"content_id": "{c2}", "employee_ids": ["{a_emp2}"]},
          required=("content_id", "employee_ids")),
    Route("GET", "/orgs/{a}/assignments"),
    Route("GET", "/orgs/{a}/assignments/{a_asg}"),
    Route("POST", "/orgs/{a}/assignments/{a_asg}/start"),
    Route("POST", "/orgs/{a}/assignments/{a_asg}/complete"),
    Route("POST", "/orgs/{a}/assignments/{a_asg}/cancel"),
    Route("POST", "/orgs/{a}/assignments/{a_asg}/reassign", {"employee_id": "{a_emp2}"},
          required=("employee_id",)),
    Route("GET", "/orgs/{a}/ledger"),
    Route("GET", "/orgs/{a}/alerts"),
    Route("GET", "/orgs/{a}/invoices"),
    Route("GET", "/orgs/{a}/invoices/{a_inv}"),
    Route("GET", "/orgs/{a}/invoices/{a_inv}/pdf"),
    Route("GET", "/orgs/{a}/invoices/{a_inv}/html"),
    Route("GET", "/orgs/{a}/statement", params={"period": "2024-01"}),
    Route("GET", "/orgs/{a}/usage", params={"from": "2024-01-01", "to": "2024-01-31"}),
    Route("GET", "/orgs/{a}/forecast"),
    Route("POST", "/orgs/{a}/webhooks",
          {"url": "https://example.com/hook", "events": ["purchase.paid"]},
          required=("url",)),
    Route("GET", "/orgs/{a}/webhooks"),
    Route("DELETE", "/orgs/{a}/webhooks/{a_whk}"),
    Route("GET", "/orgs/{a}/webhooks/{a_whk}/deliveries"),
    Route("GET", "/orgs/{a}/auto-top-up"),
    Route("PUT", "/orgs/{a}/auto-top-up", AUTO_TOP_UP,
          required=("enabled", "below_available", "max_purchases_per_month",
                    "max_credits_per_month")),
    Route("PUT", "/orgs/{a}/payment-method", {"payment_method": "pm_card_visa"},
          required=("payment_method",)),
    Route("GET", "/orgs/{a}/payment-method"),
    Route("DELETE", "/orgs/{a}/payment-method"),
    Route("PUT", "/orgs/{a}/sso",
          {"issuer": "https://idp.example.com", "client_id": "client", "client_secret": "secret",
           "email_domains": ["a.example"], "required": False},
          required=("issuer", "client_id", "email_domains")),
    Route("GET", "/orgs/{a}/sso"),
    Route("DELETE", "/orgs/{a}/sso"),
    # xAPI (HTTP Basic: the org id and one of its keys)
    Route("POST", "/xapi/statements", statement(NEW_STATEMENT, "e1@a.example"),
          basic_auth=True, headers=XAPI_VERSION),
    Route("PUT", "/xapi/statements", statement(None, "e1@a.example"),
          params={"statementId": NEW_STATEMENT}, basic_auth=True, headers=XAPI_VERSION),
]
# fmt: on
BEARER_ROUTES = [r for r in ROUTES if not r.basic_auth]
BODY_ROUTES = [r for r in BEARER_ROUTES if r.body is not NOTHING]
LIST_ROUTES = [
    r
    for r in BEARER_ROUTES
    if r.method == "GET"
    and r.path
    in {
        "/orgs",
        "/orgs/{a}/api-keys",
        "/content",
        "/orgs/{a}/employees",
        "/orgs/{a}/departments",
        "/orgs/{a}/purchases",
        "/orgs/{a}/assignments",
        "/orgs/{a}/ledger",
        "/orgs/{a}/invoices",
        "/orgs/{a}/alerts",
        "/orgs/{a}/webhooks",
        "/orgs/{a}/webhooks/{a_whk}/deliveries",
    }
]


def route(method: str, path: str) -> Route:
    (found,) = [r for r in ROUTES if (r.method, r.path) == (method, path)]
    return found


def good_caller(route: Route) -> str:
    return "op" if route.operator_only else "a"


def test_every_implemented_endpoint_is_in_the_matrix(registered):
    """A new endpoint must join the tables above (or this fails), so 'every endpoint' stays
    true as the API grows."""
    known = {(r.method, _normalize(r.path)) for r in ROUTES}
    missing = sorted(registered - known)
    assert missing == []


def test_every_endpoint_of_api_md_is_implemented_and_in_the_matrix(registered):
    """The endpoints of the v1 contract, written out here (no file is read): each must be
    served and in the matrix. docs/api.md documents every served endpoint, and
    tests/api/test_api_reference.py keeps it in step with the OpenAPI document."""
    assert len({r.name for r in ROUTES}) == len(ROUTES)
    contract = {
        "POST /orgs",
        "PATCH /orgs/{}",
        "POST /orgs/{}/api-keys",
        "POST /content",
        "PUT /pricing",
        "POST /orgs/{}/adjustments",
        "POST /billing/close-period",
        "POST /orgs/{}/users",
        "GET /orgs/{}",
        "GET /orgs/{}/balance",
        "POST /orgs/{}/employees",
        "GET /orgs/{}/employees",
        "POST /orgs/{}/employees/{}/deactivate",
        "GET /content",
        "GET /pricing",
        "GET /pricing/quote",
        "POST /orgs/{}/purchases",
        "GET /orgs/{}/purchases",
        "POST /orgs/{}/assignments",
        "GET /orgs/{}/assignments",
        "GET /orgs/{}/assignments/{}",
        "POST /orgs/{}/assignments/{}/start",
        "POST /orgs/{}/assignments/{}/complete",
        "POST /orgs/{}/assignments/{}/cancel",
        "POST /orgs/{}/assignments/{}/reassign",
        "GET /orgs/{}/ledger",
        "GET /orgs/{}/alerts",
        "GET /orgs/{}/invoices",
        "GET /orgs/{}/invoices/{}",
        "GET /orgs/{}/invoices/{}/pdf",
        "GET /orgs/{}/statement",
        "GET /orgs/{}/usage",
        "GET /orgs/{}/forecast",
        "POST /orgs/{}/webhooks",
        "GET /orgs/{}/webhooks",
        "DELETE /orgs/{}/webhooks/{}",
        "GET /orgs/{}/webhooks/{}/deliveries",
        "POST /xapi/statements",
        "PUT /xapi/statements",
        "PUT /seller",
        "PUT /tax/rates",
    }
    known = {f"{r.method} {_normalize(r.path)}" for r in ROUTES}
    assert contract - known == set()
    implemented = {f"{method} {path}" for method, path in registered}
    assert contract - implemented == set()


def test_fast_snapshot_sees_what_the_shared_snapshot_sees(world, snapshot, everything):
    shared, ours = snapshot(), everything()
    assert set(shared) < set(ours)
    assert {t: len(rows) for t, rows in shared.items()} == {t: len(ours[t]) for t in shared}
    assert sum(len(rows) for rows in shared.values()) > 20
    # one column of one row changes: both see it
    Employee.objects.filter(pk=ids.decode("employee", world.ids["a_emp"])).update(name="Changed")
    assert snapshot() != shared
    assert everything() != ours
    # an audited denial is allowed; any other audit event is a change
    ours = everything()
    AuditEvent.objects.create(actor="anonymous", action="auth.denied", target="/api/v1/x")
    assert everything() == ours
    AuditEvent.objects.create(actor="operator", action="org.create", target="org_999")
    assert everything() != ours


# --- 401: no token, bad token -----------------------------------------------------------------

UNAUTHENTICATED = [
    (f"{who}:{r.name}", r.case(who, 401, "unauthenticated"))
    for r in ROUTES
    for who in ("anon", "bad-token")
] + [
    (
        f"{who}:GET /orgs/{{a}}/balance",
        route("GET", "/orgs/{a}/balance").case(who, 401, "unauthenticated"),
    )
    for who in ("forged-key", "basic", "empty-bearer", "long-token", "no-scheme")
]


@pytest.mark.parametrize("case", params_of(UNAUTHENTICATED))
def test_unauthenticated(world, case, everything):
    check(world, case, everything)


# --- 403: an org key on operator-only endpoints -----------------------------------------------

FORBIDDEN = [(f"a:{r.name}", r.case("a", 403, "forbidden")) for r in ROUTES if r.operator_only] + [
    # another org's key on an operator path naming org A: still 403, never a hint about A
    (f"b:{r.name}", r.case("b", 403, "forbidden"))
    for r in ROUTES
    if r.operator_only and r.org_scoped
]


@pytest.mark.parametrize("case", params_of(FORBIDDEN))
def test_org_key_on_operator_only_endpoint(world, case, everything):
    check(world, case, everything)


# --- 404: another org's ids -------------------------------------------------------------------

# fmt: off
OTHER_ORG = [
    # org B's key on every org A path
    (f"b-key:{r.name}", r.case("b", 404, "not_found"))
    for r in BEARER_ROUTES
    if r.org_scoped and not r.operator_only
] + [
    # org A's key, org B's ids in A's paths and bodies
    ("a-key:deactivate-b-employee",
     Case("a", "POST", "/orgs/{a}/employees/{b_emp}/deactivate", 404, "not_found")),
    ("a-key:get-b-purchase", Case("a", "GET", "/orgs/{a}/purchases/{b_pur}", 404, "not_found")),
    ("a-key:get-b-assignment",
     Case("a", "GET", "/orgs/{a}/assignments/{b_asg}", 404, "not_found")),
    *[
        (f"a-key:{verb}-b-assignment",
         Case("a", "POST", f"/orgs/{{a}}/assignments/{{b_asg}}/{verb}", 404, "not_found",
              body={"employee_id": "{a_emp2}"} if verb == "reassign" else NOTHING))
        for verb in ("start", "complete", "cancel", "reassign")
    ],
    ("a-key:assign-b-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{c2}", "employee_ids": ["{b_emp}"]})),
    ("a-key:assign-own-and-b-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{c2}", "employee_ids": ["{a_emp2}", "{b_emp}"]})),
    ("a-key:reassign-to-b-employee",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg}/reassign", 404, "not_found",
          body={"employee_id": "{b_emp}"})),
    ("a-key:filter-by-b-employee",
     Case("a", "GET", "/orgs/{a}/assignments", 404, "not_found",
          params={"employee_id": "{b_emp}"})),
    ("a-key:get-b-department",
     Case("a", "GET", "/orgs/{a}/departments/{b_dep}", 404, "not_found")),
    ("a-key:patch-b-department",
     Case("a", "PATCH", "/orgs/{a}/departments/{b_dep}", 404, "not_found",
          body={"name": "Taken"})),
    ("a-key:patch-b-employee",
     Case("a", "PATCH", "/orgs/{a}/employees/{b_emp}", 404, "not_found", body={"name": "X"})),
    ("a-key:put-employee-in-b-department",
     Case("a", "PATCH", "/orgs/{a}/employees/{a_emp}", 404, "not_found",
          body={"department_id": "{b_dep}"})),
    *[
        (f"a-key:filter-{what}-by-b-department",
         Case("a", "GET", f"/orgs/{{a}}/{what}", 404, "not_found",
              params={"department_id": "{b_dep}", **extra}))
        for what, extra in (
            ("assignments", {}),
            ("ledger", {}),
            ("usage", {"from": "2024-01-01", "to": "2024-01-31"}),
            ("statement", {"period": "2024-01"}),
        )
    ],
    ("a-key:get-b-invoice", Case("a", "GET", "/orgs/{a}/invoices/{b_inv}", 404, "not_found")),
    ("a-key:get-b-invoice-pdf",
     Case("a", "GET", "/orgs/{a}/invoices/{b_inv}/pdf", 404, "not_found")),
    # the operator mixing two orgs' ids is refused the same way
    ("op:a-assignment-under-b",
     Case("op", "POST", "/orgs/{b}/assignments/{a_asg}/start", 404, "not_found")),
    ("op:a-employee-under-b",
     Case("op", "POST", "/orgs/{b}/employees/{a_emp}/deactivate", 404, "not_found")),
    ("op:a-purchase-under-b", Case("op", "GET", "/orgs/{b}/purchases/{a_pur}", 404, "not_found")),
    ("op:reassign-a-to-b-employee",
     Case("op", "POST", "/orgs/{a}/assignments/{a_asg}/reassign", 404, "not_found",
          body={"employee_id": "{b_emp}"})),
    ("op:assign-b-employee-in-a",
     Case("op", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{c1}", "employee_ids": ["{b_emp2}"]})),
]
# fmt: on


@pytest.mark.parametrize("case", params_of(OTHER_ORG))
def test_another_orgs_ids_are_unknown(world, case, everything):
    check(world, case, everything)


# --- 404: unknown ids, ids of the wrong kind, malformed ids -----------------------------------

FULL_WIDTH_PERIOD = "\uff12\uff10\uff12\uff14-\uff10\uff11"  # "2024-01" in full-width digits
HUGE_ID = "1" * 5000  # more digits than int() converts by default

# fmt: off
UNKNOWN_IDS = [
    ("op:unknown-org", Case("op", "GET", "/orgs/org_999999", 404, "not_found")),
    ("op:unknown-org-balance", Case("op", "GET", "/orgs/org_999999/balance", 404, "not_found")),
    ("op:unknown-org-patch",
     Case("op", "PATCH", "/orgs/org_999999", 404, "not_found", body={"name": "X"})),
    ("op:unknown-org-api-key",
     Case("op", "POST", "/orgs/org_999999/api-keys", 404, "not_found", body={"name": "k"})),
    ("op:unknown-org-adjustment",
     Case("op", "POST", "/orgs/org_999999/adjustments", 404, "not_found",
          body={"credits": 5, "reason": "r"})),
    ("op:revoke-unknown-key",
     Case("op", "DELETE", "/orgs/{a}/api-keys/key_999999", 404, "not_found")),
    ("op:revoke-b-key-under-a",
     Case("op", "DELETE", "/orgs/{a}/api-keys/{b_key_id}", 404, "not_found")),
    ("op:revoke-employee-id-as-key",
     Case("op", "DELETE", "/orgs/{a}/api-keys/{a_emp}", 404, "not_found")),
    ("op:revoke-key-of-unknown-org",
     Case("op", "DELETE", "/orgs/org_999999/api-keys/{a_key_id}", 404, "not_found")),
    ("op:unknown-org-users",
     Case("op", "POST", "/orgs/org_999999/users", 404, "not_found",
          body={"email": "x@example.com", "name": "X", "role": "admin",
                "password": "correct-Horse-battery-9"})),
    ("op:unknown-org-purchase",
     Case("op", "POST", "/orgs/org_999999/purchases", 404, "not_found", body={"quantity": 1})),
    ("op:unknown-org-employee",
     Case("op", "POST", "/orgs/org_999999/employees", 404, "not_found",
          body={"name": "X", "email": "x@example.com"})),
    ("op:max-bigint-org", Case("op", "GET", "/orgs/org_9223372036854775807", 404, "not_found")),
    ("op:beyond-bigint-org", Case("op", "GET", "/orgs/org_9223372036854775808", 404, "not_found")),
    ("op:huge-org-id", Case("op", "GET", f"/orgs/org_{HUGE_ID}/balance", 404, "not_found")),
    ("op:leading-zero-org", Case("op", "GET", "/orgs/org_01", 404, "not_found")),
    ("op:zero-org", Case("op", "GET", "/orgs/org_0", 404, "not_found")),
    ("op:no-prefix-org", Case("op", "GET", "/orgs/1", 404, "not_found")),
    ("op:employee-id-as-org", Case("op", "GET", "/orgs/{a_emp}", 404, "not_found")),
    ("a:own-id-with-leading-zero",
     Case("a", "GET", "/orgs/org_0{a_num}/balance", 404, "not_found")),
    ("a:unknown-employee",
     Case("a", "POST", "/orgs/{a}/employees/emp_999999/deactivate", 404, "not_found")),
    ("a:assignment-id-as-employee",
     Case("a", "POST", "/orgs/{a}/employees/{a_asg}/deactivate", 404, "not_found")),
    ("a:huge-employee-id",
     Case("a", "POST", f"/orgs/{{a}}/employees/emp_{HUGE_ID}/deactivate", 404, "not_found")),
    ("a:unknown-purchase", Case("a", "GET", "/orgs/{a}/purchases/pur_999999", 404, "not_found")),
    ("a:assignment-id-as-purchase",
     Case("a", "GET", "/orgs/{a}/purchases/{a_asg}", 404, "not_found")),
    ("a:unknown-assignment",
     Case("a", "GET", "/orgs/{a}/assignments/asg_999999", 404, "not_found")),
    ("a:employee-id-as-assignment",
     Case("a", "GET", "/orgs/{a}/assignments/{a_emp}", 404, "not_found")),
    ("a:malformed-assignment", Case("a", "GET", "/orgs/{a}/assignments/asg_x", 404, "not_found")),
    ("a:negative-assignment",
     Case("a", "GET", "/orgs/{a}/assignments/asg_-1", 404, "not_found")),
    ("a:huge-assignment",
     Case("a", "GET", f"/orgs/{{a}}/assignments/asg_{HUGE_ID}", 404, "not_found")),
    *[
        (f"a:{verb}-unknown-assignment",
         Case("a", "POST", f"/orgs/{{a}}/assignments/asg_999999/{verb}", 404, "not_found",
              body={"employee_id": "{a_emp2}"} if verb == "reassign" else NOTHING))
        for verb in ("start", "complete", "cancel", "reassign")
    ],
    *[
        (f"a:{verb}-employee-id-as-assignment",
         Case("a", "POST", f"/orgs/{{a}}/assignments/{{a_emp}}/{verb}", 404, "not_found",
              body={"employee_id": "{a_emp2}"} if verb == "reassign" else NOTHING))
        for verb in ("start", "complete", "cancel", "reassign")
    ],
    ("a:assign-unknown-content",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "cnt_999999", "employee_ids": ["{a_emp2}"]})),
    ("a:assign-employee-id-as-content",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{a_emp}", "employee_ids": ["{a_emp2}"]})),
    ("a:assign-malformed-content",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "cnt_01", "employee_ids": ["{a_emp2}"]})),
    ("a:assign-unknown-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{c2}", "employee_ids": ["emp_999999"]})),
    ("a:assign-known-and-unknown-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{c2}", "employee_ids": ["{a_emp2}", "emp_999999"]})),
    ("a:assign-assignment-id-as-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{c2}", "employee_ids": ["{a_asg}"]})),
    ("a:assign-malformed-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 404, "not_found",
          body={"content_id": "{c2}", "employee_ids": ["{a_emp2}", "emp_0"]})),
    ("a:reassign-to-unknown-employee",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg}/reassign", 404, "not_found",
          body={"employee_id": "emp_999999"})),
    ("a:reassign-to-content-id",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg}/reassign", 404, "not_found",
          body={"employee_id": "{c1}"})),
    ("a:filter-unknown-employee",
     Case("a", "GET", "/orgs/{a}/assignments", 404, "not_found",
          params={"employee_id": "emp_999999"})),
    ("a:filter-malformed-employee",
     Case("a", "GET", "/orgs/{a}/assignments", 404, "not_found", params={"employee_id": "abc"})),
    ("a:unknown-invoice", Case("a", "GET", "/orgs/{a}/invoices/inv_999999", 404, "not_found")),
    ("a:purchase-id-as-invoice",
     Case("a", "GET", "/orgs/{a}/invoices/{a_pur}", 404, "not_found")),
    ("a:unknown-invoice-pdf",
     Case("a", "GET", "/orgs/{a}/invoices/inv_999999/pdf", 404, "not_found")),
    ("a:unknown-invoice-html",
     Case("a", "GET", "/orgs/{a}/invoices/inv_999999/html", 404, "not_found")),
    # unknown endpoints and methods
    ("a:unknown-endpoint", Case("a", "GET", "/nope", 404, "not_found")),
    ("a:unknown-org-endpoint", Case("a", "GET", "/orgs/{a}/nope", 404, "not_found")),
    ("anon:unknown-endpoint", Case("anon", "GET", "/nope", 404, "not_found")),
    ("a:delete-balance",
     Case("a", "DELETE", "/orgs/{a}/balance", 405, "method_not_allowed")),
    ("a:put-purchases", Case("a", "PUT", "/orgs/{a}/purchases", 405, "method_not_allowed",
                             body={"quantity": 1})),
    ("op:post-pricing", Case("op", "POST", "/pricing", 405, "method_not_allowed",
                             body=VALID_BOOK)),
    ("a:get-start", Case("a", "GET", "/orgs/{a}/assignments/{a_asg}/start", 405,
                         "method_not_allowed")),
]
# fmt: on


@pytest.mark.parametrize("case", params_of(UNKNOWN_IDS))
def test_unknown_ids_endpoints_and_methods(world, case, everything):
    check(world, case, everything)


# --- request bodies: malformed, empty, not an object, extra and missing fields ----------------

OVERSIZED = b'{"name": "' + b"x" * MAX_BODY + b'"}'


MALFORMED = [
    ("truncated", b'{"quantity": '),
    ("form-encoded", b"quantity=10"),
    ("trailing-comma", b'{"quantity": 1,}'),
    ("single-quotes", b"{'quantity': 1}"),
    ("invalid-utf8", b'{"quantity": "\xff\xfe"}'),
]
NOT_OBJECTS = [("null", b"null"), ("list", b"[]"), ("string", b'"x"'), ("number", b"42")]


def body_cases() -> list[tuple[str, Case]]:
    """Every body endpoint gets the common mistakes; one gets every variant of them."""
    cases: list[tuple[str, Case]] = []
    for r in BODY_ROUTES:
        who = good_caller(r)
        all_variants = r.path == "/orgs/{a}/purchases"
        for label, raw in MALFORMED if all_variants else MALFORMED[:1]:
            cases.append(
                (f"malformed-{label}:{r.name}", r.case(who, 400, "validation_error", raw=raw))
            )
        cases.append((f"empty-body:{r.name}", r.case(who, 422, "validation_error", raw=b"")))
        # JSON is read only as JSON in UTF-8: another media type or encoding is refused
        # before anything parses it (Python's parser would take UTF-16 and ignore the type).
        valid = to_json(r.body).encode()
        cases.append(
            (
                f"text-plain:{r.name}",
                r.case(who, 415, "unsupported_media_type", raw=valid, content_type="text/plain"),
            )
        )
        cases.append(
            (
                f"utf-16:{r.name}",
                r.case(who, 415, "unsupported_media_type", raw=valid.decode().encode("utf-16")),
            )
        )
        for label, raw in NOT_OBJECTS if all_variants else NOT_OBJECTS[1:2]:
            cases.append(
                (f"body-is-{label}:{r.name}", r.case(who, 422, "validation_error", raw=raw))
            )
        extra = {**r.body, "unexpected": 1}
        cases.append((f"unknown-field:{r.name}", r.case(who, 422, "validation_error", body=extra)))
        for name in r.required:
            missing = {k: v for k, v in r.body.items() if k != name}
            cases.append(
                (f"missing-{name}:{r.name}", r.case(who, 422, "validation_error", body=missing))
            )
        cases.append((f"oversized:{r.name}", r.case(who, 413, "validation_error", raw=OVERSIZED)))
    cases.append(
        (
            "oversized-without-token:POST /orgs/{a}/purchases",
            Case("anon", "POST", "/orgs/{a}/purchases", 413, "validation_error", raw=OVERSIZED),
        )
    )
    return cases


@pytest.mark.parametrize("case", params_of(body_cases()))
def test_bad_bodies(world, case, everything):
    check(world, case, everything)


# --- Idempotency-Key --------------------------------------------------------------------------

IDEMPOTENCY = [
    (
        f"key-256-chars:{r.name}",
        r.case(good_caller(r), 422, "validation_error", headers={"Idempotency-Key": "k" * 256}),
    )
    for r in BEARER_ROUTES
    if r.method == "POST"
] + [
    (
        "key-10000-chars:POST /orgs/{a}/purchases",
        Case(
            "a",
            "POST",
            "/orgs/{a}/purchases",
            422,
            "validation_error",
            body={"quantity": 1},
            headers={"Idempotency-Key": "k" * 10000},
        ),
    ),
    (
        "key-empty:POST /orgs/{a}/purchases",
        Case(
            "a",
            "POST",
            "/orgs/{a}/purchases",
            422,
            "validation_error",
            body={"quantity": 1},
            headers={"Idempotency-Key": ""},
        ),
    ),
]


@pytest.mark.parametrize("case", params_of(IDEMPOTENCY))
def test_idempotency_key_too_long(world, case, everything):
    check(world, case, everything)


def test_idempotency_key_of_255_chars_is_accepted(world):
    key = "k" * 255
    first = ok(
        world.apis["a"].post(world.fill("/orgs/{a}/purchases"), {"quantity": 1}, idem=key), 201
    )
    again = world.apis["a"].post(world.fill("/orgs/{a}/purchases"), {"quantity": 1}, idem=key)
    assert (again.status, again.body) == (201, first)


def test_idempotency_key_reused_with_another_body(world, everything):
    path = world.fill("/orgs/{a}/purchases")
    ok(world.apis["a"].post(path, {"quantity": 3}, idem="reuse-me"), 201)
    before = everything()
    response = world.apis["a"].post(path, {"quantity": 4}, idem="reuse-me")
    assert_problem(response, 422, "idempotency_key_reused")
    assert everything() == before


# --- fields: wrong JSON types, out of range, huge ---------------------------------------------


def with_field(body: Any, where: tuple[Any, ...], value: Any) -> Any:
    body = copy.deepcopy(body)
    target = body
    for step in where[:-1]:
        target = target[step]
    if value is NOTHING:
        del target[where[-1]]
    else:
        target[where[-1]] = value
    return body


# every integer field gets the first five; the purchase quantity gets them all
NOT_INTEGERS = [
    ("float", 1.5),
    ("exponent", Lit("1e3")),
    ("string", "10"),
    ("true", True),
    ("huge", 10**30),
    ("integral-float", 10.0),
    ("false", False),
    ("list", [10]),
    ("object", {"value": 10}),
    ("huge-negative", -(10**30)),
]

# (method, path, field location, smallest allowed, largest allowed, null allowed)
INTEGER_FIELDS = [
    ("POST", "/orgs", ("alert_threshold",), -(10**9), 10**9, False),
    ("PATCH", "/orgs/{a}", ("alert_threshold",), -(10**9), 10**9, False),
    ("PATCH", "/orgs/{a}", ("release_unstarted_after_days",), 1, 3650, True),
    ("POST", "/orgs/{a}/adjustments", ("credits",), -(10**9), 10**9, False),
    ("POST", "/content", ("credit_cost",), 0, 10**6, False),
    ("PUT", "/pricing", ("retail_unit_price_cents",), 1, 10**8, False),
    ("PUT", "/pricing", ("tiers", 0, "min_quantity"), 1, 10**6, False),
    ("PUT", "/pricing", ("tiers", 1, "unit_price_cents"), 1, 10**8, False),
    ("POST", "/orgs/{a}/purchases", ("quantity",), 1, 10**6, False),
    ("PUT", "/orgs/{a}/auto-top-up", ("below_available",), -(10**6), 10**6, False),
    ("PUT", "/orgs/{a}/auto-top-up", ("quantity",), 1, 10**6, True),
    ("PUT", "/orgs/{a}/auto-top-up", ("max_purchases_per_month",), 1, 1000, False),
    ("PUT", "/orgs/{a}/auto-top-up", ("max_credits_per_month",), 1, 10**6, False),
]


def integer_cases() -> list[tuple[str, Case]]:
    cases = []
    for method, path, where, low, high, null_ok in INTEGER_FIELDS:
        r = route(method, path)
        base = r.body
        if where == ("alert_threshold",) and "alert_threshold" not in base:
            base = {**base, "alert_threshold": 0}
        all_types = (path, where) == ("/orgs/{a}/purchases", ("quantity",))
        wrong_types = NOT_INTEGERS if all_types else NOT_INTEGERS[:5]
        values = [*wrong_types, ("below-min", low - 1), ("above-max", high + 1)]
        if low >= 0:
            values += [("negative", -1)]
        if low >= 1:
            values += [("zero", 0)]
        if not null_ok:
            values += [("null", None)]
        name = ".".join(str(p) for p in where)
        for label, value in values:
            cases.append(
                (
                    f"{name}={label}:{r.name}",
                    r.case(
                        good_caller(r), 422, "validation_error", body=with_field(base, where, value)
                    ),
                )
            )
    return cases


# every string field gets the first two; the employee's name gets them all
NOT_STRINGS = [("int", 5), ("true", True), ("float", 1.5), ("list", ["x"]), ("object", {})]

# (method, path, field location, longest allowed or None, null allowed)
STRING_FIELDS = [
    ("POST", "/orgs", ("name",), 200, False),
    ("POST", "/orgs", ("billing_email",), 254, False),
    ("POST", "/orgs", ("timezone",), 64, False),
    ("PATCH", "/orgs/{a}", ("name",), 200, False),
    ("PATCH", "/orgs/{a}", ("billing_email",), 254, False),
    ("PATCH", "/orgs/{a}", ("timezone",), 64, False),
    ("POST", "/orgs/{a}/api-keys", ("name",), 200, False),
    ("POST", "/orgs/{a}/users", ("email",), 254, False),
    ("POST", "/orgs/{a}/users", ("name",), 200, False),
    ("POST", "/orgs/{a}/users", ("role",), None, False),
    ("POST", "/orgs/{a}/users", ("password",), 256, True),
    ("POST", "/orgs/{a}/adjustments", ("reason",), 2000, False),
    ("POST", "/content", ("title",), 300, False),
    ("POST", "/content", ("xapi_activity_id",), 2000, True),
    ("PUT", "/pricing", ("currency",), None, False),
    ("POST", "/billing/close-period", ("period",), None, False),
    ("POST", "/orgs/{a}/employees", ("name",), 200, False),
    ("POST", "/orgs/{a}/employees", ("email",), 254, False),
    ("POST", "/orgs/{a}/assignments", ("content_id",), 40, False),
    ("POST", "/orgs/{a}/assignments", ("employee_ids", 0), 40, False),
    ("POST", "/orgs/{a}/assignments/{a_asg}/reassign", ("employee_id",), 40, False),
    ("POST", "/orgs/{a}/webhooks", ("url",), 2000, False),
    ("POST", "/orgs/{a}/webhooks", ("events", 0), 64, False),
]


def string_cases() -> list[tuple[str, Case]]:
    cases = []
    for method, path, where, longest, null_ok in STRING_FIELDS:
        r = route(method, path)
        all_types = (method, path, where) == ("POST", "/orgs/{a}/employees", ("name",))
        values = [*(NOT_STRINGS if all_types else NOT_STRINGS[:2]), ("empty", "")]
        if not null_ok:
            values.append(("null", None))
        if longest is not None:
            values.append(("too-long", "x" * (longest + 1)))
        name = ".".join(str(p) for p in where)
        for label, value in values:
            cases.append(
                (
                    f"{name}={label}:{r.name}",
                    r.case(
                        good_caller(r),
                        422,
                        "validation_error",
                        body=with_field(r.body, where, value),
                    ),
                )
            )
    return cases


def other_type_cases() -> list[tuple[str, Case]]:
    content = route("POST", "/content")
    assign = route("POST", "/orgs/{a}/assignments")
    pricing = route("PUT", "/pricing")
    cases = [
        (
            f"premium={label}:{content.name}",
            content.case(
                "op", 422, "validation_error", body=with_field(content.body, ("premium",), value)
            ),
        )
        for label, value in [
            ("int", 1),
            ("zero", 0),
            ("string", "true"),
            ("null", None),
            ("list", [True]),
        ]
    ]
    cases += [
        (
            f"employee_ids={label}:{assign.name}",
            assign.case(
                "a", 422, "validation_error", body=with_field(assign.body, ("employee_ids",), value)
            ),
        )
        for label, value in [
            ("string", "{a_emp2}"),
            ("empty", []),
            ("null", None),
            ("object", {"id": "{a_emp2}"}),
            ("numbers", [1, 2]),
            ("too-many", [f"emp_{i}" for i in range(1, 10_002)]),
        ]
    ]
    cases += [
        (
            f"tiers={label}:{pricing.name}",
            pricing.case(
                "op", 422, "validation_error", body=with_field(pricing.body, ("tiers",), value)
            ),
        )
        for label, value in [
            ("empty", []),
            ("null", None),
            ("object", {"min_quantity": 1, "unit_price_cents": 1000}),
            ("too-many", [{"min_quantity": i, "unit_price_cents": 1000} for i in range(1, 52)]),
            ("tier-extra-field", [{"min_quantity": 1, "unit_price_cents": 1000, "x": 1}]),
            ("tier-missing-price", [{"min_quantity": 1}]),
        ]
    ]
    return cases


@pytest.mark.parametrize("case", params_of(integer_cases() + string_cases() + other_type_cases()))
def test_bad_fields(world, case, everything):
    check(world, case, everything)


# --- query strings: limits, cursors, filters --------------------------------------------------


BAD_PAGING = [
    ("limit=0", {"limit": 0}),
    ("limit=501", {"limit": 501}),
    ("limit=abc", {"limit": "abc"}),
    ("cursor=garbage", {"cursor": "!!!"}),
    ("cursor=zero", {"cursor": "MA"}),  # base64 of "0"
    ("cursor=too-long", {"cursor": "M" * 65}),
    ("limit=-1", {"limit": -1}),
    ("limit=1.5", {"limit": "1.5"}),
    ("limit=empty", {"limit": ""}),
    ("limit=huge", {"limit": str(10**30)}),
    ("cursor=empty", {"cursor": ""}),
    ("cursor=negative", {"cursor": "LTE"}),  # base64 of "-1"
    ("cursor=not-a-number", {"cursor": "YWJj"}),  # base64 of "abc"
]


def query_cases() -> list[tuple[str, Case]]:
    cases = []
    for r in LIST_ROUTES:
        who = good_caller(r)
        variants = BAD_PAGING if r.path == "/orgs/{a}/ledger" else BAD_PAGING[:6]
        for label, params in variants:
            cases.append(
                (
                    f"{label}:{r.name}",
                    r.case(who, 422, "validation_error", params={**(r.params or {}), **params}),
                )
            )
    quote = route("GET", "/pricing/quote")
    for label, value in [
        ("zero", "0"),
        ("negative", "-1"),
        ("float", "1.5"),
        ("text", "abc"),
        ("exponent", "1e3"),
        ("true", "true"),
        ("empty", ""),
        ("huge", str(10**30)),
        ("above-max", "1000001"),
    ]:
        cases.append(
            (
                f"quantity={label}:{quote.name}",
                quote.case("a", 422, "validation_error", params={"quantity": value}),
            )
        )
    cases.append(
        ("quantity=missing:GET /pricing/quote", quote.case("a", 422, "validation_error", params={}))
    )
    assignments = route("GET", "/orgs/{a}/assignments")
    for label, params in [
        ("status=bogus", {"status": "bogus"}),
        ("status=ASSIGNED", {"status": "ASSIGNED"}),
        ("employee_id=too-long", {"employee_id": "emp_" + "1" * 37}),
        ("older_than_days=negative", {"older_than_days": "-1"}),
        ("older_than_days=float", {"older_than_days": "1.5"}),
        ("older_than_days=text", {"older_than_days": "abc"}),
        ("older_than_days=exponent", {"older_than_days": "1e3"}),
        ("older_than_days=true", {"older_than_days": "true"}),
        ("older_than_days=empty", {"older_than_days": ""}),
        ("older_than_days=huge", {"older_than_days": str(10**30)}),
        ("older_than_days=above-max", {"older_than_days": "36501"}),
    ]:
        cases.append(
            (
                f"{label}:{assignments.name}",
                assignments.case("a", 422, "validation_error", params=params),
            )
        )
    for path in ("/orgs/{a}/ledger", "/orgs/{a}/invoices"):
        r = route("GET", path)
        cases.append(
            (f"format=xml:{r.name}", r.case("a", 422, "validation_error", params={"format": "xml"}))
        )
    for path, who in (("/orgs/{a}/statement", "a"), ("/billing/statement", "op")):
        r = route("GET", path)
        for label, value in [
            ("missing", NOTHING),
            ("month-13", "2024-13"),
            ("month-00", "2024-00"),
            ("short-year", "24-01"),
            ("one-digit-month", "2024-1"),
            ("slash", "2024/01"),
            ("date", "2024-01-01"),
            ("year-1969", "1969-12"),
            ("year-9999-12", "9999-12"),
            ("full-width", FULL_WIDTH_PERIOD),
        ]:
            params = {} if value is NOTHING else {"period": value}
            cases.append(
                (f"period={label}:{r.name}", r.case(who, 422, "validation_error", params=params))
            )
    usage = route("GET", "/orgs/{a}/usage")
    for label, params in [
        ("missing-from", {"to": "2024-01-31"}),
        ("missing-to", {"from": "2024-01-01"}),
        ("bad-date", {"from": "2024-13-01", "to": "2024-12-31"}),
        ("not-a-date", {"from": "yesterday", "to": "2024-01-31"}),
        ("to-before-from", {"from": "2024-02-01", "to": "2024-01-01"}),
        ("granularity=week", {"from": "2024-01-01", "to": "2024-01-31", "granularity": "week"}),
        ("too-many-days", {"from": "1971-01-01", "to": "2024-01-31", "granularity": "day"}),
    ]:
        cases.append(
            (f"{label}:{usage.name}", usage.case("a", 422, "validation_error", params=params))
        )
    forecast = route("GET", "/orgs/{a}/forecast")
    for label, value in [
        ("zero", "0"),
        ("negative", "-1"),
        ("float", "1.5"),
        ("text", "abc"),
        ("huge", str(10**30)),
        ("above-max", "3651"),
    ]:
        cases.append(
            (
                f"horizon_days={label}:{forecast.name}",
                forecast.case("a", 422, "validation_error", params={"horizon_days": value}),
            )
        )
    return cases


@pytest.mark.parametrize("case", params_of(query_cases()))
def test_bad_query_strings(world, case, everything):
    check(world, case, everything)


# --- business rules: 422 validation, 409 state ------------------------------------------------

V, S = "validation_error", "invalid_state"

# fmt: off
BUSINESS = [
    # organizations
    ("org:bad-email", Case("op", "POST", "/orgs", 422, V,
                           body={"name": "X", "billing_email": "not-an-email"})),
    ("org:unknown-timezone", Case("op", "POST", "/orgs", 422, V,
                                  body={"name": "X", "billing_email": "x@example.com",
                                        "timezone": "Mars/Olympus_Mons"})),
    ("org:path-as-timezone", Case("op", "POST", "/orgs", 422, V,
                                  body={"name": "X", "billing_email": "x@example.com",
                                        "timezone": "../../etc/passwd"})),
    ("org:blank-name", Case("op", "POST", "/orgs", 422, V,
                            body={"name": "   ", "billing_email": "x@example.com"})),
    ("patch:name-null", Case("op", "PATCH", "/orgs/{a}", 422, V, body={"name": None})),
    ("patch:threshold-null",
     Case("op", "PATCH", "/orgs/{a}", 422, V, body={"alert_threshold": None})),
    ("patch:bad-email", Case("op", "PATCH", "/orgs/{a}", 422, V, body={"billing_email": "x"})),
    ("patch:unknown-timezone",
     Case("op", "PATCH", "/orgs/{a}", 422, V, body={"timezone": "Nowhere/Zone"})),
    ("patch:blank-name-and-good-threshold",
     Case("op", "PATCH", "/orgs/{a}", 422, V, body={"alert_threshold": 5, "name": " "})),
    ("api-key:blank-name", Case("op", "POST", "/orgs/{a}/api-keys", 422, V, body={"name": " "})),
    # users
    ("user:unknown-role",
     Case("op", "POST", "/orgs/{a}/users", 422, V,
          body={"email": "u@a.example", "name": "U", "role": "superuser"})),
    ("user:departments-for-an-admin",
     Case("op", "POST", "/orgs/{a}/users", 404, "not_found",
          body={"email": "u@a.example", "name": "U", "role": "admin",
                "department_ids": ["dep_987654"]})),
    ("user:unknown-department",
     Case("op", "POST", "/orgs/{a}/users", 404, "not_found",
          body={"email": "u@a.example", "name": "U", "role": "manager",
                "department_ids": ["dep_987654"]})),
    ("user:owner-by-a-key",
     Case("a", "POST", "/orgs/{a}/users", 403, "forbidden",
          body={"email": "u@a.example", "name": "U", "role": "owner"})),
    ("api-key:unknown-role",
     Case("op", "POST", "/orgs/{a}/api-keys", 422, V, body={"name": "k", "role": "owner"})),
    ("api-key:unknown-department",
     Case("op", "POST", "/orgs/{a}/api-keys", 404, "not_found",
          body={"name": "k", "role": "manager", "department_ids": ["dep_987654"]})),
    ("user:weak-password",
     Case("op", "POST", "/orgs/{a}/users", 422, V,
          body={"email": "u@a.example", "name": "U", "role": "admin", "password": "123"})),
    ("user:bad-email",
     Case("op", "POST", "/orgs/{a}/users", 422, V,
          body={"email": "nope", "name": "U", "role": "learner"})),
    ("user:existing-email",
     Case("op", "POST", "/orgs/{a}/users", 422, V,
          body={"email": "admin@a.example", "name": "U", "role": "admin",
                "password": "correct-Horse-battery-9"})),
    # adjustments
    ("adjust:zero", Case("op", "POST", "/orgs/{a}/adjustments", 422, V,
                         body={"credits": 0, "reason": "nothing"})),
    ("adjust:blank-reason", Case("op", "POST", "/orgs/{a}/adjustments", 422, V,
                                 body={"credits": 5, "reason": "   "})),
    ("adjust:below-zero", Case("op", "POST", "/orgs/{a}/adjustments", 409,
                               "insufficient_credits",
                               body={"credits": -1000, "reason": "too much"})),
    # catalog and pricing
    ("content:premium-free", Case("op", "POST", "/content", 422, V,
                                  body={"title": "X", "premium": True, "credit_cost": 0})),
    ("content:free-costs", Case("op", "POST", "/content", 422, V,
                                body={"title": "X", "premium": False, "credit_cost": 1})),
    ("content:blank-title", Case("op", "POST", "/content", 422, V,
                                 body={"title": "  ", "premium": False, "credit_cost": 0})),
    ("content:taken-xapi-id",
     Case("op", "POST", "/content", 422, V,
          body={"title": "X", "premium": True, "credit_cost": 1,
                "xapi_activity_id": "https://example.com/xapi/compliance"})),
    *[
        (f"pricing:{label}", Case("op", "PUT", "/pricing", 422, V,
                                  body={"retail_unit_price_cents": retail, "tiers": tiers}))
        for label, retail, tiers in [
            ("unsorted", 1000, [[1, 1000], [100, 850], [50, 900]]),
            ("first-not-1", 1000, [[2, 1000], [50, 900]]),
            ("duplicate-min", 1000, [[1, 1000], [50, 900], [50, 850]]),
            ("price-rises", 1000, [[1, 900], [50, 950]]),
            ("above-retail", 900, [[1, 1000]]),
            ("all-wrong", 500, [[5, 1200], [3, 1300]]),
        ]
        for tiers in [[{"min_quantity": m, "unit_price_cents": p} for m, p in tiers]]
    ],
    ("pricing:other-currency",
     Case("op", "PUT", "/pricing", 422, V, body={**VALID_BOOK, "currency": "EUR"})),
    # employees
    ("employee:existing-email",
     Case("a", "POST", "/orgs/{a}/employees", 422, V, body={"name": "X", "email": "e1@a.example"})),
    ("employee:existing-email-other-case",
     Case("a", "POST", "/orgs/{a}/employees", 422, V, body={"name": "X", "email": "E1@A.example"})),
    ("employee:bad-email",
     Case("a", "POST", "/orgs/{a}/employees", 422, V, body={"name": "X", "email": "nope"})),
    ("employee:blank-name",
     Case("a", "POST", "/orgs/{a}/employees", 422, V, body={"name": "  ", "email": "x@a.example"})),
    # purchases
    ("purchase:above-max", Case("a", "POST", "/orgs/{a}/purchases", 422, V,
                                body={"quantity": 1_000_001})),
    # assignments: inactive employees, illegal transitions
    ("assign:inactive-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 409, "employee_inactive",
          body={"content_id": "{c2}", "employee_ids": ["{a_emp_inactive}"]})),
    ("assign:active-and-inactive-employee",
     Case("a", "POST", "/orgs/{a}/assignments", 409, "employee_inactive",
          body={"content_id": "{c2}", "employee_ids": ["{a_emp2}", "{a_emp_inactive}"]})),
    ("reassign:to-inactive",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg}/reassign", 409, "employee_inactive",
          body={"employee_id": "{a_emp_inactive}"})),
    ("reassign:to-holder-of-same-content",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg}/reassign", 409, S,
          body={"employee_id": "{a_emp2}"})),
    ("reassign:started", Case("a", "POST", "/orgs/{a}/assignments/{a_asg_started}/reassign",
                              409, S, body={"employee_id": "{a_emp}"})),
    ("reassign:cancelled", Case("a", "POST", "/orgs/{a}/assignments/{a_asg_cancelled}/reassign",
                                409, S, body={"employee_id": "{a_emp2}"})),
    ("reassign:completed", Case("a", "POST", "/orgs/{a}/assignments/{a_asg_completed}/reassign",
                                409, S, body={"employee_id": "{a_emp2}"})),
    ("start:cancelled",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg_cancelled}/start", 409, S)),
    ("complete:cancelled",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg_cancelled}/complete", 409, S)),
    ("cancel:started",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg_started}/cancel", 409, S)),
    ("cancel:completed",
     Case("a", "POST", "/orgs/{a}/assignments/{a_asg_completed}/cancel", 409, S)),
    # closing a period
    *[
        (f"close-period:{label}",
         Case("op", "POST", "/billing/close-period", 422, V, body={"period": value}))
        for label, value in [("month-13", "2024-13"), ("month-00", "2024-00"),
                             ("no-dash", "202401"), ("integer", 202401),
                             ("year-1969", "1969-12"), ("year-9999-12", "9999-12"),
                             ("full-width", FULL_WIDTH_PERIOD), ("trailing-newline", "2024-01\n")]
    ],
]
# fmt: on


@pytest.mark.parametrize("case", params_of(BUSINESS))
def test_business_rules(world, case, everything):
    check(world, case, everything)


# --- webhooks, auto top-up, xAPI -------------------------------------------------------------

WEBHOOK_URLS_ALWAYS_REFUSED = [
    ("ftp", "ftp://hooks.example/in"),
    ("no-host", "https:///in"),
    ("javascript", "javascript:alert(1)"),
    ("no-scheme", "hooks.example/in"),
]
# refused in production, where webhooks may not reach internal addresses
WEBHOOK_URLS_INTERNAL = [
    ("loopback", "http://127.0.0.1/in"),
    ("loopback-v6", "http://[::1]/in"),
    ("private", "http://10.0.0.1/in"),
    ("link-local-metadata", "http://169.254.169.254/latest/meta-data"),
    ("unspecified", "http://0.0.0.0/in"),
    ("decimal-loopback", "http://2130706433/in"),
]

# fmt: off
NOTIFY = [
    *[
        (f"webhook-url:{label}",
         Case("a", "POST", "/orgs/{a}/webhooks", 422, V, body={"url": url, "events": []}))
        for label, url in WEBHOOK_URLS_ALWAYS_REFUSED
    ],
    ("webhook:unknown-event",
     Case("a", "POST", "/orgs/{a}/webhooks", 422, V,
          body={"url": "https://hooks.example/in", "events": ["purchase.paid", "foo.bar"]})),
    ("webhook:internal-event",
     Case("a", "POST", "/orgs/{a}/webhooks", 422, V,
          body={"url": "https://hooks.example/in", "events": ["invoice.payment_failed"]})),
    ("webhook:events-string",
     Case("a", "POST", "/orgs/{a}/webhooks", 422, V,
          body={"url": "https://hooks.example/in", "events": "purchase.paid"})),
    ("webhook:too-many-events",
     Case("a", "POST", "/orgs/{a}/webhooks", 422, V,
          body={"url": "https://hooks.example/in", "events": ["purchase.paid"] * 21})),
    ("webhook:delete-unknown",
     Case("a", "DELETE", "/orgs/{a}/webhooks/whk_999999", 404, "not_found")),
    ("webhook:delete-b-webhook",
     Case("a", "DELETE", "/orgs/{a}/webhooks/{b_whk}", 404, "not_found")),
    ("webhook:delete-employee-id",
     Case("a", "DELETE", "/orgs/{a}/webhooks/{a_emp}", 404, "not_found")),
    ("webhook:deliveries-of-b-webhook",
     Case("a", "GET", "/orgs/{a}/webhooks/{b_whk}/deliveries", 404, "not_found")),
    ("webhook:deliveries-of-unknown",
     Case("a", "GET", "/orgs/{a}/webhooks/whk_999999/deliveries", 404, "not_found")),
    *[
        (f"auto-top-up:{label}",
         Case("a", "PUT", "/orgs/{a}/auto-top-up", 422, V, body={**AUTO_TOP_UP, **change}))
        for label, change in [
            ("quantity-and-target", {"target_available": 100}),
            ("neither-quantity-nor-target", {"quantity": None}),
            ("target-not-above-trigger", {"quantity": None, "target_available": 5}),
            ("enabled-string", {"enabled": "true"}),
            ("enabled-int", {"enabled": 1}),
        ]
    ],
    # xAPI: authentication is HTTP Basic with the org's own id and one of its keys
    *[
        (f"xapi-auth:{who}:{method}",
         Case(who, method, "/xapi/statements", 401, "unauthenticated",
              body=statement(NEW_STATEMENT if method == "POST" else None, "e1@a.example"),
              params=None if method == "POST" else {"statementId": NEW_STATEMENT},
              headers=XAPI_VERSION))
        for who in ("xapi-a-id-b-key", "xapi-a-bad-key", "xapi-b-id-a-key",
                    "xapi-unknown-org", "xapi-operator", "basic", "bad-token")
        for method in ("POST", "PUT")
    ],
    ("xapi:no-version-header",
     Case("xapi-a", "POST", "/xapi/statements", 422, V,
          body=statement(NEW_STATEMENT, "e1@a.example"))),
    ("xapi:version-0.95",
     Case("xapi-a", "POST", "/xapi/statements", 422, V,
          body=statement(NEW_STATEMENT, "e1@a.example"),
          headers={"X-Experience-API-Version": "0.95"})),
    ("xapi:malformed-json",
     Case("xapi-a", "POST", "/xapi/statements", 400, V, raw=b'{"actor": ',
          headers=XAPI_VERSION)),
    ("xapi:empty-body",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, raw=b"", headers=XAPI_VERSION)),
    ("xapi:empty-list",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, body=[], headers=XAPI_VERSION)),
    ("xapi:not-an-object",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, body=42, headers=XAPI_VERSION)),
    ("xapi:no-actor",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body={"verb": {"id": ADL + "launched"}, "object": {"id": "x"}})),
    ("xapi:verb-id-not-string",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body={**statement(None, "e1@a.example"), "verb": {"id": 5}})),
    ("xapi:id-not-uuid",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body=statement("not-a-uuid", "e1@a.example"))),
    ("xapi:batch-with-one-bad",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body=[statement(NEW_STATEMENT, "e1@a.example"), {"verb": {}}])),
    ("xapi:too-many",
     Case("xapi-a", "POST", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body=[statement(None, "e1@a.example")] * 501)),
    ("xapi:seen-id-other-body",
     Case("xapi-a", "POST", "/xapi/statements", 409, S, headers=XAPI_VERSION,
          body=statement("{a_stmt}", "e2@a.example"))),
    ("xapi:put-without-statement-id",
     Case("xapi-a", "PUT", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body=statement(None, "e1@a.example"))),
    ("xapi:put-id-mismatch",
     Case("xapi-a", "PUT", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body=statement("{a_stmt}", "e1@a.example"), params={"statementId": NEW_STATEMENT})),
    ("xapi:put-id-not-uuid",
     Case("xapi-a", "PUT", "/xapi/statements", 422, V, headers=XAPI_VERSION,
          body=statement(None, "e1@a.example"), params={"statementId": "nope"})),
    ("xapi:oversized",
     Case("xapi-a", "POST", "/xapi/statements", 413, V, raw=OVERSIZED, headers=XAPI_VERSION)),
]
# fmt: on


@pytest.mark.parametrize("case", params_of(NOTIFY))
def test_webhooks_auto_top_up_and_xapi(world, case, everything):
    check(world, case, everything)


@pytest.mark.parametrize(
    "url", [u for _, u in WEBHOOK_URLS_INTERNAL], ids=[label for label, _ in WEBHOOK_URLS_INTERNAL]
)
def test_webhook_to_an_internal_address_is_refused_in_production(world, url, everything, settings):
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
    case = Case("a", "POST", "/orgs/{a}/webhooks", 422, V, body={"url": url, "events": []})
    check(world, case, everything)


def test_xapi_401_challenges_for_basic_auth(world):
    """The xAPI endpoints take HTTP Basic, so their 401 must say so (RFC 9110 11.6.1)."""
    response = world.apis["anon"].request(
        "POST",
        "/xapi/statements",
        statement(NEW_STATEMENT, "e1@a.example"),
        headers=XAPI_VERSION,
    )
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].lower().startswith("basic")


# --- edges that must never be a 500 -----------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"from": "0001-01-01", "to": "0001-01-01", "granularity": "day"},
        {"from": "0001-01-01", "to": "0001-01-31", "granularity": "month"},
        {"from": "9999-12-31", "to": "9999-12-31", "granularity": "day"},
        {"from": "9999-12-01", "to": "9999-12-31", "granularity": "month"},
    ],
    ids=["first-day", "first-month", "last-day", "last-month"],
)
def test_usage_at_the_ends_of_the_calendar_is_never_a_500(world, params, everything):
    before = everything()
    response = world.apis["a"].get(world.fill("/orgs/{a}/usage"), **params)
    assert response.status in (200, 422), (response.status, response.body)
    if response.status == 422:
        assert_problem(response, 422, "validation_error")
    assert everything() == before


# --- a declined payment -----------------------------------------------------------------------


def test_declined_payment(world, everything):
    operator = world.apis["op"]
    org = ok(
        operator.post(
            "/orgs", {"name": "Decliner", "billing_email": "billing+decline@example.com"}
        ),
        201,
    )
    key = ok(operator.post(f"/orgs/{org['id']}/api-keys", {"name": "k"}), 201)["key"]
    api = Api(key)
    base = f"/orgs/{org['id']}"
    ok(api.get(base + "/balance"))  # the key's first use is recorded; not part of the test
    before = everything()

    response = api.post(base + "/purchases", {"quantity": 100})

    assert_problem(response, 402, "payment_failed")
    after = everything()
    changed = {t for t in set(before) | set(after) if before.get(t) != after.get(t)}
    # Our failed purchase, and the provider's own record of the declined attempt.
    assert changed == {"credits_purchase", "billing_testpaymentintent"}, changed
    assert len(after["credits_purchase"]) == len(before["credits_purchase"]) + 1
    balance = ok(api.get(base + "/balance"))
    assert (balance["credits"], balance["assigned"], balance["available"]) == (0, 0, 0)
    assert ok(api.get(base + "/ledger"))["data"] == []
    purchases = ok(api.get(base + "/purchases"))["data"]
    assert [(p["quantity"], p["status"], p["invoice_id"]) for p in purchases] == [
        (100, "failed", None)
    ]
    assert purchases[0]["total_cents"] == 85000
