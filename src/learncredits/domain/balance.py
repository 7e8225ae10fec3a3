"""Balance arithmetic (docs/product.md sections 2, 6 and 9): what each action does to the
counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Counters:
    credits: int
    assigned: int

    @property
    def available(self) -> int:
        return self.credits - self.assigned


@dataclass(frozen=True)
class StartSplit:
    """How the cost of a started assignment is paid: from the balance, and the overage."""

    from_balance: int
    overage: int


def split_start(cost: int, credits: int) -> StartSplit:
    """from_balance = min(c, credits); the rest is overage billed at the retail price."""
    from_balance = min(cost, credits)
    return StartSplit(from_balance=from_balance, overage=cost - from_balance)


def is_at_risk(counters: Counters, alert_threshold: int) -> bool:
    """At risk: something is reserved and available has reached the org's threshold."""
    return counters.assigned > 0 and counters.available <= alert_threshold


def falls_below_trigger(available_before: int, available_after: int, trigger: int | None) -> bool:
    """Auto top-up (docs/product.md section 10): a change that takes available from at or
    above the org's trigger to below it. Only the crossing counts, so a balance that stays
    below asks once; the worker's periodic tick looks after orgs that stay there."""
    return trigger is not None and available_after < trigger <= available_before
