"""Writers from several processes on one SQLite file queue in order and all complete.

Four processes write to the same org at once, in transactions (operator adjustments, each
under the org's balance lock) and outside any (an UPDATE in autocommit), with SQLite's busy
timeout set to zero: a writer that found the database locked would fail at once with
"database is locked" instead of waiting. With the writer queue (db/sqlite3/base.py) none
does, every write is there, and the ledger verifies. The same run on Django's plain SQLite
backend is the control: there, the writers collide and some fail, which shows that the
check can see the failure it guards against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import migrate

pytestmark = pytest.mark.slow  # starts processes: left out of make test-fast

PROCESSES = 4
WRITES = 100

CHILD = textwrap.dedent(
    """
    import json, sys
    import learncredits.settings as configured

    engine, org_id = sys.argv[1], int(sys.argv[2])
    db = configured.DATABASES["default"]
    db["ENGINE"] = engine
    db["OPTIONS"]["timeout"] = 0  # no busy handler: a locked database fails at once

    import django
    django.setup()
    from django.db import OperationalError
    from django.utils import timezone
    from learncredits.credits import actions
    from learncredits.tenancy.models import ApiKey, Organization

    done = failed = adjusted = 0
    errors = set()
    org = None
    while org is None:  # without the queue even connecting can find the database locked
        try:
            org = Organization.objects.get(pk=org_id)
        except OperationalError as exc:
            failed += 1
            errors.add(str(exc))
    for n in range(int(sys.argv[3])):
        try:
            actions.adjust_credits(org, 1, reason=f"write {n}", actor="test")
            adjusted += 1
            ApiKey.objects.filter(org_id=org_id).update(last_used_at=timezone.now())
            done += 1
        except OperationalError as exc:
            failed += 1
            errors.add(str(exc))
    print(json.dumps(
        {"done": done, "failed": failed, "adjusted": adjusted, "errors": sorted(errors)}
    ))
    """
)


def run_writers(tmp_path: Path, engine: str) -> tuple[list[dict[str, object]], Path]:
    database = tmp_path / "queue.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "learncredits.test_settings",
        "LOG_LEVEL": "ERROR",
    }
    migrate(env, Path.cwd())
    setup = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup()\n"
            "from learncredits.credits import accounts\n"
            "from learncredits.tenancy import services\n"
            "org = accounts.create_org(name='Queue', billing_email='q@example.com',"
            " timezone_name='UTC', alert_threshold=0)\n"
            "services.create_api_key(org, name='k')\n"
            "print(org.pk)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    org_id = setup.stdout.strip().splitlines()[-1]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, engine, org_id, str(WRITES)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results, database


def verify(env_database: Path) -> tuple[int, int, list[str]]:
    """(credits on the balance, adjustment entries, verify-ledger mismatches)."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{env_database}",
        "DJANGO_SETTINGS_MODULE": "learncredits.test_settings",
    }
    script = (
        "import django, json; django.setup()\n"
        "from learncredits.credits.models import Balance, LedgerEntry\n"
        "from learncredits.credits.verify import verify_ledger\n"
        "_, bad = verify_ledger()\n"
        "print(json.dumps([Balance.objects.get().credits,"
        " LedgerEntry.objects.filter(type='adjustment').count(), [str(m) for m in bad]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    credits, entries, mismatches = json.loads(out.strip().splitlines()[-1])
    return credits, entries, mismatches


def test_writers_of_four_processes_all_complete_without_a_locked_database(tmp_path):
    results, database = run_writers(tmp_path, "learncredits.db.sqlite3")
    assert [r["failed"] for r in results] == [0] * PROCESSES, results
    assert sum(r["done"] for r in results) == PROCESSES * WRITES
    credits, entries, mismatches = verify(database)
    assert (credits, entries, mismatches) == (PROCESSES * WRITES, PROCESSES * WRITES, [])


def test_control_without_the_queue_the_same_writers_collide(tmp_path):
    results, database = run_writers(tmp_path, "django.db.backends.sqlite3")
    failed = sum(int(r["failed"]) for r in results)  # type: ignore[call-overload]
    assert failed > 0, results
    assert any("locked" in e for r in results for e in r["errors"]), results  # type: ignore[attr-defined]
    # What did commit is still consistent: the failures are refusals, not corruption.
    credits, entries, mismatches = verify(database)
    assert credits == entries == sum(int(r["adjusted"]) for r in results)  # type: ignore[call-overload]
    assert mismatches == []
