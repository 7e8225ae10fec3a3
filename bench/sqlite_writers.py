"""Benchmark 7: writers on SQLite (the embedded mode): do they queue fairly?

``learncredits serve`` on a SQLite file (WAL, ``synchronous=FULL``), 100 orgs, each request
starting a different assigned assignment (``POST .../assignments/{id}/start``):

- closed loop, 32 clients: throughput, p50, p99 and the slowest request. A closed loop's
  mean latency is clients / throughput, so what a writer queue controls is fairness: p99
  against p50, and the maximum;
- open loop at half the closed loop's throughput: the latency of a server with headroom;
- a bulk assign of 10,000 employees while 16 other clients keep starting assignments: the
  bulk request's time, and the slowest start meanwhile.

Baselines, measured in the same run:

- the raw SQLite limit: one Python thread running the start's three statements (insert the
  ledger entry, update the assignment, update the balance) in one ``BEGIN IMMEDIATE``
  transaction each, on a file with the same settings;
- the service's own start rate on PostgreSQL, same layout, same clients, same server layout.

    .venv/bin/python bench/sqlite_writers.py [--quick] [--workers N --threads N]
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    HOST,
    VAR_DIR,
    Figure,
    Report,
    Server,
    base_parser,
    http_request,
    log,
    migrate,
    pg_available,
    run_child,
    run_datagen,
    run_loadgen,
    service_database,
    service_env,
    write_requests,
)
from datagen import api_token

BENCH = "sqlite_writers"
ORGS = 100
BULK = 10_000


def layouts(per_org: int) -> list[dict[str, Any]]:
    return [
        {
            "orgs": ORGS,
            "open_per_org": per_org,
            "purchased_per_org": 10**9,
            "contents": 20,
            "api_keys": True,
        },
        # The bulk assign's org: 10,000 employees and content items to assign to them.
        {
            "orgs": 1,
            "employees_per_org": BULK,
            "purchased_per_org": 10**9,
            "contents": 4,
            "api_keys": True,
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, help="seconds per HTTP run")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rate")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also run the closed and open loops on the designs compared in the decision "
        "record: SQLite's busy handler alone, and the writer queue with SQLite's own "
        "checkpoints at commit",
    )
    args = parser.parse_args(argv)
    duration = args.duration or (4.0 if args.quick else 10.0)
    per_org = 120 if args.quick else 300
    config = f"--workers {args.workers} --threads {args.threads}"
    report = Report(BENCH, args.json)

    raw = raw_sqlite_limit(3.0 if args.quick else 6.0)
    log(BENCH, f"raw SQLite: {raw:.0f} start transactions/s")
    report.add(
        Figure(
            BENCH,
            "raw SQLite: the start's 3 statements, 1 transaction each, 1 thread",
            raw,
            "tx/s",
            note="WAL, synchronous=FULL, BEGIN IMMEDIATE",
        )
    )

    pg_rate = None
    missing = pg_available()
    if args.no_postgres:
        report.note("PostgreSQL rate skipped (--no-postgres)")
    elif missing:
        report.skip("PostgreSQL rate", missing)
    else:
        with service_database("lc_bench_sqlite_peer", keep=args.keep) as env:
            log(BENCH, f"generating {ORGS} x {per_org} open assignments (PostgreSQL)")
            spread, _ = run_datagen(env, layouts(per_org))
            pairs = start_pairs(spread, 0, 2)
            with Server(env, workers=args.workers, threads=args.threads) as server:
                result = start_run(server.port, pairs, args.clients, duration)
            pg_rate = result["ok_rps"]
            log(BENCH, f"PostgreSQL start: {pg_rate:.0f} req/s")

    path = VAR_DIR / "lc_bench_sqlite_writers.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_sqlite(path)
    env = service_env(f"sqlite:///{path}")
    try:
        log(BENCH, "migrating and generating (SQLite)")
        migrate(env)
        spread, bulk = run_datagen(env, layouts(per_org))
        parts = 8 if args.variants else 4
        inproc = start_loop(env, start_pairs(spread, 3, parts), 3.0)
        log(BENCH, f"in-process start loop: {inproc['rate']:.0f} starts/s")
        with Server(env, workers=args.workers, threads=args.threads) as server:
            closed = start_run(server.port, start_pairs(spread, 0, parts), args.clients, duration)
            rate = max(1.0, round(closed["ok_rps"] / 2))
            opened = start_run(
                server.port, start_pairs(spread, 1, parts), args.clients, duration, rate=rate
            )
            bulk_seconds, during = bulk_under_load(
                server.port, bulk, start_pairs(spread, 2, parts), duration
            )
        if args.variants:
            for k, (label, extra) in enumerate(VARIANTS):
                with Server({**env, **extra}, workers=args.workers, threads=args.threads) as server:
                    pairs = start_pairs(spread, 4 + 2 * k, parts)
                    run = start_run(server.port, pairs, args.clients, duration)
                    pairs = start_pairs(spread, 5 + 2 * k, parts)
                    at_rate = start_run(server.port, pairs, args.clients, duration, rate=rate)
                variant_figures(report, label, run, at_rate, rate, config)
    finally:
        if not args.keep:
            remove_sqlite(path)

    report.add(
        Figure(
            BENCH,
            "SQLite start_assignment in-process, 1 thread (no HTTP)",
            inproc["rate"],
            "starts/s",
            baseline=raw,
            baseline_label="raw SQLite",
            note="the most one writer at a time can do through the service's code",
        )
    )
    p50, p99, worst = closed["p50_ms"] or 0.0, closed["p99_ms"] or 0.0, closed["max_ms"] or 0.0
    report.add(
        Figure(
            BENCH,
            f"SQLite API start, {args.clients} clients, closed loop ({config})",
            closed["ok_rps"],
            "req/s",
            baseline=pg_rate,
            baseline_label="the service's start on PostgreSQL",
            target=">= 50% of PostgreSQL",
            target_met=None if not pg_rate else closed["ok_rps"] >= 0.5 * pg_rate,
            note=run_note(closed) + f"; raw SQLite {raw:.0f} tx/s",
            extra=closed,
        )
    )
    report.add(
        Figure(
            BENCH,
            "SQLite API start, closed loop: p99",
            p99,
            "ms",
            baseline=p50,
            baseline_label="its own p50",
            higher_is_better=False,
            target="p99 <= 3x p50",
            target_met=p99 <= 3 * p50,
        )
    )
    report.add(
        Figure(
            BENCH,
            "SQLite API start, closed loop: slowest request",
            worst,
            "ms",
            baseline=p50,
            baseline_label="its own p50",
            higher_is_better=False,
            target="<= 1000 ms",
            target_met=worst <= 1000,
        )
    )
    report.add(
        Figure(
            BENCH,
            f"SQLite API start, open loop at {rate:.0f} req/s: p99",
            opened["p99_ms"],
            "ms",
            baseline=opened["p50_ms"],
            baseline_label="its own p50",
            higher_is_better=False,
            target="< 50 ms",
            target_met=(opened["p99_ms"] or 0) < 50,
            note=run_note(opened),
            extra=opened,
        )
    )
    report.add(
        Figure(
            BENCH,
            f"SQLite bulk assign of {BULK} employees, 16 clients starting meanwhile",
            bulk_seconds,
            "s",
            higher_is_better=False,
            target="< 1 s",
            target_met=bulk_seconds is not None and bulk_seconds < 1.0,
        )
    )
    report.add(
        Figure(
            BENCH,
            "SQLite starts during the bulk assign: slowest request",
            during["max_ms"],
            "ms",
            baseline=during["p50_ms"],
            baseline_label="their p50",
            higher_is_better=False,
            target="<= 1500 ms",
            target_met=(during["max_ms"] or 0) <= 1500,
            note=run_note(during),
            extra=during,
        )
    )
    report.write()
    return 0


# The designs the writer queue was chosen against (docs/decisions), run on request.
VARIANTS = [
    (
        "busy handler alone (Django's backend)",
        {"SQLITE_WRITER_QUEUE": "false", "SQLITE_CHECKPOINT": "commit"},
    ),
    ("writer queue, SQLite's checkpoints at commit", {"SQLITE_CHECKPOINT": "commit"}),
]


def variant_figures(
    report: Report,
    label: str,
    closed: dict[str, Any],
    opened: dict[str, Any],
    rate: float,
    config: str,
) -> None:
    report.add(
        Figure(
            BENCH,
            f"variant: {label}: closed loop ({config})",
            closed["ok_rps"],
            "req/s",
            note=run_note(closed),
            extra=closed,
        )
    )
    report.add(
        Figure(
            BENCH,
            f"variant: {label}: open loop at {rate:.0f} req/s: p99",
            opened["p99_ms"],
            "ms",
            baseline=opened["p50_ms"],
            baseline_label="its own p50",
            higher_is_better=False,
            note=run_note(opened),
            extra=opened,
        )
    )


def raw_sqlite_limit(seconds: float) -> float:
    """Start transactions a second that SQLite itself commits on this machine."""
    path = VAR_DIR / "lc_bench_sqlite_raw.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_sqlite(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
            "CREATE TABLE ledger (id INTEGER PRIMARY KEY, org_id INT, delta INT, kind TEXT,"
            " assignment_id INT);"
            "CREATE TABLE assignment (id INTEGER PRIMARY KEY, status TEXT);"
            "CREATE TABLE balance (org_id INTEGER PRIMARY KEY, credits INT, assigned INT);"
        )
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO assignment VALUES (?, 'assigned')", ((i,) for i in range(1, 200_001))
        )
        db.executemany(
            "INSERT INTO balance VALUES (?, 1000000000, 1000000000)",
            ((i,) for i in range(1, ORGS + 1)),
        )
        db.execute("COMMIT")
        rng = random.Random(7)
        done = 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            org, aid = rng.randint(1, ORGS), rng.randint(1, 200_000)
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO ledger (org_id, delta, kind, assignment_id) "
                "VALUES (?, -1, 'consume', ?)",
                (org, aid),
            )
            db.execute("UPDATE assignment SET status = 'started' WHERE id = ?", (aid,))
            db.execute(
                "UPDATE balance SET credits = credits - 1, assigned = assigned - 1 "
                "WHERE org_id = ? RETURNING credits",
                (org,),
            ).fetchall()
            db.execute("COMMIT")
            done += 1
        return done / (time.perf_counter() - started)
    finally:
        db.close()
        remove_sqlite(path)


def start_loop(env: dict[str, str], pairs: list[tuple[int, int]], seconds: float) -> dict[str, Any]:
    fd, name = tempfile.mkstemp(prefix="lc-bench-pool-", suffix=".txt")
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{org} {a}\n" for org, a in pairs)
    try:
        return run_child("start-loop", ["--pool", name, "--duration", str(seconds)], env)
    finally:
        os.unlink(name)


def start_pairs(generated: dict[str, Any], part: int, parts: int) -> list[tuple[int, int]]:
    """One part of every org's open assignments, shuffled: each run starts its own."""
    pairs = []
    for i in range(generated["orgs"]):
        base = generated["first_assignment_id"] + i * generated["assignments_per_org"]
        ids = range(base + generated["started_per_org"], base + generated["assignments_per_org"])
        size = len(ids) // parts
        org = generated["first_org_id"] + i
        pairs.extend((org, a) for a in ids[part * size : (part + 1) * size])
    random.Random(part).shuffle(pairs)
    return pairs


def start_run(
    port: int,
    pairs: list[tuple[int, int]],
    clients: int,
    duration: float,
    rate: float | None = None,
) -> dict[str, Any]:
    lines = [
        ("POST", f"/api/v1/orgs/org_{org}/assignments/asg_{a}/start", api_token(org))
        for org, a in pairs
    ]
    path = write_requests(lines)
    try:
        return run_loadgen(
            port, path, connections=clients, duration=duration, warmup=1.0, rate=rate
        )
    finally:
        path.unlink()


def bulk_under_load(
    port: int, bulk: dict[str, Any], pairs: list[tuple[int, int]], duration: float
) -> tuple[float | None, dict[str, Any]]:
    """16 clients start assignments for ``duration`` seconds; a third of the way in, one
    request assigns a content item to the bulk org's 10,000 employees. Returns the bulk
    request's time and the starts' summary."""
    result: dict[str, Any] = {}

    def load() -> None:
        result.update(start_run(port, pairs, 16, duration))

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1.0 + duration / 3)
    org = bulk["first_org_id"]
    employees = [f"emp_{bulk['first_employee_id'] + i}" for i in range(BULK)]
    body = json.dumps(
        {"content_id": f"cnt_{bulk['content_ids'][0]}", "employee_ids": employees}
    ).encode()
    url = f"http://{HOST}:{port}/api/v1/orgs/org_{org}/assignments"
    started = time.perf_counter()
    status, answer = http_request("POST", url, body, api_token(org))
    seconds: float | None = time.perf_counter() - started
    if status != 201:
        log(BENCH, f"bulk assign answered {status}: {answer[:300]!r}")
        seconds = None
    thread.join()
    return seconds, result


def run_note(result: dict[str, Any]) -> str:
    bad = {k: v for k, v in result["statuses"].items() if not k.startswith("2")}
    parts = [
        f"p50 {result['p50_ms'] or 0:.1f} ms, p99 {result['p99_ms'] or 0:.1f} ms, "
        f"max {result['max_ms'] or 0:.0f} ms",
    ]
    if bad or result["errors"]:
        parts.append(f"NON-2xx {bad} errors {result['errors']}")
    if result.get("exhausted"):
        parts.append("POOL RAN OUT (run was shorter)")
    return "; ".join(parts)


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".writer-lock"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


if __name__ == "__main__":
    sys.exit(main())
