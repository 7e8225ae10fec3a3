"""npm packages the tests drive (an OpenID provider, axe-core), each installed from its own
committed package-lock.json into its folder under tests/ the first time a test needs it."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path


def npm_ci(folder: Path, installed: Path) -> None:
    """``npm ci`` in ``folder`` unless ``installed`` (a file the install leaves) exists. An
    exclusive lock on a file in the folder keeps two test processes (pytest-xdist workers, the
    two database halves) from installing into one node_modules at once."""
    if installed.exists():
        return
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed.exists():
            return
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"npm ci in {folder} failed:\n{done.stdout}\n{done.stderr}"
