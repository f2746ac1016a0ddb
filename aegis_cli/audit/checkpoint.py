"""WAL checkpoints off the writer's path, for audit trails that stay open (serve, wrap, the runtime).

SQLite copies its write-ahead log back into the database file every ~1000 pages, inside the
commit that crosses the mark (``wal_autocheckpoint``): that commit copies ~4 MB and, at the default
``synchronous = NORMAL``, fsyncs the database file. A long-running writer then answers one call in
a few hundred with a stall of milliseconds (half a second on a busy disk was measured), and that
call is a decision someone is waiting for. So a writer that stays open turns the automatic
checkpoint off and asks this thread, on a connection of its own, to run a PASSIVE checkpoint
instead: it copies only what is committed, never blocks writers, and SQLite's sqlite3 module lets
go of the GIL while it runs. Commits are exactly as durable as before: a checkpoint only moves
committed pages from one file to the other, and whatever is left in the log at a crash is replayed
on the next open, as it always was.

A PASSIVE checkpoint that runs while the writer keeps committing never catches up with the log's
end, and SQLite restarts the log from its beginning only once one has; under sustained writes the
log would grow without bound. So once it holds LOG_BOUND_PAGES, the thread runs a TRUNCATE
checkpoint, which holds writers back while it copies the (few) pages the PASSIVE pass left and
empties the log: one short stall per ~16 MB of log under sustained load, none at all when writes
come in bursts, as an agent's do (the PASSIVE pass catches up between them). It waits at most
RESTART_WAIT for a reader to let go of the log, so writers are never held longer than that.

If the thread cannot run (its connection will not open, a checkpoint errs), the writer goes back to
SQLite's own automatic checkpoints: the log must never grow without bound.
"""

from __future__ import annotations

import sqlite3
import threading

AUTOCHECKPOINT_PAGES = 1000  # SQLite's default, restored if the thread fails
LOG_BOUND_PAGES = 4000  # ~16 MB of log: past this, a TRUNCATE checkpoint (see above)
RESTART_WAIT = 0.2  # seconds a TRUNCATE checkpoint waits for readers (and so holds writers) at most


class Checkpointer:
    """A daemon thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` on ``path`` when poked."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failed: BaseException | None = None
        self.checkpoints = 0  # how many ran (tests, and anyone curious)
        self._wake = threading.Event()
        self._stopping = False
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aegis-audit-checkpoint", daemon=True)
        self._thread.start()
        self._opened.wait()  # so that a connection that will not open is known before the first poke

    def poke(self) -> bool:
        """Ask for a checkpoint; False when the thread is not running (the caller then falls back)."""
        if self.failed is not None or not self._thread.is_alive():
            return False
        self._wake.set()
        return True

    def _run(self) -> None:
        try:
            # PASSIVE never waits; only TRUNCATE does, and that wait holds writers: keep it short.
            conn = sqlite3.connect(self.path, timeout=RESTART_WAIT, isolation_level=None, check_same_thread=False)
        except BaseException as exc:
            self.failed = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                # PASSIVE: copies what no reader still needs; never waits for readers or writers.
                _busy, log_pages, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if log_pages >= LOG_BOUND_PAGES:  # writes never paused long enough for the log to restart
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                self.checkpoints += 1
        except BaseException as exc:  # a checkpoint that errs leaves the log for the writer's fallback
            self.failed = exc
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread and close its connection (before the writer closes its own, so that the
        writer's close, as the last connection, still checkpoints and removes the log)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
