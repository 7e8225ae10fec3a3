"""SCIM 2.0 provisioning (/scim/v2/): scim2-tester's compliance checks against a live server,
the PATCH bodies Okta and Microsoft Entra send, deprovisioning with reservations open, and
the isolation of one org's token from another org's users and groups."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from django.test import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from learncredits.audit.models import AuditEvent
from learncredits.credits import verify
from learncredits.credits.models import Assignment, LedgerEntry
from learncredits.tenancy.models import Employee, ScimToken
from tests.conftest import Api, OrgHandle, ok

pytestmark = pytest.mark.django_db

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def scim_token(org: OrgHandle, name: str = "idp") -> str:
    return ok(org.api.post(org.path("/scim-tokens"), {"name": name}), 201)["token"]


class Scim:
    """A caller of /scim/v2 with one bearer token, through Django's test client."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.client = Client(raise_request_exception=False)

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        extra = {"HTTP_AUTHORIZATION": f"Bearer {self.token}"} if self.token else {}
        url = "/scim/v2" + path
        if method == "GET":
            response = self.client.get(url, params, **extra)
        else:
            response = getattr(self.client, method.lower())(
                url,
                data=json.dumps(body) if body is not None else b"",
                content_type="application/scim+json",
                **extra,
            )
        if response.content:
            assert response["Content-Type"].startswith("application/scim+json")
        return response.status_code, (json.loads(response.content) if response.content else None)

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return self.request("GET", path, **params)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("PUT", path, body)

    def patch(self, path: str, *operations: dict[str, Any]) -> tuple[int, Any]:
        return self.request("PATCH", path, {"schemas": [PATCH], "Operations": list(operations)})

    def delete(self, path: str) -> tuple[int, Any]:
        return self.request("DELETE", path)


def made(answer: tuple[int, Any], status: int = 200) -> Any:
    assert answer[0] == status, answer
    return answer[1]


def refused(answer: tuple[int, Any], status: int, scim_type: str | None = None) -> Any:
    code, body = answer
    assert code == status, answer
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


# --- scim2-tester against a live server -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_scim2_tester_finds_no_error(
    flushable: None, live_server: Any, settings: Any, make_org: Callable[..., OrgHandle]
) -> None:
    settings.LEARNCREDITS_BASE_URL = live_server.url
    org = make_org("Tested")
    token = scim_token(org)
    with httpx2.Client(
        base_url=f"{live_server.url}/scim/v2", headers={"Authorization": f"Bearer {token}"}
    ) as http:
        client = SyncSCIMClient(http)
        results = check_server(client)
    problems = [
        f"{r.title} [{getattr(r, 'resource_type', '')}]: {r.reason}"
        for r in results
        if r.status in (Status.ERROR, Status.CRITICAL)
    ]
    ran = {r.resource_type for r in results if getattr(r, "resource_type", None)}
    assert {"User", "Group"} <= ran, ran
    assert len(results) > 50
    assert problems == [], "\n".join(problems)


# --- tokens -----------------------------------------------------------------------------------


def test_a_scim_token_is_shown_once_stored_hashed_and_revocable(org: OrgHandle) -> None:
    created = ok(org.api.post(org.path("/scim-tokens"), {"name": "Okta"}), 201)
    assert set(created) == {"id", "token"} and created["id"].startswith("stk_")
    row = ScimToken.objects.get()
    head, org_pk, prefix, secret = created["token"].split("_", 3)
    assert (head, org_pk, prefix) == ("scim", str(row.org_id), row.prefix)
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest() != secret
    scim = Scim(created["token"])
    made(scim.get("/Users"))
    assert org.api.request("DELETE", org.path(f"/scim-tokens/{created['id']}")).status == 204
    refused(scim.get("/Users"), 401)
    # Revoking again changes nothing; an unknown token is not found.
    assert org.api.request("DELETE", org.path(f"/scim-tokens/{created['id']}")).status == 204
    assert org.api.request("DELETE", org.path("/scim-tokens/stk_999999")).status == 404
    assert AuditEvent.objects.filter(action="scim_token.revoke").count() == 1


def test_only_a_scim_token_opens_scim(org: OrgHandle, operator: Api) -> None:
    """API keys, the operator's token, garbage and no token at all: 401 as a SCIM error."""
    for token in (org.key, operator.token, "scim_nope_nope", None):
        body = refused(Scim(token).get("/Users"), 401)
        assert "SCIM token" in body["detail"]
    refused(Scim(org.key).post("/Users", {"schemas": [USER], "userName": "a@example.com"}), 401)


# --- Users ------------------------------------------------------------------------------------


def okta_user(
    email: str, given: str = "Ada", family: str = "Lovelace", external_id: str = "00u1abcd"
) -> dict[str, Any]:
    return {
        "schemas": [USER],
        "userName": email,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": True, "value": email, "type": "work"}],
        "displayName": f"{given} {family}",
        "externalId": external_id,
        "active": True,
    }


def test_a_provisioned_user_is_an_employee(org: OrgHandle) -> None:
    scim = Scim(scim_token(org))
    user = made(scim.post("/Users", okta_user("Ada@Example.com")), 201)
    assert user["id"].startswith("emp_")
    assert user["userName"] == "Ada@Example.com"
    assert user["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert user["active"] is True and user["externalId"] == "00u1abcd"
    assert user["meta"]["resourceType"] == "User"
    assert user["meta"]["location"].endswith(f"/scim/v2/Users/{user['id']}")
    listed = ok(org.api.get(org.path("/employees")))["data"]
    assert [(e["id"], e["name"], e["email"], e["active"]) for e in listed] == [
        (user["id"], "Ada Lovelace", "ada@example.com", True)
    ]
    # The filters providers use before they create, userName ignoring case.
    found = made(scim.get("/Users", filter='userName eq "ada@example.COM"'))
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == user["id"]
    assert made(scim.get("/Users", filter='externalId eq "00u1abcd"'))["totalResults"] == 1
    assert made(scim.get("/Users", filter='externalId eq "00U1ABCD"'))["totalResults"] == 0
    # A second User with the same userName: 409 uniqueness, nothing written.
    refused(scim.post("/Users", okta_user("ada@example.com")), 409, "uniqueness")
    assert len(ok(org.api.get(org.path("/employees")))["data"]) == 1


def test_employees_made_by_hand_are_users_too(org: OrgHandle) -> None:
    emp = org.employee("Grace Hopper", "grace@example.com")
    scim = Scim(scim_token(org))
    user = made(scim.get(f"/Users/{emp}"))
    assert user["userName"] == "grace@example.com"
    assert user["name"] == {"formatted": "Grace Hopper"}
    assert user["emails"] == [{"value": "grace@example.com", "type": "work", "primary": True}]
    assert made(scim.get("/Users", filter='userName eq "grace@example.com"'))["totalResults"] == 1


def test_refusals_are_scim_errors(org: OrgHandle) -> None:
    scim = Scim(scim_token(org))
    refused(scim.get("/Users", filter='emails.value eq "a@b.c"'), 400, "invalidFilter")
    refused(scim.get("/Users", filter='userName co "a"'), 400, "invalidFilter")
    refused(scim.get("/Groups", filter='name eq "x"'), 400, "invalidFilter")
    no_email = {"schemas": [USER], "userName": "not-an-address"}
    refused(scim.post("/Users", no_email), 400, "invalidValue")
    code, body = scim.request("POST", "/Users", None)
    assert code == 400 and body["scimType"] == "invalidSyntax"
    refused(scim.get("/Users/emp_424242"), 404)
    refused(scim.get("/Users/whatever"), 404)
    refused(scim.get("/Nothing"), 404)
    user = made(scim.post("/Users", okta_user("x@example.com")), 201)
    # id is read-only: a PATCH that writes it is refused.
    refused(
        scim.patch(f"/Users/{user['id']}", {"op": "replace", "path": "id", "value": "emp_1"}),
        400,
        "mutability",
    )


def test_paging(org: OrgHandle) -> None:
    scim = Scim(scim_token(org))
    ids = [
        made(scim.post("/Users", okta_user(f"u{i}@example.com", external_id=f"x{i}")), 201)["id"]
        for i in range(5)
    ]
    page = made(scim.get("/Users", startIndex=2, count=2))
    assert page["totalResults"] == 5 and page["startIndex"] == 2 and page["itemsPerPage"] == 2
    assert [r["id"] for r in page["Resources"]] == ids[1:3]
    assert made(scim.get("/Users", count=0))["itemsPerPage"] == 0


# --- the PATCH bodies providers send -------------------------------------------------------------


def test_okta_deactivates_and_reactivates_with_a_pathless_replace(org: OrgHandle) -> None:
    token = scim_token(org)
    scim = Scim(token)
    user = made(scim.post("/Users", okta_user("ok@example.com")), 201)
    path = f"/Users/{user['id']}"
    off = made(scim.patch(path, {"op": "replace", "value": {"active": False}}))
    assert off["active"] is False
    assert Employee.objects.get(email="ok@example.com").active is False
    # Okta reads the user back before and after; a deactivated user is still there.
    assert made(scim.get(path))["active"] is False
    on = made(scim.patch(path, {"op": "replace", "value": {"active": True}}))
    assert on["active"] is True and Employee.objects.get(email="ok@example.com").active
    token_id = ScimToken.objects.get().pk
    actions = list(
        AuditEvent.objects.filter(actor=f"scim:token_{token_id}")
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == ["employee.deactivate", "employee.reactivate"]
    # Okta's profile update: a PUT of the whole user.
    changed = okta_user("ok@example.com", given="Ada", family="Byron")
    put = made(scim.put(path, {**changed, "id": user["id"]}))
    assert put["name"] == {"givenName": "Ada", "familyName": "Byron"}
    assert Employee.objects.get(email="ok@example.com").name == "Ada Byron"


def test_entra_patch_shapes(org: OrgHandle) -> None:
    scim = Scim(scim_token(org))
    entra = {
        "schemas": [USER],
        "externalId": "7d3c8a9e",
        "userName": "grace@contoso.com",
        "active": True,
        "displayName": "Grace Hopper",
        "emails": [{"primary": True, "type": "work", "value": "grace@contoso.com"}],
        "name": {"formatted": "Grace Hopper", "familyName": "Hopper", "givenName": "Grace"},
    }
    user = made(scim.post("/Users", entra), 201)
    path = f"/Users/{user['id']}"
    patched = made(
        scim.patch(
            path,
            {"op": "Replace", "path": "name.givenName", "value": "Amazing"},
            {"op": "Replace", "path": "name.formatted", "value": "Amazing Grace Hopper"},
            {"op": "Add", "path": "externalId", "value": "7d3c8a9f"},
        )
    )
    assert patched["name"]["givenName"] == "Amazing"
    employee = Employee.objects.get(pk=int(user["id"].removeprefix("emp_")))
    assert (employee.name, employee.external_id) == ("Amazing Grace Hopper", "7d3c8a9f")
    # A new work address: the userName stays, the employee's email follows userName (an
    # address) only when userName changes too.
    made(
        scim.patch(
            path,
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "g@contoso.com"},
            {"op": "Replace", "path": "userName", "value": "g@contoso.com"},
        )
    )
    employee.refresh_from_db()
    assert employee.email == "g@contoso.com"
    assert made(scim.get(path))["emails"][0]["value"] == "g@contoso.com"
    # String booleans and a capitalised op.
    off = made(scim.patch(path, {"op": "Replace", "path": "active", "value": "False"}))
    assert off["active"] is False
    employee.refresh_from_db()
    assert employee.active is False
    made(scim.patch(path, {"op": "Replace", "path": "active", "value": "True"}))
    employee.refresh_from_db()
    assert employee.active is True


def test_entra_group_membership_patches(org: OrgHandle) -> None:
    scim = Scim(scim_token(org))
    a = made(scim.post("/Users", okta_user("a@example.com", external_id="a")), 201)["id"]
    b = made(scim.post("/Users", okta_user("b@example.com", external_id="b")), 201)["id"]
    c = made(scim.post("/Users", okta_user("c@example.com", external_id="c")), 201)["id"]
    group = made(
        scim.post("/Groups", {"schemas": [GROUP], "displayName": "Sales", "externalId": "g1"}),
        201,
    )
    path = f"/Groups/{group['id']}"
    assert "members" not in group
    added = made(
        scim.patch(path, {"op": "Add", "path": "members", "value": [{"value": a}, {"value": b}]})
    )
    assert sorted(m["value"] for m in added["members"]) == sorted([a, b])
    dep = Employee.objects.get(email="a@example.com").department
    assert dep is not None and dep.name == "Sales" and dep.external_id == "g1"
    # Entra's removal: the ids in value.
    removed = made(scim.patch(path, {"op": "Remove", "path": "members", "value": [{"value": a}]}))
    assert [m["value"] for m in removed["members"]] == [b]
    assert Employee.objects.get(email="a@example.com").department is None
    # RFC 7644's removal: a filter in the path.
    made(scim.patch(path, {"op": "Add", "path": "members", "value": [{"value": c}]}))
    after = made(scim.patch(path, {"op": "Remove", "path": f'members[value eq "{b}"]'}))
    assert [m["value"] for m in after["members"]] == [c]
    # The user shows its group, read-only.
    shown = made(scim.get(f"/Users/{c}"))
    assert [(g["value"], g["display"]) for g in shown["groups"]] == [(group["id"], "Sales")]
    # Rename, filter, and refusals.
    made(scim.patch(path, {"op": "Replace", "path": "displayName", "value": "Sales EMEA"}))
    assert made(scim.get("/Groups", filter='displayName eq "sales emea"'))["totalResults"] == 1
    assert made(scim.get("/Groups", filter='externalId eq "g1"'))["totalResults"] == 1
    other = made(scim.post("/Groups", {"schemas": [GROUP], "displayName": "Ops"}), 201)
    refused(
        scim.patch(
            f"/Groups/{other['id']}",
            {"op": "Replace", "path": "displayName", "value": "Sales EMEA"},
        ),
        409,
        "uniqueness",
    )
    refused(
        scim.patch(path, {"op": "Add", "path": "members", "value": [{"value": "emp_999999"}]}),
        400,
        "invalidValue",
    )
    # Deleting the group: the department goes, its employees stay, in no department.
    assert scim.delete(path)[0] == 204
    refused(scim.get(path), 404)
    assert Employee.objects.get(email="c@example.com").department is None
    assert Employee.objects.get(email="c@example.com").active


# --- deprovisioning -------------------------------------------------------------------------------


def test_deprovisioning_releases_reservations_like_the_dashboard(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    token = scim_token(org)
    token_id = ScimToken.objects.get().pk
    scim = Scim(token)
    course, other = make_content(credit_cost=3), make_content(credit_cost=4)
    org.buy(20)
    leaver = made(scim.post("/Users", okta_user("leaver@example.com", external_id="l")), 201)
    stayer = made(scim.post("/Users", okta_user("stayer@example.com", external_id="s")), 201)
    org.assign(course, [leaver["id"], stayer["id"]])
    org.assign(other, [leaver["id"]])
    before = org.balance()
    assert before["assigned"] == 3 + 3 + 4

    assert scim.delete(f"/Users/{leaver['id']}")[0] == 204

    after = org.balance()
    assert after["assigned"] == before["assigned"] - 7
    assert after["credits"] == before["credits"]
    releases = LedgerEntry.objects.filter(type=LedgerEntry.Type.RELEASE)
    assert sorted(e.assigned_delta for e in releases) == [-4, -3]
    assert {e.actor for e in releases} == {f"scim:token_{token_id}"}
    assert verify.verify_ledger()[1] == []
    # The employee is kept, inactive; SCIM no longer knows them.
    employee = Employee.objects.get(email="leaver@example.com")
    assert employee.active is False
    refused(scim.get(f"/Users/{leaver['id']}"), 404)
    assert made(scim.get("/Users", filter='userName eq "leaver@example.com"'))["totalResults"] == 0
    listed = ok(org.api.get(org.path("/employees")))["data"]
    assert {e["email"]: e["active"] for e in listed} == {
        "leaver@example.com": False,
        "stayer@example.com": True,
    }
    # Provisioned again later (rehired): the same employee, active; nothing re-reserved.
    again = made(scim.post("/Users", okta_user("leaver@example.com", external_id="l2")), 201)
    assert again["id"] == leaver["id"] and again["active"] is True
    assert org.balance()["assigned"] == after["assigned"]
    assert not Assignment.objects.filter(
        employee=employee, status=Assignment.Status.ASSIGNED
    ).exists()


def test_deactivating_by_patch_releases_the_same_way(
    org: OrgHandle, make_content: Callable[..., str]
) -> None:
    scim = Scim(scim_token(org))
    course = make_content(credit_cost=5)
    org.buy(10)
    user = made(scim.post("/Users", okta_user("p@example.com")), 201)
    org.assign(course, [user["id"]])
    assert org.balance()["assigned"] == 5
    made(scim.patch(f"/Users/{user['id']}", {"op": "replace", "value": {"active": False}}))
    assert org.balance()["assigned"] == 0
    assert verify.verify_ledger()[1] == []
    # Reactivation does not bring the reservation back.
    made(scim.patch(f"/Users/{user['id']}", {"op": "replace", "value": {"active": True}}))
    assert org.balance()["assigned"] == 0


# --- reactivation outside SCIM --------------------------------------------------------------------


def test_reactivating_an_employee_by_api(org: OrgHandle, make_content: Callable[..., str]) -> None:
    course = make_content(credit_cost=2)
    org.buy(5)
    emp = org.employee("Rehired")
    org.assign(course, [emp])
    off = ok(org.api.post(org.path(f"/employees/{emp}/deactivate")))
    assert off["active"] is False and org.balance()["assigned"] == 0
    on = ok(org.api.post(org.path(f"/employees/{emp}/reactivate")))
    assert on == {**off, "active": True}
    # Again: a harmless repeat, 200 with the employee unchanged, no second audit row.
    assert ok(org.api.post(org.path(f"/employees/{emp}/reactivate"))) == on
    assert AuditEvent.objects.filter(action="employee.reactivate").count() == 1
    assert org.balance()["assigned"] == 0
    # They may be assigned again.
    org.assign(course, [emp])
    assert org.balance()["assigned"] == 2
    assert org.api.post(org.path("/employees/emp_999999/reactivate")).status == 404


def test_the_employees_page_reactivates(org: OrgHandle, operator: Api) -> None:
    from tests.web.test_web_invite import _admin_client

    client = _admin_client(org, operator)
    emp = org.employee("Page Person")
    pk = int(emp.removeprefix("emp_"))
    ok(org.api.post(org.path(f"/employees/{emp}/deactivate")))
    page = client.get("/employees").content.decode()
    assert f'action="/employees/{pk}/reactivate"' in page
    response = client.post(f"/employees/{pk}/reactivate")
    assert response.status_code == 302
    assert Employee.objects.get(pk=pk).active
    assert f'action="/employees/{pk}/reactivate"' not in client.get("/employees").content.decode()
    assert client.get(f"/employees/{pk}/reactivate").status_code == 405


# --- isolation ------------------------------------------------------------------------------------


def test_one_orgs_token_never_reaches_another_orgs_users_or_groups(
    make_org: Callable[..., OrgHandle],
) -> None:
    a, b = make_org("A"), make_org("B")
    scim_a, scim_b = Scim(scim_token(a)), Scim(scim_token(b))
    b_user = made(scim_b.post("/Users", okta_user("b@example.com")), 201)
    b_hand = b.employee("By Hand")
    b_group = made(
        scim_b.post(
            "/Groups",
            {"schemas": [GROUP], "displayName": "B team", "members": [{"value": b_user["id"]}]},
        ),
        201,
    )
    for path in (f"/Users/{b_user['id']}", f"/Users/{b_hand}", f"/Groups/{b_group['id']}"):
        refused(scim_a.get(path), 404)
        refused(scim_a.put(path, okta_user("x@example.com")), 404)
        refused(scim_a.patch(path, {"op": "replace", "value": {"active": False}}), 404)
        refused(scim_a.delete(path), 404)
    assert made(scim_a.get("/Users"))["totalResults"] == 0
    assert made(scim_a.get("/Groups"))["totalResults"] == 0
    assert made(scim_a.get("/Users", filter='userName eq "b@example.com"'))["totalResults"] == 0
    # A's group cannot take B's user as a member.
    refused(
        scim_a.post(
            "/Groups",
            {"schemas": [GROUP], "displayName": "A", "members": [{"value": b_user["id"]}]},
        ),
        400,
        "invalidValue",
    )
    # B's user is as it was; A may use B's email for its own employee.
    assert Employee.objects.get(email="b@example.com", org__name="B").active
    made(scim_a.post("/Users", okta_user("b@example.com")), 201)
    # A's key cannot make or revoke B's tokens.
    assert a.api.post(b.path("/scim-tokens"), {"name": "x"}).status == 404
