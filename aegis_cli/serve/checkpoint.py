"""WAL checkpoints of the SQLite audit trail, off the path of the decisions ``aegis serve`` answers.

SQLite copies its write-ahead log into the database file (a checkpoint) on the connection that
commits, each time the log passes 1000 pages; with ``synchronous`` normal or full that commit then
also waits for two fsyncs. In ``aegis serve`` that connection is the group-commit writer's, so every
request in the batch, and every request queued behind it, waited too: on a busy disk 0.1-2 s, the
server's p99 under load (and load generators' timeouts).

The server runs them instead on a connection of its own, on its own thread, after commits
(``nudge``), with the writer's ``synchronous`` setting: the same copies and the same fsyncs, so
nothing is less durable, and answers do not wait for them. The log only starts over once a
checkpoint has caught up with the last commit, which under sustained load these rarely do (commits
land during their fsyncs); so the writer keeps its own automatic checkpoint as the backstop that
bounds the log, at ``BACKSTOP_PAGES`` (ten times SQLite's default: a commit waits on fsyncs ten
times less often). It also covers this thread failing, or a reader holding an old snapshot.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

log = logging.getLogger("aegis.serve")

# The writer's own automatic checkpoint: SQLite's default is 1000 pages (4 MB); 10000 (40 MB) is where
# Litestream, which checkpoints the same way, forces one.
BACKSTOP_PAGES = 10000
# Seconds between two checkpoints: under load each copies about as many pages as SQLite's own would
# (1000 and more), and their fsyncs (device flushes) do not crowd a busy disk.
PAUSE = 0.25


class Checkpointer:
    """A thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection when nudged."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.checkpoints = 0  # done, for tests and curiosity
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def attach(cls, writer: Any, path: str, synchronous: str) -> Checkpointer | None:
        """Start one for ``writer``'s SQLite trail at ``path`` and move the writer's automatic
        checkpoint to the backstop size. None (checkpoints stay on the writer) if that cannot be done."""
        checkpointer = cls(path, synchronous)
        try:
            checkpointer.start()
        except (sqlite3.Error, OSError) as exc:
            log.warning("audit checkpoints stay on the writer: cannot open %s for them: %s", path, exc)
            return None

        def backstop(logger: Any) -> bool:
            conn = getattr(getattr(logger, "db", None), "conn", None)
            if not isinstance(conn, sqlite3.Connection):
                return False
            conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            return True

        if not writer.call_sync(backstop):
            checkpointer.close()
            return None
        writer.checkpointer = checkpointer
        return checkpointer

    def start(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")  # the writer's: same fsyncs
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="aegis-audit-checkpoint", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Something was committed (called by the writer thread after each commit)."""
        self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._conn is not None and (self._thread is None or not self._thread.is_alive()):
            self._conn.close()

    def _run(self) -> None:
        assert self._conn is not None
        failed = False
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
                failed = False
            except sqlite3.Error as exc:  # the writer's backstop keeps the log bounded meanwhile
                if not failed:
                    log.warning("audit checkpoint failed (the writer will checkpoint itself): %s", exc)
                failed = True
            if self._stop.wait(PAUSE):
                return
