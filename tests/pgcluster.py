"""Throwaway PostgreSQL clusters for the tests that stop, crash, replicate or fail over a
server: the bank test (tests/bank), the replica tests and the failover drill.

Each cluster is initdb'ed into a temporary directory, listens on a free loopback port with
fsync on, and is removed at the end; the machine's shared server is never touched. A
cluster can be made a primary that streams to standbys (``replication=True``), and a
standby made from it (``standby_of``, by ``pg_basebackup -R``), optionally synchronous.

Tests that need the server binaries skip with the reason when they are missing, unless
``LEARNCREDITS_REQUIRE_PG_SERVER=1`` (set by .ci/run), which makes them fail instead.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
REQUIRE_ENV = "LEARNCREDITS_REQUIRE_PG_SERVER"


class ClusterUnavailable(Exception):
    """No cluster can run here (no PostgreSQL server binaries, no user to run them)."""


class ClusterError(Exception):
    """Something the cluster needs failed (a server that does not start, a timeout)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def find_pg_bin() -> Path | None:
    """The directory of initdb/pg_ctl/postgres: $LEARNCREDITS_PG_BIN, else the newest
    /usr/lib/postgresql/*/bin, else wherever initdb is on PATH."""
    wanted = ("initdb", "pg_ctl", "postgres")
    candidates: list[Path] = []
    if os.environ.get("LEARNCREDITS_PG_BIN"):
        candidates.append(Path(os.environ["LEARNCREDITS_PG_BIN"]))

    def version(path: Path) -> float:
        try:
            return float(path.parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in wanted):
            return candidate
    return None


def pg_bin_or_skip() -> Path:
    """The server binaries' directory; a test without them is skipped (or fails, when
    ``LEARNCREDITS_REQUIRE_PG_SERVER=1``) saying what is missing."""
    import pytest

    found = find_pg_bin()
    reason = None
    if found is None:
        reason = (
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in "
            "/usr/lib/postgresql/*/bin or on PATH; set LEARNCREDITS_PG_BIN"
        )
    elif not os.access(found / "pg_basebackup", os.X_OK):
        reason = f"no pg_basebackup beside initdb in {found}"
    if reason is None:
        assert found is not None
        return found
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL server test SKIPPED: {reason}")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: its own data directory, loopback port and socket
    directory, fsync on. Started by ``start`` (or ``standby_of``), restartable, removed by
    ``stop``.

    initdb refuses to run as root, so as root the server binaries run as the ``postgres``
    user (subprocess ``user=``), on a temporary directory handed over to that user."""

    def __init__(self, bin_dir: Path, dbname: str = "learncredits", name: str = "pg") -> None:
        self.bin_dir = bin_dir
        self.dbname = dbname
        self.name = name
        self.root: Path | None = None
        self.port = 0
        self.run_as: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(PG_SUPERUSER)
            except KeyError:
                raise ClusterUnavailable(
                    "running as root and there is no 'postgres' user to run initdb as"
                ) from None
            self.run_as = (entry.pw_uid, entry.pw_gid)

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgres://{PG_SUPERUSER}@{HOST}:{self.port}/{self.dbname}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.run_as:
            kwargs.update(user=self.run_as[0], group=self.run_as[1], extra_groups=[])
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
            check=False,
            **kwargs,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n"
                f"{self.log_tail()}"
            )
        return result

    def log_tail(self, lines: int = 30) -> str:
        if self.root is None or not (self.root / "postgres.log").exists():
            return ""
        text = (self.root / "postgres.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _make_root(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"lc-{self.name}-"))
        if self.run_as:
            os.chown(self.root, *self.run_as)
        os.chmod(self.root, 0o700)

    def _configure(self, extra: str = "") -> None:
        self.port = free_port()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# learncredits test cluster: private, loopback only, durable\n"
                f"listen_addresses = '{HOST}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = on\n"
                "synchronous_commit = on\n"
                "full_page_writes = on\n"
                "max_connections = 200\n"
                "logging_collector = off\n"
                f"{extra}"
            )

    def start(self, replication: bool = False, extra_conf: str = "") -> None:
        """initdb, start, and create the database. ``replication``: ready to stream its
        WAL to standbys (``standby_of``)."""
        self._make_root()
        # --no-sync only skips flushing initdb's own files; the server runs with fsync on.
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            "--no-sync",
        )
        if replication:
            extra_conf = "wal_level = replica\nmax_wal_senders = 10\n" + extra_conf
        self._configure(extra_conf)
        self._pg_ctl("start")
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def standby_of(self, primary: PrivatePostgres) -> None:
        """Become a hot standby streaming from ``primary`` (a base backup of it, with the
        recovery settings written by ``-R``), and start. To make it synchronous, start the
        primary with ``synchronous_standby_names = '*'``."""
        self._make_root()
        self.dbname = primary.dbname
        self._run(
            "pg_basebackup",
            "-D",
            str(self.data),
            "-h",
            HOST,
            "-p",
            str(primary.port),
            "-U",
            PG_SUPERUSER,
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
            timeout=180,
        )
        self._configure("hot_standby = on\n")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, mode: str | None = None) -> None:
        args = ["pg_ctl", "-D", str(self.data), "-w", "-t", "90", action]
        if mode:
            args += ["-m", mode]
        if action in ("start", "restart"):
            args += ["-l", str(self.data.parent / "postgres.log")]
        self._run(*args, timeout=120)

    def restart(self, mode: str = "immediate") -> float:
        """Restart the server (``immediate``: no shutdown checkpoint, crash recovery on
        start, like a crash); returns how long it was unavailable, in seconds."""
        started = time.monotonic()
        self._pg_ctl("restart", mode)
        return time.monotonic() - started

    def halt(self, mode: str = "immediate") -> None:
        """Stop the server and keep its files (``immediate``: as if it crashed)."""
        self._pg_ctl("stop", mode)

    def resume(self) -> None:
        """Start a halted server again on the same port."""
        self._pg_ctl("start")

    def promote(self) -> None:
        """A standby becomes a primary (waits until it accepts writes)."""
        self._pg_ctl("promote")

    def conninfo(self, dbname: str | None = None) -> str:
        return (
            f"host={HOST} port={self.port} user={PG_SUPERUSER} "
            f"dbname={dbname or self.dbname} connect_timeout=10"
        )

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(), autocommit=True)

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._pg_ctl("stop", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
