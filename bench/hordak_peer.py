"""The peer of the in-process hot path: django-hordak's ``Account.transfer_to``.

Run with the hordak virtualenv's Python (see hot_path.py), DJANGO_SETTINGS_MODULE=
hordak_settings and DATABASE_URL set:

    hordak-python bench/hordak_peer.py migrate
    hordak-python bench/hordak_peer.py run --accounts 1000 --duration 10

``run`` creates one liability account per org and one income account, then calls
``transfer_to`` in a loop, single-threaded, each transfer in its own transaction (hordak's
legs must balance at commit), round robin over the org accounts, for ``--duration``
seconds. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["migrate", "run"])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hordak_settings")
    import django

    django.setup()
    from django.core.management import call_command

    if args.task == "migrate":
        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        print(json.dumps({"seconds": time.perf_counter() - started}))
        return

    from django.db import transaction
    from hordak.models import Account, AccountType
    from moneyed import Money

    revenue = Account.objects.create(name="Revenue", type=AccountType.income, currencies=["USD"])
    orgs = [
        Account.objects.create(
            name=f"Org {i} credits", type=AccountType.liability, currencies=["USD"]
        )
        for i in range(args.accounts)
    ]
    one = Money(1, "USD")
    for account in orgs[:50]:  # warm up
        with transaction.atomic():
            account.transfer_to(revenue, one, description="warm up")
    count = 0
    started = time.perf_counter()
    deadline = started + args.duration
    while time.perf_counter() < deadline:
        account = orgs[count % len(orgs)]
        with transaction.atomic():
            account.transfer_to(revenue, one, description="start assignment")
        count += 1
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "transfers": count,
                "seconds": seconds,
                "rate": count / seconds,
                "hordak_version": version("django-hordak"),
            }
        )
    )


if __name__ == "__main__":
    main()
