"""Run every benchmark and print the table: what ``make bench`` runs.

    .venv/bin/python bench/run_all.py            # full sizes (about 10 minutes on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # smoke run: small sizes, short runs
    .venv/bin/python bench/run_all.py --only hot_path,balance_read

Each benchmark runs as its own process (bench/<name>.py) and prints one summary line per
figure as it goes: the figure, the baseline measured in the same run on the same machine,
their ratio, and the target where the issue sets one. At the end comes one table of all of
them; the figures are also written to var/bench/results-latest.json. Timings are reported,
never asserted: the exit status is non-zero only when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import (
    BENCH_DIR,
    TEMPLATE_ENV,
    VAR_DIR,
    Figure,
    create_db,
    database_url,
    drop_db,
    fmt,
    machine_line,
    migrate,
    pg_available,
    service_env,
)

BENCHMARKS = [
    "hot_path",
    "bulk_assign",
    "month_end",
    "verify_ledger",
    "balance_read",
    "dashboard_pages",
    "sqlite_writers",
    "balance_check",
    "replica_reads",
]
BUDGET_SECONDS = 15 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--only", help="comma-separated benchmarks to run")
    parser.add_argument("--skip", help="comma-separated benchmarks to leave out")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    chosen = [b for b in chosen if b not in (args.skip or "").split(",")]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    started = time.monotonic()
    mode = "QUICK smoke run (small sizes, short runs)" if args.quick else "full run"
    print(f"learncredits benchmarks, {mode}")
    print(f"machine: {machine_line()}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n", flush=True)

    env = os.environ.copy()
    template = None
    if pg_available() is None:
        template = "lc_bench_template"
        create_db(template)
        migrate(service_env(database_url(template)))
        env[TEMPLATE_ENV] = template
    VAR_DIR.mkdir(parents=True, exist_ok=True)

    results: list[dict[str, Any]] = []
    failed: list[str] = []
    try:
        for name in chosen:
            out = VAR_DIR / f"results-{name}.json"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--json", str(out)]
            if args.quick:
                cmd.append("--quick")
            print(f"=== {name} ===", flush=True)
            t0 = time.monotonic()
            try:
                code = subprocess.run(cmd, env=env, timeout=BUDGET_SECONDS, check=False).returncode
            except subprocess.TimeoutExpired:
                code = -1
                print(f"[{name}] TIMED OUT after {BUDGET_SECONDS} s")
            print(f"[{name}] finished in {time.monotonic() - t0:.0f} s\n", flush=True)
            if code != 0 or not out.exists():
                failed.append(name)
                continue
            results.append(json.loads(out.read_text()))
    finally:
        if template:
            drop_db(template)

    elapsed = time.monotonic() - started
    print_table(results)
    summary = {
        "mode": "quick" if args.quick else "full",
        "machine": machine_line(),
        "finished_at": datetime.now(UTC).isoformat(),
        "elapsed_s": elapsed,
        "results": results,
        "failed": failed,
    }
    (VAR_DIR / "results-latest.json").write_text(json.dumps(summary, indent=1))
    print(f"\nall benchmarks: {elapsed:.0f} s ({mode}); figures in var/bench/results-latest.json")
    if elapsed > BUDGET_SECONDS:
        print(f"WARNING: over the {BUDGET_SECONDS // 60}-minute budget")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


def print_table(results: list[dict[str, Any]]) -> None:
    rows = [("benchmark", "figure", "value", "baseline", "ratio", "target")]
    for result in results:
        for data in result["figures"]:
            data = {k: v for k, v in data.items() if k != "ratio"}
            figure = Figure(**data)
            value = f"{fmt(figure.value)} {figure.unit}".strip()
            baseline = fmt(figure.baseline) if figure.baseline is not None else "-"
            ratio = figure.ratio
            if ratio is None:
                ratio_text = "-"
            elif figure.higher_is_better:
                ratio_text = f"{ratio * 100:.1f}%"
            else:
                ratio_text = f"{ratio:.1f}x"
            target = ""
            if figure.target:
                status = {True: "met", False: "NOT MET", None: "n/a"}[figure.target_met]
                target = f"{figure.target}: {status}"
            elif figure.note.startswith("SKIPPED"):
                target = figure.note
            rows.append((figure.bench, figure.name, value, baseline, ratio_text, target))
        for note in result.get("notes", []):
            rows.append((result["bench"], f"note: {note}", "", "", "", ""))
    widths = [min(70, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
    print("=== summary ===")
    for n, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            text = cell if len(cell) <= widths[i] else cell[: widths[i] - 1] + "…"
            cells.append(text.rjust(widths[i]) if i in (2, 3, 4) else text.ljust(widths[i]))
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
