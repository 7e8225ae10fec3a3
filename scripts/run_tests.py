"""Run the test suite on SQLite and on PostgreSQL (the README's `make test`).

When no PostgreSQL answers, the PostgreSQL half is skipped with a loud notice, unless
LEARNCREDITS_REQUIRE_POSTGRES=1 (set by .ci/run), which turns the skip into a failure.
pytest's exit code 5 (no tests collected) counts as a failure.

On a machine with two or more cores the two halves run at the same time: each spends much
of its time waiting on servers it started or on the database, so together they take little
more than the longer one. Each line of output is prefixed with its half. Set
LEARNCREDITS_TEST_PARALLEL=0 to run them one after the other.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/learncredits"


def postgres_answers(url: str) -> str | None:
    """None if PostgreSQL answers at ``url``, else the reason it does not."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover
        return str(exc)
    conninfo = url.rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(conninfo.replace("postgres://", "postgresql://"), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def run(label: str, env: dict[str, str], extra: list[str]) -> int:
    print(f"\n===== learncredits tests on {label} =====", flush=True)
    code = subprocess.call([sys.executable, "-m", "pytest", *extra], env=env)  # noqa: S603
    if code == 5:
        print(f"{label}: pytest collected no tests; that is a failure", flush=True)
    return code


def run_together(halves: list[tuple[str, dict[str, str]]], extra: list[str]) -> list[str]:
    """Run the halves at once, their lines prefixed; the labels of the halves that failed."""
    lock = threading.Lock()
    codes: dict[str, int] = {}

    def one(label: str, env: dict[str, str]) -> None:
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "pytest", *extra],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert process.stdout is not None
        for line in process.stdout:
            with lock:
                print(f"[{label}] {line}", end="", flush=True)
        code = process.wait()
        with lock:
            minutes = (time.monotonic() - started) / 60
            print(f"[{label}] pytest exited {code} after {minutes:.1f} min", flush=True)
            if code == 5:
                print(f"{label}: pytest collected no tests; that is a failure", flush=True)
        codes[label] = code

    print(f"\n===== learncredits tests on {' and '.join(h[0] for h in halves)}, at once =====")
    threads = [threading.Thread(target=one, args=half) for half in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [label for label, _ in halves if codes.get(label, 1) != 0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args, extra = parser.parse_known_args()
    failures: list[str] = []
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    halves: list[tuple[str, dict[str, str]]] = []
    if args.only in (None, "sqlite"):
        halves.append(("SQLite", {**base, "LEARNCREDITS_TEST_DB": "sqlite"}))

    if args.only in (None, "postgres"):
        url = os.environ.get("LEARNCREDITS_TEST_POSTGRES_URL", DEFAULT_PG_URL)
        reason = postgres_answers(url)
        required = os.environ.get("LEARNCREDITS_REQUIRE_POSTGRES") == "1"
        if reason is None:
            env = {**base, "DATABASE_URL": url, "LEARNCREDITS_TEST_DB": "postgres"}
            halves.append(("PostgreSQL", env))
        elif required:
            print(
                f"\nPostgreSQL is required (LEARNCREDITS_REQUIRE_POSTGRES=1) "
                f"but does not answer at {url}: {reason}",
                flush=True,
            )
            failures.append("PostgreSQL (unreachable)")
        else:
            print("\n" + "!" * 72)
            print(f"!! PostgreSQL half SKIPPED: no PostgreSQL answers at {url}")
            print(f"!! ({reason}). Only the SQLite half ran.")
            print("!! Set LEARNCREDITS_TEST_POSTGRES_URL, or LEARNCREDITS_REQUIRE_POSTGRES=1")
            print("!! to make this a failure (as .ci/run does).")
            print("!" * 72, flush=True)

    together = os.environ.get("LEARNCREDITS_TEST_PARALLEL", "1") != "0"
    if len(halves) > 1 and together and (os.cpu_count() or 1) >= 2:
        failures.extend(run_together(halves, extra))
    else:
        failures.extend(label for label, env in halves if run(label, env, extra))

    if failures:
        print(f"\nFAILED on: {', '.join(failures)}", flush=True)
        return 1
    print("\nAll test runs passed.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
