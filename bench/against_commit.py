"""This tree's hot path beside an earlier commit's, measured alternately on this machine now.

    .venv/bin/python bench/against_commit.py c5d21b3              # 3 rounds
    .venv/bin/python bench/against_commit.py c5d21b3 --rounds 5 --duration 8

Why: the figures of ``make bench`` move by 10% and more from one day to the next on a shared
two-core machine, so a regression cannot be read off an old table. Here both trees run in
the same session, alternately (earlier commit, then this tree, round after round), so the
machine's drift falls on both alike; the change reported is between the medians.

Each run is ``bench/hot_path.py --no-scaling --no-hordak`` of that tree (its own datagen
and schema), the earlier one from a git worktree under ``var/bench/`` that shares this
virtualenv and has its own ``src`` first on ``PYTHONPATH``. Before the runs it also counts
the Python calls one request makes on each tree (a start, a balance read, ``/healthz``;
``profile_paths.py --count-calls``): a count does not vary between runs, so it shows a
change in work of a few percent that throughput's noise hides. Not run by ``make bench``
(it takes about 3 minutes a round).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BENCH_DIR, PYTHON, ROOT, VAR_DIR

# hot_path.py's figures compared, by the start of their names.
FIGURES = [
    ("API start, spread over", "API start, spread over 1,000 orgs"),
    ("API start, all on one org", "API start, one org"),
    ("framework floor", "framework floor, GET /healthz"),
    ("in-process start_assignment", "in-process start, one thread"),
]
COUNTED = ["start", "balance", "healthz"]


def _worktree(commit: str) -> Path:
    """A checkout of ``commit`` under var/bench (made once, reused), using this virtualenv."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=ROOT, check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    tree = VAR_DIR / f"tree-{sha}"
    if not tree.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True)
    venv = tree / ".venv"
    if not venv.exists():
        venv.symlink_to(ROOT / ".venv")
    return tree


def _env(tree: Path) -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(tree / "src")
    return env


def _hot_path(tree: Path, duration: float) -> dict[str, float]:
    script = tree / "bench" / "hot_path.py"
    # Both trees must run the same steps: a tree whose hot_path has a pgbench baseline skips
    # it, since its write load (and the checkpoint after it) slows the runs that follow.
    # Earlier trees had no baseline script, so they ran none.
    skip = ["--no-pgbench"] if "--no-pgbench" in script.read_text() else []
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    try:
        subprocess.run(
            [PYTHON, str(script), "--no-scaling", "--no-hordak", *skip,
             "--duration", str(duration), "--json", str(path)],
            cwd=tree, env=_env(tree), check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        figures = json.loads(path.read_text())["figures"]
    finally:
        path.unlink(missing_ok=True)
    found: dict[str, float] = {}
    for prefix, label in FIGURES:
        for figure in figures:
            if figure["name"].startswith(prefix) and figure["value"] is not None:
                found[label] = float(figure["value"])
                break
    return found


def _python_calls(tree: Path, what: str) -> float:
    """Python calls per request on ``tree``'s code, counted with this tree's profiler."""
    result = subprocess.run(
        [PYTHON, str(BENCH_DIR / "profile_paths.py"), what, "--count-calls", "--calls", "300"],
        cwd=tree, env=_env(tree), check=True, capture_output=True, text=True,
    )  # fmt: skip
    match = re.search(r"([\d.]+) Python calls a request", result.stdout)
    if match is None:
        raise RuntimeError(f"no count for {what} on {tree}: {result.stdout}{result.stderr}")
    return float(match.group(1))


def _change(before: float, after: float) -> str:
    return f"{(after / before - 1) * 100:+.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("commit", help="the earlier commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8, help="seconds per HTTP run")
    parser.add_argument("--no-counts", action="store_true", help="skip the call counts")
    args = parser.parse_args()
    earlier = _worktree(args.commit)
    trees = {"earlier": earlier, "this": ROOT}

    if not args.no_counts:
        print(f"Python calls a request ({args.commit} / this tree):")
        for what in COUNTED:
            before, after = (_python_calls(trees[k], what) for k in ("earlier", "this"))
            print(f"  {what:8} {before:8.1f} / {after:8.1f}  {_change(before, after)}", flush=True)

    runs: dict[str, list[dict[str, float]]] = {"earlier": [], "this": []}
    for round_ in range(1, args.rounds + 1):
        for key in ("earlier", "this"):
            figures = _hot_path(trees[key], args.duration)
            runs[key].append(figures)
            shown = ", ".join(f"{label} {value:,.0f}" for label, value in figures.items())
            print(f"round {round_}, {key}: {shown}", flush=True)

    print(f"\n| figure | {args.commit}, rounds | this tree, rounds | change of the medians |")
    print("| --- | --- | --- | --- |")
    for _, label in FIGURES:
        before = [r[label] for r in runs["earlier"] if label in r]
        after = [r[label] for r in runs["this"] if label in r]
        if not before or not after:
            continue
        b, a = statistics.median(before), statistics.median(after)
        row = " / ".join(f"{v:,.0f}" for v in before), " / ".join(f"{v:,.0f}" for v in after)
        print(f"| {label} | {row[0]} | {row[1]} | {_change(b, a)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
