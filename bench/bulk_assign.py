"""Benchmark 2: bulk assignment of one content item to 10,000 employees in one request.

- ``POST /orgs/{org}/assignments`` with 10,000 employee ids through ``learncredits serve``
  (one web process, so its peak RSS is the request's): wall time of the request, and the
  web process's peak RSS (VmHWM) against its RSS before.
- The same ``assign_bulk`` call in-process: its time, and its tracemalloc peak (a separate
  call, since tracing slows Python down).
- Baseline: the plain SQL doing the same writes in one transaction (lock the balance,
  INSERT ... SELECT the 10,000 assignments and their 10,000 reserve entries, update the
  balance), on the same database.

Each call assigns a different content item to the same 10,000 employees.

    .venv/bin/python bench/bulk_assign.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from common import (
    HOST,
    Figure,
    Report,
    Server,
    base_parser,
    http_request,
    log,
    pg_available,
    proc_status_kb,
    run_child,
    run_datagen,
    service_database,
)
from datagen import api_token

BENCH = "bulk_assign"


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--employees", type=int, default=10_000)
    args = parser.parse_args(argv)
    runs = 1 if args.quick else 3
    count = args.employees
    report = Report(BENCH, args.json)
    missing = pg_available()
    if missing:
        report.skip("everything", missing)
        report.write()
        return 0

    with service_database("lc_bench_bulk", keep=args.keep) as env:
        contents = 2 * runs + 2
        layout = {
            "orgs": 1,
            "employees_per_org": count,
            "purchased_per_org": 10**9,
            "contents": contents,
            "api_keys": True,
        }
        log(BENCH, f"generating one org with {count} employees")
        (gen,) = run_datagen(env, [layout])
        org = gen["first_org_id"]
        first_employee = gen["first_employee_id"]
        content_ids = list(gen["content_ids"])
        token = api_token(org)
        employee_ids = [f"emp_{first_employee + i}" for i in range(count)]

        # --- through the API -------------------------------------------------------------
        times = []
        with Server(env, workers=1, threads=2) as server:
            base = f"http://{HOST}:{server.port}/api/v1/orgs/org_{org}"
            (worker,) = server.worker_pids()
            http_request("GET", f"{base}/balance", token=token)
            rss_before = proc_status_kb(worker, "VmRSS")
            for _ in range(runs):
                body = json.dumps(
                    {"content_id": f"cnt_{content_ids.pop(0)}", "employee_ids": employee_ids}
                ).encode()
                started = time.perf_counter()
                status, answer = http_request("POST", f"{base}/assignments", body, token)
                times.append(time.perf_counter() - started)
                created = len(json.loads(answer).get("data", [])) if status == 201 else 0
                if status != 201 or created != count:
                    report.note(f"POST answered {status} with {created} created: {answer[:300]!r}")
            peak = proc_status_kb(worker, "VmHWM")

        # --- in-process ------------------------------------------------------------------
        common_args = [
            "--org",
            str(org),
            "--first-employee",
            str(first_employee),
            "--count",
            str(count),
        ]
        inproc = run_child("assign-bulk", [*common_args, "--content", str(content_ids.pop(0))], env)
        traced = run_child(
            "assign-bulk",
            [*common_args, "--content", str(content_ids.pop(0)), "--tracemalloc"],
            env,
        )

        # --- the baseline: plain SQL -----------------------------------------------------
        sql_times = []
        for _ in range(runs):
            result = run_child(
                "bulk-sql", [*common_args, "--content", str(content_ids.pop(0))], env
            )
            sql_times.append(result["seconds"])
            if result["rows"] != count:
                report.note(f"the SQL baseline wrote {result['rows']} rows, not {count}")
        sql = min(sql_times)

        label = f"INSERT ... SELECT of {count} assignments + {count} entries"
        best = min(times)
        report.add(
            Figure(
                BENCH,
                f"POST {count} employee ids, PostgreSQL (best of {runs})",
                best,
                "s",
                baseline=sql,
                baseline_label=label,
                higher_is_better=False,
                target="< 1 s",
                target_met=best < 1.0,
                note=f"median {statistics.median(times):.2f} s",
                extra={"times": times},
            )
        )
        report.add(
            Figure(
                BENCH,
                "web process peak RSS (VmHWM) after the POSTs",
                peak / 1024,
                "MiB",
                baseline=rss_before / 1024,
                baseline_label="its RSS before",
                higher_is_better=False,
                note=f"growth {(peak - rss_before) / 1024:.0f} MiB",
            )
        )
        report.add(
            Figure(
                BENCH,
                "in-process assign_bulk",
                inproc["seconds"],
                "s",
                baseline=sql,
                baseline_label="the same SQL",
                higher_is_better=False,
                extra=inproc,
            )
        )
        report.add(
            Figure(
                BENCH,
                "in-process assign_bulk tracemalloc peak",
                traced["tracemalloc_peak_kb"] / 1024,
                "MiB",
                note=f"process peak RSS {traced['peak_rss_kb'] / 1024:.0f} MiB",
                extra=traced,
            )
        )
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
