"""``learncredits reconcile-payments [--older-than-minutes N]``: settle pending purchases from
the payment provider's own state (the worker does this every tick for purchases pending over
15 minutes; an operator runs it after an incident, or with 0 to settle everything now)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand

from learncredits.billing.purchases import reconcile_pending


class Command(BaseCommand):
    help = "Settle pending purchases from the payment provider's state."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than-minutes", type=float, default=15.0)

    def handle(self, *args: Any, **options: Any) -> None:
        counts = reconcile_pending(older_than=timedelta(minutes=options["older_than_minutes"]))
        self.stdout.write(
            f"reconcile-payments: {counts['paid']} paid, {counts['failed']} failed, "
            f"{counts['waiting']} still waiting for the customer"
        )
