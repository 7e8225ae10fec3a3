"""What PostgreSQL's commit-time balance check costs the writes that queue it.

Every balance row written, and every statement inserting ledger entries (for each org it
touched), queues one run of the deferred constraint trigger ``balance_matches_ledger``
(migration credits/0011), which runs at COMMIT. Measured in one process on one fresh
database, with the trigger enabled and, as the baseline, disabled (``ALTER TABLE ... DISABLE
TRIGGER``), the two alternating rep by rep so that a shared machine's drift falls on both
alike:

- ``assign_bulk`` of one content item to N employees (one transaction: N assignments,
  N reserve entries, one balance update; one check at commit);
- M starts of assigned assignments (``start_assignment``, a transaction each; one check each).

    .venv/bin/python bench/balance_check.py [--quick] [--reps R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from common import PYTHON, Figure, Report, base_parser, log, pg_available, service_database

BENCH = "balance_check"
TRIGGERS = [
    ("credits_ledgerentry", "ledger_entries_recheck_balance"),
    ("credits_balance", "balance_matches_ledger"),
]


def child(employees: int, starts: int, reps: int) -> dict[str, Any]:
    """Runs in a process of its own with DATABASE_URL set: builds an org, then measures."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "learncredits.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-" + os.urandom(16).hex())
    import django

    django.setup()
    from django.db import connection

    from learncredits.catalog.services import create_content
    from learncredits.credits import actions
    from learncredits.credits.accounts import create_org
    from learncredits.tenancy.models import Employee

    org = create_org(name="Balance check", billing_email="bench@example.com")
    actions.adjust_credits(org, 10**9, reason="bench", actor="bench")
    Employee.objects.bulk_create(
        Employee(org=org, name=f"E{n}", email=f"e{n}@example.com") for n in range(employees)
    )
    ids = list(Employee.objects.filter(org=org).values_list("pk", flat=True))

    def set_trigger(enabled: bool) -> None:
        verb = "ENABLE" if enabled else "DISABLE"
        with connection.cursor() as cursor:
            for table, trigger in TRIGGERS:
                cursor.execute(f"ALTER TABLE {table} {verb} TRIGGER {trigger}")

    timings: dict[str, dict[str, list[float]]] = {
        "bulk": {"on": [], "off": []},
        "start": {"on": [], "off": []},
    }
    for rep in range(reps):
        order = ["on", "off"] if rep % 2 == 0 else ["off", "on"]
        for mode in order:
            set_trigger(mode == "on")
            content = create_content(
                title=f"Course {rep} {mode}", premium=True, credit_cost=1, xapi_activity_id=None
            )
            began = time.perf_counter()
            created = actions.assign_bulk(
                org, content_id=content.pk, employee_ids=ids, actor="bench"
            ).created
            timings["bulk"][mode].append(time.perf_counter() - began)
            began = time.perf_counter()
            for assignment in created[:starts]:
                actions.start_assignment(org, assignment.pk, actor="bench")
            timings["start"][mode].append((time.perf_counter() - began) / starts * 1000)
    set_trigger(True)
    from learncredits.credits.verify import verify_ledger

    _, mismatches = verify_ledger()
    return {"timings": timings, "mismatches": len(mismatches)}


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--reps", type=int, default=4, help="measurements per mode")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    report = Report(BENCH, args.json)
    missing = pg_available()
    if missing:
        report.skip("balance check", missing)
        report.write()
        return 0
    employees, starts = (1_000, 100) if args.quick else (10_000, 500)
    reps = 2 if args.quick else args.reps
    log(BENCH, f"{reps} reps per mode, trigger on and off alternating")
    with service_database("lc_bench_balance_check", keep=args.keep) as env:
        done = subprocess.run(
            [PYTHON, __file__, "--child", str(employees), str(starts), str(reps)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    timings = result["timings"]
    for what, unit, label in (
        ("bulk", "s", f"assign_bulk of {employees:,} employees, with the check"),
        ("start", "ms", f"start_assignment, mean of {starts} in a row, with the check"),
    ):
        on, off = statistics.median(timings[what]["on"]), statistics.median(timings[what]["off"])
        report.add(
            Figure(
                BENCH,
                label,
                on,
                unit,
                baseline=off,
                baseline_label="the same without it",
                higher_is_better=False,
                note=f"medians; on {[round(x, 3) for x in timings[what]['on']]}, "
                f"off {[round(x, 3) for x in timings[what]['off']]}",
            )
        )
    report.note(f"verify-ledger mismatches afterwards: {result['mismatches']}")
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
