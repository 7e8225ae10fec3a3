"""Settings > Audit: an org's owners and admins read their own audit trail (who, what,
when), filter it and export it as CSV; nobody sees another org's events; other roles are
refused by the access table. Both databases."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

from learncredits.audit.models import AuditEvent
from tests.conftest import OrgHandle, ok, signed_in

pytestmark = pytest.mark.django_db


def org_pk(org: OrgHandle) -> int:
    return int(org.id.split("_")[1])


def test_an_admin_reads_filters_and_exports_their_own_trail(org: OrgHandle, make_org) -> None:
    admin = signed_in(org, "admin")
    admin.post("/buy", {"quantity": "3", "purchase_key": uuid.uuid4().hex})
    ok(org.operator.post(org.path("/adjustments"), {"credits": 1, "reason": "goodwill"}), 201)
    other = make_org("Elsewhere")
    ok(other.operator.post(other.path("/adjustments"), {"credits": 2, "reason": "theirs"}), 201)

    mine = AuditEvent.objects.filter(org_id=org_pk(org)).count()
    assert mine >= 3
    html = admin.get("/settings/audit").content.decode()
    assert html.count('data-testid="audit-row"') == min(mine, 50)
    assert "credits.adjust" in html and "Pat Admin" in html and "Operator" in html
    assert "theirs" not in html

    adjusted = admin.get("/settings/audit", {"action": "credits.adjust"}).content.decode()
    assert adjusted.count('data-testid="audit-row"') == 1

    exported = admin.get("/settings/audit.csv")
    assert exported["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert len(rows) == mine
    assert {r["action"] for r in rows} == set(
        AuditEvent.objects.filter(org_id=org_pk(org)).values_list("action", flat=True)
    )
    adjust = next(r for r in rows if r["action"] == "credits.adjust")
    assert (adjust["actor"], adjust["actor_name"]) == ("operator", "Operator")
    assert '"reason": "goodwill"' in adjust["details"]


@pytest.mark.parametrize("role", ["billing", "manager"])
def test_other_roles_are_refused_the_trail(org: OrgHandle, role: str) -> None:
    client = signed_in(org, role)
    assert client.get("/settings/audit").status_code == 403
    assert client.get("/settings/audit.csv").status_code == 403
