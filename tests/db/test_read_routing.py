"""Which requests a replica may serve (db/routing.py), without a replica: the table of
reports and lists, and the ``X-LearnCredits-Read`` header every API GET carries. The
routing itself, against a real primary and standby, is tests/db/test_replica.py."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from learncredits.db.routing import READ_HEADER, replica_configured, replica_route
from tests.conftest import OrgHandle

ORG = "/api/v1/orgs/org_1"

REPLICA_SERVED = [
    f"{ORG}/statement",
    "/api/v1/billing/statement",
    f"{ORG}/usage",
    f"{ORG}/forecast",
    f"{ORG}/ledger",
    f"{ORG}/invoices",
    f"{ORG}/invoices/inv_1",
    f"{ORG}/invoices/inv_1/pdf",
    f"{ORG}/invoices/inv_1/html",
    f"{ORG}/purchases",
    f"{ORG}/assignments",
    f"{ORG}/employees",
    f"{ORG}/alerts",
    f"{ORG}/webhooks/wh_1/deliveries",
]

PRIMARY_ONLY = [
    f"{ORG}/balance",
    ORG,
    f"{ORG}/purchases/pur_1",
    f"{ORG}/assignments/asg_1",
    f"{ORG}/api-keys",
    f"{ORG}/webhooks",
    f"{ORG}/payment-method",
    "/api/v1/pricing",
    "/api/v1/orgs",
    "/orgs/org_1/ledger",  # a dashboard page, not the API
]


@pytest.mark.parametrize("path", REPLICA_SERVED)
def test_reports_and_lists_may_read_the_replica(path: str) -> None:
    assert replica_route(RequestFactory().get(path))
    assert replica_route(RequestFactory().head(path))
    assert not replica_route(RequestFactory().post(path))


@pytest.mark.parametrize("path", PRIMARY_ONLY)
def test_decisions_read_the_primary(path: str) -> None:
    assert not replica_route(RequestFactory().get(path))


def test_without_a_replica_every_api_get_says_primary(org: OrgHandle) -> None:
    assert not replica_configured()
    for path in ("/balance", "/ledger", "/employees"):
        answer = org.api.get(org.path(path))
        assert answer.status == 200
        assert answer.headers[READ_HEADER] == "primary"
