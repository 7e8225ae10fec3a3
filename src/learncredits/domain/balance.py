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


@dataclass(frozen=True)
class AlertThreshold:
    """An org's low-balance line (docs/product.md section 9): a number of credits, or, when
    ``percent`` is set, that percentage of the credits the org holds (rounded down), so the
    line follows the balance as the org buys and spends. ``credits`` is kept while a
    percentage is in force, for when the org goes back to a fixed number."""

    credits: int = 0
    percent: int | None = None

    def line(self, credits_held: int) -> int:
        """The threshold in credits for an org holding ``credits_held``."""
        if self.percent is None:
            return self.credits
        return self.percent * max(credits_held, 0) // 100


def is_at_risk(counters: Counters, threshold: AlertThreshold) -> bool:
    """At risk: something is reserved and available has reached the org's threshold. The
    one place the rule is stated; every write path, the re-evaluation after a threshold
    change and the balance read ask it."""
    return counters.assigned > 0 and counters.available <= threshold.line(counters.credits)


def falls_below_trigger(available_before: int, available_after: int, trigger: int | None) -> bool:
    """Auto top-up (docs/product.md section 10): a change that takes available from at or
    above the org's trigger to below it. Only the crossing counts, so a balance that stays
    below asks once; the worker's periodic tick looks after orgs that stay there."""
    return trigger is not None and available_after < trigger <= available_before


def credits_to_leave_risk(counters: Counters, threshold: AlertThreshold) -> int:
    """The fewest credits to buy for available to be above the threshold again (at risk is
    ``available <= line``, so one more than the gap); 0 when it already is. The at-risk
    email and the dashboard's banner both offer this quantity, so they must agree.

    A purchase of n raises both credits and available by n, so a percentage line rises by
    p% of n too: n must satisfy ``100 * (available + n) > p * (credits + n)``, that is
    ``n * (100 - p) > p * credits - 100 * available``."""
    if threshold.percent is None:
        return max(0, threshold.credits - counters.available + 1)
    gap = threshold.percent * counters.credits - 100 * counters.available
    if gap < 0:
        return 0
    return gap // (100 - threshold.percent) + 1


@dataclass(frozen=True)
class AssignOutlook:
    """What assigning ``new_count`` more of an item would do to the balance."""

    reserved: int
    available_after: int
    # Credits that would be billed at the retail price if every open reservation, the old
    # ones and these, were started now: the part the credits held would not cover.
    billed_at_retail: int


def assign_outlook(counters: Counters, *, new_count: int, credit_cost: int) -> AssignOutlook:
    """The assign preview's arithmetic. Reservations never refuse for lack of credits; a
    start beyond the credits is overage (``split_start``), which is what this warns of."""
    reserved = new_count * credit_cost
    return AssignOutlook(
        reserved=reserved,
        available_after=counters.available - reserved,
        billed_at_retail=max(0, counters.assigned + reserved - counters.credits),
    )
