"""The at-risk line as credits or as a percentage of the credits held (domain/balance.py;
docs/product.md section 9): where the line is, when an org is at risk, and how many credits
bring it back above the line (the quantity the email and the banner offer)."""

from __future__ import annotations

import pytest

from learncredits.domain.balance import (
    AlertThreshold,
    Counters,
    credits_to_leave_risk,
    is_at_risk,
)


@pytest.mark.parametrize(
    ("threshold", "held", "line"),
    [
        (AlertThreshold(credits=7), 1000, 7),  # credits: the number, whatever is held
        (AlertThreshold(credits=7, percent=20), 100, 20),  # percent wins over credits
        (AlertThreshold(percent=20), 99, 19),  # rounded down: 19.8
        (AlertThreshold(percent=1), 50, 0),
        (AlertThreshold(percent=99), 0, 0),
    ],
)
def test_the_line_in_credits(threshold: AlertThreshold, held: int, line: int) -> None:
    assert threshold.line(held) == line


@pytest.mark.parametrize(
    ("credits", "assigned", "at_risk"),
    [
        (100, 79, False),  # 21 available: above 20% of 100
        (100, 80, True),  # 20 available: exactly 20%
        (100, 0, False),  # nothing reserved: never at risk
        (0, 1, True),  # nothing held, something reserved
        (99, 80, True),  # 19 available, line 19 (19.8 rounded down)
        (99, 79, False),  # 20 available
    ],
)
def test_a_percentage_line_is_at_or_below_that_share_of_the_credits_held(
    credits: int, assigned: int, at_risk: bool
) -> None:
    assert is_at_risk(Counters(credits, assigned), AlertThreshold(percent=20)) is at_risk


@pytest.mark.parametrize("percent", [1, 10, 20, 50, 99])
@pytest.mark.parametrize(
    ("credits", "assigned"), [(100, 85), (100, 100), (0, 5), (37, 36), (10, 1)]
)
def test_buying_the_quantity_offered_is_exactly_enough(
    percent: int, credits: int, assigned: int
) -> None:
    threshold = AlertThreshold(percent=percent)
    counters = Counters(credits, assigned)
    needed = credits_to_leave_risk(counters, threshold)
    if not is_at_risk(counters, threshold):
        assert needed == 0
        return
    assert needed >= 1
    assert not is_at_risk(Counters(credits + needed, assigned), threshold)
    assert is_at_risk(Counters(credits + needed - 1, assigned), threshold)


def test_the_worked_example_of_the_docs() -> None:
    # 100 held, 85 assigned, warn at 20%: 15 available, at risk; 7 more credits make
    # 22 available of 107 held (line 21), 6 would make 21 of 106 (line 21): still at risk.
    counters = Counters(100, 85)
    assert is_at_risk(counters, AlertThreshold(percent=20))
    assert credits_to_leave_risk(counters, AlertThreshold(percent=20)) == 7
