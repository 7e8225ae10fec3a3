"""``learncredits reconcile-payments [--older-than-minutes N]``: settle pending purchases from
the payment provider's own state, and carry on refunds left pending (the worker does both on
every tick, after 15 and 5 minutes; an operator runs it after an incident, or with 0 to settle
everything now)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand

from learncredits.billing.purchases import reconcile_pending
from learncredits.billing.refunds import resume_pending_refunds


class Command(BaseCommand):
    help = "Settle pending purchases and refunds from the payment provider's state."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than-minutes", type=float, default=15.0)

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = timedelta(minutes=options["older_than_minutes"])
        counts = reconcile_pending(older_than=older_than)
        refunded = resume_pending_refunds(older_than=older_than)
        self.stdout.write(
            f"reconcile-payments: {counts['paid']} paid, {counts['failed']} failed, "
            f"{counts['waiting']} still waiting for the customer; {refunded} refunds carried on"
        )
