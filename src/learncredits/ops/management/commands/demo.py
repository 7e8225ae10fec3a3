"""``learncredits demo``: on an empty database, a demo organization to look around in.

It goes through the same services as the API (purchase, assign, start), so the demo's
ledger is a real one. Its credentials are written to ``var/demo-credentials.txt`` (the API
key is stored hashed, so that file is the only place it can be read again).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from learncredits.billing import purchases
from learncredits.catalog.models import Content
from learncredits.catalog.services import create_content
from learncredits.credits import accounts, actions
from learncredits.ops.listen import listen_url
from learncredits.tenancy import departments
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Organization

ACTOR = "system:demo"
# The demo's sign-ins (docs/identity.md, "Roles"): its owner, someone who pays, a manager.
DEMO_USERS = [
    ("admin@acme.example", "Demo Owner", "owner"),
    ("billing@acme.example", "Demo Billing", "billing"),
    ("manager@acme.example", "Demo Manager", "manager"),
]
PREMIUM = [
    ("Sexual Harassment Prevention", 1),
    ("Workplace Safety Essentials", 1),
    ("Data Privacy and GDPR", 2),
    ("Anti-Bribery and Corruption", 1),
]
FREE = ["Welcome to the Team", "Time Management Basics"]
PEOPLE = [
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Katherine Johnson",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Frances Allen",
    "Ken Thompson",
    "Margaret Hamilton",
    "Dennis Ritchie",
    "Radia Perlman",
]


EARLIER_URL = re.compile(r"dashboard:\s+(\S+)/login")


def credentials_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-credentials.txt"


class Command(BaseCommand):
    help = "Create a demo organization when the database has none; print how to use it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, **options: Any) -> None:
        url = os.environ.get("LEARNCREDITS_BASE_URL") or listen_url(
            options["host"], options["port"]
        )
        url = url.rstrip("/")
        path = credentials_file()
        if Organization.objects.exists():
            if path.exists():
                # Written for the address of an earlier run: say the one in use now.
                text = path.read_text()
                earlier = EARLIER_URL.search(text)
                if earlier:
                    text = text.replace(earlier.group(1), url)
                self._save(path, text)
                self.stdout.write(text)
            else:
                self.stdout.write("learncredits: organizations exist; no demo created.")
            return
        text = self._create().replace("{url}", url)
        self._save(path, text)
        self.stdout.write(text)

    @staticmethod
    def _save(path: Path, text: str) -> None:
        """The file is complete as it stands (addresses included): people open it later."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)

    def _create(self) -> str:
        org = accounts.create_org(
            name="Acme Training Co",
            billing_email="billing@acme.example",
            timezone_name="UTC",
            actor=ACTOR,
        )
        if not Content.objects.exists():
            for title, cost in PREMIUM:
                create_content(
                    title=title, premium=True, credit_cost=cost, xapi_activity_id=None, actor=ACTOR
                )
            for title in FREE:
                create_content(
                    title=title, premium=False, credit_cost=0, xapi_activity_id=None, actor=ACTOR
                )
        employees = [
            tenancy.create_employee(
                org,
                name=name,
                email=name.lower().replace(" ", ".") + "@acme.example",
                actor=ACTOR,
            )
            for name in PEOPLE
        ]
        purchases.purchase_credits(org, 100, actor=ACTOR)
        harassment = Content.objects.get(title=PREMIUM[0][0])
        result = actions.assign_bulk(
            org, content_id=harassment.pk, employee_ids=[e.pk for e in employees[:8]], actor=ACTOR
        )
        for assignment in result.created[:3]:
            actions.start_assignment(org, assignment.pk, actor=ACTOR)
        welcome = Content.objects.get(title=FREE[0])
        actions.assign_bulk(
            org, content_id=welcome.pk, employee_ids=[e.pk for e in employees], actor=ACTOR
        )
        _, key = tenancy.create_api_key(org, name="demo key", actor=ACTOR)
        password = secrets.token_urlsafe(12)
        # A department for the manager (its budget and the rest: docs/identity.md).
        sales = departments.create_department(org, name="Sales", budget_credits=40, actor=ACTOR)
        for employee in employees[:4]:
            departments.set_employee_department(org, employee.pk, sales.pk, actor=ACTOR)
        for email, name, role in DEMO_USERS:
            tenancy.create_user(
                org,
                email=email,
                name=name,
                role=role,
                password=password,
                actor=ACTOR,
                department_ids=[sales.pk] if role == "manager" else None,
            )
        return (
            "learncredits demo organization\n"
            f"  organization: {org.name} (org_{org.pk})\n"
            "  dashboard:    {url}/login\n"
            "  API docs:     {url}/api/v1/docs\n"
            f"  API key:      {key}\n"
            f"  owner login:  admin@acme.example / {password}\n"
            f"  also:         billing@acme.example (billing), manager@acme.example (manager of "
            f"Sales), same password\n"
            f"  try:          curl -H 'Authorization: Bearer {key}' "
            f"{{url}}/api/v1/orgs/org_{org.pk}/balance\n"
        )
