"""``learncredits verify-ledger``: every org's balance and lots against its ledger."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from learncredits.credits.verify import verify_ledger


class Command(BaseCommand):
    help = "Check every org's balance and lot remainders against its ledger; exit 1 on mismatch."

    def handle(self, *args: Any, **options: Any) -> None:
        checked, mismatches = verify_ledger()
        for mismatch in mismatches:
            self.stderr.write(f"MISMATCH {mismatch}")
        if mismatches:
            self.stderr.write(f"verify-ledger: {len(mismatches)} mismatch(es) in {checked} orgs")
            sys.exit(1)
        self.stdout.write(f"verify-ledger: {checked} orgs checked, ledger consistent")
