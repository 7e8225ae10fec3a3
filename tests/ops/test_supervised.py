"""A worker that ``serve`` supervises leaves when serve has gone (ops/supervised.py).

tests/ops/test_serve_fork.py kills a real serve with SIGKILL and watches its worker leave;
these cover the two paths that test does not take on Linux: serve dying before the worker
asked the kernel for the parent-death signal, and the polling fallback of other platforms.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from learncredits.ops import supervised
from tests.conftest import console_script, service_env


@pytest.mark.slow
def test_a_worker_whose_serve_has_already_gone_does_not_start(tmp_path: Path) -> None:
    """The race of PR_SET_PDEATHSIG: a parent that died before the request never signals."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    env = service_env(
        f"sqlite:///{tmp_path / 'worker.sqlite3'}",
        LEARNCREDITS_OPERATOR_TOKEN=secrets.token_urlsafe(24),
        # The worker's parent is this test, not the (exited) process it is told about.
        LEARNCREDITS_SUPERVISOR_PID=str(gone.pid),
    )
    worker = subprocess.Popen(
        [console_script(), "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    assert worker.returncode == 0, output.decode(errors="replace")
    assert f"serve (pid {gone.pid}) has exited; worker not started" in output.decode()


def test_the_fallback_sends_sigterm_once_the_parent_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the kernel cannot be asked, the worker polls its parent's pid and stops itself
    with SIGTERM (its graceful stop) when serve has gone."""
    parents = iter([100, 100, 1])
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(supervised.os, "getppid", lambda: next(parents))
    monkeypatch.setattr(supervised.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    supervised._watch_parent(100, threading.Event(), 0.01)
    assert sent == [(os.getpid(), signal.SIGTERM)]


def test_the_fallback_stops_with_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    stop.set()
    monkeypatch.setattr(supervised.os, "kill", lambda pid, sig: pytest.fail("signalled"))
    supervised._watch_parent(os.getppid() + 1, stop, 0.01)
