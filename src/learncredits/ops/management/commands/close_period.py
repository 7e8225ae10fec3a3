"""``learncredits close-period [--period YYYY-MM]``: issue monthly overage invoices.

Without ``--period`` each org's last complete month (in its own time zone) is closed. Safe
to run again: only overages not yet invoiced are billed. Shows progress on a terminal.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from learncredits.billing.invoicing import close_all
from learncredits.billing.tasks import enqueue_collection
from learncredits.domain.errors import ValidationFailed
from learncredits.domain.money import format_cents

# Who the audit trail names for a close run from the command line.
CLI_ACTOR = "system:cli"


class Command(BaseCommand):
    help = "Issue monthly overage invoices for a period (default: the last complete month)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--period", help="YYYY-MM (default: each org's last complete month)")

    def handle(self, *args: Any, **options: Any) -> None:
        period = options["period"]
        interactive = sys.stdout.isatty()

        def progress(done: int, total: int) -> None:
            if interactive and (done == total or done % 50 == 0):
                self.stdout.write(f"\r  closing: {done}/{total} orgs", ending="")
                self.stdout.flush()

        try:
            summary = close_all(
                period, on_issue=enqueue_collection, progress=progress, actor=CLI_ACTOR
            )
        except ValidationFailed as exc:  # a malformed month, or one that has not begun
            raise CommandError(exc.detail) from None
        if interactive:
            self.stdout.write("")
        label = period or "each org's last complete month"
        self.stdout.write(
            f"close-period {label}: {summary.orgs} orgs, {summary.invoices_issued} invoices "
            f"issued, {format_cents(summary.total_cents)} billed"
        )
