"""Pure rules without a database: the assignment lifecycle (docs/product.md sections 5 and 6),
balance arithmetic and alerts (sections 2 and 9), FIFO lots (section 3), billing periods
(section 8) and public ids."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from learncredits import ids
from learncredits.domain.balance import (
    AlertThreshold,
    Counters,
    StartSplit,
    is_at_risk,
    split_start,
)
from learncredits.domain.errors import InvalidState, ValidationFailed
from learncredits.domain.lifecycle import OPEN_STATUSES, Action, Outcome, Status, decide
from learncredits.domain.lots import Draw, draw_fifo
from learncredits.domain.periods import period_bounds, period_of, previous_period

# --- lifecycle ------------------------------------------------------------------------------

LEGAL = {
    (Status.ASSIGNED, Action.START): Outcome.APPLY,
    (Status.STARTED, Action.START): Outcome.NOOP,  # starting twice charges once
    (Status.COMPLETED, Action.START): Outcome.NOOP,
    (Status.ASSIGNED, Action.COMPLETE): Outcome.START_THEN_COMPLETE,
    (Status.STARTED, Action.COMPLETE): Outcome.APPLY,
    (Status.COMPLETED, Action.COMPLETE): Outcome.NOOP,
    (Status.ASSIGNED, Action.CANCEL): Outcome.APPLY,
    (Status.CANCELLED, Action.CANCEL): Outcome.NOOP,
    (Status.ASSIGNED, Action.REASSIGN): Outcome.APPLY,
}
ALL_PAIRS = list(itertools.product(Status, Action))
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in LEGAL]


def test_the_matrix_covers_every_status_and_action():
    assert len(ALL_PAIRS) == 16
    assert len(ILLEGAL) == 7
    assert set(ILLEGAL) == {
        (Status.CANCELLED, Action.START),
        (Status.CANCELLED, Action.COMPLETE),
        (Status.STARTED, Action.CANCEL),
        (Status.COMPLETED, Action.CANCEL),
        (Status.STARTED, Action.REASSIGN),
        (Status.COMPLETED, Action.REASSIGN),
        (Status.CANCELLED, Action.REASSIGN),
    }


@pytest.mark.parametrize(
    ("status", "action", "outcome"),
    [(s, a, o) for (s, a), o in LEGAL.items()],
    ids=lambda v: getattr(v, "value", v),
)
def test_legal_transitions(status, action, outcome):
    assert decide(status, action) is outcome
    # the string value (as stored in the database) decides the same
    assert decide(status.value, action) is outcome


@pytest.mark.parametrize(("status", "action"), ILLEGAL, ids=lambda v: v.value)
def test_illegal_transitions_raise_invalid_state(status, action):
    with pytest.raises(InvalidState) as info:
        decide(status, action)
    assert info.value.code == "invalid_state"
    assert action.value in info.value.detail
    assert status.value in info.value.detail
    with pytest.raises(InvalidState):
        decide(status.value, action)


def test_unknown_status_is_not_silently_accepted():
    with pytest.raises(ValueError):
        decide("paused", Action.START)


def test_open_statuses():
    assert set(OPEN_STATUSES) == {Status.ASSIGNED, Status.STARTED}


# --- balance --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cost", "credits", "from_balance", "overage"),
    [
        (5, 100, 5, 0),
        (5, 5, 5, 0),  # exactly covered
        (5, 4, 4, 1),
        (5, 3, 3, 2),
        (5, 0, 0, 5),  # nothing left: all overage
        (1, 0, 0, 1),
        (0, 0, 0, 0),  # free content
        (0, 10, 0, 0),
        (1_000_000, 999_999, 999_999, 1),
    ],
)
def test_split_start(cost, credits, from_balance, overage):
    split = split_start(cost, credits)
    assert split == StartSplit(from_balance=from_balance, overage=overage)
    assert split.from_balance + split.overage == cost
    assert split.from_balance <= credits


def test_counters_available_can_be_negative():
    assert Counters(credits=100, assigned=5).available == 95
    assert Counters(credits=3, assigned=5).available == -2
    assert Counters(credits=0, assigned=0).available == 0


@pytest.mark.parametrize(
    ("credits", "assigned", "threshold", "at_risk"),
    [
        (0, 0, 0, False),  # nothing reserved: never at risk
        (0, 0, 10, False),
        (100, 0, 1000, False),
        (100, 5, 0, False),  # article example: 95 available
        (5, 4, 0, False),  # one left
        (5, 5, 0, True),  # assigned reached credits
        (5, 6, 0, True),  # assigned more than held
        (0, 1, 0, True),
        (20, 10, 10, True),  # available == threshold
        (21, 10, 10, False),
        (5, 5, -1, False),  # negative threshold: may over-assign by one
        (5, 6, -1, True),
    ],
)
def test_is_at_risk(credits, assigned, threshold, at_risk):
    assert is_at_risk(Counters(credits, assigned), AlertThreshold(threshold)) is at_risk


# --- lots -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lots", "quantity", "draws"),
    [
        pytest.param([(1, 10)], 3, [Draw(1, 3)], id="one-lot-partial"),
        pytest.param([(1, 10), (2, 10)], 10, [Draw(1, 10)], id="exact-exhaustion-of-first"),
        pytest.param([(1, 10), (2, 10)], 11, [Draw(1, 10), Draw(2, 1)], id="spills-to-second"),
        pytest.param(
            [(7, 2), (3, 3), (9, 5)], 10, [Draw(7, 2), Draw(3, 3), Draw(9, 5)], id="all-lots"
        ),
        pytest.param([(5, 2), (1, 100)], 3, [Draw(5, 2), Draw(1, 1)], id="order-given-not-id"),
        pytest.param([(1, 0), (2, 4)], 2, [Draw(2, 2)], id="skips-empty-lot"),
        pytest.param([(1, 4)], 0, [], id="nothing-needed"),
        pytest.param([], 0, [], id="no-lots-nothing-needed"),
    ],
)
def test_draw_fifo(lots, quantity, draws):
    result = draw_fifo(lots, quantity)
    assert result == draws
    assert sum(d.quantity for d in result) == quantity


def test_draw_fifo_stops_reading_once_satisfied():
    consumed = []

    def lots():
        for lot in [(1, 5), (2, 5), (3, 5)]:
            consumed.append(lot[0])
            yield lot

    assert draw_fifo(lots(), 5) == [Draw(1, 5)]
    assert 3 not in consumed


@pytest.mark.parametrize(
    ("lots", "quantity"),
    [([], 1), ([(1, 4)], 5), ([(1, 4), (2, 4)], 9), ([(1, 0)], 1)],
)
def test_draw_fifo_shortfall_raises(lots, quantity):
    with pytest.raises(ValueError, match="needed"):
        draw_fifo(lots, quantity)


# --- periods --------------------------------------------------------------------------------

LA = "America/Los_Angeles"


@pytest.mark.parametrize(
    ("local", "period"),
    [
        (datetime(2024, 1, 31, 23, 30), "2024-01"),  # PST: 2024-02-01 07:30 UTC
        (datetime(2024, 4, 30, 23, 30), "2024-04"),  # PDT: 2024-05-01 06:30 UTC
        (datetime(2024, 6, 30, 23, 59, 59), "2024-06"),
        (datetime(2024, 12, 31, 23, 30), "2024-12"),  # UTC is already next year
        (datetime(2024, 3, 1, 0, 0), "2024-03"),
        (datetime(2024, 2, 29, 23, 30), "2024-02"),
    ],
)
def test_period_of_late_evening_in_los_angeles_stays_in_its_month(local, period):
    moment = local.replace(tzinfo=ZoneInfo(LA)).astimezone(UTC)
    assert period_of(moment, LA) == period
    # the same instant, seen from UTC, may be the next month
    assert period_of(moment, "UTC") == f"{moment.year:04d}-{moment.month:02d}"


def test_period_of_differs_from_utc_at_month_end():
    moment = datetime(2024, 2, 1, 7, 30, tzinfo=UTC)
    assert period_of(moment, LA) == "2024-01"
    assert period_of(moment, "UTC") == "2024-02"
    assert period_of(moment, "Asia/Tokyo") == "2024-02"
    assert period_of(datetime(2024, 1, 31, 15, 0, tzinfo=UTC), "Asia/Tokyo") == "2024-02"


def test_period_bounds_december_rolls_into_next_year():
    start, end = period_bounds("2024-12", LA)
    assert start == datetime(2024, 12, 1, tzinfo=ZoneInfo(LA))
    assert end == datetime(2025, 1, 1, tzinfo=ZoneInfo(LA))
    assert start.astimezone(UTC) == datetime(2024, 12, 1, 8, 0, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert end - start == timedelta(days=31)


@pytest.mark.parametrize(
    ("period", "start_utc", "end_utc"),
    [
        ("2024-01", datetime(2024, 1, 1, 8, tzinfo=UTC), datetime(2024, 2, 1, 8, tzinfo=UTC)),
        ("2024-02", datetime(2024, 2, 1, 8, tzinfo=UTC), datetime(2024, 3, 1, 8, tzinfo=UTC)),
        # DST begins in March: the end is at 07:00 UTC (PDT)
        ("2024-03", datetime(2024, 3, 1, 8, tzinfo=UTC), datetime(2024, 4, 1, 7, tzinfo=UTC)),
        ("1970-01", datetime(1970, 1, 1, 8, tzinfo=UTC), datetime(1970, 2, 1, 8, tzinfo=UTC)),
    ],
)
def test_period_bounds_in_los_angeles(period, start_utc, end_utc):
    start, end = period_bounds(period, LA)
    assert start.astimezone(UTC) == start_utc
    assert end.astimezone(UTC) == end_utc


def test_period_of_and_bounds_agree_at_the_edges():
    start, end = period_bounds("2024-01", LA)
    assert period_of(start, LA) == "2024-01"
    assert period_of(end - timedelta(microseconds=1), LA) == "2024-01"
    assert period_of(end, LA) == "2024-02"


@pytest.mark.parametrize(
    "period",
    [
        "",
        "2024",
        "2024-1",
        "2024-001",
        "24-01",
        "2024-00",
        "2024-13",
        "2024/01",
        "2024-01-01",
        " 2024-01",
        "2024-01 ",
        "2024-01\n",  # "$" alone would accept a trailing newline
        "1969-12",
        "0000-01",
        "abcd-ef",
        "\uff12\uff10\uff12\uff14-\uff10\uff11",  # full-width digits are not YYYY-MM
        "9999-12",  # its end (10000-01) cannot be represented
    ],
)
def test_period_bounds_refuses_bad_periods(period):
    with pytest.raises(ValidationFailed) as info:
        period_bounds(period, "UTC")
    assert info.value.code == "validation_error"


@pytest.mark.parametrize(
    ("period", "previous"),
    [
        ("2026-01", "2025-12"),
        ("2024-03", "2024-02"),
        ("2024-12", "2024-11"),
        ("1971-01", "1970-12"),
    ],
)
def test_previous_period(period, previous):
    assert previous_period(period) == previous
    start, _ = period_bounds(period, LA)
    assert period_of(start - timedelta(microseconds=1), LA) == previous


@pytest.mark.parametrize("period", ["", "2024-1", "abcd-ef", "2024-13", "2024-00", "2024/01"])
def test_previous_period_refuses_bad_periods(period):
    with pytest.raises(ValidationFailed):
        previous_period(period)


# --- public ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ids.PREFIXES))
def test_ids_round_trip(kind):
    for pk in (1, 42, 2**63 - 1):
        public = ids.encode(kind, pk)
        assert public == f"{ids.PREFIXES[kind]}_{pk}"
        assert ids.decode(kind, public) == pk


def test_ids_prefixes_are_distinct():
    assert len(set(ids.PREFIXES.values())) == len(ids.PREFIXES)


def test_encode_none_is_none():
    assert ids.encode("assignment", None) is None


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("employee", "asg_3"),  # another kind's prefix
        ("assignment", "emp_3"),
        ("org", "ORG_3"),
        ("org", "org3"),
        ("org", "org-3"),
        ("org", "org_"),
        ("org", "_3"),
        ("org", ""),
        ("org", "org_0"),
        ("org", "org_03"),  # leading zero
        ("org", "org_00"),
        ("org", "org_-3"),
        ("org", "org_+3"),
        ("org", "org_3a"),
        ("org", "org_3.0"),
        ("org", "org_3_4"),
        ("org", "org_ 3"),
        ("org", "org_3 "),
        ("org", "org_3\n"),
        ("org", "org_1e3"),
        ("org", "org_\u00b2"),  # str.isdigit() says yes; it is not a decimal id
        ("org", "org_\u0663"),  # Arabic-Indic three
        ("org", "org_\uff13"),  # full-width three
        ("org", f"org_{2**63}"),  # beyond a bigint
        ("org", "org_" + "9" * 30),
        ("org", "org_" + "1" * 5000),  # beyond int()'s 4300-digit limit: must not raise
    ],
)
def test_decode_refuses_malformed_ids(kind, value):
    assert ids.decode(kind, value) is None


@pytest.mark.parametrize("value", [None, 3, 3.0, True, b"org_3", ["org_3"], {"id": "org_3"}])
def test_decode_refuses_non_strings(value):
    assert ids.decode("org", value) is None
