"""WAL checkpoints of an SQLite audit trail, off the path of the decisions its writer records.

SQLite copies its write-ahead log into the database file (a checkpoint) on the connection that
commits, each time the log passes 1000 pages; with ``synchronous`` normal or full that commit then
also waits for two fsyncs. For a writer that stays open (``aegis serve``'s group-commit writer, the
``wrap`` proxy and relays, the runtime) that commit is a decision someone waits for: a stall of
milliseconds every few hundred records, 0.1-2 s on a busy disk (serve's p99 under load, a
proxied reply's).

So such a writer runs them instead on a connection of its own, on its own thread, after commits
(``nudge``), with the writer's ``synchronous`` setting: the same copies and the same fsyncs, so
nothing is less durable, and decisions do not wait for them. The log only starts over once a
checkpoint has caught up with the last commit, which under sustained load these rarely do (commits
land during their fsyncs); so the writer keeps its own automatic checkpoint as the backstop that
bounds the log, at ``BACKSTOP_PAGES`` (ten times SQLite's default: a commit waits on fsyncs ten
times less often). It also covers this thread failing, or a reader holding an old snapshot. When
writes come in bursts, as an agent's do, the thread catches up between them and the backstop is
never reached.
"""

from __future__ import annotations

import sqlite3
import threading

# The writer's own automatic checkpoint: SQLite's default is 1000 pages (4 MB); 10000 (40 MB) is where
# Litestream, which checkpoints the same way, forces one.
BACKSTOP_PAGES = 10000
# Seconds between two checkpoints: under load each copies about as many pages as SQLite's own would
# (1000 and more), and their fsyncs (device flushes) do not crowd a busy disk.
PAUSE = 0.25


class Checkpointer:
    """A thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection when nudged.

    ``start`` raises (``sqlite3.Error``, ``OSError``) if its connection cannot be opened; the
    writer then keeps checkpointing itself. Failures later are noted in ``failed`` and leave the
    checkpoints to the writer's backstop.
    """

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.checkpoints = 0  # done, for tests and curiosity
        self.failed: Exception | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Checkpointer:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")  # the writer's: same fsyncs
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="aegis-audit-checkpoint", daemon=True)
        self._thread.start()
        return self

    def nudge(self) -> None:
        """Something was committed (called by the writer after each commit)."""
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
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
                self.failed = None
            except sqlite3.Error as exc:  # the writer's backstop keeps the log bounded meanwhile
                self.failed = exc
            if self._stop.wait(PAUSE):
                return
