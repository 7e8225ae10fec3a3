"""Backup and restore (the procedures are in docs/operations.md).

SQLite: the online backup (Python's ``sqlite3.Connection.backup`` and the ``sqlite3`` shell's
``.backup``) of a database that a writer process keeps writing to, then ``learncredits
verify-ledger`` on the restored copy. PostgreSQL: ``pg_dump -Fc`` of a database with data
(taken while a writer writes), ``pg_restore`` into a fresh database, ``verify-ledger`` on it.

Every database here is a real file or a real database of its own, made and used by
``learncredits`` subprocesses (not the test database), each bounded in time and cleaned up.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import console_script, service_env

pytestmark = pytest.mark.slow  # starts processes: left out of make test-fast

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
STEP_TIMEOUT = 240

WRITER = r"""
import os, pathlib, time
from learncredits.catalog.models import Content
from learncredits.billing import purchases
from learncredits.credits import actions
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Organization

org = Organization.objects.order_by("pk").first()
content = Content.objects.filter(premium=True).order_by("pk").first()
stop, ready = pathlib.Path(os.environ["STOP_FILE"]), pathlib.Path(os.environ["READY_FILE"])
deadline = time.monotonic() + float(os.environ.get("WRITER_SECONDS", "60"))
n = 0
while not stop.exists() and time.monotonic() < deadline:
    purchases.purchase_credits(org, 2, actor="writer")
    person = tenancy.create_employee(org, name=f"Writer {n}", email=f"writer{n}@backup.example")
    made = actions.assign_bulk(org, content_id=content.pk, employee_ids=[person.pk], actor="writer")
    if n % 2:
        actions.start_assignment(org, made.created[0].pk, actor="writer")
    else:
        actions.cancel_assignment(org, made.created[0].pk, actor="writer")
    n += 1
    if n == 3:
        ready.touch()
print(f"WRITER {n}")
"""


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    return service_env(database_url, **extra)


def learncredits(args: list[str], database_url: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [console_script(), *args],
        cwd=cwd,
        env=env_for(database_url),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result


class Writer:
    """A ``learncredits shell`` process buying, assigning, starting and cancelling until told
    to stop (or 60 s at most)."""

    def __init__(self, database_url: str, cwd: Path) -> None:
        self.stop_file, self.ready_file = cwd / "writer.stop", cwd / "writer.ready"
        self.process = subprocess.Popen(
            [console_script(), "shell", "-c", WRITER],
            cwd=cwd,
            env=env_for(
                database_url, STOP_FILE=str(self.stop_file), READY_FILE=str(self.ready_file)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_until_writing(self) -> None:
        deadline = time.monotonic() + 120
        while not self.ready_file.exists():
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.05)

    def finish(self) -> int:
        self.stop_file.touch()
        out, err = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, err[-3000:]
        return int(out.split("WRITER ")[1].split()[0])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=30)


@pytest.fixture
def writer_factory() -> Iterator[list[Writer]]:
    writers: list[Writer] = []
    yield writers
    for writer in writers:
        writer.kill()


def sqlite_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("credits_purchase", "credits_ledgerentry", "credits_assignment")
        }


def verify(database_url: str, cwd: Path) -> str:
    result = learncredits(["verify-ledger"], database_url, cwd)
    assert "ledger consistent" in result.stdout, result.stdout
    return result.stdout


# --- SQLite -----------------------------------------------------------------------------------


def test_sqlite_online_backup_while_writing_restores_clean(tmp_path, writer_factory):
    live = tmp_path / "live" / "db.sqlite3"
    live_url = f"sqlite:///{live}"
    learncredits(["migrate", "--verbosity", "0"], live_url, tmp_path)
    learncredits(["demo"], live_url, tmp_path)
    start = sqlite_counts(live)
    assert start["credits_purchase"] >= 1

    writer = Writer(live_url, tmp_path)
    writer_factory.append(writer)
    writer.wait_until_writing()

    # 1. Python's online backup API, while the writer writes
    backups = tmp_path / "backups"
    backups.mkdir()
    python_copy = backups / "python.sqlite3"
    source = sqlite3.connect(live, timeout=30)
    target = sqlite3.connect(python_copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()

    # 2. the sqlite3 shell's .backup, if there is one
    shell_copy = backups / "shell.sqlite3"
    sqlite3_cli = shutil.which("sqlite3")
    if sqlite3_cli:
        done = subprocess.run(
            [sqlite3_cli, "-cmd", ".timeout 30000", str(live), f".backup '{shell_copy}'"],
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    written = writer.finish()
    assert written >= 3
    end = sqlite_counts(live)
    verify(live_url, tmp_path)

    copies = [python_copy] + ([shell_copy] if sqlite3_cli else [])
    for copy in copies:
        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # restore: put the file in place where a service would open it, and check it
        restored = tmp_path / "restored" / copy.name
        restored.parent.mkdir(exist_ok=True)
        shutil.copyfile(copy, restored)
        counts = sqlite_counts(restored)
        assert start["credits_purchase"] < counts["credits_purchase"] <= end["credits_purchase"]
        assert counts["credits_ledgerentry"] <= end["credits_ledgerentry"]
        output = verify(f"sqlite:///{restored}", tmp_path)
        assert "1 orgs checked" in output


def test_sqlite_restored_copy_keeps_the_append_only_guards(tmp_path):
    live = tmp_path / "db.sqlite3"
    url = f"sqlite:///{live}"
    learncredits(["migrate", "--verbosity", "0"], url, tmp_path)
    learncredits(["demo"], url, tmp_path)
    copy = tmp_path / "copy.sqlite3"
    with sqlite3.connect(live) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:
        for statement in (
            "UPDATE credits_ledgerentry SET credits_delta = credits_delta + 1",
            "DELETE FROM audit_auditevent",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
    verify(f"sqlite:///{copy}", tmp_path)


def test_verify_ledger_on_a_restored_copy_catches_a_damaged_backup(tmp_path):
    """The check used after a restore fails on a copy whose balance disagrees with its
    ledger (so a clean verify-ledger above means something)."""
    live = tmp_path / "db.sqlite3"
    url = f"sqlite:///{live}"
    learncredits(["migrate", "--verbosity", "0"], url, tmp_path)
    learncredits(["demo"], url, tmp_path)
    copy = tmp_path / "damaged.sqlite3"
    with sqlite3.connect(live) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE credits_balance SET credits = credits + 1")
    result = subprocess.run(
        [console_script(), "verify-ledger"],
        cwd=tmp_path,
        env=env_for(f"sqlite:///{copy}"),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert result.returncode != 0
    assert "MISMATCH" in result.stderr


# --- PostgreSQL -------------------------------------------------------------------------------


def _psycopg():
    return pytest.importorskip("psycopg")


@pytest.fixture
def pg_databases() -> Iterator[list[str]]:
    """Names of databases this test creates; all are dropped at the end."""
    psycopg = _psycopg()
    names: list[str] = []
    yield names
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=10) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(names: list[str], label: str) -> str:
    psycopg = _psycopg()
    name = f"lc_helper_i_{label}_{secrets.token_hex(4)}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    names.append(name)
    return name


def pg_count(name: str, table: str) -> int:
    psycopg = _psycopg()
    with psycopg.connect(f"{PG_SERVER}/{name}", connect_timeout=10) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.postgres_only
def test_postgres_dump_and_restore_into_a_fresh_database_verifies_clean(
    tmp_path, pg_databases, writer_factory
):
    for tool in ("pg_dump", "pg_restore"):
        assert shutil.which(tool), f"{tool} is not installed"
    source = create_database(pg_databases, "src")
    source_url = f"postgres://postgres@127.0.0.1:5432/{source}"
    learncredits(["migrate", "--verbosity", "0"], source_url, tmp_path)
    learncredits(["demo"], source_url, tmp_path)
    before = pg_count(source, "credits_purchase")

    writer = Writer(source_url, tmp_path)
    writer_factory.append(writer)
    writer.wait_until_writing()
    dump = tmp_path / "learncredits.dump"
    dumped = subprocess.run(
        ["pg_dump", "-Fc", "-h", "127.0.0.1", "-U", "postgres", "-f", str(dump), source],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr
    writer.finish()
    after = pg_count(source, "credits_purchase")

    restored = create_database(pg_databases, "restore")
    done = subprocess.run(
        [
            "pg_restore",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--no-owner",
            "--exit-on-error",
            "-d",
            restored,
            str(dump),
        ],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    restored_url = f"postgres://postgres@127.0.0.1:5432/{restored}"
    output = verify(restored_url, tmp_path)
    assert "1 orgs checked" in output
    assert before < pg_count(restored, "credits_purchase") <= after
    # the restored database is current (no migration left to run) and keeps its guards
    plan = learncredits(["migrate", "--plan"], restored_url, tmp_path)
    assert "No planned migration operations" in plan.stdout, plan.stdout
    psycopg = _psycopg()
    with psycopg.connect(f"{PG_SERVER}/{restored}", connect_timeout=10) as conn:
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
            conn.execute("UPDATE credits_ledgerentry SET credits_delta = credits_delta + 1")
        conn.rollback()
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
            conn.execute("DELETE FROM audit_auditevent")
