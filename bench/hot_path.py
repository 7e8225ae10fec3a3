"""Benchmark 1: the start-assignment hot path.

- pgbench running ``bench/pgbench/hot-path.sql`` (the same three statements in SQL) on a
  database prepared with ``hot-path-schema.sql``, spread over 1,000 orgs and on one org:
  the database's own limit on this machine, the baseline of the API figures.
- ``POST /orgs/{org}/assignments/{id}/start`` through ``learncredits serve`` at 32
  concurrent keep-alive clients (bench/loadgen.py, a separate process), each request on
  a different assigned assignment, spread over 1,000 orgs and all on one org.
- The hot path's throughput with 1, 2 and 4 web processes (docs/scaling.md).
- ``start_assignment`` called in-process in a loop, single-threaded, against its peer:
  django-hordak's ``Account.transfer_to`` on the same PostgreSQL, installed only for this
  benchmark in its own virtualenv (var/bench/venv-hordak).

    .venv/bin/python bench/hot_path.py [--quick] [--workers N --threads N]
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from typing import Any

from common import (
    BENCH_DIR,
    PGBENCH_DIR,
    PYTHON,
    VAR_DIR,
    Figure,
    Report,
    Server,
    base_parser,
    create_db,
    database_url,
    drop_db,
    have_pgbench,
    log,
    pg_available,
    pgbench,
    psql_file,
    run_child,
    run_datagen,
    run_loadgen,
    service_database,
    write_requests,
)
from datagen import api_token

BENCH = "hot_path"
HORDAK_VENV = VAR_DIR / "venv-hordak"
SPREAD_ORGS = 1000


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    # 4 single-threaded processes on 2 cores: first in the sweeps (docs/benchmarks.md).
    parser.add_argument("--workers", type=int, default=4, help="web processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per web process")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, help="seconds per HTTP run")
    parser.add_argument("--no-hordak", action="store_true", help="skip the django-hordak peer")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1/2/4 process runs")
    parser.add_argument(
        "--no-pgbench",
        action="store_true",
        help="skip the pgbench baseline (its write load leaves the server checkpointing, "
        "which a comparison with a tree that has no baseline must not charge to one side)",
    )
    parser.add_argument(
        "--sweep",
        help="tune instead: WORKERSxTHREADS list, e.g. 2x4,2x8,3x4,4x4,4x8; runs spread and "
        "one-org for each (no scaling, in-process or hordak runs)",
    )
    args = parser.parse_args(argv)
    sweep = (
        [tuple(int(n) for n in c.split("x")) for c in args.sweep.split(",")] if args.sweep else []
    )
    quick = args.quick
    duration = args.duration or (3.0 if quick else 12.0)
    pg_seconds = 3 if quick else 10
    scaling_seconds = 3.0 if quick else 8.0
    inproc_seconds = 3.0 if quick else 10.0
    # open assignments: enough that no run runs out (a run stops early if it does, and says so)
    per_org = 30 if quick else 150
    one_org = 8000 if quick else 45000
    slices = max(5, len(sweep))  # spread: main run, 3 scaling runs, in-process

    report = Report(BENCH, args.json)
    missing = pg_available()
    if missing:
        report.skip("everything", missing)
        report.write()
        return 0

    # --- the baseline: pgbench on the same server ---------------------------------------------
    pg_tps: dict[int, float | None] = {1000: None, 1: None}
    if args.no_pgbench:
        report.note("--no-pgbench: no pgbench baseline")
    elif have_pgbench() and (PGBENCH_DIR / "hot-path.sql").exists():
        name = "lc_bench_pgbench"
        create_db(name)
        try:
            for orgs in (SPREAD_ORGS, 1):
                psql_file(name, PGBENCH_DIR / "hot-path-schema.sql", {"orgs": str(orgs)})
                result = pgbench(
                    name,
                    PGBENCH_DIR / "hot-path.sql",
                    clients=args.clients,
                    threads=2,
                    duration=pg_seconds,
                    defines={"orgs": str(orgs)},
                )
                pg_tps[orgs] = result["tps"]
                log(BENCH, f"pgbench orgs={orgs}: {result['tps']:.0f} tps")
        finally:
            if not args.keep:
                drop_db(name)
    else:
        report.note("pgbench or bench/pgbench/hot-path.sql missing: no pgbench baseline")

    # --- the service's database --------------------------------------------------------------
    with service_database("lc_bench_hot", keep=args.keep) as env:
        layouts = [
            {
                "orgs": SPREAD_ORGS,
                "open_per_org": per_org,
                "purchased_per_org": 10**9,
                "contents": 30,
                "api_keys": True,
            },
            {
                "orgs": 1,
                "open_per_org": one_org,
                "purchased_per_org": 10**9,
                "contents": 50,
                "api_keys": True,
            },
        ]
        log(BENCH, f"generating {SPREAD_ORGS} x {per_org} + 1 x {one_org} open assignments")
        generated = run_datagen(env, layouts)
        spread, single = generated

        def spread_slice(k: int) -> list[tuple[int, int]]:
            pairs = []
            for i in range(spread["orgs"]):
                ids = open_ids(spread, i)
                size = len(ids) // slices
                org = spread["first_org_id"] + i
                pairs.extend((org, a) for a in ids[k * size : (k + 1) * size])
            random.Random(k).shuffle(pairs)
            return pairs

        single_pairs = [(single["first_org_id"], a) for a in open_ids(single, 0)]
        if sweep:
            size = len(single_pairs) // len(sweep)
            for k, (workers, threads) in enumerate(sweep):
                config = f"--workers {workers} --threads {threads}"
                with Server(env, workers=workers, threads=threads) as server:
                    result = start_run(server.port, spread_slice(k), args.clients, duration)
                    api_figure(
                        report,
                        f"sweep: spread ({config})",
                        result,
                        pg_tps[SPREAD_ORGS],
                        f"pgbench orgs={SPREAD_ORGS}",
                        0.25,
                    )
                    pairs = single_pairs[k * size : (k + 1) * size]
                    result = start_run(server.port, pairs, args.clients, duration)
                    api_figure(
                        report,
                        f"sweep: one org ({config})",
                        result,
                        pg_tps[1],
                        "pgbench orgs=1",
                        0.50,
                    )
            report.write()
            return 0

        # --- through the HTTP API ------------------------------------------------------------
        config = f"--workers {args.workers} --threads {args.threads}"
        with Server(env, workers=args.workers, threads=args.threads) as server:
            result = start_run(server.port, spread_slice(0), args.clients, duration)
            api_figure(
                report,
                f"API start, spread over {SPREAD_ORGS} orgs ({config})",
                result,
                pg_tps[SPREAD_ORGS],
                f"pgbench orgs={SPREAD_ORGS}",
                0.25,
            )
            result = start_run(server.port, single_pairs, args.clients, duration)
            api_figure(
                report,
                f"API start, all on one org ({config})",
                result,
                pg_tps[1],
                "pgbench orgs=1",
                0.50,
            )
            if result["ok_rps"] and pg_tps[1]:
                # one org's starts run one at a time: the rate bounds the lock's hold time
                report.note(
                    f"one org: each start holds the org's balance row about "
                    f"{1000 / result['ok_rps']:.2f} ms (pgbench: {1000 / pg_tps[1]:.2f} ms)"
                )
            # The framework floor: the same server answering a request that does no work
            # (no database, no authentication) through the same middleware stack. No API
            # endpoint can be faster than this on the machine.
            path = write_requests([("GET", "/healthz", "-")] * 1000)
            try:
                floor = run_loadgen(
                    server.port, path, connections=args.clients, duration=duration, cycle=True
                )
            finally:
                path.unlink()
            report.add(
                Figure(
                    BENCH,
                    f"framework floor: GET /healthz, no work ({config})",
                    floor["ok_rps"],
                    "req/s",
                    baseline=pg_tps[SPREAD_ORGS],
                    baseline_label=f"pgbench orgs={SPREAD_ORGS}",
                    note=run_note(floor),
                    extra=floor,
                )
            )

        # --- 1, 2 and 4 web processes --------------------------------------------------------
        if not args.no_scaling:
            one_process = None
            for k, workers in enumerate((1, 2, 4), start=1):
                with Server(env, workers=workers, threads=args.threads) as server:
                    result = start_run(server.port, spread_slice(k), args.clients, scaling_seconds)
                rate = result["ok_rps"]
                one_process = one_process or rate
                report.add(
                    Figure(
                        BENCH,
                        f"scaling: API start, spread, {workers} web process(es) x "
                        f"{args.threads} threads",
                        rate,
                        "req/s",
                        baseline=one_process,
                        baseline_label="1 process",
                        note=run_note(result),
                        extra={"workers": workers, **result},
                    )
                )

        # --- in-process, single-threaded, and the hordak peer ----------------------------------
        pool = spread_slice(4)
        with tempfile.NamedTemporaryFile("w", suffix=".pool", delete=False) as out:
            out.write("".join(f"{o} {a}\n" for o, a in pool))
        try:
            inproc = run_child(
                "start-loop", ["--pool", out.name, "--duration", str(inproc_seconds)], env
            )
        finally:
            os.unlink(out.name)
        hordak = None if args.no_hordak else hordak_peer(report, inproc_seconds, args.keep)
        report.add(
            Figure(
                BENCH,
                "in-process start_assignment, one thread",
                inproc["rate"],
                "starts/s",
                baseline=hordak["rate"] if hordak else None,
                baseline_label=f"django-hordak {hordak['hordak_version']} transfer_to"
                if hordak
                else "",
                target=">= 2x hordak" if hordak else "",
                target_met=(inproc["rate"] >= 2 * hordak["rate"]) if hordak else None,
                note=("pool ran out" if inproc["exhausted"] else ""),
                extra=inproc,
            )
        )

        # --- the ledger is still consistent after all that -----------------------------------
        checked = run_child("verify", [], env)
        report.note(
            f"verify_ledger after the runs: {checked['orgs']} orgs, "
            f"{checked['mismatches']} mismatch(es) {checked['first_mismatches']}"
        )
    report.write()
    return 0


def open_ids(generated: dict[str, Any], org_index: int) -> range:
    base = generated["first_assignment_id"] + org_index * generated["assignments_per_org"]
    return range(base + generated["started_per_org"], base + generated["assignments_per_org"])


def start_run(
    port: int, pairs: list[tuple[int, int]], clients: int, duration: float
) -> dict[str, Any]:
    lines = [
        ("POST", f"/api/v1/orgs/org_{org}/assignments/asg_{a}/start", api_token(org))
        for org, a in pairs
    ]
    path = write_requests(lines)
    try:
        return run_loadgen(port, path, connections=clients, duration=duration, warmup=1.0)
    finally:
        path.unlink()


def run_note(result: dict[str, Any]) -> str:
    bad = {k: v for k, v in result["statuses"].items() if not k.startswith("2")}
    parts = [
        f"p50 {result['p50_ms'] or 0:.1f} ms, p99 {result['p99_ms'] or 0:.1f} ms",
        f"client CPU {result['client_cpu_share'] * 100:.0f}% of a core",
    ]
    if bad or result["errors"]:
        parts.append(f"NON-2xx {bad} errors {result['errors']}")
    if result["exhausted"]:
        parts.append("POOL RAN OUT (run was shorter)")
    return "; ".join(parts)


def api_figure(
    report: Report,
    name: str,
    result: dict[str, Any],
    baseline: float | None,
    label: str,
    target: float,
) -> None:
    rate = result["ok_rps"]
    met = None if not baseline else rate >= target * baseline
    report.add(
        Figure(
            BENCH,
            name,
            rate,
            "req/s",
            baseline=baseline,
            baseline_label=label,
            target=f">= {target:.0%} of pgbench",
            target_met=met,
            note=run_note(result),
            extra=result,
        )
    )


# --- django-hordak ----------------------------------------------------------------------------


def hordak_python(report: Report) -> str | None:
    """The hordak virtualenv's Python, created and filled on first use; None if impossible."""
    python = HORDAK_VENV / "bin" / "python"
    check = [str(python), "-c", "import hordak, psycopg, django"]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return str(python)
    log(BENCH, f"installing django-hordak into {HORDAK_VENV} (only for this benchmark)")
    try:
        HORDAK_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [PYTHON, "-m", "venv", "--clear", str(HORDAK_VENV)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "django-hordak>=2,<3",
                "Django>=5.2,<5.3",
                "psycopg[binary]>=3.2,<4",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        report.note(f"django-hordak could not be installed: {str(detail).strip()[-300:]}")
        return None
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        report.note("django-hordak installed but does not import")
        return None
    return str(python)


def hordak_peer(report: Report, seconds: float, keep: bool) -> dict[str, Any] | None:
    python = hordak_python(report)
    if python is None:
        report.note("SKIPPED the django-hordak peer: it could not be installed")
        return None
    name = "lc_bench_hordak"
    create_db(name)
    env = os.environ.copy()
    env.update(
        {
            "DATABASE_URL": database_url(name),
            "DJANGO_SETTINGS_MODULE": "hordak_settings",
            "PYTHONPATH": str(BENCH_DIR),
        }
    )
    script = BENCH_DIR / "hordak_peer.py"
    try:
        log(BENCH, "django-hordak: migrating")
        run_child("migrate", [], env, python=python, script=script, timeout=300)
        return run_child(
            "run",
            ["--accounts", "100", "--duration", str(seconds)],
            env,
            python=python,
            script=script,
            timeout=seconds + 300,
        )
    except (RuntimeError, subprocess.SubprocessError) as exc:
        report.note(f"SKIPPED the django-hordak peer: {str(exc).strip()[-400:]}")
        return None
    finally:
        if not keep:
            drop_db(name)


if __name__ == "__main__":
    sys.exit(main())
