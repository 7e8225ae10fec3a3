"""Settings > Billing pages through the ledger newest first, 25 entries at a time, by id."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.test import Client

from learncredits.credits.models import LedgerEntry
from tests.conftest import ok


def test_the_ledger_pages_walk_every_entry_once(org, operator):
    ok(
        operator.post(
            f"/orgs/{org.id}/users",
            {
                "email": "boss@example.com",
                "name": "Boss",
                "role": "admin",
                "password": "a-Long-enough-pass-42",
            },
        ),
        201,
    )
    for _ in range(30):
        org.buy(1)
    admin = Client()
    admin.force_login(get_user_model().objects.get(username="boss@example.com"))
    seen: list[str] = []
    url = "/settings/billing"
    for _ in range(5):
        page = admin.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        seen += re.findall(r"<td>purchase</td><td>(\d+)</td>", html)
        older = re.search(r'href="(\?type=&amp;before=\d+)" data-testid="ledger-older"', html)
        if older is None:
            break
        url = "/settings/billing" + older.group(1).replace("&amp;", "&")
    assert len(seen) == LedgerEntry.objects.filter(org__name="Acme").count() == 30
