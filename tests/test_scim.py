"""SCIM 2.0 provisioning (/scim/v2/): scim2-tester's compliance checks against a live server,
the PATCH bodies Okta and Microsoft Entra send, deprovisioning with reservations open, and
the isolation of one org's token from another org's users and groups."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from django.test import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.conftest import OrgHandle, ok

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
