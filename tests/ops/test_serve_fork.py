"""``learncredits serve`` is fork-safe: a web worker's exit touches nothing but itself.

gunicorn forks the web workers out of the process that also supervises the background
worker. Cleanup written for that process once ran in every exiting web worker too, so a
killed, timed-out or recycled web worker terminated the background worker. These tests
start the real console script and watch the real process tree through /proc.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import HOST, console_script, free_port, migrate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc"),
]


def _children(pid: int) -> dict[int, list[str]]:
    """Live (not zombie) children of ``pid`` with their command lines."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = [part.decode() for part in cmdline if part]
    return found


@dataclass
class Tree:
    """The serve process and, among its children, the web workers and the background one."""

    arbiter: int
    web: set[int]
    background: set[int]


def _tree(arbiter: int) -> Tree:
    web, background = set(), set()
    for pid, cmdline in _children(arbiter).items():
        if cmdline[-1:] == ["worker"] and "learncredits.cli" in cmdline:
            background.add(pid)
        else:
            web.add(pid)
    return Tree(arbiter, web, background)


def _wait_for(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DATABASE_URL",
            "LEARNCREDITS_TEST_DB",
            "DJANGO_SETTINGS_MODULE",
            "LEARNCREDITS_BASE_URL",
        }
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        LEARNCREDITS_OPERATOR_TOKEN=secrets.token_urlsafe(24),
    )
    migrate(env, tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [console_script(), "serve", "--host", HOST, "--port", str(port), "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def answers() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            except OSError:
                return False

        _wait_for("the server to answer", answers, 120)
        _wait_for(
            "two web workers and the background worker",
            lambda: (lambda t: len(t.web) == 2 and len(t.background) == 1)(_tree(process.pid)),
        )
        yield Served(process, port, log)
    finally:
        if process.poll() is None:
            # The background worker leads a session of its own (so that a terminal's Ctrl+C
            # reaches only serve), so killing serve's group alone would leave it running.
            for worker in _tree(process.pid).background:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker, signal.SIGKILL)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def test_killing_a_web_worker_leaves_the_background_worker_and_the_other_web_worker_alone(
    served: Served,
) -> None:
    before = _tree(served.process.pid)
    victim, survivor = sorted(before.web)
    (background,) = before.background

    os.kill(victim, signal.SIGTERM)
    _wait_for(
        "gunicorn to replace the web worker",
        lambda: (lambda t: victim not in t.web and len(t.web) == 2)(_tree(served.process.pid)),
    )
    # The exiting worker has run all its cleanup by the time gunicorn replaced it. Watch a
    # little longer than the supervisor's 2 s restart pause for a terminated background
    # worker to be reaped or replaced.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        after = _tree(served.process.pid)
        assert after.background == {background}, served.log.read_text()[-3000:]
        time.sleep(0.2)

    after = _tree(served.process.pid)
    assert survivor in after.web, "the other web worker was restarted"
    assert served.process.poll() is None
    assert "background worker exited" not in served.log.read_text()

    conn = http.client.HTTPConnection(HOST, served.port, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200


def test_stopping_serve_still_stops_the_background_worker(served: Served) -> None:
    (background,) = _tree(served.process.pid).background
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(60)
    assert "stopped after" in served.log.read_text()
    _wait_for("the background worker to exit", lambda: not _alive(background))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


CRASH_WORDS = ("Traceback", "SIGKILL", "restarting", "KeyboardInterrupt", "out of memory")


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_serve_is_clean_and_takes_every_process_down(served: Served, how: str) -> None:
    """Ctrl+C in a terminal signals the whole foreground process group; a supervisor sends
    SIGTERM to serve alone. Either way: one line saying it stopped, nothing in the log that
    reads like a crash, exit status 0, and no process of the tree left behind."""
    tree = _tree(served.process.pid)
    began = time.monotonic()
    if how == "ctrl-c":
        os.killpg(served.process.pid, signal.SIGINT)
    else:
        served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(60) == 0
    print(f"serve stopped {time.monotonic() - began:.1f}s after {how}")
    log = served.log.read_text()
    assert log.count("stopped after") == 1, log[-3000:]
    assert not [word for word in CRASH_WORDS if word in log], log[-3000:]
    for pid in tree.web | tree.background:
        _wait_for(f"process {pid} to exit", lambda pid=pid: not _alive(pid))


def test_links_default_to_the_address_serve_listens_on(served: Served) -> None:
    """Without LEARNCREDITS_BASE_URL, the worker (which sends the emails) is told the
    address serve listens on, and serve says it."""
    (background,) = _tree(served.process.pid).background
    environ = Path(f"/proc/{background}/environ").read_bytes().split(b"\0")
    expected = f"LEARNCREDITS_BASE_URL=http://{HOST}:{served.port}".encode()
    assert expected in environ
    assert f"serving http://{HOST}:{served.port}/" in served.log.read_text()


def test_killing_serve_outright_takes_the_background_worker_down(served: Served) -> None:
    """The OOM killer (or ``kill -9``) gives serve no chance to stop its worker, which leads
    a session of its own: the worker must notice that its parent died and leave by itself."""
    tree = _tree(served.process.pid)
    (background,) = tree.background
    try:
        os.kill(served.process.pid, signal.SIGKILL)  # serve alone, not its group or session
        served.process.wait(30)
        _wait_for("the orphaned background worker to exit", lambda: not _alive(background), 15)
    finally:
        # Whatever is left (the worker, without the fix; web workers that have not yet
        # noticed gunicorn's arbiter is gone) must not outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(background, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(served.process.pid, signal.SIGKILL)
