"""Shared plumbing of the benchmarks: databases, the server, the load generator, pgbench,
child processes and the figures each benchmark prints.

Every benchmark is a script (``.venv/bin/python bench/hot_path.py [--quick]``) that creates
its own PostgreSQL database (``lc_bench_*``) or SQLite file under ``var/bench/``, migrates it
with ``learncredits migrate``, generates its data, measures, prints one summary line per
figure (with the baseline measured in the same run and the ratio), and drops what it
created. Nothing here asserts a timing: targets are printed as met or not met.

All traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VAR_DIR = ROOT / "var" / "bench"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
HOST = "127.0.0.1"  # every benchmark talks to this machine only

PG_HOST = os.environ.get("LC_BENCH_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LC_BENCH_PGPORT", "5432"))
PG_USER = os.environ.get("LC_BENCH_PGUSER") or os.environ.get("PGUSER") or ""
# The pgbench scripts of the baselines (hot-path.sql and the schema it runs on).
PGBENCH_DIR = BENCH_DIR / "pgbench"


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, its baseline from the same run, and the target it is held to.

    ``ratio`` is value / baseline. For a rate (higher is better) it is the fraction of the
    baseline reached; for a time or a size (lower is better) it is how many times the
    baseline's time the service needs.
    """

    bench: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    higher_is_better: bool = True
    target: str = ""
    target_met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def ratio_text(self) -> str:
        ratio = self.ratio
        if ratio is None:
            return "-"
        if self.higher_is_better:
            return f"{ratio:.3f} ({ratio * 100:.1f}% of baseline)"
        return f"{ratio:.1f}x baseline"

    def target_text(self) -> str:
        if not self.target:
            return ""
        if self.target_met is None:
            return f"target {self.target}: n/a"
        return f"target {self.target}: {'met' if self.target_met else 'NOT MET'}"

    def line(self) -> str:
        parts = [f"[{self.bench}] {self.name}: {fmt(self.value)} {self.unit}"]
        if self.baseline is not None:
            parts.append(f"baseline {self.baseline_label}: {fmt(self.baseline)}")
            parts.append(f"ratio {self.ratio_text()}")
        if self.target:
            parts.append(self.target_text())
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.4f}"


class Report:
    """Collects a benchmark's figures, prints each as it comes, and writes them as JSON."""

    def __init__(self, bench: str, json_path: str | None) -> None:
        self.bench = bench
        self.json_path = json_path
        self.figures: list[Figure] = []
        self.notes: list[str] = []

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def skip(self, name: str, why: str) -> None:
        self.add(Figure(self.bench, name, None, "", note=f"SKIPPED: {why}"))

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[{self.bench}] note: {text}", flush=True)

    def write(self) -> None:
        if self.json_path:
            data = {
                "bench": self.bench,
                "notes": self.notes,
                "figures": [asdict(f) | {"ratio": f.ratio} for f in self.figures],
            }
            Path(self.json_path).write_text(json.dumps(data, indent=1))


def log(bench: str, text: str) -> None:
    print(f"[{bench}] .. {text}", flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs (a smoke run)"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases and files (for debugging)"
    )
    return parser


# --- PostgreSQL ------------------------------------------------------------------------------


def pg_conninfo(dbname: str) -> str:
    info = f"host={PG_HOST} port={PG_PORT} dbname={dbname}"
    return info + (f" user={PG_USER}" if PG_USER else "")


def database_url(dbname: str) -> str:
    user = f"{PG_USER}@" if PG_USER else ""
    return f"postgres://{user}{PG_HOST}:{PG_PORT}/{dbname}"


def pg_connect(dbname: str = "postgres", autocommit: bool = True) -> Any:
    import psycopg

    return psycopg.connect(pg_conninfo(dbname), autocommit=autocommit, connect_timeout=5)


def pg_available() -> str | None:
    """None when PostgreSQL answers at PG_HOST:PG_PORT, otherwise why not."""
    try:
        with pg_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means: no usable server
        return f"no PostgreSQL at {PG_HOST}:{PG_PORT} ({str(exc).strip().splitlines()[0]})"
    return None


def create_db(name: str, template: str | None = None) -> None:
    assert re.fullmatch(r"lc_bench_\w+", name), name
    with pg_connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if template:
            assert re.fullmatch(r"lc_bench_\w+", template), template
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        else:
            conn.execute(f"CREATE DATABASE {name}")


def drop_db(name: str) -> None:
    assert re.fullmatch(r"lc_bench_\w+", name), name
    with pg_connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# run_all.py migrates one template database and names it here, so that each benchmark's
# database is a copy of it instead of running every migration again.
TEMPLATE_ENV = "LC_BENCH_TEMPLATE"


@contextlib.contextmanager
def service_database(name: str, keep: bool = False) -> Iterator[dict[str, str]]:
    """A fresh, migrated PostgreSQL database of the service, dropped afterwards; yields the
    environment (DATABASE_URL ...) of the service and of inproc.py children."""
    template = os.environ.get(TEMPLATE_ENV)
    create_db(name, template)
    try:
        env = service_env(database_url(name))
        if not template:
            migrate(env)
        yield env
    finally:
        if not keep:
            drop_db(name)


def timed_sql(dbname: str, sql: str, params: Sequence[Any] = (), repeat: int = 3) -> float:
    """Best wall time in seconds of one SQL statement over ``repeat`` runs (warm cache)."""
    best = float("inf")
    with pg_connect(dbname) as conn:
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(sql, params).fetchall()
            best = min(best, time.perf_counter() - started)
    return best


# --- the service -----------------------------------------------------------------------------


def service_env(database: str, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        {
            "DATABASE_URL": database,
            "DJANGO_SETTINGS_MODULE": "learncredits.settings",
            "DEBUG": "false",
            # The service refuses to start without a key; a benchmark's data is thrown away.
            "SECRET_KEY": env.get("SECRET_KEY") or "bench-only-" + os.urandom(16).hex(),
            "LOG_LEVEL": "ERROR",
            "EMAIL_URL": "dummymail://",
            "LEARNCREDITS_OPERATOR_TOKEN": "bench-operator-token",
            "PYTHONUNBUFFERED": "1",
            # The per-key request budget stays on (its check is part of every request's
            # cost) but so high that a benchmark measures the path, not the 429s.
            "LEARNCREDITS_RATE_LIMIT": "100000000/m",
        }
    )
    env.pop("LEARNCREDITS_ACCESS_LOG", None)
    env.update(extra)
    return env


def learncredits(args: Sequence[str], env: dict[str, str], timeout: float = 600) -> None:
    cmd = [PYTHON, "-m", "learncredits.cli", *args]
    result = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def migrate(env: dict[str, str]) -> None:
    learncredits(["migrate", "--verbosity", "0"], env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """``learncredits serve`` on 127.0.0.1 and a free port, stopped on exit."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int,
        threads: int,
        background_worker: bool = False,
        timeout: int = 60,
    ) -> None:
        self.env = env
        self.workers = workers
        self.threads = threads
        self.background_worker = background_worker
        self.timeout = timeout
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="lc-bench-serve-", suffix=".log")[1])

    def __enter__(self) -> Server:
        args = [
            PYTHON,
            "-m",
            "learncredits.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--timeout",
            str(self.timeout),
        ]
        if not self.background_worker:
            args.append("--no-worker")
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                args, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_ready()
        return self

    def _wait_ready(self, limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"learncredits serve exited:\n{self.log()}")
            try:
                status, _ = http_request("GET", f"http://{HOST}:{self.port}/api/v1/pricing")
            except OSError:
                time.sleep(0.2)
                continue
            if status in (200, 401):
                # every worker imports the app lazily: give them all a first request
                for _ in range(self.workers * 2):
                    http_request("GET", f"http://{HOST}:{self.port}/api/v1/pricing")
                if len(self.worker_pids()) >= self.workers:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"learncredits serve did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def worker_pids(self) -> list[int]:
        """The gunicorn web workers (children of the serve process, which is the arbiter)."""
        assert self.process is not None
        return children(self.process.pid)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def proc_status_kb(pid: int, key: str) -> int:
    """VmRSS / VmHWM (peak RSS) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def http_request(
    method: str, url: str, body: bytes | None = None, token: str | None = None, timeout=60
) -> tuple[int, bytes]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    assert parts.hostname == HOST, "benchmarks only talk to 127.0.0.1"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- the load generator ----------------------------------------------------------------------


def write_requests(lines: Sequence[tuple[str, str, str]]) -> Path:
    """Write (method, path, token) lines for the load generator; returns the file."""
    fd, name = tempfile.mkstemp(prefix="lc-bench-requests-", suffix=".txt")
    with os.fdopen(fd, "w") as out:
        for method, path, token in lines:
            out.write(f"{method} {path} {token}\n")
    return Path(name)


def run_loadgen(
    port: int,
    requests_file: Path,
    *,
    connections: int,
    duration: float,
    warmup: float = 1.0,
    cycle: bool = False,
    rate: float | None = None,
) -> dict[str, Any]:
    """Run bench/loadgen.py in its own process; returns its JSON summary."""
    cmd = [
        sys.executable,
        str(BENCH_DIR / "loadgen.py"),
        "--port",
        str(port),
        "--requests",
        str(requests_file),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    if cycle:
        cmd.append("--cycle")
    if rate:
        cmd += ["--rate", str(rate)]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + warmup + 120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"loadgen failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- pgbench ---------------------------------------------------------------------------------


def have_pgbench() -> bool:
    return shutil.which("pgbench") is not None and shutil.which("psql") is not None


def psql_file(dbname: str, path: Path, variables: dict[str, str]) -> None:
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT)]
    if PG_USER:
        cmd += ["-U", PG_USER]
    for key, value in variables.items():
        cmd += ["-v", f"{key}={value}"]
    cmd += ["-d", dbname, "-f", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"psql -f {path} failed:\n{result.stderr}")


def pgbench(
    dbname: str,
    script: Path,
    *,
    clients: int,
    threads: int,
    duration: float,
    defines: dict[str, str] | None = None,
    rate: float | None = None,
    latency_log: bool = False,
) -> dict[str, Any]:
    """Run pgbench with a custom script; returns tps and, with ``latency_log``, the
    per-transaction latency percentiles in ms (from pgbench's -l log)."""
    with tempfile.TemporaryDirectory(prefix="lc-bench-pgbench-") as tmp:
        cmd = ["pgbench", "-n", "-h", PG_HOST, "-p", str(PG_PORT)]
        if PG_USER:
            cmd += ["-U", PG_USER]
        cmd += [
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(max(1, round(duration))),
            "-f",
            str(script),
        ]
        for key, value in (defines or {}).items():
            cmd += ["-D", f"{key}={value}"]
        if rate:
            cmd += ["-R", str(rate)]
        if latency_log:
            cmd += ["-l", "--log-prefix", f"{tmp}/log"]
        cmd.append(dbname)
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + 120, check=False, cwd=tmp
        )
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
        out: dict[str, Any] = {"tps": float(match.group(1)) if match else None}
        failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
        out["failed"] = int(failed.group(1)) if failed else 0
        if latency_log:
            latencies: list[float] = []
            for path in Path(tmp).glob("log*"):
                for line in path.read_text().splitlines():
                    fields = line.split()
                    # client_id transaction_no time script_no time_epoch time_us [lag];
                    # with -R, "time" runs from the scheduled start, so it includes the lag
                    if len(fields) >= 3 and fields[2].isdigit():
                        latencies.append(int(fields[2]) / 1000.0)
            latencies.sort()
            out.update(percentiles(latencies))
        return out


def percentiles(sorted_ms: Sequence[float]) -> dict[str, float | None]:
    if not sorted_ms:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}

    def pick(q: float) -> float:
        return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]

    return {
        "p50_ms": pick(0.50),
        "p90_ms": pick(0.90),
        "p99_ms": pick(0.99),
        "max_ms": sorted_ms[-1],
    }


# --- Django child processes ------------------------------------------------------------------


def run_child(
    task: str,
    args: Sequence[str],
    env: dict[str, str],
    *,
    timeout: float = 900,
    python: str | None = None,
    script: Path | None = None,
) -> dict[str, Any]:
    """Run ``bench/inproc.py TASK ARGS`` (Django configured from ``env``); returns the JSON
    object the child prints on its last line."""
    cmd = [python or PYTHON, str(script or BENCH_DIR / "inproc.py"), task, *args]
    result = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"child {task} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-6000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_datagen(env: dict[str, str], layouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write datagen layouts into the database of ``env``; returns where each one went."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(layouts, out)
    try:
        return list(run_child("datagen", ["--layouts", out.name], env)["generated"])
    finally:
        os.unlink(out.name)


def load_cpu() -> str:
    """The 1-minute load average: a loaded machine skews every figure."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


def machine_line() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), load average {load_cpu()}"
