"""Recompute every org's balance and lot remainders from the ledger and report mismatches.

Uses grouped aggregates only, so it runs in a few queries whatever the ledger's size.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, Max, Sum

from learncredits.credits.models import Balance, CreditLot, LedgerEntry, LotDraw


@dataclass(frozen=True)
class Mismatch:
    org_id: int
    what: str
    expected: int
    actual: int

    def __str__(self) -> str:
        return f"org_{self.org_id}: {self.what}: ledger says {self.expected}, found {self.actual}"


def verify_ledger() -> tuple[int, list[Mismatch]]:
    """(orgs checked, mismatches). Checks, per org:

    - credits and assigned equal the sums of the ledger's deltas;
    - the newest entry's balances-after equal the balance;
    - each lot's remaining equals its quantity less what was drawn from it;
    - credits equal the sum of the lots' remainders;
    - each ``refund`` entry took exactly its credits, all from its own purchase's lot.
    """
    mismatches: list[Mismatch] = []
    sums = {
        row["org_id"]: row
        for row in LedgerEntry.objects.values("org_id").annotate(
            credits=Sum("credits_delta"), assigned=Sum("assigned_delta")
        )
    }
    last_ids = {
        row["org_id"]: row["last"]
        for row in LedgerEntry.objects.values("org_id").annotate(last=Max("id"))
    }
    last_after = dict(
        (row[0], (row[1], row[2]))
        for row in LedgerEntry.objects.filter(pk__in=list(last_ids.values())).values_list(
            "org_id", "credits_after", "assigned_after"
        )
    )
    lot_totals = dict(
        CreditLot.objects.values("org_id")
        .annotate(total=Sum("remaining"))
        .values_list("org_id", "total")
    )
    checked = 0
    for org_id, credits, assigned in Balance.objects.values_list("org_id", "credits", "assigned"):
        checked += 1
        row = sums.get(org_id, {"credits": 0, "assigned": 0})
        expected = {"credits": int(row["credits"] or 0), "assigned": int(row["assigned"] or 0)}
        actual = {"credits": credits, "assigned": assigned}
        for what in ("credits", "assigned"):
            if expected[what] != actual[what]:
                mismatches.append(Mismatch(org_id, what, expected[what], actual[what]))
        if org_id in last_after and last_after[org_id] != (credits, assigned):
            after_credits, after_assigned = last_after[org_id]
            if after_credits != credits:
                mismatches.append(Mismatch(org_id, "newest credits_after", after_credits, credits))
            if after_assigned != assigned:
                mismatches.append(
                    Mismatch(org_id, "newest assigned_after", after_assigned, assigned)
                )
        lots_total = int(lot_totals.get(org_id) or 0)
        if lots_total != credits:
            mismatches.append(Mismatch(org_id, "sum of lot remainders", credits, lots_total))

    drawn = dict(
        LotDraw.objects.values("lot_id")
        .annotate(total=Sum("quantity"))
        .values_list("lot_id", "total")
    )
    for lot_id, org_id, quantity, remaining in CreditLot.objects.values_list(
        "id", "org_id", "quantity", "remaining"
    ).iterator(chunk_size=5000):
        expected_remaining = quantity - int(drawn.get(lot_id) or 0)
        if expected_remaining != remaining:
            mismatches.append(
                Mismatch(org_id, f"lot {lot_id} remaining", expected_remaining, remaining)
            )
    mismatches.extend(_refund_mismatches())
    return checked, mismatches


def _refund_mismatches() -> list[Mismatch]:
    """A refund gives back the money of one purchase's lot, so its credits must have left
    that lot and no other (the cost basis of the money returned)."""
    refunds = LedgerEntry.objects.filter(type=LedgerEntry.Type.REFUND)
    own = dict(
        LotDraw.objects.filter(
            entry__type=LedgerEntry.Type.REFUND, lot__purchase_id=F("entry__purchase_id")
        )
        .values("entry_id")
        .annotate(total=Sum("quantity"))
        .values_list("entry_id", "total")
    )
    found: list[Mismatch] = []
    for entry_id, org_id, delta in refunds.values_list("id", "org_id", "credits_delta").iterator(
        chunk_size=5000
    ):
        drawn = int(own.get(entry_id) or 0)
        if drawn != -delta:
            found.append(
                Mismatch(org_id, f"refund led_{entry_id} drawn from its lot", -delta, drawn)
            )
    return found
