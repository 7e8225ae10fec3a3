"""Department budgets: the budget year and the values a budget may take.

A department's budget counts credits per budget year, which begins every year on the same
month and day (``MM-DD``) in the org's time zone. February 29th is refused as a start: a year
that began on it would have no start at all three years in four.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from learncredits.domain.errors import ValidationFailed

MAX_BUDGET = 1_000_000_000
_MONTH_DAY = re.compile(r"([0-9]{2})-([0-9]{2})", re.ASCII)


def clean_year_start(value: object) -> str:
    """A budget year start as stored (``MM-DD``), or a 422 that says what is wrong."""
    if not isinstance(value, str):
        raise ValidationFailed(
            "budget_year_start must be a string MM-DD", field="budget_year_start"
        )
    match = _MONTH_DAY.fullmatch(value.strip())
    if match is None:
        raise ValidationFailed(
            "budget_year_start must be MM-DD, e.g. 04-01", field="budget_year_start"
        )
    month, day = int(match.group(1)), int(match.group(2))
    if (month, day) == (2, 29):
        raise ValidationFailed(
            "a budget year cannot start on 02-29 (most years have none); use 02-28 or 03-01",
            field="budget_year_start",
        )
    try:
        date(2001, month, day)  # a year without February 29th: every other day exists in it
    except ValueError:
        raise ValidationFailed(
            f"budget_year_start {value.strip()} is not a day of the year", field="budget_year_start"
        ) from None
    return f"{month:02d}-{day:02d}"


def clean_budget(value: object) -> int | None:
    """A budget in credits: a whole number from 0 to ``MAX_BUDGET``, or None for no limit."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BUDGET:
        raise ValidationFailed(
            f"budget_credits must be a whole number from 0 to {MAX_BUDGET}, or null for no limit",
            field="budget_credits",
        )
    return value


def budget_year_start(today: date, year_start: str) -> date:
    """The first day of the budget year ``today`` is in (both in the org's time zone)."""
    month, day = (int(part) for part in clean_year_start(year_start).split("-"))
    this_year = date(today.year, month, day)
    return this_year if this_year <= today else date(today.year - 1, month, day)


@dataclass(frozen=True)
class BudgetOutlook:
    """A department's budget after a change: what it would commit, and whether that fits."""

    department_id: int
    name: str
    budget_credits: int
    committed_credits: int  # after the change

    @property
    def over_by(self) -> int:
        return max(0, self.committed_credits - self.budget_credits)

    @property
    def exceeded(self) -> bool:
        return self.committed_credits > self.budget_credits
