"""The in-process halves of the benchmarks, each run in a child process of its own:

    python bench/inproc.py TASK [options]     (DATABASE_URL names the database)

Tasks: ``datagen`` (write layouts), ``start-loop`` (start_assignment in a loop, one
thread), ``close-all`` (month-end), ``verify`` (verify_ledger), ``assign-bulk`` (one
assign_bulk call), ``bulk-sql`` (the plain INSERT ... SELECT baseline of assign-bulk).
Each prints one JSON line last; memory figures are this process's own peak RSS
(``ru_maxrss``) and, where asked, the tracemalloc peak of the measured call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "learncredits.settings")
    # The service refuses to start without a key; a benchmark's data is thrown away.
    os.environ.setdefault("SECRET_KEY", "bench-only-" + os.urandom(16).hex())
    import django

    django.setup()


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _peak_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def datagen(args: argparse.Namespace) -> dict[str, Any]:
    from datagen import Layout, generate_all

    layouts = [Layout(**spec) for spec in json.loads(Path(args.layouts).read_text())]
    started, cpu = time.perf_counter(), time.process_time()
    generated = generate_all(layouts, progress=lambda s: print(f"  generated {s}", flush=True))
    return {
        "generated": generated,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
    }


def start_loop(args: argparse.Namespace) -> dict[str, Any]:
    from learncredits.credits.actions import start_assignment
    from learncredits.tenancy.models import Organization

    pool = [tuple(map(int, line.split())) for line in Path(args.pool).read_text().splitlines()]
    orgs = {org.pk: org for org in Organization.objects.filter(pk__in={o for o, _ in pool})}
    # warm up: connection, imports, caches
    warm = max(1, min(50, len(pool) // 20))
    for org_id, assignment_id in pool[:warm]:
        start_assignment(orgs[org_id], assignment_id, actor="bench")
    count = 0
    started = time.perf_counter()
    deadline = started + args.duration
    for org_id, assignment_id in pool[warm:]:
        start_assignment(orgs[org_id], assignment_id, actor="bench")
        count += 1
        if time.perf_counter() >= deadline:
            break
    seconds = time.perf_counter() - started
    return {
        "starts": count,
        "seconds": seconds,
        "rate": count / seconds,
        "exhausted": count == len(pool) - warm,
    }


def close_all_task(args: argparse.Namespace) -> dict[str, Any]:
    from learncredits.billing.invoicing import close_all
    from learncredits.billing.models import Invoice, InvoiceLine

    on_issue = None
    try:  # what `learncredits close-period` passes: enqueue the collection of each invoice
        from learncredits.billing.tasks import enqueue_collection

        on_issue = enqueue_collection
    except ImportError:
        pass
    list(Invoice.objects.all()[:1])  # connect and import before measuring
    rss_before = _rss_kb()
    if args.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    summary = close_all(args.period, on_issue=on_issue)
    seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    return {
        "seconds": seconds,
        "orgs": summary.orgs,
        "invoices": summary.invoices_issued,
        "total_cents": summary.total_cents,
        "lines": InvoiceLine.objects.filter(invoice__kind="monthly").count(),
        "rss_before_kb": rss_before,
        "peak_rss_kb": _peak_kb(),
        "tracemalloc_peak_kb": traced_peak // 1024 if traced_peak is not None else None,
        "on_issue": getattr(on_issue, "__name__", None),
    }


def verify(args: argparse.Namespace) -> dict[str, Any]:
    from learncredits.credits.models import Balance
    from learncredits.credits.verify import verify_ledger

    list(Balance.objects.all()[:1])
    rss_before = _rss_kb()
    started = time.perf_counter()
    checked, mismatches = verify_ledger()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "orgs": checked,
        "mismatches": len(mismatches),
        "first_mismatches": [str(m) for m in mismatches[:5]],
        "rss_before_kb": rss_before,
        "peak_rss_kb": _peak_kb(),
    }


def assign_bulk_task(args: argparse.Namespace) -> dict[str, Any]:
    from learncredits.credits.actions import assign_bulk
    from learncredits.tenancy.models import Organization

    org = Organization.objects.get(pk=args.org)
    ids = list(range(args.first_employee, args.first_employee + args.count))
    rss_before = _rss_kb()
    if args.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    result = assign_bulk(org, content_id=args.content, employee_ids=ids, actor="bench")
    seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    return {
        "seconds": seconds,
        "created": len(result.created),
        "skipped": len(result.skipped_employee_ids),
        "rss_before_kb": rss_before,
        "peak_rss_kb": _peak_kb(),
        "tracemalloc_peak_kb": traced_peak // 1024 if traced_peak is not None else None,
    }


def bulk_sql(args: argparse.Namespace) -> dict[str, Any]:
    """The plain-SQL equivalent of assign_bulk: lock the balance, INSERT ... SELECT the
    assignments and their reserve entries, update the balance; one transaction."""
    from datagen import Writer
    from django.db import connection, transaction

    from learncredits.credits.models import Assignment, LedgerEntry

    writer = Writer(connection)
    a_cols = [
        "org_id",
        "content_id",
        "employee_id",
        "status",
        "credit_cost",
        "charged_credits",
        "overage_credits",
        "created_at",
    ]
    a_table = writer.table(Assignment, a_cols)
    e_cols = [
        "org_id",
        "type",
        "credits_delta",
        "assigned_delta",
        "overage_credits",
        "credits_after",
        "assigned_after",
        "assignment_id",
        "actor",
        "reason",
        "created_at",
    ]
    e_table = writer.table(LedgerEntry, e_cols)

    def rest(table: Any) -> tuple[str, str, list[Any]]:
        cols = [f.column for f in table.rest]
        return "".join(f', "{c}"' for c in cols), "".join(", %s" for _ in cols), table.rest_values

    a_rest_cols, a_rest_marks, a_rest_values = rest(a_table)
    e_rest_cols, e_rest_marks, e_rest_values = rest(e_table)
    last = args.first_employee + args.count - 1
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT credits, assigned FROM credits_balance WHERE org_id = %s FOR UPDATE",
            [args.org],
        )
        credits, assigned = cursor.fetchone()
        cursor.execute(
            f"""INSERT INTO credits_assignment ({", ".join(a_cols)}{a_rest_cols})
                SELECT %s, %s, e.id, 'assigned', c.credit_cost, 0, 0, now(){a_rest_marks}
                FROM tenancy_employee e, catalog_content c
                WHERE e.org_id = %s AND e.id BETWEEN %s AND %s AND c.id = %s""",
            [
                args.org,
                args.content,
                *a_rest_values,
                args.org,
                args.first_employee,
                last,
                args.content,
            ],
        )
        cursor.execute(
            f"""INSERT INTO credits_ledgerentry ({", ".join(e_cols)}{e_rest_cols})
                SELECT org_id, 'reserve', 0, credit_cost, 0, %s,
                       %s + credit_cost * row_number() OVER (ORDER BY id), id, 'bench', '',
                       now(){e_rest_marks}
                FROM credits_assignment WHERE org_id = %s AND content_id = %s""",
            [credits, assigned, *e_rest_values, args.org, args.content],
        )
        rows = cursor.rowcount
        cursor.execute(
            "UPDATE credits_balance SET assigned = assigned + %s WHERE org_id = %s",
            [rows, args.org],
        )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows}


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Profile one path with pyinstrument (if installed) and list the SQL of one call."""
    from datagen import api_token
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from learncredits.tenancy.models import Organization

    gen = json.loads(Path(args.generated).read_text())
    client = Client()
    calls: list[Any] = []
    if args.what in ("start", "balance", "start-action"):
        from learncredits.credits.actions import start_assignment

        g = gen[0]
        orgs = {o.pk: o for o in Organization.objects.filter(pk__gte=g["first_org_id"])}
        for i in range(args.calls + 1):
            org = g["first_org_id"] + i % g["orgs"]
            index = i % g["orgs"]
            base = g["first_assignment_id"] + index * g["assignments_per_org"]
            asg = base + g["started_per_org"] + i // g["orgs"]
            auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token(org)}"}
            if args.what == "start-action":
                calls.append(
                    lambda org=orgs[org], asg=asg: start_assignment(org, asg, actor="bench")
                )
            elif args.what == "start":
                url = f"/api/v1/orgs/org_{org}/assignments/asg_{asg}/start"
                calls.append(
                    lambda url=url, auth=auth: client.post(
                        url, content_type="application/json", **auth
                    )
                )
            else:
                url = f"/api/v1/orgs/org_{org}/balance"
                calls.append(lambda url=url, auth=auth: client.get(url, **auth))
    elif args.what == "healthz":
        calls = [lambda: client.get("/healthz") for _ in range(args.calls + 1)]
    elif args.what == "close":
        from learncredits.billing.invoicing import close_all
        from learncredits.billing.tasks import enqueue_collection

        orgs = list(Organization.objects.order_by("pk"))
        calls = [
            lambda org=org: close_all(args.period, orgs=[org], on_issue=enqueue_collection)
            for org in orgs[: args.calls + 1]
        ]
    elif args.what == "bulk":
        from learncredits.credits.actions import assign_bulk

        g = gen[0]
        org = Organization.objects.get(pk=g["first_org_id"])
        ids = list(range(g["first_employee_id"], g["first_employee_id"] + g["employees_per_org"]))
        calls = [
            lambda c=c: assign_bulk(org, content_id=c, employee_ids=ids, actor="bench")
            for c in g["content_ids"][: args.calls + 1]
        ]
    with CaptureQueriesContext(connection) as queries:
        first = calls[0]()
    status = getattr(first, "status_code", None)
    sql = [q["sql"][:300] for q in queries.captured_queries]
    if args.count_calls:
        before = _table_work()
        result = _count_calls(args, calls, status, sql)
        result["rows_per_call"] = _per_call(before, _table_work(), result["calls"])
        return result
    try:
        from pyinstrument import Profiler
    except ImportError:
        Profiler = None
    if args.no_profiler:
        Profiler = None
    profiler = Profiler(interval=0.0005) if Profiler else None
    if profiler:
        profiler.start()
    started = time.perf_counter()
    for call in calls[1:]:
        call()
    seconds = time.perf_counter() - started
    if profiler:
        profiler.stop()
        Path(args.output).write_text(profiler.output_text(unicode=True, color=False))
    return {
        "what": args.what,
        "first_status": status,
        "queries_in_one_call": len(sql),
        "sql": sql,
        "calls": len(calls) - 1,
        "seconds": seconds,
        "ms_per_call": seconds / max(1, len(calls) - 1) * 1000,
    }


def _table_work() -> dict[str, dict[str, int]]:
    """PostgreSQL's counts of rows inserted, updated (HOT or not) and read by index, per
    table of this database, with this session's pending counts flushed first; empty
    elsewhere. Like the Python call counts they do not vary from run to run."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, "
            "COALESCE(idx_tup_fetch, 0), seq_scan FROM pg_stat_user_tables"
        )
        return {
            row[0]: dict(zip(("inserted", "updated", "hot", "index_fetched", "seq_scans"),
                             row[1:], strict=True))
            for row in cursor.fetchall()
        }  # fmt: skip


def _per_call(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], calls: int
) -> dict[str, dict[str, float]]:
    changed: dict[str, dict[str, float]] = {}
    for table, counts in after.items():
        moved = {k: (v - before.get(table, {}).get(k, 0)) / calls for k, v in counts.items()}
        if any(moved.values()):
            changed[table] = {k: round(v, 2) for k, v in moved.items() if v}
    return changed


def _count_calls(
    args: argparse.Namespace, calls: list[Any], status: int | None, sql: list[str]
) -> dict[str, Any]:
    """Python function calls per request, by function, under cProfile.

    Wall-clock profiles of two commits differ by more from run to run than the change
    being looked for; the number of Python calls a request makes does not vary, so two
    commits' counts compare exactly (each call costs the interpreter roughly alike)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for call in calls[1:]:
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    requests = max(1, len(calls) - 1)
    rows = []
    total = 0
    for (filename, line, name), (_cc, ncalls, _tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += ncalls
        where = filename.split("site-packages/")[-1].split("/src/")[-1]
        rows.append((ncalls / requests, f"{where}:{line}({name})"))
    rows.sort(reverse=True)
    Path(args.output).write_text(
        f"{total / requests:.1f} Python calls a request\n"
        + "".join(f"{per:10.2f}  {where}\n" for per, where in rows)
    )
    return {
        "what": args.what,
        "first_status": status,
        "queries_in_one_call": len(sql),
        "sql": sql,
        "calls": requests,
        "seconds": 0.0,
        "ms_per_call": 0.0,
        "python_calls_per_call": total / requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("datagen")
    p.add_argument("--layouts", required=True, help="JSON file: a list of Layout fields")
    p = sub.add_parser("start-loop")
    p.add_argument("--pool", required=True, help="file of 'org_id assignment_id' lines")
    p.add_argument("--duration", type=float, default=10)
    p = sub.add_parser("close-all")
    p.add_argument("--period", required=True)
    p.add_argument("--tracemalloc", action="store_true")
    sub.add_parser("verify")
    for name in ("assign-bulk", "bulk-sql"):
        p = sub.add_parser(name)
        p.add_argument("--org", type=int, required=True)
        p.add_argument("--content", type=int, required=True)
        p.add_argument("--first-employee", type=int, required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--tracemalloc", action="store_true")
    p = sub.add_parser("profile")
    p.add_argument(
        "--what",
        choices=["start", "start-action", "balance", "healthz", "close", "bulk"],
        required=True,
    )
    p.add_argument("--generated", required=True)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--period", default="")
    p.add_argument("--output", required=True)
    p.add_argument("--no-profiler", action="store_true")
    p.add_argument("--count-calls", action="store_true")
    args = parser.parse_args()
    _setup()
    task = {
        "datagen": datagen,
        "start-loop": start_loop,
        "close-all": close_all_task,
        "verify": verify,
        "assign-bulk": assign_bulk_task,
        "bulk-sql": bulk_sql,
        "profile": profile,
    }[args.task]
    print(json.dumps(task(args)))


if __name__ == "__main__":
    main()
