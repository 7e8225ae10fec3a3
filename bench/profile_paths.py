"""Profile one benchmarked path in-process: pyinstrument's call tree and the SQL of one call.

    .venv/bin/pip install pyinstrument        # once, into the venv (not a dependency)
    .venv/bin/python bench/profile_paths.py start     # POST .../start through the Django stack
    .venv/bin/python bench/profile_paths.py start-action  # start_assignment called directly
    .venv/bin/python bench/profile_paths.py balance   # GET .../balance
    .venv/bin/python bench/profile_paths.py healthz   # GET /healthz: the framework alone
    .venv/bin/python bench/profile_paths.py close     # close_all, one org at a time
    .venv/bin/python bench/profile_paths.py bulk      # assign_bulk of 2,000 employees

Requests go through Django's test client (middleware, ninja, auth, the action), so the
profile is the server's work without gunicorn and the network. Writes the profile to
var/bench/profile-<what>.txt and prints the SQL one call runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import VAR_DIR, run_child, run_datagen, service_database
from month_end import ledger_layout, previous_month


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "what", choices=["start", "start-action", "balance", "healthz", "close", "bulk"]
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--no-profiler", action="store_true", help="time the calls only (no profiler overhead)"
    )
    parser.add_argument(
        "--count-calls",
        action="store_true",
        help="count Python calls per request by function (cProfile), to compare two commits",
    )
    args = parser.parse_args()
    period, start, end = previous_month()
    if args.what in ("start", "start-action", "balance", "healthz"):
        # As many orgs as the hot path spreads its starts over: a plan that scans a table
        # shows at this size (with 100 orgs every table fits a page and a scan looks free).
        orgs = 1000
        layout = {"orgs": orgs, "open_per_org": args.calls // orgs + 2, "started_per_org": 4,
                  "credit_cost": 3, "purchased_per_org": 10**9, "contents": 11,
                  "api_keys": True}  # fmt: skip
    elif args.what == "close":
        layout = ledger_layout(args.calls + 1, start, end)
    else:
        layout = {"orgs": 1, "employees_per_org": 2000, "purchased_per_org": 10**9,
                  "contents": args.calls + 1}  # fmt: skip
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    output = VAR_DIR / f"profile-{args.what}{'-calls' if args.count_calls else ''}.txt"
    with service_database("lc_bench_profile", keep=args.keep) as env:
        generated = run_datagen(env, [layout])
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
            json.dump(generated, out)
        try:
            result = run_child(
                "profile",
                ["--what", args.what, "--generated", out.name, "--calls", str(args.calls),
                 "--period", period, "--output", str(output)]
                + (["--no-profiler"] if args.no_profiler else [])
                + (["--count-calls"] if args.count_calls else []),
                env,
            )  # fmt: skip
        finally:
            Path(out.name).unlink()
    status = result["first_status"]
    if status is not None and not 200 <= status < 300:
        print(f"the first call answered {status}, so the profile would be of an error path")
        return 1
    if args.count_calls:
        print(f"{result['what']}: {result['python_calls_per_call']:.1f} Python calls a request")
        for table, counts in sorted(result.get("rows_per_call", {}).items()):
            shown = ", ".join(f"{k} {v:g}" for k, v in counts.items())
            print(f"  {table}: {shown} a request")
    else:
        print(f"{result['what']}: {result['calls']} calls, {result['ms_per_call']:.2f} ms a call")
    print(f"SQL of one call ({result['queries_in_one_call']} statements):")
    for sql in result["sql"]:
        print(f"  {sql}")
    if output.exists():
        print(f"profile: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
