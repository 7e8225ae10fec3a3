"""Billing reports: the cost-basis statement, the usage series and the forecast.

All figures come from the ledger, its lots and lot draws, dated by their ledger entries, so
the statement's identity holds by construction:

    deferred(T) = value of every lot created before T  -  value of every draw made before T
    deferred_closing = deferred_opening + purchased - recognized - refunded   (to the cent)

where a lot's value is quantity x its unit price (a purchase's price; 0 for granted
credits) and a draw's value is the credits drawn x the unit price of the lot they came from.
A refund's draw (from the refunded purchase's own lot) is refunded, not recognized: that
money went back to the customer instead of being earned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from learncredits.billing.models import Invoice
from learncredits.catalog.services import current_price_book
from learncredits.credits.models import Balance, CreditLot, LedgerEntry, LotDraw
from learncredits.domain import pricing
from learncredits.domain.errors import ValidationFailed
from learncredits.domain.periods import MAX_YEAR, MIN_YEAR, period_bounds
from learncredits.tenancy.models import Organization

T = LedgerEntry.Type


@dataclass(frozen=True)
class Statement:
    period: str
    opening_credits: int
    purchased_credits: int
    granted_credits: int
    consumed_credits: int
    closing_credits: int
    purchased_cents: int
    recognized_cents: int
    overage_credits: int
    overage_cents: int
    deferred_opening_cents: int
    deferred_closing_cents: int
    refunded_credits: int = 0
    refunded_cents: int = 0
    # Tax is not revenue: none of the money above includes it. This is the tax on the
    # documents issued in the period, credit notes netted.
    tax_collected_cents: int = 0
    currency: str = "USD"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _sum(queryset: QuerySet[Any], expression: Any) -> int:
    return int(queryset.aggregate(total=Sum(expression))["total"] or 0)


def _credits_before(org_id: int, moment: datetime) -> int:
    row = (
        LedgerEntry.objects.filter(org_id=org_id, created_at__lt=moment)
        .order_by("-created_at", "-pk")
        .values_list("credits_after", flat=True)
        .first()
    )
    return int(row or 0)


def _deferred_at(org_id: int, moment: datetime) -> int:
    lots = CreditLot.objects.filter(org_id=org_id, created_by__created_at__lt=moment)
    draws = LotDraw.objects.filter(org_id=org_id, entry__created_at__lt=moment)
    return _sum(lots, F("quantity") * F("unit_price_cents")) - _sum(
        draws, F("quantity") * F("lot__unit_price_cents")
    )


def statement(org: Organization, period: str, department_id: int | None = None) -> Statement:
    """One org's statement for one calendar month of its own time zone.

    With ``department_id``, what the department's employees consumed: consumed, overage and
    recognized figures count only the entries of their assignments. Credits are one pool
    for the whole org, so the balances, purchases, grants, refunds, deferred revenue and tax
    stay the org's."""
    start, end = period_bounds(period, org.timezone)
    entries = LedgerEntry.objects.filter(org_id=org.pk, created_at__gte=start, created_at__lt=end)
    consumption = entries
    if department_id is not None:
        consumption = entries.filter(assignment__employee__department_id=department_id)
    purchased = _sum(entries.filter(type=T.PURCHASE), "credits_delta")
    granted = _sum(
        entries.filter(Q(type=T.GRANT) | Q(type=T.ADJUSTMENT, credits_delta__gt=0)),
        "credits_delta",
    )
    consumed = -_sum(
        consumption.filter(Q(type=T.CONSUME) | Q(type=T.ADJUSTMENT, credits_delta__lt=0)),
        "credits_delta",
    )
    lots_in_period = CreditLot.objects.filter(
        org_id=org.pk, created_by__created_at__gte=start, created_by__created_at__lt=end
    )
    draws_in_period = LotDraw.objects.filter(
        org_id=org.pk, entry__created_at__gte=start, entry__created_at__lt=end
    )
    refund_draws = draws_in_period.filter(entry__type=T.REFUND)
    recognized_draws = draws_in_period.exclude(entry__type=T.REFUND)
    if department_id is not None:
        recognized_draws = recognized_draws.filter(
            entry__assignment__employee__department_id=department_id
        )
    return Statement(
        period=period,
        opening_credits=_credits_before(org.pk, start),
        purchased_credits=purchased,
        granted_credits=granted,
        consumed_credits=consumed,
        closing_credits=_credits_before(org.pk, end),
        purchased_cents=_sum(lots_in_period, F("quantity") * F("unit_price_cents")),
        recognized_cents=_sum(recognized_draws, F("quantity") * F("lot__unit_price_cents")),
        overage_credits=_sum(consumption, "overage_credits"),
        overage_cents=_sum(
            consumption.filter(overage_credits__gt=0),
            F("overage_credits") * F("retail_unit_price_cents"),
        ),
        deferred_opening_cents=_deferred_at(org.pk, start),
        deferred_closing_cents=_deferred_at(org.pk, end),
        refunded_credits=-_sum(entries.filter(type=T.REFUND), "credits_delta"),
        refunded_cents=_sum(refund_draws, F("quantity") * F("lot__unit_price_cents")),
        tax_collected_cents=_sum(
            Invoice.objects.filter(org_id=org.pk, issued_at__gte=start, issued_at__lt=end),
            "tax_cents",
        ),
    )


def operator_statement(period: str, orgs: Iterable[Organization] | None = None) -> Statement:
    """Every org's statement for ``period`` (each in its own time zone), summed."""
    totals: dict[str, int] = {}
    for org in orgs if orgs is not None else Organization.objects.order_by("pk"):
        for field, value in statement(org, period).as_dict().items():
            if isinstance(value, int):
                totals[field] = totals.get(field, 0) + value
    fields = [f for f in Statement.__dataclass_fields__ if f not in ("period", "currency")]
    return Statement(period=period, **{f: totals.get(f, 0) for f in fields})  # type: ignore[arg-type]


# --- usage -----------------------------------------------------------------------------------

MAX_DAY_BUCKETS = 400
MAX_MONTH_BUCKETS = 120


@dataclass(frozen=True)
class UsagePoint:
    date: str
    consumed_credits: int
    overage_credits: int
    assigned_credits: int
    credits: int


def _next_bucket(start: date, granularity: str) -> date:
    if granularity == "day":
        return start + timedelta(days=1)
    return date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def _bucket_starts(first: date, last: date, granularity: str) -> list[date]:
    current = first if granularity == "day" else date(first.year, first.month, 1)
    starts: list[date] = []
    while current <= last:
        starts.append(current)
        current = _next_bucket(current, granularity)
    return starts


def usage(
    org: Organization,
    first: date,
    last: date,
    granularity: str,
    department_id: int | None = None,
) -> list[UsagePoint]:
    """Consumption per day or month (org time zone), with the balance at each bucket's end.

    With ``department_id``: what the department's employees consumed, and the credits still
    reserved for them at each bucket's end; ``credits`` stays the org's (one pool)."""
    if granularity not in ("day", "month"):
        raise ValidationFailed("granularity must be 'day' or 'month'")
    if last < first:
        raise ValidationFailed("'to' must not be before 'from'")
    if first.year < MIN_YEAR or last.year > MAX_YEAR:
        raise ValidationFailed(f"dates must be within the years {MIN_YEAR} to {MAX_YEAR}")
    limit = MAX_DAY_BUCKETS if granularity == "day" else MAX_MONTH_BUCKETS
    span = (
        (last - first).days + 1
        if granularity == "day"
        else (last.year - first.year) * 12 + last.month - first.month + 1
    )
    if span > limit:
        raise ValidationFailed(f"at most {limit} {granularity} buckets per request")
    starts = _bucket_starts(first, last, granularity)
    tz = ZoneInfo(org.timezone)
    edges = [*starts, _next_bucket(starts[-1], granularity)]
    bounds = [datetime(d.year, d.month, d.day, tzinfo=tz) for d in edges]

    entries = LedgerEntry.objects.filter(org_id=org.pk)

    def balances_before(moment: datetime) -> tuple[int, int]:
        row = (
            entries.filter(created_at__lt=moment)
            .order_by("-created_at", "-pk")
            .values_list("credits_after", "assigned_after")
            .first()
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    # Each bucket is a range of created_at in UTC (its bounds computed in the org's zone), so
    # every figure is an indexed range aggregate, the same SQL on both databases (truncating
    # in a time zone per row is slow on SQLite). Balances at a bucket's end are one indexed
    # lookup per bucket that had entries, and carry over through empty ones.
    consume = Q(type=T.CONSUME)
    credits, assigned = balances_before(bounds[0])
    points: list[UsagePoint] = []
    for index, start in enumerate(starts):
        row = entries.filter(
            created_at__gte=bounds[index], created_at__lt=bounds[index + 1]
        ).aggregate(
            entries=Count("pk"),
            consumed=Sum(-F("credits_delta"), filter=consume, default=0),
            overage=Sum("overage_credits", filter=consume, default=0),
        )
        if row["entries"]:
            credits, assigned = balances_before(bounds[index + 1])
        if department_id is not None:
            mine = entries.filter(
                created_at__gte=bounds[index],
                created_at__lt=bounds[index + 1],
                assignment__employee__department_id=department_id,
            ).aggregate(
                consumed=Sum(-F("credits_delta"), filter=consume, default=0),
                overage=Sum("overage_credits", filter=consume, default=0),
            )
            row["consumed"], row["overage"] = mine["consumed"], mine["overage"]
            assigned = _sum(
                entries.filter(
                    created_at__lt=bounds[index + 1],
                    assignment__employee__department_id=department_id,
                ),
                "assigned_delta",
            )
        points.append(
            UsagePoint(
                start.isoformat(), int(row["consumed"]), int(row["overage"]), assigned, credits
            )
        )
    return points


# --- forecast --------------------------------------------------------------------------------

BURN_WINDOW_DAYS = 90


@dataclass(frozen=True)
class Forecast:
    available: int
    daily_burn: Decimal
    runs_out_on: date | None
    recommended_quantity: int
    quote: pricing.Quote | None
    # More than a year away at this pace: the page says so rather than a far-off date that
    # the pace a year from now will not match.
    runs_out_beyond_a_year: bool = False


def forecast(org: Organization, horizon_days: int = 30, now: datetime | None = None) -> Forecast:
    """When the credits run out at the recent pace, and what to buy to cover the horizon.

    The burn is the average credits started per day (from the balance and as overage) over
    the last 90 days; with no such history, the pending reservations spread over the horizon.
    The recommendation covers the pending reservations plus the burn over the horizon, less
    the credits held (the same demand that ``runs_out_on`` assumes); when the burn was itself
    derived from the pending reservations, they are counted once. Its quote is at the volume
    price (and names a cheaper larger quantity when there is one).
    """
    if not 1 <= horizon_days <= 3650:
        raise ValidationFailed("horizon_days must be between 1 and 3650")
    now = now or timezone.now()
    balance = Balance.objects.get(org_id=org.pk)
    available = balance.credits - balance.assigned
    started_cost = -_sum(
        LedgerEntry.objects.filter(
            org_id=org.pk, type=T.CONSUME, created_at__gte=now - timedelta(days=BURN_WINDOW_DAYS)
        ),
        "assigned_delta",
    )
    if started_cost > 0:
        burn = Decimal(started_cost) / BURN_WINDOW_DAYS
    else:
        burn = Decimal(balance.assigned) / horizon_days
    burn = burn.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    today = now.astimezone(ZoneInfo(org.timezone)).date()
    runs_out_on: date | None = None
    if burn > 0:
        runs_out_on = today if available <= 0 else today + timedelta(days=int(available / burn))
    horizon_demand = math.ceil(burn * horizon_days) if started_cost > 0 else 0
    need = balance.assigned + horizon_demand - balance.credits
    recommended = max(0, min(need, pricing.MAX_PURCHASE_QUANTITY))
    quote = pricing.quote(current_price_book(), recommended) if recommended else None
    beyond = runs_out_on is not None and runs_out_on > today + timedelta(days=365)
    return Forecast(available, burn, runs_out_on, recommended, quote, beyond)
