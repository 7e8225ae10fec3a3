"""A ``learncredits worker`` that ``serve`` supervises leaves when serve dies, however it dies.

serve starts its worker in a session of its own (so that a terminal's Ctrl+C reaches only
serve, which then stops the worker in order), so nothing else would stop the worker when
serve is killed outright (SIGKILL, the OOM killer): it would run on as an orphan. serve tells
the worker its own pid in ``LEARNCREDITS_SUPERVISOR_PID``; the worker then

- on Linux, asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and then
  checks that the parent is still the one it was told, since serve may have died before the
  request was made (the kernel would then never send the signal);
- elsewhere (or when the request fails), checks ``os.getppid()`` every poll interval and
  sends itself SIGTERM when it changes.

Either way the worker gets SIGTERM, which it handles as it always has: it finishes the task
it is running, then leaves. The request is made by the worker itself rather than in a
``preexec_fn`` (not safe in serve, which runs threads) and survives nothing but an exec, so
it is made again by every worker process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

logger = logging.getLogger(__name__)

SUPERVISOR_PID_ENV = "LEARNCREDITS_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def supervisor_environ() -> dict[str, str]:
    """The environment for a worker child that this process supervises."""
    return {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())}


def _signal_on_parent_death(signum: int) -> bool:
    """Ask the Linux kernel for ``signum`` when this process's parent dies; whether it agreed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result: int = libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    if result != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    return result == 0


def _watch_parent(parent: int, stop: threading.Event, every: float) -> None:
    """Send this process SIGTERM once its parent is no longer ``parent``."""
    while not stop.wait(every):
        if os.getppid() != parent:
            logger.warning("serve (pid %d) has exited: stopping the worker", parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def leave_with_supervisor(stop: threading.Event, every: float) -> None:
    """If serve supervises this worker, make sure the worker leaves when serve does.

    Call it first thing, before any work: it exits at once if serve has already gone. The
    fallback watcher runs until ``stop`` is set."""
    told = os.environ.get(SUPERVISOR_PID_ENV, "")
    if not told.isdigit():
        return
    parent = int(told)
    # The worker's own children that run a worker (Django's autoreloader, with DEBUG=true)
    # are supervised by this process the same way.
    os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
    asked = _signal_on_parent_death(signal.SIGTERM)
    if os.getppid() != parent:
        # serve died before the kernel was asked: no signal will come.
        sys.stderr.write(f"learncredits: serve (pid {parent}) has exited; worker not started\n")
        raise SystemExit(0)
    if not asked:
        threading.Thread(
            target=_watch_parent,
            args=(parent, stop, max(every, 0.1)),
            name="parent-watch",
            daemon=True,
        ).start()
