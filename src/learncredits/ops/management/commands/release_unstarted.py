"""``learncredits release-unstarted [--dry-run]``: warn about, then release, assignments nobody
started within their org's ``release_unstarted_after_days`` (the worker does it every five
minutes; credits/aging.py). ``--dry-run`` lists what a run would do and writes nothing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from learncredits import ids
from learncredits.credits import aging


class Command(BaseCommand):
    help = "Warn about, then release, assignments nobody started in time."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be done; write nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run: bool = options["dry_run"]
        result = aging.run(dry_run=dry_run)
        verb = ("would release", "would warn") if dry_run else ("released", "warned")
        for label, rows in zip(verb, (result.released, result.warned), strict=True):
            for due in rows:
                self.stdout.write(
                    f"{label} {ids.encode('assignment', due.assignment_id)} "
                    f"org={ids.encode('org', due.org_id)} employee={due.employee!r} "
                    f"content={due.content!r} credits={due.credit_cost} "
                    f"release_at={ids.iso(due.release_at)}"
                )
        self.stdout.write(
            f"release-unstarted: {len(result.released)} {verb[0]}, "
            f"{len(result.warned)} {verb[1]}{' (dry run, nothing written)' if dry_run else ''}"
        )
