"""``learncredits serve``: the web app and API under gunicorn, plus the background worker.

The worker runs as a child process supervised by this command (restarted if it dies)
rather than as a thread inside gunicorn: gunicorn forks its web workers, and forking a
process that runs a thread holding a lock (a database connection, logging) can deadlock
the child. One command still starts everything; ``--no-worker`` leaves the worker out.

Stopping (Ctrl+C, SIGTERM): the worker child runs in a session of its own, so a terminal's
Ctrl+C reaches only this command, which stops the worker itself, and no "restarting" or
interrupted-import traceback shows up. Should this command die without stopping it (SIGKILL,
the OOM killer), the worker notices and leaves by itself (ops/supervised.py). A web process
leaves with ``os._exit`` once gunicorn has finished its requests and Django's connections are
closed: the interpreter's own shutdown would otherwise collect every object of the app
(seconds on a busy machine, which outlasted gunicorn's graceful timeout and got the
processes SIGKILLed).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from gunicorn.app.base import BaseApplication

from learncredits.ops.listen import listen_url
from learncredits.ops.supervised import supervisor_environ


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from learncredits.wsgi import application

        return application


def _leave_at_once(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook: runs in the exiting web process, after its requests,
    while its SystemExit propagates; keeps that exit status."""
    from django.db import connections

    leaving = sys.exc_info()[1]
    code = leaving.code if isinstance(leaving, SystemExit) else 1 if leaving else 0
    try:
        connections.close_all()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


class _WorkerSupervisor:
    """Keeps one ``learncredits worker`` child running until stopped."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="worker-supervisor", daemon=True).start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.process = subprocess.Popen(
                [sys.executable, "-m", "learncredits.cli", "worker"],
                # Tells the worker to leave when this process dies, however it dies. This
                # thread outlives every worker it starts, as the kernel's parent-death signal
                # (Linux) comes when the thread that started the child ends.
                env=supervisor_environ(),
                start_new_session=True,  # a terminal's Ctrl+C is for serve, which stops it
            )
            code = self.process.wait()
            if not self.stopping.wait(2):
                sys.stderr.write(
                    f"learncredits: background worker exited (status {code}); restarting\n"
                )

    def stop(self) -> None:
        self.stopping.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                sys.stderr.write("learncredits: background worker did not stop; killed\n")
                self.process.kill()


def _port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port, tried without SO_REUSEPORT.

    With ``reuse_port`` a second ``serve`` on a port already served would bind too and
    quietly share its connections; a plain bind fails on a port that is taken, with or
    without SO_REUSEPORT on the other socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gunicorn's own sockets: connections of a previous run in TIME_WAIT don't count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


class Command(BaseCommand):
    help = "Serve the web app and API with gunicorn, and run the background worker."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
        parser.add_argument("--threads", type=int, default=4, help="threads per web worker")
        parser.add_argument("--no-worker", action="store_true", help="do not run the worker")
        parser.add_argument("--timeout", type=int, default=30)

    def handle(self, *args: Any, **options: Any) -> None:
        if not _port_is_free(options["host"], options["port"]):
            raise CommandError(f"{options['host']}:{options['port']} is already in use")
        if not os.environ.get("LEARNCREDITS_BASE_URL"):
            # Before the web processes fork and the worker starts: both send links.
            base_url = listen_url(options["host"], options["port"])
            os.environ["LEARNCREDITS_BASE_URL"] = base_url
            settings.LEARNCREDITS_BASE_URL = base_url
        supervisor = None if options["no_worker"] else _WorkerSupervisor()
        if supervisor:
            supervisor.start()
        self.stdout.write(
            f"learncredits: serving {settings.LEARNCREDITS_BASE_URL}/ "
            f"({options['workers']} workers"
            f"{'' if supervisor else ', no background worker'})"
        )
        started = time.monotonic()
        # gunicorn forks its web workers inside run(), and a worker leaves run() by raising
        # SystemExit, so the finally below also runs in every exiting web worker. Only the
        # process that started the supervisor may stop it: a recycled or killed web worker
        # must not take the background worker down with it.
        arbiter_pid = os.getpid()
        try:
            _Gunicorn(
                {
                    "bind": f"{options['host']}:{options['port']}",
                    "workers": options["workers"],
                    "threads": options["threads"],
                    "worker_class": "gthread",
                    "timeout": options["timeout"],
                    "graceful_timeout": 10,
                    "worker_exit": _leave_at_once,
                    "accesslog": "-" if os.environ.get("LEARNCREDITS_ACCESS_LOG") else None,
                    "errorlog": "-",
                    "loglevel": "warning",
                    "limit_request_line": 8190,
                    # Each web process listens on its own socket (SO_REUSEPORT), so the
                    # kernel spreads new connections over them. On one shared socket the
                    # first process to wake accepted them: 32 keep-alive clients all landed
                    # on one process about one run in five, halving throughput with the
                    # other process idle (docs/benchmarks.md). The price: a process that
                    # exits drops the connections still queued on its own socket.
                    "reuse_port": True,
                }
            ).run()
        finally:
            if os.getpid() == arbiter_pid:
                if supervisor:
                    supervisor.stop()
                self.stdout.write(
                    f"learncredits: stopped after {time.monotonic() - started:.0f}s of service"
                )
                # Nothing is left to free but memory the process gives back anyway: spare
                # the interpreter's final collection of every object (seconds when busy).
                gc.freeze()
