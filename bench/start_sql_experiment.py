"""Experiment: the start of an assignment as one round trip (docs/decisions/0008).

Does ``learncredits_start`` (bench/start_sql/start.sql: the whole start in one PL/pgSQL
call, in autocommit) reach, on ONE org, at least 50% of pgbench's rate measured in the same
run? Measured, each run on one org and on distinct assigned assignments:

- pgbench running ``bench/pgbench/hot-path.sql`` on one org (``-D orgs=1``), 32 clients:
  the baseline, as in bench/hot_path.py, run right before each of the runs below (the
  machine is shared and drifts, so each run is held to the pgbench rate of the same minute).
- the SQL path called directly: 32 connections (client processes x threads, psycopg, each
  connection its own) each calling ``SELECT * FROM learncredits_start(...)`` in autocommit,
  prepared on the server.
- the SQL path through ``start_via_sql`` (bench/start_sql/path.py: Django's connection,
  the answer mapped to start_assignment's outcomes), the same way.
- the Python path, ``credits.actions.start_assignment``, the same way.
- ``learncredits_start`` driven by pgbench itself (32 clients, C, no Python): the
  function's own limit on this machine.

    .venv/bin/python bench/start_sql_experiment.py [--quick] [--duration S] [--procs N]
        [--only sql,sql-django,python,pgbench-sql]

Each figure is printed with its ratio to the pgbench baseline; one org's starts run one at a
time (the balance row lock), so 1000 / rate is how long each start holds it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    PGBENCH_DIR,
    PYTHON,
    Figure,
    Report,
    base_parser,
    create_db,
    drop_db,
    have_pgbench,
    log,
    machine_line,
    pg_available,
    pg_connect,
    pg_conninfo,
    pgbench,
    psql_file,
    run_child,
    run_datagen,
    service_database,
)

BENCH = "start_sql"
START_SQL = BENCH_DIR / "start_sql" / "start.sql"
CALL = "SELECT * FROM learncredits_start(%s::bigint, %s::bigint, %s::text, %s::timestamptz)"
WARM_CALLS = 8  # per thread, before the run: connection, prepared statements, caches
WARMUP = 1.0  # seconds of the run not counted (every client busy before counting starts)

# The modes of the client processes (--child MODE).
MODES = {
    "sql": "SQL path called directly (psycopg, SELECT learncredits_start)",
    "sql-django": "SQL path through start_via_sql (Django connection)",
    "python": "Python path, start_assignment",
}


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--clients", type=int, default=32, help="connections per run")
    parser.add_argument(
        "--procs", type=int, default=4, help="client processes of the in-process runs"
    )
    parser.add_argument("--duration", type=float, help="seconds per run (8, --quick 3)")
    parser.add_argument(
        "--only", help="comma-separated runs: sql,sql-django,python,pgbench-sql (default all)"
    )
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--dbname", help=argparse.SUPPRESS)
    parser.add_argument("--org", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)  # first:count of open ids
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    duration = args.duration or (3.0 if args.quick else 8.0)
    seconds = max(1, round(duration))
    runs = (args.only or "sql,sql-django,python,pgbench-sql").split(",")
    # Open assignments per org: more than the fastest run can start (it stops early and
    # says so if not).
    per_org = 12_000 if args.quick else 60_000
    report = Report(BENCH, args.json)
    report.note(machine_line())
    missing = pg_available()
    if missing:
        report.skip("everything", missing)
        report.write()
        return 0
    if not have_pgbench():
        report.skip("everything", "pgbench and psql are needed for the baseline")
        report.write()
        return 0

    baseline_db = "lc_bench_start_sql_pgbench"
    create_db(baseline_db)
    try:
        psql_file(baseline_db, PGBENCH_DIR / "hot-path-schema.sql", {"orgs": "1"})

        def baseline() -> float:
            result = pgbench(
                baseline_db,
                PGBENCH_DIR / "hot-path.sql",
                clients=args.clients,
                threads=2,
                duration=seconds,
                defines={"orgs": "1"},
            )
            log(BENCH, f"pgbench hot-path.sql orgs=1: {result['tps']:.0f} tps")
            return float(result["tps"])

        results: dict[str, dict[str, Any]] = {}
        baselines: dict[str, float] = {}
        with service_database("lc_bench_start_sql", keep=args.keep) as env:
            dbname = env["DATABASE_URL"].rsplit("/", 1)[1]
            orgs = len(runs)
            log(BENCH, f"generating {orgs} orgs x {per_org} open assignments")
            (generated,) = run_datagen(
                env,
                [
                    {
                        "orgs": orgs,
                        "open_per_org": per_org,
                        "purchased_per_org": 10**9,
                        "contents": 50,
                    }
                ],
            )
            with pg_connect(dbname) as conn:
                conn.execute(START_SQL.read_text())
                conn.execute("ANALYZE")
            for k, run in enumerate(runs):
                # The baseline right before each run: the machine is shared and drifts, so
                # each path is held to the pgbench rate of the same minute.
                baselines[run] = baseline()
                org = generated["first_org_id"] + k
                first = (
                    generated["first_assignment_id"]
                    + k * generated["assignments_per_org"]
                    + generated["started_per_org"]
                )
                if run == "pgbench-sql":
                    results[run] = pgbench_function(
                        dbname, org, first, per_org, args.clients, seconds
                    )
                else:
                    results[run] = client_run(run, env, dbname, org, first, per_org, args, seconds)
                log(BENCH, f"{run}: {results[run]['rate']:.0f} starts/s")
            checked = run_child("verify", [], env)
    finally:
        if not args.keep:
            drop_db(baseline_db)

    names = {
        **MODES,
        "pgbench-sql": "SQL path driven by pgbench (SELECT learncredits_start, no Python)",
    }
    for run in runs:
        result = results[run]
        rate = result["rate"]
        pg = baselines[run]
        notes = [f"holds the balance row {1000 / rate:.2f} ms a start" if rate else ""]
        notes.append(f"pgbench {1000 / pg:.2f} ms")
        if result.get("p50_ms") is not None:
            notes.append(f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
        if result.get("errors"):
            notes.append(f"ERRORS {result['errors']} ({result.get('first_error', '')})")
        if result.get("exhausted"):
            notes.append("POOL RAN OUT (run was shorter)")
        report.add(
            Figure(
                BENCH,
                f"{names[run]}, one org, {args.clients} connections",
                rate,
                "starts/s",
                baseline=pg,
                baseline_label="pgbench hot-path.sql orgs=1 just before",
                target=">= 50% of pgbench" if run != "python" else "",
                target_met=(rate >= 0.5 * pg) if run != "python" else None,
                note="; ".join(n for n in notes if n),
                extra={**result, "pgbench_tps": pg},
            )
        )
    if "sql" in results and "python" in results and results["python"]["rate"]:
        report.note(
            f"SQL path called directly / Python path: "
            f"{results['sql']['rate'] / results['python']['rate']:.2f}x"
        )
    report.note(
        f"verify_ledger after the runs: {checked['orgs']} orgs, "
        f"{checked['mismatches']} mismatch(es) {checked['first_mismatches']}"
    )
    report.write()
    return 0


# --- the runs -----------------------------------------------------------------------------------


def pgbench_function(
    dbname: str, org: int, first: int, pool: int, clients: int, seconds: int
) -> dict[str, Any]:
    """``learncredits_start`` from pgbench: client c starts first + c, first + c + clients, ...
    (pgbench keeps each client's variables from one transaction to the next)."""
    script = (
        "\\set aid :first + :client_id + :n * :clients\n"
        "\\set n :n + 1\n"
        "SELECT r_outcome FROM learncredits_start(:org, :aid, 'bench', now());\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as out:
        out.write(script)
    try:
        result = pgbench(
            dbname,
            Path(out.name),
            clients=clients,
            threads=2,
            duration=seconds,
            defines={"org": str(org), "first": str(first), "clients": str(clients), "n": "0"},
        )
    finally:
        os.unlink(out.name)
    with pg_connect(dbname) as conn:
        (started,) = conn.execute(
            "SELECT count(*) FROM credits_assignment WHERE org_id = %s AND status = 'started'",
            [org],
        ).fetchone()
    return {
        "rate": result["tps"],
        "started_rows": started,
        "exhausted": started >= pool,
        "errors": result["failed"],
    }


def client_run(
    mode: str,
    env: dict[str, str],
    dbname: str,
    org: int,
    first: int,
    pool: int,
    args: argparse.Namespace,
    seconds: int,
) -> dict[str, Any]:
    """``args.clients`` connections in ``args.procs`` processes, released together."""
    procs = max(1, min(args.procs, args.clients))
    threads = args.clients // procs
    children = []
    # the clients' stderr, shown if one fails
    with tempfile.TemporaryFile("w+") as errors:
        for index in range(procs):
            cmd = [
                PYTHON,
                str(Path(__file__).resolve()),
                "--child",
                mode,
                "--dbname",
                dbname,
                "--org",
                str(org),
                "--pool",
                f"{first}:{pool}",
                "--threads",
                str(threads),
                "--index",
                str(index),
                "--clients",
                str(procs * threads),
            ]
            children.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    text=True,
                )
            )
        try:
            for c in children:
                line = c.stdout.readline() if c.stdout else ""
                if line.strip() != "ready":
                    c.wait(30)
                    errors.seek(0)
                    raise RuntimeError(
                        f"{mode} client did not start: {line}{errors.read()[-3000:]}"
                    )
            begin = time.time() + WARMUP
            for c in children:
                assert c.stdin is not None
                c.stdin.write(f"go {begin} {begin + seconds}\n")
                c.stdin.close()
            outs = []
            for c in children:
                assert c.stdout is not None
                out = c.stdout.read()
                if c.wait(seconds + 120) != 0:
                    errors.seek(0)
                    raise RuntimeError(f"{mode} client failed:\n{out}\n{errors.read()[-3000:]}")
                outs.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for c in children:
                if c.poll() is None:
                    c.kill()
                    c.wait()
    latencies = sorted(ms for o in outs for ms in o["latencies_ms"])
    done = sum(o["done"] for o in outs)

    def pick(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    return {
        "rate": done / seconds,
        "done": done,
        "errors": sum(o["errors"] for o in outs),
        "first_error": next((o["first_error"] for o in outs if o["first_error"]), ""),
        "exhausted": any(o["exhausted"] for o in outs),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "processes": procs,
        "threads_per_process": threads,
    }


# --- a client process -----------------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    """Threads each with their own connection, each starting its own slice of the pool
    (thread g of n takes first + g, first + g + n, ...); prints ``ready`` when warmed up,
    waits for ``go BEGIN END`` on stdin, counts the starts completed in [BEGIN, END]."""
    first, pool = (int(x) for x in args.pool.split(":"))
    ids = range(first, first + pool)
    threads = args.threads
    start_one = _starter(args.child, args.dbname, args.org)
    go = threading.Event()
    window: list[float] = []
    results: list[dict[str, Any]] = [{} for _ in range(threads)]
    ready = threading.Barrier(threads + 1)

    def body(t: int) -> None:
        mine = iter(ids[args.index * threads + t :: args.clients])
        try:
            call = start_one()
            for _ in range(WARM_CALLS):
                call(next(mine))
        except BaseException:
            ready.abort()  # the process fails, saying why
            raise
        ready.wait()
        go.wait()
        begin, end = window
        done, errors, first_error, latencies = 0, 0, "", []
        exhausted = False
        while True:
            now = time.time()
            if now >= end:
                break
            aid = next(mine, None)
            if aid is None:
                exhausted = True
                break
            t0 = time.perf_counter()
            try:
                ok = call(aid)
            except Exception as exc:  # counted and shown, never hidden
                ok, first_error = False, first_error or repr(exc)
            finished = time.time()
            if begin <= finished <= end:
                if ok:
                    done += 1
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    errors += 1
        results[t] = {
            "done": done,
            "errors": errors,
            "first_error": first_error,
            "latencies_ms": latencies,
            "exhausted": exhausted,
        }

    workers = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    window.extend([float(line[1]), float(line[2])])
    go.set()
    for w in workers:
        w.join()
    print(
        json.dumps(
            {
                "done": sum(r["done"] for r in results),
                "errors": sum(r["errors"] for r in results),
                "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
                "exhausted": any(r["exhausted"] for r in results),
                "latencies_ms": [ms for r in results for ms in r["latencies_ms"]],
            }
        ),
        flush=True,
    )
    return 0


def _starter(mode: str, dbname: str, org_id: int) -> Any:
    """A factory of per-thread start functions (each its own connection); a start
    returns whether it started the assignment."""
    if mode == "sql":
        import psycopg

        def make_raw() -> Any:
            conn = psycopg.connect(pg_conninfo(dbname), autocommit=True)
            cursor = conn.cursor()

            def call(aid: int) -> bool:
                cursor.execute(CALL, (org_id, aid, "bench", datetime.now(UTC)), prepare=True)
                row = cursor.fetchone()
                return row is not None and row[0] == "started"

            return call

        return make_raw

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "learncredits.settings")
    import django

    django.setup()
    from start_sql.path import start_via_sql

    from learncredits.credits.actions import start_assignment
    from learncredits.tenancy.models import Organization

    def make_django() -> Any:
        if mode == "sql-django":

            def call_sql(aid: int) -> bool:
                return start_via_sql(org_id, aid, "bench").status == "started"

            return call_sql
        org = Organization.objects.get(pk=org_id)

        def call_python(aid: int) -> bool:
            return start_assignment(org, aid, actor="bench").status == "started"

        return call_python

    return make_django


if __name__ == "__main__":
    sys.exit(main())
