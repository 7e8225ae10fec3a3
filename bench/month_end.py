"""Benchmark 3: the month-end close (``close_all``) at two sizes, to show how it grows.

Each size is a fresh database whose orgs all have the same history (100 ledger entries an
org, so 1,000 orgs hold 100,000 entries and 10,000 orgs 1,000,000): a purchase of 100
credits, 55 assignments of a 3-credit course reserved, 44 of them started over the previous
month, the lot used up on the 34th (1 credit from the balance, 2 overage), then 10 more
overages: 11 overage entries an org at the retail price, 110,000 invoice lines at 10,000
orgs. ``close_all`` for the previous month runs in a child process, as
``learncredits close-period`` does (with the collection of each invoice enqueued), and
reports its wall time and the process's peak RSS.

Baseline: one SQL aggregate over the same overage entries (per org: count and amount).

    .venv/bin/python bench/month_end.py [--quick] [--sizes 1000,10000]
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import (
    Figure,
    Report,
    base_parser,
    log,
    pg_available,
    run_child,
    run_datagen,
    service_database,
    timed_sql,
)

BENCH = "month_end"
ENTRIES_PER_ORG = 100
OVERAGES_PER_ORG = 11


def previous_month(now: datetime | None = None) -> tuple[str, datetime, datetime]:
    """(period, start, end) of the month before ``now``, in UTC."""
    now = now or datetime.now(UTC)
    end = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end.replace(year=end.year - 1, month=12) if end.month == 1
             else end.replace(month=end.month - 1))  # fmt: skip
    return start.strftime("%Y-%m"), start, end


def ledger_layout(orgs: int, consumed_from: datetime, consumed_to: datetime) -> dict[str, Any]:
    """100 ledger entries an org, 11 of them overages, consumed over [from, to)."""
    return {
        "orgs": orgs,
        "open_per_org": 11,
        "started_per_org": 44,
        "credit_cost": 3,
        "purchased_per_org": 100,
        "contents": 11,
        "consumed_from": consumed_from.isoformat(),
        "consumed_to": consumed_to.isoformat(),
    }


OVERAGE_SQL = """
    SELECT org_id, count(*), sum(overage_credits * retail_unit_price_cents)
    FROM credits_ledgerentry
    WHERE overage_credits > 0 AND created_at >= %s AND created_at < %s
    GROUP BY org_id
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--sizes", help="comma-separated org counts (default 1000,10000)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or ([100, 500] if args.quick else [1000, 10_000])
    report = Report(BENCH, args.json)
    missing = pg_available()
    if missing:
        report.skip("everything", missing)
        report.write()
        return 0

    period, start, end = previous_month()
    results: list[tuple[int, dict[str, Any]]] = []
    for orgs in sizes:
        name = f"lc_bench_month_{orgs}"
        with service_database(name, keep=args.keep) as env:
            entries = orgs * ENTRIES_PER_ORG
            log(BENCH, f"generating {orgs} orgs, {entries} ledger entries")
            started = time.perf_counter()
            run_datagen(env, [ledger_layout(orgs, start, end)])
            log(BENCH, f"generated in {time.perf_counter() - started:.1f} s; closing {period}")
            baseline = timed_sql(name, OVERAGE_SQL, (start, end))
            closed = run_child("close-all", ["--period", period], env, timeout=1800)
            results.append((orgs, closed))
            expected_lines = orgs * OVERAGES_PER_ORG
            if closed["invoices"] != orgs or closed["lines"] != expected_lines:
                report.note(
                    f"{orgs} orgs: expected {orgs} invoices and {expected_lines} lines, got "
                    f"{closed['invoices']} and {closed['lines']}"
                )
            biggest = orgs == max(sizes) and not args.quick
            seconds = closed["seconds"]
            report.add(
                Figure(
                    BENCH,
                    f"close_all {period}, {orgs} orgs, {entries:,} entries",
                    seconds,
                    "s",
                    baseline=baseline,
                    baseline_label="SQL aggregate of the overages",
                    higher_is_better=False,
                    target="< 60 s at 10,000 orgs" if biggest else "",
                    target_met=seconds < 60 if biggest else None,
                    note=(
                        f"{seconds / orgs * 1000:.2f} ms an org; {closed['invoices']} invoices, "
                        f"{closed['lines']} lines"
                    ),
                    extra=closed,
                )
            )
            peak = closed["peak_rss_kb"] / 1024
            report.add(
                Figure(
                    BENCH,
                    f"close_all peak RSS, {orgs} orgs",
                    peak,
                    "MiB",
                    baseline=closed["rss_before_kb"] / 1024,
                    baseline_label="RSS before the close",
                    higher_is_better=False,
                    target="< 500 MB at 10,000 orgs" if biggest else "",
                    target_met=peak * 1.048576 < 500 if biggest else None,
                )
            )
    if len(results) >= 2:
        (small, first), (large, last) = results[0], results[-1]
        growth = last["seconds"] / first["seconds"]
        report.add(
            Figure(
                BENCH,
                f"close_all growth {small} -> {large} orgs (linear = {large / small:.0f})",
                growth,
                "x",
                baseline=large / small,
                baseline_label="linear",
                higher_is_better=False,
                note=(
                    f"per org {first['seconds'] / small * 1000:.2f} -> "
                    f"{last['seconds'] / large * 1000:.2f} ms"
                ),
            )
        )
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
