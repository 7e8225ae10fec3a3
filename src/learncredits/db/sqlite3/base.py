"""Django's SQLite backend, with writers that queue in order instead of polling.

Why: SQLite lets one writer in at a time. A writer that finds the database locked waits in
SQLite's busy handler, which sleeps and retries with growing pauses (up to 100 ms); it is
not woken when the lock is released, and nothing orders the waiters. With several web
processes, a writer could sleep through many commits and come last: measured on two cores,
p99 of a start was five times its p50 and a few requests took over a second, and starts
next to a bulk assign waited seconds.

So every write transaction first takes this process's turn in a first-come-first-served
queue shared by its threads, then an exclusive ``flock`` on ``<database>.writer-lock``
shared by the processes, and only then sends ``BEGIN IMMEDIATE``. ``flock`` blocks in the
kernel and the waiter is woken the moment the holder unlocks, so there is no sleeping and
no polling, and at most one thread per process waits on the file lock. By the time
``BEGIN IMMEDIATE`` runs, no other writer of ours holds SQLite's lock, so the busy handler
is left only for writers outside this queue (another program, or ``sqlite3`` by hand).
A write statement run outside a transaction (autocommit) takes the same turn around the
statement. Readers take nothing: in WAL mode they read a snapshot beside the writer.

The lock file is opened by each process for itself (never inherited across ``fork``), so
``flock`` excludes processes from each other; the kernel drops a dead process's lock.
In-memory databases (the tests' default) have one process and are left as they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections import deque
from typing import Any

from django.db.backends.sqlite3 import base

_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLAC", "CREATE", "DROP", "ALTER")


class WriterQueue:
    """The writers of one database file: first come, first served within this process, then
    the file lock across processes. One per file per process (``queue_for``)."""

    def __init__(self, path: str) -> None:
        self.lock_path = f"{path}.writer-lock"
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._busy = False
        self._fd: int | None = None
        self._fd_pid: int | None = None

    def _file(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._fd_pid != pid:
            # A descriptor inherited across fork shares the parent's lock: open our own.
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_pid = pid
        return self._fd

    def acquire(self) -> None:
        with self._mutex:
            if not self._busy:
                self._busy = True
                turn = None
            else:
                turn = threading.Lock()
                turn.acquire()
                self._waiting.append(turn)
        if turn is not None:
            turn.acquire()  # released by the thread before us, which hands us its turn
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._hand_on()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._hand_on()

    def _hand_on(self) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()  # still busy: the turn passes on
            else:
                self._busy = False


class Checkpointer:
    """Copies the write-ahead log back into the database file from a thread of its own.

    Why: by default the commit that takes the log past 1,000 pages runs the checkpoint
    itself, inside its ``commit()``, so that writer (and everyone queued behind it) waits
    for thousands of page writes and an fsync of the database file. Here writers never
    checkpoint (``wal_autocheckpoint=0``); each process runs a PASSIVE checkpoint every
    ``INTERVAL`` seconds, on its own connection, which never waits for readers or writers
    (processes that find another one checkpointing skip their turn)."""

    INTERVAL = 0.5

    def __init__(self, path: str) -> None:
        self.path = path
        self._pid: int | None = None
        self._mutex = threading.Lock()

    def ensure_running(self) -> None:
        pid = os.getpid()
        with self._mutex:
            if self._pid == pid:
                return
            self._pid = pid  # after fork the parent's thread is gone: start ours
            threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True).start()

    def _run(self) -> None:
        import sqlite3

        db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            while True:
                time.sleep(self.INTERVAL)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:  # pragma: no cover - a daemon thread ends with its process
            db.close()


def checkpoint_mode() -> str:
    """``background`` (the default: see Checkpointer) or ``commit`` (SQLite's own)."""
    return os.environ.get("SQLITE_CHECKPOINT", "background")


_checkpointers: dict[str, Checkpointer] = {}
_queues: dict[str, WriterQueue] = {}
_queues_mutex = threading.Lock()


def queue_for(path: str) -> WriterQueue:
    real = os.path.realpath(path)
    with _queues_mutex:
        if real not in _queues:
            _queues[real] = WriterQueue(real)
        return _queues[real]


def checkpointer_for(path: str) -> Checkpointer:
    real = os.path.realpath(path)
    with _queues_mutex:
        if real not in _checkpointers:
            _checkpointers[real] = Checkpointer(real)
        return _checkpointers[real]


class QueuedCursor(base.SQLiteCursorWrapper):
    """Takes the writer's turn around a write statement sent outside a transaction."""

    writer_queue: WriterQueue | None = None

    def _outside_transaction_write(self, query: str) -> bool:
        return (
            self.writer_queue is not None
            and not self.connection.in_transaction
            and query.lstrip()[:6].upper().startswith(_WRITE_VERBS)
        )

    def execute(self, query: str, params: Any = None) -> Any:
        if not self._outside_transaction_write(query):
            return super().execute(query, params)
        assert self.writer_queue is not None
        self.writer_queue.acquire()
        try:
            return super().execute(query, params)
        finally:
            self.writer_queue.release()

    def executemany(self, query: str, param_list: Any) -> Any:
        if not self._outside_transaction_write(query):
            return super().executemany(query, param_list)
        assert self.writer_queue is not None
        self.writer_queue.acquire()
        try:
            return super().executemany(query, param_list)
        finally:
            self.writer_queue.release()


class DatabaseWrapper(base.DatabaseWrapper):
    # (django-stubs leaves out the private hooks overridden here, hence the ignores.)
    _writer_queue: WriterQueue | None = None
    _holds_turn = False

    def get_new_connection(self, conn_params: Any) -> Any:
        # Decided when connecting: the test runner points NAME at an in-memory database
        # after this wrapper was made.
        name = str(self.settings_dict.get("NAME") or "")
        on_file = bool(name) and not self.is_in_memory_db()
        self._writer_queue = queue_for(name) if on_file else None
        if on_file:
            # SQLite creates the file, not its directory (settings create nothing).
            os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)
        if not on_file:
            return super().get_new_connection(conn_params)
        # Opening runs the init command (journal mode, synchronous), which may need the
        # write lock for a moment, and may meet the last connection of another process
        # checkpointing as it closes: so it takes its turn like any writer.
        assert self._writer_queue is not None
        self._writer_queue.acquire()
        try:
            conn = super().get_new_connection(conn_params)
            if checkpoint_mode() == "background":
                conn.execute("PRAGMA wal_autocheckpoint=0")
        finally:
            self._writer_queue.release()
        if checkpoint_mode() == "background":
            checkpointer_for(name).ensure_running()
        return conn

    def create_cursor(self, name: Any = None) -> Any:
        cursor = self.connection.cursor(factory=QueuedCursor)
        cursor.writer_queue = self._writer_queue
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        if self._writer_queue is None:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
            return
        self._writer_queue.acquire()
        self._holds_turn = True
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
        except BaseException:
            self._give_turn_back()
            raise

    def _give_turn_back(self) -> None:
        if self._holds_turn and self._writer_queue is not None:
            self._holds_turn = False
            self._writer_queue.release()

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        finally:
            # A failed COMMIT leaves the transaction open: the rollback that follows ends it
            # and gives the turn back.
            if self.connection is None or not self.connection.in_transaction:
                self._give_turn_back()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]
        finally:
            self._give_turn_back()

    def _close(self) -> None:
        # The last connection to a file checkpoints and removes the log as it closes,
        # holding the write lock meanwhile: outside a transaction it takes a turn for that.
        queue = None if self._holds_turn else self._writer_queue
        if queue is not None:
            queue.acquire()
        try:
            super()._close()  # type: ignore[misc]
        finally:
            if queue is not None:
                queue.release()
            self._give_turn_back()
