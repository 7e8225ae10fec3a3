"""Tenant isolation matrix, generated from the URL configuration.

Every route is found by walking ``django.urls.get_resolver()``: the API's routes and their
methods come from the ninja path views behind its URL patterns, the dashboard's and the
operator console's from their patterns. Each route must be classified in ``API_ROUTES``,
``PAGES`` or (for the console) by its namespace; a route nobody classified fails
``test_every_route_is_classified`` and its own matrix case, so a new route is covered without
anyone remembering to add a test.

For every API route x method, org B's key with org A's ids (the org id and the ids of A's
employee, assignment, purchase, invoice, webhook and API key, in the path, the query and the
body) answers 404 ``not_found`` exactly as for an unknown id (403 ``forbidden`` on operator-only
routes), and no table changes: every row of every table is checksummed before and after, the
audit trail included except for the ``auth.denied`` event that each refusal must add. The
dashboard is checked the same way with an admin and a learner of org B signed in.

The world (two orgs with objects of every kind) is built once per module inside a transaction
that is rolled back at the end; each case runs in its own savepoint.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from ninja.operation import PathView

from learncredits.audit.models import AuditEvent
from learncredits.catalog.models import Content
from learncredits.credits.models import Assignment, LedgerEntry
from learncredits.tenancy.models import ApiKey
from tests.conftest import OPERATOR_TOKEN, Api, Response, module_world, ok

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
XAPI_HEADERS = {"X-Experience-API-Version": "1.0.3"}
ADL = "http://adlnet.gov/expapi/verbs/"
ACTIVITY = "https://courses.example.com/xapi/isolation-101"

# --- the classification ----------------------------------------------------------------------

OPERATOR = "operator-only"  # org keys: 403 forbidden
ORG = "org-scoped"  # another org's key or ids: 404 not_found, as for an unknown id
CATALOG = "public-catalog"  # any valid key; names no org
XAPI = "xapi-basic-auth"  # HTTP Basic: org id + one of that org's keys
API_DOCS = "api-docs"  # the OpenAPI document and its viewer; no org data
PAGE_PUBLIC = "dashboard-public"  # sign-in, sign-out, password reset
PAGE_ADMIN = "dashboard-org-admin"  # an org admin's pages (session auth)
PAGE_LEARNER = "dashboard-learner"  # a learner's own page
ADMIN = "admin"  # the operator console: staff only
ADMIN_PUBLIC = "admin-public"  # the console's sign-in and sign-out
PROBE = "health-probe"  # liveness and readiness for the load balancer: no auth, no org data
PROBES = {"healthz", "readyz"}
PROVIDER_WEBHOOK = "provider-webhook"  # the payment provider's signed callbacks: no session
PROVIDER_WEBHOOKS = {"stripe/webhook"}
STATIC = "static"  # the product's own icon: no auth, no org data
STATIC_ROUTES = {"favicon.ico"}
SCIM = "scim-token"  # SCIM 2.0: an org's SCIM token, which names the org
SCIM_ROUTES = {"^scim/v2/(?P<rest>.*)$"}

API_ROUTES: dict[str, str] = {
    # operator-only
    "POST api/v1/orgs": OPERATOR,
    "GET api/v1/orgs": OPERATOR,
    "PATCH api/v1/orgs/<org_id>": OPERATOR,
    "POST api/v1/orgs/<org_id>/api-keys": OPERATOR,
    "GET api/v1/orgs/<org_id>/api-keys": OPERATOR,
    "DELETE api/v1/orgs/<org_id>/api-keys/<key_id>": OPERATOR,
    "POST api/v1/orgs/<org_id>/adjustments": OPERATOR,
    "POST api/v1/content": OPERATOR,
    "PUT api/v1/pricing": OPERATOR,
    "PUT api/v1/seller": OPERATOR,
    "GET api/v1/seller": OPERATOR,
    "PUT api/v1/tax/rates": OPERATOR,
    "GET api/v1/tax/rates": OPERATOR,
    "GET api/v1/tax/report": OPERATOR,
    "POST api/v1/billing/close-period": OPERATOR,
    "GET api/v1/billing/statement": OPERATOR,
    "POST api/v1/orgs/<org_id>/purchases/<purchase_id>/refund": OPERATOR,
    "POST api/v1/orgs/<org_id>/invoices/<invoice_id>/credit-note": OPERATOR,
    # the catalog and the price book, readable with any key
    "GET api/v1/content": CATALOG,
    "GET api/v1/pricing": CATALOG,
    "GET api/v1/pricing/quote": CATALOG,
    # one org's data
    "GET api/v1/orgs/<org_id>": ORG,
    "GET api/v1/orgs/<org_id>/balance": ORG,
    "POST api/v1/orgs/<org_id>/users": ORG,
    "POST api/v1/orgs/<org_id>/employees": ORG,
    "GET api/v1/orgs/<org_id>/employees": ORG,
    "POST api/v1/orgs/<org_id>/employees/<employee_id>/deactivate": ORG,
    "POST api/v1/orgs/<org_id>/employees/<employee_id>/reactivate": ORG,
    "POST api/v1/orgs/<org_id>/scim-tokens": ORG,
    "DELETE api/v1/orgs/<org_id>/scim-tokens/<token_id>": ORG,
    "PATCH api/v1/orgs/<org_id>/employees/<employee_id>": ORG,
    "POST api/v1/orgs/<org_id>/departments": ORG,
    "GET api/v1/orgs/<org_id>/departments": ORG,
    "GET api/v1/orgs/<org_id>/departments/<department_id>": ORG,
    "PATCH api/v1/orgs/<org_id>/departments/<department_id>": ORG,
    "POST api/v1/orgs/<org_id>/purchases": ORG,
    "GET api/v1/orgs/<org_id>/purchases": ORG,
    "GET api/v1/orgs/<org_id>/purchases/<purchase_id>": ORG,
    "POST api/v1/orgs/<org_id>/assignments": ORG,
    "GET api/v1/orgs/<org_id>/assignments": ORG,
    "GET api/v1/orgs/<org_id>/assignments/<assignment_id>": ORG,
    "POST api/v1/orgs/<org_id>/assignments/<assignment_id>/start": ORG,
    "POST api/v1/orgs/<org_id>/assignments/<assignment_id>/complete": ORG,
    "POST api/v1/orgs/<org_id>/assignments/<assignment_id>/cancel": ORG,
    "POST api/v1/orgs/<org_id>/assignments/<assignment_id>/reassign": ORG,
    "GET api/v1/orgs/<org_id>/ledger": ORG,
    "GET api/v1/orgs/<org_id>/invoices": ORG,
    "GET api/v1/orgs/<org_id>/invoices/<invoice_id>": ORG,
    "GET api/v1/orgs/<org_id>/invoices/<invoice_id>/pdf": ORG,
    "GET api/v1/orgs/<org_id>/invoices/<invoice_id>/html": ORG,
    "GET api/v1/orgs/<org_id>/statement": ORG,
    "GET api/v1/orgs/<org_id>/usage": ORG,
    "GET api/v1/orgs/<org_id>/forecast": ORG,
    "GET api/v1/orgs/<org_id>/alerts": ORG,
    "POST api/v1/orgs/<org_id>/webhooks": ORG,
    "GET api/v1/orgs/<org_id>/webhooks": ORG,
    "DELETE api/v1/orgs/<org_id>/webhooks/<webhook_id>": ORG,
    "GET api/v1/orgs/<org_id>/webhooks/<webhook_id>/deliveries": ORG,
    "GET api/v1/orgs/<org_id>/auto-top-up": ORG,
    "PUT api/v1/orgs/<org_id>/auto-top-up": ORG,
    "PUT api/v1/orgs/<org_id>/payment-method": ORG,
    "GET api/v1/orgs/<org_id>/payment-method": ORG,
    "DELETE api/v1/orgs/<org_id>/payment-method": ORG,
    "PUT api/v1/orgs/<org_id>/sso": ORG,
    "GET api/v1/orgs/<org_id>/sso": ORG,
    "DELETE api/v1/orgs/<org_id>/sso": ORG,
    # xAPI statements (HTTP Basic)
    "POST api/v1/xapi/statements": XAPI,
    "PUT api/v1/xapi/statements": XAPI,
    # the OpenAPI document, its viewer, and the API root
    "GET api/v1/openapi.json": API_DOCS,
    "GET api/v1/docs": API_DOCS,
    "GET api/v1/": API_DOCS,
}

# Dashboard routes (namespace "web"); each is requested with GET and POST.
PAGES: dict[str, str] = {
    "": PAGE_ADMIN,
    "login": PAGE_PUBLIC,
    "logout": PAGE_PUBLIC,
    "password-reset": PAGE_PUBLIC,
    "password-reset/sent": PAGE_PUBLIC,
    "reset/<uidb64>/<token>/": PAGE_PUBLIC,
    "reset/done": PAGE_PUBLIC,
    "buy": PAGE_ADMIN,
    "buy/quote": PAGE_ADMIN,
    "assign": PAGE_ADMIN,
    "assign/preview": PAGE_ADMIN,
    "assignments": PAGE_ADMIN,
    "assignments/<int:assignment_id>/<str:verb>": PAGE_ADMIN,
    "employees": PAGE_ADMIN,
    "employees/<int:employee_id>/deactivate": PAGE_ADMIN,
    "employees/<int:employee_id>/reactivate": PAGE_ADMIN,
    "departments": PAGE_ADMIN,
    "departments/edit": PAGE_ADMIN,
    "learn": PAGE_LEARNER,
    "settings/billing": PAGE_ADMIN,
    "settings/billing/ledger.csv": PAGE_ADMIN,
    "settings/billing/invoices/<int:invoice_id>": PAGE_ADMIN,
    "settings/billing/invoices/<int:invoice_id>.pdf": PAGE_ADMIN,
    "payments/test/authenticate/<str:intent_id>": PAGE_ADMIN,
    "settings/payment": PAGE_ADMIN,
    "settings/sso": PAGE_ADMIN,
    "login/sso/start": PAGE_PUBLIC,
    "login/sso/callback": PAGE_PUBLIC,
    "settings/team": PAGE_ADMIN,
    "settings/audit": PAGE_ADMIN,
    "settings/audit.csv": PAGE_ADMIN,
    "settings/billing/alert-recipients": PAGE_ADMIN,
    # one's own account (every role; a learner's as much as an admin's)
    "settings/profile": PAGE_LEARNER,
    "settings/password": PAGE_LEARNER,
}

# The operator console (namespace "admin", Django's admin site and our own views in it) is
# classified by namespace: every route in it is staff-only except these.
ADMIN_PUBLIC_NAMES = {"login", "logout"}


# --- discovering the routes --------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    route: str  # as written in the URL configuration, e.g. "api/v1/orgs/<org_id>/balance"
    namespace: str  # the outermost namespace ("api-v1", "web", "admin") or ""
    name: str | None
    params: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"

    @property
    def category(self) -> str | None:
        if self.namespace == "api-v1":
            return API_ROUTES.get(self.key)
        if self.namespace == "web":
            return PAGES.get(self.route)
        if self.namespace == "admin":
            return ADMIN_PUBLIC if self.name in ADMIN_PUBLIC_NAMES else ADMIN
        if self.namespace == "" and self.route in PROBES:
            return PROBE
        if self.namespace == "" and self.route in PROVIDER_WEBHOOKS:
            return PROVIDER_WEBHOOK
        if self.namespace == "" and self.route in STATIC_ROUTES:
            return STATIC
        if self.namespace == "" and self.route in SCIM_ROUTES:
            return SCIM
        return None


def _walk(
    patterns: list[Any], prefix: str = "", namespace: str = ""
) -> Iterator[tuple[str, str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(
                pattern.url_patterns,
                prefix + str(pattern.pattern),
                namespace or (pattern.namespace or ""),
            )
        else:
            yield prefix + str(pattern.pattern), namespace, pattern


def _path_view(pattern: URLPattern) -> PathView | None:
    for cell in getattr(pattern.callback, "__closure__", None) or ():
        if isinstance(cell.cell_contents, PathView):
            return cell.cell_contents
    return None


def _params(route: str) -> tuple[str, ...]:
    names = re.findall(r"<(?:\w+:)?(\w+)>", route) + re.findall(r"\(\?P<(\w+)>", route)
    return tuple(dict.fromkeys(names))


def discover() -> list[Route]:
    """Every (method, route) the URL configuration serves."""
    found: dict[str, Route] = {}
    for route, namespace, pattern in _walk(get_resolver().url_patterns):
        view = _path_view(pattern)
        if view is not None:
            methods = sorted({m for op in view.operations for m in op.methods})
        elif namespace in {"web", "admin"}:
            methods = ["GET", "POST"]
        else:
            methods = ["GET"]
        for method in methods:
            item = Route(method, route, namespace, pattern.name, _params(route))
            found.setdefault(item.key, item)
    return list(found.values())


ROUTES = discover()
API = [r for r in ROUTES if r.namespace == "api-v1"]
WEB = [r for r in ROUTES if r.namespace == "web"]
CONSOLE = [r for r in ROUTES if r.namespace == "admin"]


def test_every_route_is_classified():
    unclassified = sorted(r.key for r in ROUTES if r.category is None)
    assert unclassified == [], "classify these routes in tests/api/test_isolation.py"
    served = {r.key for r in API}
    stale = sorted(set(API_ROUTES) - served) + sorted(set(PAGES) - {r.route for r in WEB})
    stale += sorted(PROBES - {r.route for r in ROUTES if r.category == PROBE})
    assert stale == [], "these classified routes no longer exist"


def test_the_matrix_covers_the_whole_api_md_contract():
    """The discovery itself is checked: it finds the routes of docs/api.md and their methods."""
    keys = {r.key for r in API}
    assert len(API) >= 47
    for expected in (
        "POST api/v1/orgs",
        "DELETE api/v1/orgs/<org_id>/api-keys/<key_id>",
        "POST api/v1/orgs/<org_id>/assignments/<assignment_id>/reassign",
        "GET api/v1/orgs/<org_id>/invoices/<invoice_id>/pdf",
        "PUT api/v1/xapi/statements",
    ):
        assert expected in keys
    assert {r.category for r in ROUTES} >= {OPERATOR, ORG, CATALOG, XAPI, PAGE_ADMIN, ADMIN}
    assert len(CONSOLE) > 50


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    ids: dict[str, str]  # public ids ("a", "a_emp", ...) and dashboard pks ("a_emp_pk", ...)
    keys: dict[str, str]  # "a", "b": API keys
    labels: dict[str, str]  # "b": the audit actor of B's key
    users: dict[str, Any]  # "a_admin", "b_admin", "b_learner", "staff"
    markers: list[str]  # strings only org A's data contains

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"\{(\w+)\}", lambda m: self.ids[m.group(1)], value)
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


def _pk(public_id: str) -> str:
    return public_id.split("_", 1)[1]


def _build_org(operator: Api, label: str, content: str) -> tuple[dict[str, str], str]:
    name = f"Isolation {label.upper()} Corp {uuid.uuid4().hex[:6]}"
    org = ok(operator.post("/orgs", {"name": name, "billing_email": f"bill@{label}.example"}), 201)
    key = ok(operator.post(f"/orgs/{org['id']}/api-keys", {"name": "main"}), 201)
    spare = ok(operator.post(f"/orgs/{org['id']}/api-keys", {"name": "spare"}), 201)
    api = Api(key["key"])
    base = f"/orgs/{org['id']}"
    purchase = ok(api.post(base + "/purchases", {"quantity": 20}), 201)
    emps = [
        ok(
            api.post(
                base + "/employees",
                {"name": f"{label} person {n}", "email": f"p{n}@{label}.example"},
            ),
            201,
        )["id"]
        for n in range(1, 4)
    ]
    made = ok(api.post(base + "/assignments", {"content_id": content, "employee_ids": emps}), 201)
    open_, started, _ = (a["id"] for a in made["data"])
    ok(api.post(f"{base}/assignments/{started}/start"))
    scim = ok(api.post(base + "/scim-tokens", {"name": "idp"}), 201)
    webhook = ok(
        api.post(base + "/webhooks", {"url": f"https://hooks.{label}.example/in", "events": []}),
        201,
    )["id"]
    sso = {
        "issuer": f"https://idp.{label}.example",
        "client_id": f"client-{label}",
        "client_secret": f"secret-{label}",
        "email_domains": [f"{label}.example"],
    }
    ok(api.put(base + "/sso", sso))
    department = ok(api.post(base + "/departments", {"name": f"{label} department"}), 201)["id"]
    found = {
        label: org["id"],
        f"{label}_name": name,
        f"{label}_key_id": spare["id"],
        f"{label}_emp": emps[0],
        f"{label}_emp2": emps[1],
        f"{label}_emp3": emps[2],
        f"{label}_asg": open_,
        f"{label}_asg_started": started,
        f"{label}_pur": purchase["id"],
        f"{label}_inv": purchase["invoice_id"],
        f"{label}_intent": purchase["provider_reference"],
        f"{label}_whk": webhook,
        f"{label}_stk": scim["id"],
        f"{label}_scim": scim["token"],
        f"{label}_dep": department,
    }
    for kind in ("emp", "asg", "inv"):
        found[f"{label}_{kind}_pk"] = _pk(found[f"{label}_{kind}"])
    return found, key["key"]


def _user(operator: Api, org_id: str, email: str, role: str) -> Any:
    body = {"email": email, "name": "Person", "role": role, "password": "Correct-Horse-42"}
    ok(operator.post(f"/orgs/{org_id}/users", body), 201)
    return get_user_model().objects.get(username=email)


def _build_world() -> World:
    operator = Api(OPERATOR_TOKEN)
    content = ok(
        operator.post(
            "/content",
            {
                "title": "Isolation 101",
                "premium": True,
                "credit_cost": 1,
                "xapi_activity_id": ACTIVITY,
            },
        ),
        201,
    )["id"]
    a_ids, a_key = _build_org(operator, "a", content)
    b_ids, b_key = _build_org(operator, "b", content)
    users = {
        "a_admin": _user(operator, a_ids["a"], "admin@a.example", "admin"),
        "a_learner": _user(operator, a_ids["a"], "p1@a.example", "learner"),
        "b_admin": _user(operator, b_ids["b"], "admin@b.example", "admin"),
        "b_learner": _user(operator, b_ids["b"], "p1@b.example", "learner"),
    }
    users["staff"] = get_user_model().objects.create_user(
        "staff@operator.example", password="Staff-Password-42", is_staff=True
    )
    # Warm up both keys: last_used_at is written at most once a minute, so later requests in
    # the (short) run of this module write nothing.
    ok(Api(a_key).get(f"/orgs/{a_ids['a']}"))
    ok(Api(b_key).get(f"/orgs/{b_ids['b']}"))
    b_key_pk = ApiKey.objects.get(prefix=b_key.split("_")[1]).pk
    return World(
        ids={**a_ids, **b_ids, "c1": content, "unknown_org": "org_987654321"},
        keys={"a": a_key, "b": b_key},
        labels={"b": f"api_key:key_{b_key_pk}"},
        users=users,
        markers=[
            a_ids["a_name"],
            "p1@a.example",
            "p2@a.example",
            a_ids["a"] + "/",
            "idp.a.example",
            "client-a",
        ],
    )


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with module_world(django_db_blocker):
        yield _build_world()


# --- table checksums --------------------------------------------------------------------------

AUDIT_TABLE = "audit_auditevent"
SKIP_TABLES = {"django_migrations", "django_session", AUDIT_TABLE}
AUDIT_KEY = f"{AUDIT_TABLE} (all but auth.denied)"


def checksums() -> dict[str, str]:
    """A checksum of every row of every table (sessions aside), and of the audit trail
    without its ``auth.denied`` events (a refusal may record one; anything else is a change)."""
    tables = sorted(t for t in connection.introspection.table_names() if t not in SKIP_TABLES)
    result: dict[str, str] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            parts = [
                f"SELECT '{t}', count(*)::text || ':' || md5(coalesce(string_agg(r::text, "
                f"E'\\n' ORDER BY r::text), '')) FROM \"{t}\" r"
                for t in tables
            ]
            parts.append(
                f"SELECT '{AUDIT_KEY}', count(*)::text || ':' || md5(coalesce(string_agg("
                f"r::text, E'\\n' ORDER BY r.id), '')) FROM \"{AUDIT_TABLE}\" r "
                "WHERE r.action <> 'auth.denied'"
            )
            cursor.execute(" UNION ALL ".join(parts))
            return dict(cursor.fetchall())
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            rows = cursor.fetchall()
            result[table] = f"{len(rows)}:{hashlib.sha256(repr(rows).encode()).hexdigest()}"
        cursor.execute(f"SELECT * FROM \"{AUDIT_TABLE}\" WHERE action <> 'auth.denied' ORDER BY id")
        rows = cursor.fetchall()
        result[AUDIT_KEY] = f"{len(rows)}:{hashlib.sha256(repr(rows).encode()).hexdigest()}"
    return result


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))


def test_checksums_see_a_one_column_change_and_ignore_only_denials(world):
    """The checksum is not blind: one changed column, or any audit event but a denial, shows."""
    before = checksums()
    assert len(before) > 30
    Assignment.objects.filter(pk=int(world.ids["a_asg_pk"])).update(credit_cost=7)
    assert changed(before, checksums()) == ["credits_assignment"]
    before = checksums()
    AuditEvent.objects.create(actor="x", action="auth.denied", target="/api/v1/x")
    assert changed(before, checksums()) == []
    AuditEvent.objects.create(actor="x", action="org.update", target="org_1")
    assert changed(before, checksums()) == [AUDIT_KEY]


# --- API: every route x method with org B's key and org A's ids --------------------------------

PARAM_IDS = {
    "org_id": "{a}",
    "employee_id": "{a_emp}",
    "assignment_id": "{a_asg}",
    "purchase_id": "{a_pur}",
    "invoice_id": "{a_inv}",
    "webhook_id": "{a_whk}",
    "key_id": "{a_key_id}",
    "token_id": "{a_stk}",
    "department_id": "{a_dep}",
}
UNKNOWN_IDS = {
    "department_id": "dep_987654321",
    "employee_id": "emp_987654321",
    "assignment_id": "asg_987654321",
    "purchase_id": "pur_987654321",
    "invoice_id": "inv_987654321",
    "webhook_id": "whk_987654321",
    "key_id": "key_987654321",
    "token_id": "stk_987654321",
}


def _statement(email: str, verb: str = "launched") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "actor": {"mbox": f"mailto:{email}", "objectType": "Agent"},
        "verb": {"id": ADL + verb},
        "object": {"id": ACTIVITY, "objectType": "Activity"},
    }


# Valid bodies (ninja validates a body before the view runs, so an invalid one would be
# refused with 422 before authorization is even asked). {a_*} are org A's ids.
BODIES: dict[str, Any] = {
    "POST api/v1/orgs": {"name": "Mallory Inc", "billing_email": "m@mallory.example"},
    "PATCH api/v1/orgs/<org_id>": {"name": "Taken over", "alert_threshold": 5},
    "POST api/v1/orgs/<org_id>/api-keys": {"name": "stolen"},
    "POST api/v1/orgs/<org_id>/scim-tokens": {"name": "stolen"},
    "POST api/v1/orgs/<org_id>/users": {
        "email": "mallory@mallory.example",
        "name": "Mallory",
        "role": "admin",
        "password": "Mallory-Password-42",
    },
    "POST api/v1/orgs/<org_id>/adjustments": {"credits": 1000, "reason": "free credits"},
    "POST api/v1/orgs/<org_id>/purchases/<purchase_id>/refund": {"credits": 1, "reason": "x"},
    "POST api/v1/orgs/<org_id>/invoices/<invoice_id>/credit-note": {
        "assignment_ids": ["{a_asg}"],
        "reason": "x",
    },
    "POST api/v1/content": {"title": "Mallory 101", "premium": False, "credit_cost": 0},
    "PUT api/v1/pricing": {
        "retail_unit_price_cents": 1,
        "tiers": [{"min_quantity": 1, "unit_price_cents": 1}],
    },
    "POST api/v1/billing/close-period": {"period": "2020-01"},
    "PUT api/v1/seller": {"legal_name": "Mallory Ltd", "address": "Nowhere", "country": "GB"},
    "PUT api/v1/tax/rates": {"rates": []},
    "POST api/v1/orgs/<org_id>/employees": {"name": "Mole", "email": "mole@mallory.example"},
    "PATCH api/v1/orgs/<org_id>/employees/<employee_id>": {"name": "Mole"},
    "POST api/v1/orgs/<org_id>/departments": {"name": "Mole dept", "budget_credits": 1},
    "PATCH api/v1/orgs/<org_id>/departments/<department_id>": {"budget_credits": 0},
    "POST api/v1/orgs/<org_id>/purchases": {"quantity": 5},
    "POST api/v1/orgs/<org_id>/assignments": {"content_id": "{c1}", "employee_ids": ["{a_emp3}"]},
    "POST api/v1/orgs/<org_id>/assignments/<assignment_id>/reassign": {"employee_id": "{a_emp3}"},
    "POST api/v1/orgs/<org_id>/webhooks": {"url": "https://mallory.example/in", "events": []},
    "PUT api/v1/orgs/<org_id>/auto-top-up": {
        "enabled": True,
        "below_available": 5,
        "quantity": 10,
        "max_purchases_per_month": 3,
        "max_credits_per_month": 100,
    },
    "PUT api/v1/orgs/<org_id>/payment-method": {"payment_method": "pm_card_visa"},
    "PUT api/v1/orgs/<org_id>/sso": {
        "issuer": "https://idp.mallory.example",
        "client_id": "mallory",
        "client_secret": "mallory-secret",
        "email_domains": ["mallory.example"],
        "required": True,
    },
}
QUERIES: dict[str, dict[str, str]] = {
    "GET api/v1/orgs/<org_id>/statement": {"period": "2020-01"},
    "GET api/v1/billing/statement": {"period": "2020-01"},
    "GET api/v1/tax/report": {"period": "2020-01"},
    "GET api/v1/orgs/<org_id>/usage": {"from": "2020-01-01", "to": "2020-01-31"},
    "GET api/v1/orgs/<org_id>/assignments": {"employee_id": "{a_emp}"},
    "GET api/v1/pricing/quote": {"quantity": "10"},
    "PUT api/v1/xapi/statements": {"statementId": "3c2b5c41-9b1b-4a63-a7b8-2b3c4d5e6f70"},
}
# The same body or query with ids unknown everywhere, to compare the answers with.
UNKNOWN_BODIES: dict[str, Any] = {
    "POST api/v1/orgs/<org_id>/assignments": {
        "content_id": "{c1}",
        "employee_ids": ["emp_987654321"],
    },
    "POST api/v1/orgs/<org_id>/assignments/<assignment_id>/reassign": {
        "employee_id": "emp_987654321"
    },
}
UNKNOWN_QUERIES = {"GET api/v1/orgs/<org_id>/assignments": {"employee_id": "emp_987654321"}}


@functools.cache
def _openapi_requirements() -> dict[str, tuple[bool, list[str]]]:
    """(has a request body, required query parameters) per route key, from the OpenAPI
    document, so that a new route without a body or query here fails with a clear message."""
    from learncredits.api.app import api

    schema = api.get_openapi_schema(path_prefix="/api/v1")
    found: dict[str, tuple[bool, list[str]]] = {}
    for path, operations in schema["paths"].items():
        route = re.sub(r"\{(\w+)\}", r"<\1>", path).lstrip("/")
        for method, operation in operations.items():
            required = [
                p["name"]
                for p in operation.get("parameters", [])
                if p.get("in") == "query" and p.get("required")
            ]
            found[f"{method.upper()} {route}"] = ("requestBody" in operation, required)
    return found


def _api_url(route: Route, values: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", sub, route.route)


def _request(world: World, route: Route, token: str, url: str, body: Any, query: Any) -> Response:
    caller = Api(token)
    body = world.fill(body) if body is not None else None
    query = world.fill(query) if query else None
    path = url.removeprefix("/api/v1")
    if route.method == "GET":
        return caller.request("GET", path, params=query)
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return caller.request(route.method, path, body)


def _requirements_are_met(route: Route) -> None:
    needs_body, required = _openapi_requirements().get(route.key, (False, []))
    if needs_body:
        assert route.key in BODIES, f"{route.key}: add a valid body to BODIES"
    missing = [q for q in required if q not in QUERIES.get(route.key, {})]
    assert missing == [], f"{route.key}: add the required query parameters {missing} to QUERIES"
    unknown = [p for p in route.params if p not in PARAM_IDS]
    assert unknown == [], f"{route.key}: add path parameters {unknown} to PARAM_IDS"


def _denials(before_id: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=before_id, action="auth.denied"))


def _last_audit_id() -> int:
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    return last or 0


def _masked(response: Response, *values: str) -> tuple[int, str]:
    text = response.raw.decode()
    for value in sorted(values, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(value)}\b", "<ID>", text)
    return response.status, text


def _check_refused(
    world: World, route: Route, response: Response, status: int, code: str, before: Any
) -> None:
    assert (response.status, response.code) == (status, code), (route.key, response.body)
    assert response.headers["Content-Type"].startswith(PROBLEM)
    assert changed(before, checksums()) == [], route.key
    for marker in world.markers:
        assert marker not in response.raw.decode(), (route.key, marker)


API_ORG_OR_OPERATOR = [r for r in API if r.category in {ORG, OPERATOR, None}]


@pytest.mark.parametrize("route", API_ORG_OR_OPERATOR, ids=lambda r: r.key)
def test_org_b_key_with_org_a_ids(world, route):
    """B's key, A's org id and A's object ids: 404 as for unknown ids (403 on operator-only
    routes), nothing changed, and the refusal audited with who, what, when and from where."""
    check_cross_org(world, route)


def check_cross_org(world: World, route: Route) -> None:
    assert route.category is not None, f"{route.key} is not classified"
    _requirements_are_met(route)
    values = {p: world.fill(PARAM_IDS[p]) for p in route.params}
    url = _api_url(route, values)
    body, query = BODIES.get(route.key), QUERIES.get(route.key)
    expected = (403, "forbidden") if route.category == OPERATOR else (404, "not_found")

    before, last = checksums(), _last_audit_id()
    response = _request(world, route, world.keys["b"], url, body, query)
    _check_refused(world, route, response, *expected, before)

    denials = _denials(last)
    assert [d.target for d in denials] == [url], route.key
    (denial,) = denials
    assert denial.actor == world.labels["b"]
    assert denial.ip_address == "127.0.0.1"
    assert denial.created_at is not None
    assert denial.details["method"] == route.method

    # Exactly as for ids that exist nowhere: the answer tells nothing about org A.
    if "org_id" in route.params:
        unknown = {**values, "org_id": world.ids["unknown_org"]}
        other = _request(world, route, world.keys["b"], _api_url(route, unknown), body, query)
        masked = [values["org_id"], world.ids["unknown_org"]]
        assert _masked(other, *masked) == _masked(response, *masked), route.key


def test_negative_control_the_matrix_catches_a_missing_org_check(world, monkeypatch):
    """With the org check deliberately removed (in this test only), the same check fails on a
    read and on a write, so the matrix above can fail."""
    from learncredits.api import app, billing_routes, notify_routes
    from learncredits.tenancy.services import get_org

    def unchecked(request: Any, org_id: str) -> Any:
        return get_org(int(_pk(org_id)))

    for module in (app, billing_routes, notify_routes):
        monkeypatch.setattr(module, "org_for", unchecked)
    by_key = {r.key: r for r in API}
    for key in ("GET api/v1/orgs/<org_id>/balance", "POST api/v1/orgs/<org_id>/purchases"):
        with pytest.raises(AssertionError):
            check_cross_org(world, by_key[key])


ROUTES_WITH_OBJECT_IDS = [
    r
    for r in API
    if r.category == ORG
    and (
        set(r.params) - {"org_id"}
        or "{a_" in json.dumps(BODIES.get(r.key))
        or "{a_" in json.dumps(QUERIES.get(r.key))
    )
]


@pytest.mark.parametrize("route", ROUTES_WITH_OBJECT_IDS, ids=lambda r: r.key)
def test_org_b_key_in_its_own_org_with_org_a_object_ids(world, route):
    """B's key under B's own org id, naming A's employee, assignment, purchase, invoice or
    webhook: 404, exactly as for an id that does not exist, and nothing changed."""
    values = {p: world.fill(PARAM_IDS[p]) for p in route.params}
    values["org_id"] = world.ids["b"]
    body, query = BODIES.get(route.key), QUERIES.get(route.key)

    before = checksums()
    response = _request(world, route, world.keys["b"], _api_url(route, values), body, query)
    _check_refused(world, route, response, 404, "not_found", before)

    unknown = {p: UNKNOWN_IDS.get(p, v) for p, v in values.items()}
    other = _request(
        world,
        route,
        world.keys["b"],
        _api_url(route, unknown),
        UNKNOWN_BODIES.get(route.key, body),
        UNKNOWN_QUERIES.get(route.key, query),
    )
    a_ids = [world.ids[k] for k in ("a_emp", "a_emp3", "a_asg", "a_pur", "a_inv", "a_whk", "a_dep")]
    masked = [*a_ids, *UNKNOWN_IDS.values()]
    assert _masked(other, *masked) == _masked(response, *masked), route.key


@pytest.mark.parametrize("route", [r for r in API if r.category == CATALOG], ids=lambda r: r.key)
def test_public_catalog_routes_name_no_org_and_change_nothing(world, route):
    before = checksums()
    response = _request(
        world, route, world.keys["b"], _api_url(route, {}), None, QUERIES.get(route.key)
    )
    assert response.status == 200, response.body
    assert changed(before, checksums()) == []
    for marker in world.markers:
        assert marker not in response.raw.decode()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("route", [r for r in API if r.category == XAPI], ids=lambda r: r.key)
def test_xapi_with_org_a_id_and_org_b_key_is_refused(world, route):
    """HTTP Basic with A's org id and B's key (and B's key as a bearer token): 401, nothing
    changed (A's learner is not started), and the refusal audited."""
    statement = _statement("p1@a.example")
    path = "/xapi/statements"
    if route.method == "PUT":
        path += "?statementId=" + statement["id"]
    for authorization in (
        _basic(world.ids["a"], world.keys["b"]),
        f"Bearer {world.keys['b']}",
        _basic(world.ids["b"], world.keys["a"]),
    ):
        before, last = checksums(), _last_audit_id()
        response = Api(None).request(
            route.method,
            path,
            statement,
            headers={"Authorization": authorization, **XAPI_HEADERS},
        )
        assert (response.status, response.code) == (401, "unauthenticated"), response.body
        assert changed(before, checksums()) == []
        assert [d.target for d in _denials(last)] == ["/api/v1/xapi/statements"]


def test_xapi_statement_of_org_b_naming_org_a_learner_changes_nothing_of_org_a(world):
    """B's own credentials, a statement naming A's learner: it is B's (stored for B, ignored),
    and A's assignment, balance and ledger stay as they were."""
    a_asg = int(world.ids["a_asg_pk"])
    a_org = int(_pk(world.ids["a"]))
    ledger = list(LedgerEntry.objects.filter(org_id=a_org).values_list())
    a_balance = ok(Api(world.keys["a"]).get(f"/orgs/{world.ids['a']}/balance"))
    response = Api(None).request(
        "POST",
        "/xapi/statements",
        _statement("p1@a.example"),
        headers={"Authorization": _basic(world.ids["b"], world.keys["b"]), **XAPI_HEADERS},
    )
    assert response.status == 200, response.body
    assert Assignment.objects.get(pk=a_asg).status == "assigned"
    assert list(LedgerEntry.objects.filter(org_id=a_org).values_list()) == ledger
    assert ok(Api(world.keys["a"]).get(f"/orgs/{world.ids['a']}/balance")) == a_balance


@pytest.mark.parametrize("route", [r for r in API if r.category == API_DOCS], ids=lambda r: r.key)
def test_api_documents_tell_nothing_about_orgs(world, route):
    before = checksums()
    response = Client(raise_request_exception=False).get("/" + route.route)
    assert response.status_code < 500
    assert changed(before, checksums()) == []
    text = response.content.decode(errors="replace")
    for marker in world.markers:
        assert marker not in text


@pytest.mark.parametrize("route", [r for r in ROUTES if r.category == PROBE], ids=str)
def test_health_probes_tell_nothing_about_orgs(world, route):
    before = checksums()
    response = Client(raise_request_exception=False).get("/" + route.route)
    assert response.status_code == 200
    assert changed(before, checksums()) == []
    text = response.content.decode(errors="replace")
    for marker in world.markers:
        assert marker not in text


def _scim(token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    client = Client(raise_request_exception=False)
    response = getattr(client, method.lower())(
        "/scim/v2" + path,
        **({} if method == "GET" else {"data": json.dumps(body or {})}),
        content_type="application/scim+json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    return response.status_code, json.loads(response.content) if response.content else None


@pytest.mark.parametrize("route", [r for r in ROUTES if r.category == SCIM], ids=str)
def test_scim_with_org_b_token_and_org_a_ids_answers_404(world, route):
    """B's SCIM token naming A's users (made by hand or by SCIM) and A's group, with every
    method: 404 as for an id that exists nowhere, and nothing changes. Keys and the
    operator's token are not SCIM tokens: 401."""
    group = _scim(
        world.ids["a_scim"],
        "POST",
        "/Groups",
        {"displayName": "A team", "members": [{"value": world.ids["a_emp"]}]},
    )
    assert group[0] == 201, group
    before = checksums()
    paths = [f"/Users/{world.ids['a_emp']}", f"/Groups/{group[1]['id']}"]
    unknown = ["/Users/emp_987654321", "/Groups/dep_987654321"]
    user = {"userName": "mole@mallory.example", "active": False}
    for path, nowhere in zip(paths, unknown, strict=True):
        for method, body in (
            ("GET", None),
            ("PUT", user),
            ("PATCH", {"Operations": [{"op": "replace", "value": {"active": False}}]}),
            ("DELETE", None),
        ):
            foreign = _scim(world.ids["b_scim"], method, path, body)
            other = _scim(world.ids["b_scim"], method, nowhere, body)
            assert foreign[0] == other[0] == 404, (method, path, foreign)
            assert foreign[1]["detail"] == other[1]["detail"]
    listed = _scim(world.ids["b_scim"], "GET", "/Users")[1]
    assert {r["userName"] for r in listed["Resources"]} == {f"p{n}@b.example" for n in (1, 2, 3)}
    for token in (world.keys["a"], OPERATOR_TOKEN):
        assert _scim(token, "GET", paths[0])[0] == 401
    assert changed(before, checksums()) == []


@pytest.mark.parametrize("route", [r for r in ROUTES if r.category == PROVIDER_WEBHOOK], ids=str)
def test_provider_webhooks_refuse_what_is_not_signed(world, route, settings):
    """The provider's webhook takes no session or key: only a body signed with the webhook
    secret changes anything, so anyone's unsigned or badly signed POST changes nothing."""
    settings.STRIPE_WEBHOOK_SECRET = "whsec_isolation"
    client = Client(raise_request_exception=False)
    before = checksums()
    assert client.get("/" + route.route).status_code == 405
    body = json.dumps({"type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}})
    for signature in ("", "t=1,v1=00"):
        response = client.post(
            "/" + route.route,
            body,
            content_type="application/json",
            headers={"Stripe-Signature": signature},
        )
        assert response.status_code == 400
    assert changed(before, checksums()) == []


# --- dashboard pages --------------------------------------------------------------------------

# Path parameters filled with org A's objects (dashboard pages use plain primary keys), and the
# same with ids that exist nowhere, to compare the answers with.
PAGE_PARAMS = {
    "assignment_id": "{a_asg_pk}",
    "employee_id": "{a_emp_pk}",
    "invoice_id": "{a_inv_pk}",
    "intent_id": "{a_intent}",
    "uidb64": "MQ",
    "token": "set-password",
}
PAGE_UNKNOWN = {
    "assignment_id": "987654321",
    "employee_id": "987654321",
    "invoice_id": "987654321",
    "intent_id": "tpi_987654321",
}
VERBS = ["cancel", "reassign", "start"]  # "start" is no dashboard action (404 for any id)
# Forms and queries that name objects by id, filled with org A's ids.
PAGE_FORMS: dict[str, dict[str, Any]] = {
    "assign": {"content": "{c1_pk}", "employee": ["{a_emp3_pk}"], "confirm": "1"},
    "assign/preview": {"content": "{c1_pk}", "employee": ["{a_emp3_pk}"]},
    "assignments/<int:assignment_id>/<str:verb>": {"employee": "{b_emp3_pk}"},
    "learn": {"assignment": "{a_asg_pk}", "verb": "start"},
}
PAGE_FORMS_UNKNOWN: dict[str, dict[str, Any]] = {
    "assign": {"content": "{c1_pk}", "employee": ["987654321"], "confirm": "1"},
    "assign/preview": {"content": "{c1_pk}", "employee": ["987654321"]},
    "learn": {"assignment": "987654321", "verb": "start"},
}
PAGE_QUERIES = {"assignments": {"employee": "{a_emp_pk}"}}
PAGE_QUERIES_UNKNOWN = {"assignments": {"employee": "987654321"}}


def _fill_route(world: World, route: Route, values: dict[str, str]) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: world.fill(values[m.group(1)]), route.route)


def _signed_in(world: World, who: str | None) -> Client:
    client = Client(raise_request_exception=False)
    if who is not None:
        client.force_login(world.users[who], backend=MODEL_BACKEND)
    return client


def _page(client: Client, world: World, route: Route, url: str, unknown: bool = False) -> Any:
    if route.method == "GET":
        queries = PAGE_QUERIES_UNKNOWN if unknown else PAGE_QUERIES
        return client.get(url, world.fill(queries.get(route.route, {})))
    forms = PAGE_FORMS_UNKNOWN if unknown else PAGE_FORMS
    form = forms.get(route.route, PAGE_FORMS.get(route.route, {}))
    return client.post(url, world.fill(form))


def _text(response: Any) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def _comparable(response: Any, client: Client, *ids_: str) -> tuple[Any, ...]:
    """Status, redirect target, flashed messages and page, with what differs between any two
    answers (CSRF tokens, CSP nonces, the ids asked for) masked."""
    text = re.sub(r'(nonce|value)="[^"]*"', r'\1="-"', _text(response))
    text = re.sub(r'"X-CSRFToken": "[^"]*"', "-", text)
    for value in sorted(ids_, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(value)}\b", "<ID>", text)
    flashed = []
    if response.status_code == 302:
        follow = client.get(response["Location"])
        flashed = re.findall(r'role="status">([^<]*)<', _text(follow))
    return response.status_code, response.get("Location"), flashed, text


def _page_world(world: World) -> World:
    for label in ("a", "b"):
        world.ids[f"{label}_emp3_pk"] = _pk(world.ids[f"{label}_emp3"])
    world.ids["c1_pk"] = str(Content.objects.get(title="Isolation 101").pk)
    return world


def _names_an_a_object(route: Route) -> bool:
    if set(route.params) - {"verb", "uidb64", "token"}:
        return True
    extra = PAGE_FORMS.get(route.route) if route.method == "POST" else PAGE_QUERIES.get(route.route)
    return "{a_" in json.dumps(extra)


@pytest.mark.parametrize("route", WEB, ids=lambda r: f"{r.method} /{r.route}")
def test_dashboard_page(world, route):
    """Every dashboard route x method: anonymous visitors are sent to sign in; org B's learner
    never reaches an admin page; org B's admin (or learner, on the learner's page) naming org
    A's objects gets the answer an unknown id gets (404 where the path names the object), sees
    none of A's data, and nothing changes."""
    assert route.category is not None, f"{route.key} is not classified"
    world = _page_world(world)
    missing = [p for p in route.params if p not in PAGE_PARAMS and p != "verb"]
    assert missing == [], f"{route.key}: add {missing} to PAGE_PARAMS"

    for verb in VERBS if "verb" in route.params else [""]:
        url = _fill_route(world, route, {**PAGE_PARAMS, "verb": verb})
        if route.category == PAGE_PUBLIC:
            if route.method == "POST" and route.route in {"login", "password-reset"}:
                continue  # sign-in attempts and reset mails: see tests/api/test_security.py
            before = checksums()
            response = _page(_signed_in(world, None), world, route, url)
            assert response.status_code < 500, url
            assert changed(before, checksums()) == [], url
            continue

        before = checksums()
        response = _page(_signed_in(world, None), world, route, url)
        assert response.status_code == 302, (url, response.status_code)
        assert response["Location"].startswith("/login?next="), response["Location"]
        assert changed(before, checksums()) == [], url

        if route.category == PAGE_ADMIN:
            learner = _signed_in(world, "b_learner")
            before = checksums()
            response = _page(learner, world, route, url)
            assert (response.status_code, response.get("Location")) == (302, "/learn"), url
            assert changed(before, checksums()) == [], url

        who = "b_admin" if route.category == PAGE_ADMIN else "b_learner"
        client = _signed_in(world, who)
        masked = [world.ids[k] for k in ("a_asg_pk", "a_emp_pk", "a_emp3_pk", "a_inv_pk")]
        masked += list(PAGE_UNKNOWN.values())
        before = checksums()
        response = _page(client, world, route, url)
        assert response.status_code < 500, url
        text = _text(response)
        foreign = _comparable(response, client, *masked)
        assert changed(before, checksums()) == [], url
        for marker in world.markers:
            assert marker not in text, (url, marker)
        if not _names_an_a_object(route):
            continue
        unknown_url = _fill_route(world, route, {**PAGE_PARAMS, **PAGE_UNKNOWN, "verb": verb})
        other = _page(client, world, route, unknown_url, unknown=True)
        assert foreign == _comparable(other, client, *masked), url
        assert changed(before, checksums()) == [], url
        path_names_it = bool(set(route.params) - {"verb"})
        if path_names_it:
            # 404, or 405 where the route refuses the method whatever the id
            assert response.status_code in {404, 405}, (who, route.key, url, response.status_code)


def test_dashboard_assignment_actions_on_a_foreign_id_answer_404(world):
    """Org B's admin posting cancel or reassign for org A's assignment: 404, as the object
    pages (invoice, invoice PDF, employee deactivation) answer, and nothing changes."""
    world = _page_world(world)
    client = _signed_in(world, "b_admin")
    before = checksums()
    answers = {}
    for verb in ("cancel", "reassign"):
        url = f"/assignments/{world.ids['a_asg_pk']}/{verb}"
        response = client.post(url, {"employee": world.ids["b_emp3_pk"]})
        answers[verb] = (response.status_code, response.get("Location"))
    assert changed(before, checksums()) == []
    assert Assignment.objects.get(pk=int(world.ids["a_asg_pk"])).status == "assigned"
    assert answers == {"cancel": (404, None), "reassign": (404, None)}


def _without_csrf(page: bytes) -> bytes:
    """The page less its form tokens (masked afresh for every answer)."""
    page = re.sub(rb'"X-CSRFToken": "[^"]*"', b'"X-CSRFToken": ""', page)
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b'name="csrfmiddlewaretoken"', page)


def test_dashboard_object_pages_answer_a_foreign_id_as_an_unknown_one(world):
    world = _page_world(world)
    client = _signed_in(world, "b_admin")
    for template, kind in (
        ("/settings/billing/invoices/{}", "inv"),
        ("/settings/billing/invoices/{}.pdf", "inv"),
        ("/employees/{}/deactivate", "emp"),
    ):
        foreign = client.get(template.format(world.ids[f"a_{kind}_pk"]))
        unknown = client.get(template.format("987654321"))
        assert foreign.status_code == unknown.status_code == 404, template
        # The same page, byte for byte, but for the form token every page of the layout carries.
        assert _without_csrf(foreign.content) == _without_csrf(unknown.content)
        own = client.get(template.format(world.ids[f"b_{kind}_pk"]))
        assert own.status_code == 200, template  # the same page does open B's own object


def test_org_b_admin_list_pages_show_only_org_b(world):
    client = _signed_in(world, "b_admin")
    for url in ("/employees", "/assignments", "/assign", "/settings/billing", "/"):
        text = _text(client.get(url))
        if url in {"/employees", "/assign"}:
            assert "p2@b.example" in text, url  # the page does list B's people
        for marker in world.markers:
            assert marker not in text, (url, marker)
    learner = _signed_in(world, "b_learner")
    assert learner.get("/learn").status_code == 200


# --- the operator console ---------------------------------------------------------------------

CONSOLE_PARAMS = {
    "object_id": "{a_pk}",
    "org_id": "{a_pk}",
    "id": "{a_admin_pk}",
    "app_label": "tenancy",
    "content_type_id": "1",
    "url": "tenancy/organization/",
}


def _console_url(world: World, route: Route) -> str:
    values = {
        **world.ids,
        "a_pk": _pk(world.ids["a"]),
        "a_admin_pk": str(world.users["a_admin"].pk),
    }

    def value(name: str) -> str:
        assert name in CONSOLE_PARAMS, f"{route.key}: add {name} to CONSOLE_PARAMS"
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], CONSOLE_PARAMS[name])

    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m.group(1)), route.route)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m.group(1)), path)
    return "/" + path.replace("^", "").replace("$", "")


def test_operator_console_is_staff_only(world):
    """Every console route, GET and POST, filled with org A's ids: an org admin and a learner
    are sent to the console's sign-in (or get 404), never a console page, and nothing changes;
    a staff operator does reach the console (so the check can fail)."""
    form = {"credits": "500", "reason": "x", "name": "Taken", "billing_email": "m@m.example"}
    clients = {who: _signed_in(world, who) for who in ("b_admin", "b_learner")}
    before = checksums()
    requests = 0
    for who, client in clients.items():
        for route in CONSOLE:
            assert route.category in {ADMIN, ADMIN_PUBLIC}, route.key
            if route.category == ADMIN_PUBLIC:
                continue
            url = _console_url(world, route)
            response = client.get(url) if route.method == "GET" else client.post(url, form)
            requests += 1
            assert response.status_code in {302, 404}, (who, route.key, url, response.status_code)
            if response.status_code == 302:
                assert response["Location"].startswith("/admin/login/"), (url, response["Location"])
    assert requests > 100
    assert changed(before, checksums()) == []
    staff = _signed_in(world, "staff")
    assert staff.get("/admin/").status_code == 200
    adjust = "/admin/tenancy/organization/{}/adjust/".format(_pk(world.ids["a"]))
    assert staff.get(adjust).status_code == 200
