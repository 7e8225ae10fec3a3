"""Benchmark 9: what a streaming replica takes off the primary (report and list GETs).

A private primary and a hot standby streaming from it (tests/pgcluster.py: initdb,
``pg_basebackup -R``, free loopback ports), migrated and filled by bench/datagen.py: reader
orgs with a ledger of a few hundred entries over the last 60 days, writer orgs with a pool of
open assignments. ``learncredits serve`` runs against the same data in two configurations,
alternating run by run so that a shared machine's drift falls on both alike:

- primary only: no ``DATABASE_REPLICA_URL``, every read on the primary;
- with the replica: ``DATABASE_REPLICA_URL`` set, the report GETs on the replica (checked on
  a sample by the ``X-LearnCredits-Read: replica`` header before the run).

Each run is a closed loop of N clients (bench/loadgen.py) of report GETs (ledger page,
statement, usage, purchases, assignments, employees) spread over the reader orgs, for a
fixed time: throughput and p50/p99/max latency. Around each run the CPU seconds (utime +
stime from /proc/<pid>/stat) of each cluster's postmaster and all its processes (live
children plus the reaped ones' cutime/cstime) and of the web processes are read, giving CPU
seconds per 1,000 report reads on the primary, on the replica and in the web tier. That is
the figure that does not depend on the cores being shared: on this machine both servers and
the web processes compete for the same cores, so the throughput says little about what a
replica on a second machine would add.

A mixed run adds writes: M clients of ``POST .../assignments/{id}/start`` on the writer orgs
(on the primary in both configurations; different orgs and keys from the readers, so no
read-your-writes pin moves a report back to the primary) while the N report clients run:
the starts' throughput and latency with and without the replica.

No baseline from another tool: the primary-only configuration is the baseline.

    .venv/bin/python bench/replica_reads.py [--quick] [--clients 8] [--duration 15]
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    Figure,
    Report,
    Server,
    base_parser,
    children,
    load_cpu,
    log,
    machine_line,
    migrate,
    run_datagen,
    run_loadgen,
    service_env,
    write_requests,
)
from datagen import api_token

# tests/pgcluster.py makes the private clusters (the replica tests use it too).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.pgcluster import (
    ClusterError,
    ClusterUnavailable,
    PrivatePostgres,
    find_pg_bin,
)

BENCH = "replica_reads"
CONFIGS = ("primary only", "with replica")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sizes:
    read_orgs: int
    started_per_org: int
    open_per_org: int
    write_orgs_per_run: int
    write_open_per_org: int
    duration: float
    reps: int


FULL = Sizes(40, 400, 40, 10, 600, 15.0, 2)
QUICK = Sizes(6, 100, 10, 2, 300, 3.0, 1)


def read_layout(sizes: Sizes) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "orgs": sizes.read_orgs,
        "started_per_org": sizes.started_per_org,
        "open_per_org": sizes.open_per_org,
        "credit_cost": 2,
        # the lot runs out part way, so the statement has overage to add up
        "purchased_per_org": sizes.started_per_org,
        "contents": 20,
        "consumed_from": (now - timedelta(days=60)).isoformat(),
        "consumed_to": now.isoformat(),
        "api_keys": True,
    }


def write_layout(sizes: Sizes, runs: int) -> dict[str, Any]:
    return {
        "orgs": sizes.write_orgs_per_run * runs,
        "open_per_org": sizes.write_open_per_org,
        "purchased_per_org": 10**9,
        "contents": 30,
        "api_keys": True,
    }


def report_paths(org: int) -> list[str]:
    """The report and list GETs of one org, all in the replica's routes."""
    today = datetime.now(UTC).date()
    period = f"{today:%Y-%m}"
    base = f"/api/v1/orgs/org_{org}"
    return [
        f"{base}/ledger",
        f"{base}/statement?period={period}",
        f"{base}/usage?from={today - timedelta(days=60)}&to={today}",
        f"{base}/purchases",
        f"{base}/assignments",
        f"{base}/employees",
    ]


def read_requests(gen: dict[str, Any]) -> list[tuple[str, str, str]]:
    orgs = [gen["first_org_id"] + i for i in range(gen["orgs"])]
    lines = [("GET", path, api_token(org)) for org in orgs for path in report_paths(org)]
    random.Random(9).shuffle(lines)
    return lines


def start_requests(gen: dict[str, Any], org_indexes: range) -> list[tuple[str, str, str]]:
    lines = []
    for index in org_indexes:
        org = gen["first_org_id"] + index
        base = gen["first_assignment_id"] + index * gen["assignments_per_org"]
        for a in range(base + gen["started_per_org"], base + gen["assignments_per_org"]):
            lines.append(
                ("POST", f"/api/v1/orgs/org_{org}/assignments/asg_{a}/start", api_token(org))
            )
    random.Random(len(lines)).shuffle(lines)
    return lines


# --- CPU of a process tree ------------------------------------------------------------------


def _stat_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of one process (the reaped children's time is in the
    last two, so backends that ended between two readings are not lost)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # after the name: state(3) ... utime(14) stime(15) cutime(16) cstime(17), 1-based
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its descendants, alive or reaped."""
    ticks = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        with contextlib.suppress(OSError, ValueError):
            ticks += _stat_ticks(current)
            stack.extend(children(current))
    return ticks / CLK_TCK


def postmaster_pid(cluster: PrivatePostgres) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


class CpuMeter:
    """CPU seconds of the primary's, the replica's and the web tier's processes over a span."""

    def __init__(self, primary: PrivatePostgres, replica: PrivatePostgres, server: Server):
        assert server.process is not None
        self.pids = {
            "primary": postmaster_pid(primary),
            "replica": postmaster_pid(replica),
            "web": server.process.pid,
        }
        self.start: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self.start = self.read()
        return self

    def read(self) -> dict[str, float]:
        return {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}

    def used(self) -> dict[str, float]:
        end = self.read()
        return {name: end[name] - self.start[name] for name in end}

    def __exit__(self, *exc: object) -> None:
        pass


# --- the clusters ---------------------------------------------------------------------------


def cluster_unavailable() -> str | None:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in "
            "/usr/lib/postgresql/*/bin or on PATH; set LEARNCREDITS_PG_BIN"
        )
    if not os.access(bin_dir / "pg_basebackup", os.X_OK):
        return f"no pg_basebackup beside initdb in {bin_dir}"
    return None


@contextlib.contextmanager
def clusters(keep: bool) -> Iterator[tuple[PrivatePostgres, PrivatePostgres]]:
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    primary = PrivatePostgres(bin_dir, name="bench-primary")
    replica = PrivatePostgres(bin_dir, name="bench-replica")
    try:
        # The same memory settings on both, so neither reads from a bigger cache.
        primary.start(replication=True, extra_conf="shared_buffers = 128MB\n")
        yield primary, replica
    finally:
        if keep:
            print(f"[{BENCH}] kept: primary {primary.url}, replica {replica.url}")
        else:
            replica.stop()
            primary.stop()


def wait_caught_up(primary: PrivatePostgres, replica: PrivatePostgres, limit: float = 120) -> None:
    with primary.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert row is not None
        target = row[0]
    deadline = time.monotonic() + limit
    with replica.connect() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn())", (target,)
            ).fetchone()
            behind = None if row is None else row[0]
            if behind is not None and behind <= 0:
                return
            time.sleep(0.2)
    raise ClusterError(f"the replica did not replay up to {target} within {limit} s")


# --- the runs -------------------------------------------------------------------------------


def server_for(
    config: str, primary: PrivatePostgres, replica: PrivatePostgres, args: Any
) -> Server:
    extra = {}
    if config == "with replica":
        extra["DATABASE_REPLICA_URL"] = replica.url
    env = service_env(primary.url, **extra)
    return Server(env, workers=args.workers, threads=args.threads)


def check_routing(server: Server, lines: list[tuple[str, str, str]], config: str) -> str:
    """The ``X-LearnCredits-Read`` of a sample of the report GETs; all must say where this
    configuration should read, else the run would measure the wrong thing."""
    import http.client

    expected = "replica" if config == "with replica" else "primary"
    seen: dict[str, int] = {}
    for _method, path, token in lines[:24]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")
        where = response.getheader("X-LearnCredits-Read") or "none"
        seen[where] = seen.get(where, 0) + 1
    if set(seen) != {expected}:
        raise RuntimeError(f"{config}: expected every sample read from {expected}, got {seen}")
    return f"{sum(seen.values())} of {sum(seen.values())} sampled GETs read from {expected}"


def measured_run(
    server: Server,
    meter_of: Any,
    reads: Path,
    writes: Path | None,
    args: Any,
    duration: float,
) -> dict[str, Any]:
    """One closed-loop run of report GETs (and, with ``writes``, starts at the same time),
    with the CPU each part of the system used during it."""
    results: dict[str, Any] = {}

    def write_load() -> None:
        assert writes is not None
        results["writes"] = run_loadgen(
            server.port, writes, connections=args.writers, duration=duration
        )

    with meter_of() as meter:
        thread = None
        if writes is not None:
            thread = threading.Thread(target=write_load)
            thread.start()
        results["reads"] = run_loadgen(
            server.port, reads, connections=args.clients, duration=duration, cycle=True
        )
        if thread is not None:
            thread.join()
        results["cpu"] = meter.used()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8, help="report GET clients")
    parser.add_argument("--writers", type=int, default=4, help="start clients (mixed run)")
    parser.add_argument("--duration", type=float, help="seconds per run")
    parser.add_argument("--no-mixed", action="store_true", help="leave out the mixed runs")
    parser.add_argument(
        "--per-route",
        action="store_true",
        help="also run each report alone (primary only): its CPU on the primary and the web",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    duration = args.duration or sizes.duration
    report = Report(BENCH, args.json)

    missing = cluster_unavailable()
    if missing:
        report.skip("replica runs", missing)
        report.write()
        return 0
    report.note(f"machine at start: {machine_line()}")

    totals: dict[str, dict[str, Any]] = {c: new_totals() for c in CONFIGS}
    mixed_totals: dict[str, dict[str, Any]] = {c: new_totals() for c in CONFIGS}
    routing: dict[str, str] = {}
    per_route: dict[str, dict[str, Any]] = {}
    try:
        with clusters(args.keep) as (primary, replica):
            env = service_env(primary.url)
            log(BENCH, "migrating the private primary")
            migrate(env)
            runs = 0 if args.no_mixed else sizes.reps * len(CONFIGS)
            log(BENCH, f"generating {sizes.read_orgs} reader orgs and the writers' pools")
            read_gen, write_gen = run_datagen(
                env, [read_layout(sizes), write_layout(sizes, max(1, runs))]
            )
            with primary.connect() as conn:
                conn.execute("VACUUM ANALYZE")
            log(BENCH, "making the standby (pg_basebackup -R) and waiting for it")
            replica.standby_of(primary)
            wait_caught_up(primary, replica)
            reads_path = write_requests(read_requests(read_gen))
            write_paths: list[Path] = []
            try:
                pool = 0
                for rep in range(sizes.reps):
                    order = CONFIGS if rep % 2 == 0 else tuple(reversed(CONFIGS))
                    for config in order:
                        with server_for(config, primary, replica, args) as server:
                            lines = read_requests(read_gen)
                            routing[config] = check_routing(server, lines, config)
                            # warm both caches and every web process before measuring
                            run_loadgen(
                                server.port,
                                reads_path,
                                connections=args.clients,
                                duration=2.0,
                                warmup=0.5,
                                cycle=True,
                            )

                            def meter(server: Server = server) -> CpuMeter:
                                return CpuMeter(primary, replica, server)

                            log(BENCH, f"rep {rep + 1}: {config}, reads only")
                            result = measured_run(server, meter, reads_path, None, args, duration)
                            add(totals[config], result)
                            if not args.no_mixed:
                                indexes = range(
                                    pool * sizes.write_orgs_per_run,
                                    (pool + 1) * sizes.write_orgs_per_run,
                                )
                                pool += 1
                                writes = write_requests(start_requests(write_gen, indexes))
                                write_paths.append(writes)
                                log(BENCH, f"rep {rep + 1}: {config}, reads + starts")
                                result = measured_run(
                                    server, meter, reads_path, writes, args, duration
                                )
                                add(mixed_totals[config], result)
                if args.per_route:
                    per_route = measure_routes(primary, replica, read_gen, args, duration)
            finally:
                reads_path.unlink()
                for path in write_paths:
                    path.unlink()
    except (ClusterUnavailable, ClusterError) as exc:
        report.skip("replica runs", f"the private clusters could not run: {exc}")
        report.write()
        return 0

    for config in CONFIGS:
        report.note(f"{config}: {routing.get(config, '?')}")
    add_figures(report, totals, mixed_totals, args, duration, sizes)
    for route, result in per_route.items():
        answered = result["reads"]["sent"] - result["reads"]["errors"]
        report.add(
            Figure(
                BENCH,
                f"per route, primary only: GET {route}, primary / web CPU per 1,000",
                1000 * result["cpu"]["primary"] / answered if answered else None,
                "CPU s",
                higher_is_better=False,
                note=(
                    f"web {1000 * result['cpu']['web'] / answered:.1f} CPU s per 1,000; "
                    f"{result['reads']['ok_rps']:.1f} req/s, {answered} GETs"
                    if answered
                    else "no answers"
                ),
                extra=result,
            )
        )
    report.note(f"machine at end: load average {load_cpu()}")
    report.write()
    return 0


def route_of(path: str) -> str:
    """``/api/v1/orgs/org_1/ledger?x`` -> ``ledger``."""
    return path.split("?")[0].split("/")[5]


def measure_routes(
    primary: PrivatePostgres,
    replica: PrivatePostgres,
    read_gen: dict[str, Any],
    args: Any,
    duration: float,
) -> dict[str, dict[str, Any]]:
    """Each report alone through a primary-only server: which of them weigh on the
    database and which on the web processes."""
    lines = read_requests(read_gen)
    routes = sorted({route_of(path) for _m, path, _t in lines})
    found: dict[str, dict[str, Any]] = {}
    with server_for("primary only", primary, replica, args) as server:
        for route in routes:
            path = write_requests([line for line in lines if route_of(line[1]) == route])
            try:
                run_loadgen(
                    server.port,
                    path,
                    connections=args.clients,
                    duration=1.0,
                    warmup=0.5,
                    cycle=True,
                )
                log(BENCH, f"per route: {route}")

                def meter() -> CpuMeter:
                    return CpuMeter(primary, replica, server)

                found[route] = measured_run(server, meter, path, None, args, max(3.0, duration / 3))
            finally:
                path.unlink()
    return found


def new_totals() -> dict[str, Any]:
    return {
        "runs": [],
        "cpu": {"primary": 0.0, "replica": 0.0, "web": 0.0},
        "reads": 0,
        "writes": 0,
    }


def add(totals: dict[str, Any], result: dict[str, Any]) -> None:
    totals["runs"].append(result)
    for name, seconds in result["cpu"].items():
        totals["cpu"][name] += seconds
    # every request sent was answered (closed loop: a client waits for the answer); the CPU
    # was read around the whole run, warm-up included, so it is divided by all of them
    totals["reads"] += result["reads"]["sent"] - result["reads"]["errors"]
    if "writes" in result:
        totals["writes"] += result["writes"]["sent"] - result["writes"]["errors"]


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput over all runs of a configuration, and the worst run's percentiles (each
    run's percentiles are all the loadgen keeps)."""
    completed = sum(r["completed"] for r in runs)
    ok = sum(r["ok"] for r in runs)
    seconds = sum(r["measured_s"] for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        for status, count in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "completed": completed,
        "ok_rps": ok / seconds if seconds else None,
        "p50_ms": max(r["p50_ms"] or 0 for r in runs),
        "p99_ms": max(r["p99_ms"] or 0 for r in runs),
        "max_ms": max(r["max_ms"] or 0 for r in runs),
        "per_run_rps": [round(r["ok_rps"], 1) for r in runs],
        "statuses": statuses,
        "errors": sum(r["errors"] for r in runs),
        "exhausted": any(r.get("exhausted") for r in runs),
        "client_cpu_share": max(r["client_cpu_share"] for r in runs),
    }


def note(run: dict[str, Any]) -> str:
    bad = {k: v for k, v in run["statuses"].items() if not k.startswith("2")}
    text = (
        f"{run['completed']} requests, per run {run['per_run_rps']} req/s, "
        f"client CPU {run['client_cpu_share'] * 100:.0f}%"
    )
    if run["exhausted"]:
        text += "; POOL RAN OUT"
    if bad or run["errors"]:
        text += f"; NON-2xx {bad} errors {run['errors']}"
    return text


def add_figures(
    report: Report,
    totals: dict[str, dict[str, Any]],
    mixed_totals: dict[str, dict[str, Any]],
    args: Any,
    duration: float,
    sizes: Sizes,
) -> None:
    shape = (
        f"{args.clients} clients, {sizes.reps}x{duration:.0f} s, "
        f"--workers {args.workers} --threads {args.threads}"
    )
    base_label = "primary only"
    runs = {c: merged([r["reads"] for r in totals[c]["runs"]]) for c in CONFIGS}
    for config in CONFIGS:
        run = runs[config]
        baseline = runs[base_label] if config != base_label else None
        report.add(
            Figure(
                BENCH,
                f"report GETs throughput, {config} ({shape})",
                run["ok_rps"],
                "req/s",
                baseline=baseline["ok_rps"] if baseline else None,
                baseline_label=base_label,
                note=note(run),
                extra=run,
            )
        )
        for q in ("p50", "p99", "max"):
            report.add(
                Figure(
                    BENCH,
                    f"report GETs {q} (worst run), {config}",
                    run[f"{q}_ms"],
                    "ms",
                    baseline=baseline[f"{q}_ms"] if baseline else None,
                    baseline_label=base_label,
                    higher_is_better=False,
                )
            )
    for part in ("primary", "replica", "web"):
        for config in CONFIGS:
            total = totals[config]
            per_k = 1000 * total["cpu"][part] / total["reads"] if total["reads"] else None
            base = totals[base_label]
            base_per_k = 1000 * base["cpu"][part] / base["reads"] if base["reads"] else None
            report.add(
                Figure(
                    BENCH,
                    f"{part} CPU per 1,000 report GETs, {config}",
                    per_k,
                    "CPU s",
                    baseline=base_per_k if config != base_label and part != "replica" else None,
                    baseline_label=base_label,
                    higher_is_better=False,
                    note=f"{total['cpu'][part]:.1f} CPU s over {total['reads']} GETs",
                )
            )
    if not any(mixed_totals[c]["runs"] for c in CONFIGS):
        return
    for config in CONFIGS:
        total = mixed_totals[config]
        writes = merged([r["writes"] for r in total["runs"]])
        reads = merged([r["reads"] for r in total["runs"]])
        base_writes = merged([r["writes"] for r in mixed_totals[base_label]["runs"]])
        base_reads = merged([r["reads"] for r in mixed_totals[base_label]["runs"]])
        other = config != base_label
        report.add(
            Figure(
                BENCH,
                f"mixed: starts throughput ({args.writers} clients) beside report GETs, {config}",
                writes["ok_rps"],
                "req/s",
                baseline=base_writes["ok_rps"] if other else None,
                baseline_label=base_label,
                note=note(writes)
                + f"; p50 {writes['p50_ms']:.1f} ms, p99 {writes['p99_ms']:.1f} ms",
                extra=writes,
            )
        )
        report.add(
            Figure(
                BENCH,
                f"mixed: report GETs throughput beside starts, {config}",
                reads["ok_rps"],
                "req/s",
                baseline=base_reads["ok_rps"] if other else None,
                baseline_label=base_label,
                note=note(reads) + f"; p50 {reads['p50_ms']:.1f} ms, p99 {reads['p99_ms']:.1f} ms",
                extra=reads,
            )
        )
        requests = reads["completed"] + writes["completed"]
        report.add(
            Figure(
                BENCH,
                f"mixed: primary CPU s over the runs, {config}",
                total["cpu"]["primary"],
                "CPU s",
                baseline=mixed_totals[base_label]["cpu"]["primary"] if other else None,
                baseline_label=base_label,
                higher_is_better=False,
                note=(
                    f"replica {total['cpu']['replica']:.1f} s, web {total['cpu']['web']:.1f} s; "
                    f"{writes['completed']} starts and {reads['completed']} GETs measured "
                    f"({requests} requests)"
                ),
            )
        )
        answered = total["reads"] + total["writes"]
        report.add(
            Figure(
                BENCH,
                f"mixed: primary CPU per 1,000 starts, {config}",
                1000 * total["cpu"]["primary"] / total["writes"] if total["writes"] else None,
                "CPU s",
                higher_is_better=False,
                note=(
                    f"{total['writes']} starts and {total['reads']} GETs answered in the "
                    f"runs ({answered})"
                    + (
                        "; the GETs cost the primary next to nothing here, so this is what "
                        "a start costs it"
                        if other
                        else "; the GETs' primary CPU is in this one"
                    )
                ),
            )
        )


if __name__ == "__main__":
    sys.exit(main())
