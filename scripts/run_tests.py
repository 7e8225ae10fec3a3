"""Run the test suite on SQLite and then on PostgreSQL (the README's `make test`).

When no PostgreSQL answers, the PostgreSQL half is skipped with a loud notice, unless
LEARNCREDITS_REQUIRE_POSTGRES=1 (set by .ci/run), which turns the skip into a failure.
pytest's exit code 5 (no tests collected) counts as a failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args, extra = parser.parse_known_args()
    failures: list[str] = []
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    if args.only in (None, "sqlite") and run(
        "SQLite", {**base, "LEARNCREDITS_TEST_DB": "sqlite"}, extra
    ):
        failures.append("SQLite")

    if args.only in (None, "postgres"):
        url = os.environ.get("LEARNCREDITS_TEST_POSTGRES_URL", DEFAULT_PG_URL)
        reason = postgres_answers(url)
        required = os.environ.get("LEARNCREDITS_REQUIRE_POSTGRES") == "1"
        if reason is None:
            env = {**base, "DATABASE_URL": url, "LEARNCREDITS_TEST_DB": "postgres"}
            if run("PostgreSQL", env, extra):
                failures.append("PostgreSQL")
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

    if failures:
        print(f"\nFAILED on: {', '.join(failures)}", flush=True)
        return 1
    print("\nAll test runs passed.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
