"""Billing periods: calendar months in the org's own time zone."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from learncredits.domain.errors import ValidationFailed

# The time zone furthest ahead (UTC+14): a month has begun somewhere once it has begun here.
EARLIEST_ZONE = "Pacific/Kiritimati"

_PERIOD = re.compile(r"([0-9]{4})-([0-9]{2})")
MIN_YEAR = 1970
MAX_YEAR = 9998  # so that "the next period" always exists


def period_of(moment: datetime, tz_name: str) -> str:
    """The ``YYYY-MM`` period a moment belongs to, in the org's time zone."""
    local = moment.astimezone(ZoneInfo(tz_name))
    return f"{local.year:04d}-{local.month:02d}"


def period_bounds(period: str, tz_name: str) -> tuple[datetime, datetime]:
    """The first instant of the period and of the next one, as aware datetimes."""
    match = _PERIOD.fullmatch(period)
    if (
        not match
        or not 1 <= int(match.group(2)) <= 12
        or not MIN_YEAR <= int(match.group(1)) <= MAX_YEAR
    ):
        raise ValidationFailed(f"period must be YYYY-MM, years {MIN_YEAR} to {MAX_YEAR}")
    year, month = int(match.group(1)), int(match.group(2))
    tz = ZoneInfo(tz_name)
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    return start, end


def previous_period(period: str) -> str:
    """The month before ``period`` (``2026-01`` -> ``2025-12``)."""
    period_bounds(period, "UTC")  # validates
    match = _PERIOD.fullmatch(period)
    assert match is not None
    year, month = int(match.group(1)), int(match.group(2))
    return f"{year - (month == 1):04d}-{(month - 2) % 12 + 1:02d}"


def ensure_begun(period: str, now: datetime) -> None:
    """Refuse a month that has not begun in any time zone yet.

    Closing the month in progress is allowed (it bills what is there so far), but a future
    month can hold nothing, and closing it would "succeed" with no invoice: a typo such as
    2062 for 2026 must be told, not silently accepted.
    """
    period_bounds(period, "UTC")  # validates the form
    latest = period_of(now, EARLIEST_ZONE)
    if period > latest:
        raise ValidationFailed(
            f"period {period} has not begun yet; the latest period that can be closed is {latest}"
        )
