"""Benchmark 5: ``GET /orgs/{id}/balance`` latency at 32 clients, on PostgreSQL and on
SQLite (the embedded mode).

1,000 orgs, each with a ledger of 100 entries whose consumes (11 of them overages) fall in
the current month, so the read's "overage this period" sum has rows to add. Each database
gets two runs through ``learncredits serve`` (bench/loadgen.py, 32 keep-alive clients,
random orgs, each with its own org API key):

- closed loop: every client sends its next request as soon as the answer arrives; the
  latency is then mostly queueing (32 / throughput);
- open loop at half the closed loop's throughput (on PostgreSQL): requests scheduled at a
  fixed rate, latency measured from the scheduled time; this is the latency of a server
  with headroom.

Baseline: the same two SELECTs (the balance row, the period's overage sum) run by pgbench
at 32 clients, closed loop and at the same fixed rate, latency percentiles from its log.

    .venv/bin/python bench/balance_read.py [--quick] [--workers N --threads N]
"""

from __future__ import annotations

import contextlib
import random
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    VAR_DIR,
    Figure,
    Report,
    Server,
    base_parser,
    have_pgbench,
    log,
    migrate,
    pg_available,
    pgbench,
    run_datagen,
    run_loadgen,
    service_database,
    service_env,
    write_requests,
)
from datagen import api_token

BENCH = "balance_read"
ORGS = 1000

PGBENCH_SCRIPT = """\\set org random(:first, :last)
SELECT credits, assigned FROM credits_balance WHERE org_id = :org;
SELECT sum(overage_credits) FROM credits_ledgerentry WHERE org_id = :org
  AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  AND created_at < (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')
      AT TIME ZONE 'UTC'
  AND overage_credits > 0;
"""


def layout() -> dict[str, Any]:
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        "orgs": ORGS,
        "open_per_org": 11,
        "started_per_org": 44,
        "credit_cost": 3,
        "purchased_per_org": 100,
        "contents": 11,
        "consumed_from": month_start.isoformat(),
        "consumed_to": now.isoformat(),
        "api_keys": True,
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    # as hot_path.py: the sweeps' choice for the 2-core machine
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args(argv)
    duration = 3.0 if args.quick else 10.0
    report = Report(BENCH, args.json)
    config = f"--workers {args.workers} --threads {args.threads}"

    pg_runs: dict[str, dict[str, Any]] = {}
    baseline: dict[str, dict[str, Any]] = {}
    missing = pg_available()
    if missing:
        report.skip("PostgreSQL runs", missing)
    else:
        name = "lc_bench_balance"
        with service_database(name, keep=args.keep) as env:
            log(BENCH, f"generating {ORGS} orgs (PostgreSQL)")
            (gen,) = run_datagen(env, [layout()])
            pg_runs = measure(env, gen, args, duration)
            rate = pg_runs["open"]["rate"]
            if have_pgbench():
                with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as out:
                    out.write(PGBENCH_SCRIPT)
                script = Path(out.name)
                first = gen["first_org_id"]
                defines = {"first": str(first), "last": str(first + ORGS - 1)}
                try:
                    common = {"clients": args.clients, "threads": 2, "duration": duration}
                    baseline["closed"] = pgbench(
                        name, script, defines=defines, latency_log=True, **common
                    )
                    baseline["open"] = pgbench(
                        name, script, defines=defines, latency_log=True, rate=rate, **common
                    )
                finally:
                    script.unlink()
            else:
                report.note("pgbench missing: no baseline")
        add_figures(report, "PostgreSQL", config, pg_runs, baseline, target=True)

    if not args.no_sqlite:
        path = VAR_DIR / "lc_bench_balance.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_sqlite(path)
        env = service_env(f"sqlite:///{path}")
        try:
            log(BENCH, "migrating and generating (SQLite)")
            migrate(env)
            (gen,) = run_datagen(env, [layout()])
            runs = measure(env, gen, args, duration)
        finally:
            if not args.keep:
                remove_sqlite(path)
        add_figures(report, "SQLite embedded", config, runs, baseline, target=False)
    report.write()
    return 0


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def measure(
    env: dict[str, str], gen: dict[str, Any], args: Any, duration: float
) -> dict[str, dict[str, Any]]:
    first = gen["first_org_id"]
    orgs = list(range(first, first + gen["orgs"]))
    random.Random(5).shuffle(orgs)
    lines = [("GET", f"/api/v1/orgs/org_{org}/balance", api_token(org)) for org in orgs]
    path = write_requests(lines)
    try:
        with Server(env, workers=args.workers, threads=args.threads) as server:
            closed = run_loadgen(
                server.port, path, connections=args.clients, duration=duration, cycle=True
            )
            rate = max(1.0, round(closed["ok_rps"] / 2))
            opened = run_loadgen(
                server.port,
                path,
                connections=args.clients,
                duration=duration,
                cycle=True,
                rate=rate,
            )
            opened["rate"] = rate
    finally:
        path.unlink()
    return {"closed": closed, "open": opened}


def add_figures(
    report: Report,
    db: str,
    config: str,
    runs: dict[str, dict[str, Any]],
    baseline: dict[str, dict[str, Any]],
    target: bool,
) -> None:
    closed, opened = runs["closed"], runs["open"]
    base_closed, base_open = baseline.get("closed", {}), baseline.get("open", {})
    for label, run, base in (
        ("closed loop", closed, base_closed),
        (f"open loop at {opened['rate']:.0f} req/s", opened, base_open),
    ):
        for q in ("p50", "p99"):
            is_target = target and q == "p99"
            value = run[f"{q}_ms"]
            report.add(
                Figure(
                    BENCH,
                    f"{db} GET balance {q}, 32 clients, {label} ({config})",
                    value,
                    "ms",
                    baseline=base.get(f"{q}_ms"),
                    baseline_label=f"pgbench same SELECTs {q}",
                    higher_is_better=False,
                    target="p99 < 10 ms" if is_target else "",
                    target_met=(value is not None and value < 10) if is_target else None,
                    note=note(run),
                    extra=run,
                )
            )
    report.add(
        Figure(
            BENCH,
            f"{db} GET balance throughput, 32 clients, closed loop",
            closed["ok_rps"],
            "req/s",
            baseline=base_closed.get("tps"),
            baseline_label="pgbench same SELECTs tps",
            note=note(closed),
        )
    )


def note(run: dict[str, Any]) -> str:
    bad = {k: v for k, v in run["statuses"].items() if not k.startswith("2")}
    text = f"{run['completed']} requests, client CPU {run['client_cpu_share'] * 100:.0f}%"
    if bad or run["errors"]:
        text += f"; NON-2xx {bad} errors {run['errors']}"
    return text


if __name__ == "__main__":
    sys.exit(main())
