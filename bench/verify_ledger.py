"""Benchmark 4: ``verify_ledger`` over 1,000,000 ledger entries (10,000 orgs).

The data is month_end.py's (100 entries an org, lots, draws, overages), consistent by
construction, so verify_ledger must report no mismatch; it runs in a child process that
reports its wall time and peak RSS.

Baseline: the plain ``SELECT org_id, sum(credits_delta) ... GROUP BY org_id`` over the same
table, the least any check of the balances must read.

    .venv/bin/python bench/verify_ledger.py [--quick] [--orgs 10000]
"""

from __future__ import annotations

import sys
import time

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
from month_end import ENTRIES_PER_ORG, ledger_layout, previous_month

BENCH = "verify_ledger"
SUM_SQL = "SELECT org_id, sum(credits_delta) FROM credits_ledgerentry GROUP BY org_id"


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--orgs", type=int)
    args = parser.parse_args(argv)
    orgs = args.orgs or (1000 if args.quick else 10_000)
    entries = orgs * ENTRIES_PER_ORG
    report = Report(BENCH, args.json)
    missing = pg_available()
    if missing:
        report.skip("everything", missing)
        report.write()
        return 0
    _, start, end = previous_month()
    name = "lc_bench_verify"
    with service_database(name, keep=args.keep) as env:
        log(BENCH, f"generating {orgs} orgs, {entries} ledger entries")
        started = time.perf_counter()
        run_datagen(env, [ledger_layout(orgs, start, end)])
        log(BENCH, f"generated in {time.perf_counter() - started:.1f} s")
        baseline = timed_sql(name, SUM_SQL)
        result = run_child("verify", [], env, timeout=1800)
        seconds = result["seconds"]
        full = entries >= 1_000_000
        report.add(
            Figure(
                BENCH,
                f"verify_ledger, {orgs} orgs, {entries:,} entries",
                seconds,
                "s",
                baseline=baseline,
                baseline_label="SELECT org_id, sum(credits_delta) GROUP BY org_id",
                higher_is_better=False,
                target="< 30 s at 1,000,000 entries" if full else "",
                target_met=seconds < 30 if full else None,
                note=(
                    f"{result['orgs']} orgs checked, {result['mismatches']} mismatch(es); "
                    f"peak RSS {result['peak_rss_kb'] / 1024:.0f} MiB"
                ),
                extra=result,
            )
        )
        if result["mismatches"]:
            report.note(f"UNEXPECTED mismatches: {result['first_mismatches']}")
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
