"""Roles: one table decides who may use each page and API operation (tenancy/access.py).

The route x role matrix is generated from the URL configuration: every dashboard page and
every API operation must have a line in the table (an unclassified one fails here), and each
role is tried on each route. Allowed: never 403 and never sent away to /learn. Refused: 403
``forbidden`` from the API; 403 from a page, except that a learner is sent to /learn (their
one page). Then the team page, the users API with the new roles, and API keys with roles.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from learncredits.audit.models import AuditEvent
from learncredits.domain.errors import InvalidState, http_status
from learncredits.tenancy import access, team
from learncredits.tenancy.models import ApiKey, Department, Membership, Organization
from learncredits.tenancy.services import authenticate_token
from tests.api.test_isolation import Route, discover
from tests.conftest import OPERATOR_TOKEN, Api, module_world, ok, run_threads

pytestmark = pytest.mark.django_db

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
PASSWORD = "Correct-Horse-42"


def _api_name(route: Route) -> str:
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.route.removeprefix("api/v1"))
    return f"{route.method} {path if path.startswith('/') else '/' + path}"


def _page_name(route: Route) -> str:
    return f"web:{route.name}"


ROUTES = discover()
API_OPERATIONS = [r for r in ROUTES if r.namespace == "api-v1"]
PAGES = sorted({r.route: r for r in ROUTES if r.namespace == "web"}.values(), key=lambda r: r.route)


# --- every route has a line -------------------------------------------------------------------


def unclassified() -> list[str]:
    names = [_api_name(r) for r in API_OPERATIONS] + [_page_name(r) for r in PAGES]
    return sorted(name for name in names if not access.is_classified(name))


def test_every_page_and_api_operation_has_a_line_in_the_access_table():
    assert unclassified() == [], "give these routes a line in tenancy/access.py"
    served = {_api_name(r) for r in API_OPERATIONS} | {_page_name(r) for r in PAGES}
    stale = sorted((set(access.API) | set(access.PAGES)) - served)
    assert stale == [], "these lines of tenancy/access.py name no route"
    assert len(API_OPERATIONS) >= 55 and len(PAGES) >= 20  # the discovery found them


def test_a_route_without_a_line_is_found_and_refused_to_everyone(monkeypatch):
    """Negative control: with one page's and one operation's line removed (here only), the
    check above names them, and nobody may use them."""
    monkeypatch.delitem(access.API, "GET /orgs/{org_id}/balance")
    monkeypatch.delitem(access.PAGES, "web:buy")
    assert unclassified() == ["GET /orgs/{org_id}/balance", "web:buy"]
    for role in (*access.API_ROLES, *access.MEMBER_ROLES):
        assert not access.may(role, "GET /orgs/{org_id}/balance")
        assert not access.may(role, "web:buy")


# --- the world: one org, a user and a key of every role ----------------------------------------


@dataclass
class World:
    org: str
    org_pk: int
    tokens: dict[str, str]  # role -> bearer token (operator, admin, billing, manager)
    users: dict[str, Any]  # role -> user
    values: dict[str, str]  # path parameter -> value


def _build_world() -> World:
    operator = Api(OPERATOR_TOKEN)
    content = ok(
        operator.post("/content", {"title": "Roles 101", "premium": True, "credit_cost": 1}), 201
    )["id"]
    org = ok(
        operator.post("/orgs", {"name": "Roles Corp", "billing_email": "b@roles.example"}), 201
    )
    org_id, org_pk = org["id"], int(org["id"].split("_")[1])
    sales = Department.objects.create(org_id=org_pk, name="Sales")
    tokens = {"operator": OPERATOR_TOKEN}
    for role in access.KEY_ROLES:
        body: dict[str, Any] = {"name": role, "role": role}
        if role == "manager":
            body["department_ids"] = [f"dep_{sales.pk}"]
        tokens[role] = ok(operator.post(f"/orgs/{org_id}/api-keys", body), 201)["key"]
    admin = Api(tokens["admin"])
    purchase = ok(admin.post(f"/orgs/{org_id}/purchases", {"quantity": 5}), 201)
    employee = ok(
        admin.post(f"/orgs/{org_id}/employees", {"name": "Lea", "email": "lea@roles.example"}),
        201,
    )["id"]
    made = ok(
        admin.post(
            f"/orgs/{org_id}/assignments", {"content_id": content, "employee_ids": [employee]}
        ),
        201,
    )
    assignment = made["data"][0]["id"]
    webhook = ok(
        admin.post(
            f"/orgs/{org_id}/webhooks", {"url": "https://hooks.roles.example/in", "events": []}
        ),
        201,
    )["id"]
    spare_key = ok(operator.post(f"/orgs/{org_id}/api-keys", {"name": "spare"}), 201)["id"]
    scim_token = ok(operator.post(f"/orgs/{org_id}/scim-tokens", {"name": "idp"}), 201)["id"]
    users = {}
    for role in access.MEMBER_ROLES:
        email = "lea@roles.example" if role == "learner" else f"{role}@roles.example"
        body = {"email": email, "name": role.title(), "role": role, "password": PASSWORD}
        if role == "manager":
            body["department_ids"] = [f"dep_{sales.pk}"]
        ok(operator.post(f"/orgs/{org_id}/users", body), 201)
        users[role] = get_user_model().objects.get(username=email)
    values = {
        "org_id": org_id,
        "employee_id": employee,
        "assignment_id": assignment,
        "purchase_id": purchase["id"],
        "invoice_id": purchase["invoice_id"],
        "webhook_id": webhook,
        "key_id": spare_key,
        "department_id": f"dep_{sales.pk}",
        "token_id": scim_token,
        "intent_id": purchase["provider_reference"] or "pi_none",
        "verb": "cancel",
        "uidb64": "MQ",
        "token": "set-password",
    }
    return World(org_id, org_pk, tokens, users, values)


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with module_world(django_db_blocker):
        yield _build_world()


def _url(route: Route, values: dict[str, str], *, dashboard: bool) -> str:
    def sub(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        return (
            value.split("_", 1)[1]
            if dashboard and "_" in value and match.group(1) != "token"
            else value
        )

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", sub, route.route)


# --- pages x roles ------------------------------------------------------------------------------

MEMBER_PAGES = [r for r in PAGES if access.roles_for(_page_name(r)) is not access.PUBLIC]


@pytest.mark.parametrize("role", access.MEMBER_ROLES)
@pytest.mark.parametrize("route", MEMBER_PAGES, ids=lambda r: r.route or "/")
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_role_on_each_page(world, route, role, method):
    client = Client(raise_request_exception=False)
    client.force_login(world.users[role], backend=MODEL_BACKEND)
    url = _url(route, world.values, dashboard=True)
    response = client.get(url) if method == "GET" else client.post(url, {})
    where = (response.status_code, response.get("Location"))
    if access.may(role, _page_name(route)):
        assert response.status_code != 403, (url, role)
        assert response.get("Location") != "/learn", (url, role)
        assert response.status_code < 500, (url, role)
    elif role == "learner":
        assert where == (302, "/learn"), (url, role)
    else:
        assert response.status_code == 403, (url, role, where)


def test_the_nav_offers_exactly_the_pages_a_role_may_use(world):
    for role in ("owner", "billing", "manager"):
        client = Client()
        client.force_login(world.users[role], backend=MODEL_BACKEND)
        html = client.get("/learn", follow=True).content.decode()
        html = html[html.index('<nav aria-label="Main">') : html.index("</nav>")]
        for name, path in (("buy", "/buy"), ("assign", "/assign"), ("team", "/settings/team")):
            assert (f'href="{path}"' in html) == access.may(role, f"web:{name}"), (role, name)


# --- API operations x roles -------------------------------------------------------------------

XAPI = {"POST /xapi/statements", "PUT /xapi/statements"}


def _call(world: World, route: Route, token: str) -> Any:
    url = _url(route, world.values, dashboard=False).removeprefix("/api/v1")
    name = _api_name(route)
    if name in XAPI:
        basic = base64.b64encode(f"{world.org}:{token}".encode()).decode()
        return Api(None).request(
            route.method,
            url + "?statementId=" + str(uuid.uuid4()),
            [],
            headers={"Authorization": f"Basic {basic}", "X-Experience-API-Version": "1.0.3"},
        )
    caller = Api(token)
    if route.method == "GET":
        return caller.request("GET", url)
    return caller.request(route.method, url, {})


@pytest.mark.parametrize("role", access.API_ROLES)
@pytest.mark.parametrize("route", API_OPERATIONS, ids=_api_name)
def test_each_role_on_each_api_operation(world, route, role):
    name = _api_name(route)
    if name in XAPI and role == "operator":
        pytest.skip("xAPI authenticates with an org's key only")
    response = _call(world, route, world.tokens[role])
    if access.may(role, name):
        assert response.status not in (401, 403), (name, role, response.body)
        assert response.status < 500, (name, role, response.body)
    else:
        assert (response.status, response.code) == (403, "forbidden"), (name, role, response.body)
        assert (
            AuditEvent.objects.filter(action="auth.denied")
            .order_by("-pk")
            .first()
            .details["reason"]
            == "forbidden"
        )


def test_a_billing_key_buys_but_cannot_assign_and_a_manager_key_assigns_but_cannot_buy(
    world,
):
    base = f"/orgs/{world.org}"
    billing, manager = Api(world.tokens["billing"]), Api(world.tokens["manager"])
    assert billing.post(base + "/purchases", {"quantity": 1}).status == 201
    refused = billing.post(
        base + "/assignments", {"content_id": "cnt_1", "employee_ids": ["emp_1"]}
    )
    assert (refused.status, refused.code) == (403, "forbidden")
    assert "billing" in refused.body["detail"]
    assert manager.post(base + "/purchases", {"quantity": 1}).status == 403
    assert manager.get(base + "/assignments").status == 200
    assert manager.get(base + "/ledger").status == 403


# --- API keys with roles ----------------------------------------------------------------------


def _dept(org_id: str, name: str) -> Department:
    return Department.objects.create(org_id=int(org_id.split("_")[1]), name=name)


def test_a_key_carries_its_role_and_departments_into_the_principal(org, operator):
    sales = _dept(org.id, "Sales")
    made = ok(
        operator.post(
            org.path("/api-keys"),
            {"name": "team lead", "role": "manager", "department_ids": [f"dep_{sales.pk}"]},
        ),
        201,
    )
    assert (made["role"], made["department_ids"]) == ("manager", [f"dep_{sales.pk}"])
    principal = authenticate_token(made["key"])
    assert (principal.role, principal.department_ids) == ("manager", frozenset({sales.pk}))
    assert authenticate_token(org.key).role == "admin"  # no role given: admin, as before
    listed = ok(operator.get(org.path("/api-keys")))["data"]
    assert sorted(k["role"] for k in listed) == ["admin", "manager"]
    audit = AuditEvent.objects.filter(action="api_key.create").order_by("-pk").first()
    assert (audit.details["role"], audit.details["department_ids"]) == ("manager", [sales.pk])


def test_a_key_role_or_department_that_does_not_fit_is_refused(org, make_org, operator):
    other = make_org("Other")
    theirs = _dept(other.id, "Theirs")
    before = ApiKey.objects.count()
    for body, status, code in (
        ({"name": "k", "role": "owner"}, 422, "validation_error"),
        ({"name": "k", "role": "learner"}, 422, "validation_error"),
        (
            {"name": "k", "role": "manager", "department_ids": [f"dep_{theirs.pk}"]},
            404,
            "not_found",
        ),
        ({"name": "k", "role": "manager", "department_ids": ["dep_987654"]}, 404, "not_found"),
        ({"name": "k", "role": "manager", "department_ids": ["emp_1"]}, 404, "not_found"),
        (
            {"name": "k", "role": "billing", "department_ids": [f"dep_{theirs.pk}"]},
            404,
            "not_found",
        ),
    ):
        response = operator.post(org.path("/api-keys"), body)
        assert (response.status, response.code) == (status, code), (body, response.body)
    mine = _dept(org.id, "Mine")
    response = operator.post(
        org.path("/api-keys"),
        {"name": "k", "role": "billing", "department_ids": [f"dep_{mine.pk}"]},
    )
    assert (response.status, response.code) == (422, "validation_error")
    assert "only a manager" in response.body["detail"]
    assert ApiKey.objects.count() == before


# --- the users API ------------------------------------------------------------------------------


def test_the_operator_and_admin_keys_create_users_of_every_role(org, operator):
    sales = _dept(org.id, "Sales")
    made = ok(
        operator.post(
            org.path("/users"),
            {"email": "o@example.com", "name": "Olu", "role": "owner", "password": PASSWORD},
        ),
        201,
    )
    assert made["role"] == "owner" and made["department_ids"] == []
    assert set(made) == {"id", "email", "name", "role", "department_ids"}
    for role in ("admin", "billing", "learner"):
        body = {"email": f"{role}@example.com", "name": role, "role": role}
        assert ok(org.api.post(org.path("/users"), body), 201)["role"] == role
    manager = ok(
        org.api.post(
            org.path("/users"),
            {
                "email": "m@example.com",
                "name": "Mo",
                "role": "manager",
                "department_ids": [f"dep_{sales.pk}"],
            },
        ),
        201,
    )
    assert manager["department_ids"] == [f"dep_{sales.pk}"]
    membership = Membership.objects.get(user__username="m@example.com")
    assert list(membership.departments.values_list("pk", flat=True)) == [sales.pk]
    audit = AuditEvent.objects.filter(action="user.create", target=f"usr_{membership.user_id}")
    assert audit.get().actor.startswith("api_key:key_")


def test_a_key_cannot_make_an_owner_and_a_billing_key_cannot_make_anyone(org, operator):
    before = Membership.objects.count()
    body = {"email": "x@example.com", "name": "X", "role": "owner"}
    refused = org.api.post(org.path("/users"), body)
    assert (refused.status, refused.code) == (403, "forbidden")
    assert "owner" in refused.body["detail"]
    billing = ok(operator.post(org.path("/api-keys"), {"name": "b", "role": "billing"}), 201)
    body["role"] = "learner"
    refused = Api(billing["key"]).post(org.path("/users"), body)
    assert (refused.status, refused.code) == (403, "forbidden")
    assert Membership.objects.count() == before


def test_a_manager_needs_departments_of_this_org(org, make_org, operator):
    theirs = _dept(make_org("Other").id, "Theirs")
    before = get_user_model().objects.count()
    base = {"email": "m@example.com", "name": "Mo", "role": "manager"}
    for ids_, status in (([f"dep_{theirs.pk}"], 404), (["dep_99999"], 404), (["nope"], 404)):
        response = operator.post(org.path("/users"), {**base, "department_ids": ids_})
        assert (response.status, response.code) == (status, "not_found"), response.body
    response = operator.post(
        org.path("/users"), {**base, "role": "admin", "department_ids": [f"dep_{theirs.pk}"]}
    )
    assert response.status == 404  # an id it cannot reach is unknown, whatever the role
    assert get_user_model().objects.count() == before


# --- the team page ------------------------------------------------------------------------------


def _member(org_id: str, operator: Api, email: str, role: str) -> Client:
    body = {"email": email, "name": email.split("@")[0], "role": role, "password": PASSWORD}
    ok(operator.post(f"/orgs/{org_id}/users", body), 201)
    client = Client()
    client.force_login(get_user_model().objects.get(username=email), backend=MODEL_BACKEND)
    return client


def _user_pk(email: str) -> int:
    return get_user_model().objects.get(username=email).pk


def _role_of(email: str) -> str | None:
    found = Membership.objects.filter(user__username=email).first()
    return found.role if found else None


def test_the_team_page_lists_invites_changes_and_removes(org, operator):
    owner = _member(org.id, operator, "owner@example.com", "owner")
    sales = _dept(org.id, "Sales")
    page = owner.get("/settings/team")
    assert page.status_code == 200 and b"owner@example.com" in page.content
    invited = owner.post(
        "/settings/team",
        {
            "form": "invite",
            "name": "Mia",
            "email": "mia@example.com",
            "role": "manager",
            "departments": [str(sales.pk)],
        },
        follow=True,
    )
    assert b"Invitation sent to mia@example.com" in invited.content
    mia = Membership.objects.get(user__username="mia@example.com")
    assert mia.role == "manager" and [d.pk for d in mia.departments.all()] == [sales.pk]

    owner.post("/settings/team", {"form": "role", "user": str(mia.user_id), "role": "billing"})
    mia.refresh_from_db()
    assert mia.role == "billing" and mia.departments.count() == 0
    change = AuditEvent.objects.get(action="user.role_change", target=f"usr_{mia.user_id}")
    assert change.actor == f"user:usr_{_user_pk('owner@example.com')}"
    assert (change.details["previous_role"], change.details["role"]) == ("manager", "billing")

    owner.post("/settings/team", {"form": "role", "user": str(mia.user_id), "role": "learner"})
    assert _role_of("mia@example.com") == "learner"  # and she now has an employee record
    assert Membership.objects.get(user__username="mia@example.com").employee.email == (
        "mia@example.com"
    )

    owner.post("/settings/team", {"form": "remove", "user": str(mia.user_id)})
    assert not get_user_model().objects.filter(username="mia@example.com").exists()
    removed = AuditEvent.objects.get(action="user.remove", target=f"usr_{mia.user_id}")
    assert removed.actor == f"user:usr_{_user_pk('owner@example.com')}"


def test_the_last_owner_can_be_neither_removed_nor_demoted(org, operator):
    owner = _member(org.id, operator, "owner@example.com", "owner")
    me = str(_user_pk("owner@example.com"))
    for form in ({"form": "role", "user": me, "role": "admin"}, {"form": "remove", "user": me}):
        answer = owner.post("/settings/team", form, follow=True)
        assert b"at least one owner" in answer.content
        assert _role_of("owner@example.com") == "owner"
    with pytest.raises(InvalidState) as refused:
        team.change_role(
            Organization.objects.get(pk=int(org.id.split("_")[1])),
            int(me),
            role="billing",
            by_role="owner",
            actor="test",
        )
    assert (refused.value.code, http_status(refused.value)) == ("invalid_state", 409)

    # With a second owner, the first may step down; the second is then the last.
    _member(org.id, operator, "second@example.com", "owner")
    owner.post("/settings/team", {"form": "role", "user": me, "role": "admin"})
    assert _role_of("owner@example.com") == "admin"
    second = str(_user_pk("second@example.com"))
    owner.post("/settings/team", {"form": "remove", "user": second})
    assert _role_of("second@example.com") == "owner"  # an admin may not unmake owners


def test_only_an_owner_makes_or_unmakes_owners(org, operator):
    _member(org.id, operator, "owner@example.com", "owner")
    admin = _member(org.id, operator, "admin@example.com", "admin")
    page = admin.get("/settings/team").content.decode()
    assert 'value="owner"' not in page.split("Invite someone")[1]  # not offered to admins
    answer = admin.post(
        "/settings/team",
        {"form": "invite", "name": "Oz", "email": "oz@example.com", "role": "owner"},
        follow=True,
    )
    assert b"only an owner" in answer.content
    assert _role_of("oz@example.com") is None
    me = str(_user_pk("admin@example.com"))
    admin.post("/settings/team", {"form": "role", "user": me, "role": "owner"})
    assert _role_of("admin@example.com") == "admin"
    owner_pk = str(_user_pk("owner@example.com"))
    admin.post("/settings/team", {"form": "role", "user": owner_pk, "role": "admin"})
    assert _role_of("owner@example.com") == "owner"
    # An admin does manage everyone else.
    _member(org.id, operator, "bill@example.com", "billing")
    admin.post(
        "/settings/team",
        {"form": "role", "user": str(_user_pk("bill@example.com")), "role": "admin"},
    )
    assert _role_of("bill@example.com") == "admin"


def test_a_department_of_another_org_is_refused_on_the_team_page(org, make_org, operator):
    owner = _member(org.id, operator, "owner@example.com", "owner")
    theirs = _dept(make_org("Other").id, "Theirs")
    answer = owner.post(
        "/settings/team",
        {
            "form": "invite",
            "name": "Mia",
            "email": "mia@example.com",
            "role": "manager",
            "departments": [str(theirs.pk)],
        },
        follow=True,
    )
    assert b"department(s) not found" in answer.content
    assert _role_of("mia@example.com") is None


def test_a_member_of_another_org_is_unknown_on_the_team_page(org, make_org, operator):
    owner = _member(org.id, operator, "owner@example.com", "owner")
    other = make_org("Other")
    _member(other.id, operator, "them@example.com", "admin")
    them = str(_user_pk("them@example.com"))
    answer = owner.post("/settings/team", {"form": "remove", "user": them}, follow=True)
    assert b"user not found" in answer.content
    assert _role_of("them@example.com") == "admin"


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(org, operator):
    """Both changes race (threads released together, real transactions): the owners are
    locked before either change, so one succeeds and the other finds the last owner. (On
    SQLite every transaction is BEGIN IMMEDIATE: writers run one at a time anyway.)"""
    for email in ("one@example.com", "two@example.com"):
        body = {"email": email, "name": "O", "role": "owner", "password": PASSWORD}
        ok(operator.post(org.path("/users"), body), 201)
    one, two = _user_pk("one@example.com"), _user_pk("two@example.com")
    found = Organization.objects.get(pk=int(org.id.split("_")[1]))

    def work(i: int, _: Any) -> str:
        target = two if i == 0 else one
        try:
            team.change_role(found, target, role="admin", by_role="owner", actor=f"t{i}")
        except InvalidState as exc:
            return exc.code
        return "changed"

    results = run_threads(2, work)
    assert sorted(results) == ["changed", "invalid_state"]
    assert Membership.objects.filter(org=found, role="owner").count() == 1
