"""The hooks' append path: the standard library's ``sqlite3`` on an existing, current audit database.

``SQLiteAuditLogger`` opens through sqlite-utils (~50 ms to import) because it may have to create
and migrate the schema. A hook appends to a database that almost always exists already, so this
opens it with ``sqlite3`` alone, checks that it is an aegis trail at the schema version this aegis
writes, and appends with the very functions the normal writer uses (``decision_entry``,
``event_entry``, ``store.write``): the same bytes, the same hashes, the same chain. Anything else (a
new file, an older schema to migrate, a foreign or newer database) goes to ``SQLiteAuditLogger``,
which creates, migrates or refuses exactly as it always does.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence

from aegis_cli.audit.migrations import SCHEMA_VERSION
from aegis_cli.audit.redact import Redactor
from aegis_cli.audit.sqlite import decision_entry, event_entry
from aegis_cli.audit.store import DEFAULT_BUSY_TIMEOUT, SYNC_MODES, default_sync, write

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any


class FastSQLiteLogger:
    """``SQLiteAuditLogger``'s append methods on a plain ``sqlite3`` connection (one process, one call)."""

    def __init__(self, conn: sqlite3.Connection, path: str, redact: Iterable[str] = ()) -> None:
        self.conn = conn
        self.path = path
        self.redactor = Redactor(redact)

    def record_decision(self, action: Any, decision: Any, source: Mapping[str, Any] | None = None,
                        extra: Mapping[str, Any] | None = None) -> int:
        return write(self.conn, [decision_entry(action, decision, source, extra, self.redactor)])[0]

    def record_decisions(self, items: Iterable[Sequence[Any]]) -> list[int]:
        return write(self.conn, [decision_entry(*item[:4], redactor=self.redactor) for item in items])

    def record_event(self, kind: str, decision_id: int | None, data: Mapping[str, Any] | None) -> int:
        return write(self.conn, [event_entry(kind, decision_id, data)])[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> FastSQLiteLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_fast(path: str, redact: Iterable[str] = ()) -> FastSQLiteLogger | None:
    """The fast logger on ``path``, or None when the normal writer must open it (see the module doc)."""
    synchronous = default_sync()
    if synchronous not in SYNC_MODES or not os.path.isfile(path):
        return None  # the normal writer creates it, or says what is wrong with it
    try:
        conn = sqlite3.connect(path, timeout=DEFAULT_BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(DEFAULT_BUSY_TIMEOUT * 1000)}")
        # The pragmas the normal writer sets (journal_mode is a property of the file: WAL stays on).
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            raise sqlite3.DatabaseError("not in WAL mode")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError("schema version differs")
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('audit', 'audit_head')")}
        if tables != {"audit", "audit_head"}:
            raise sqlite3.DatabaseError("not an aegis audit database")
    except sqlite3.Error:
        conn.close()
        return None
    return FastSQLiteLogger(conn, path, redact)


def open_logger(target: str, redact: Iterable[str] = ()) -> Any:
    """An audit logger for ``target``: the fast one when it can be, else ``audit.trail.open_audit``."""
    from aegis_cli.audit.target import is_postgres

    if not is_postgres(target):
        fast = open_fast(target, redact)
        if fast is not None:
            return fast
    from aegis_cli.audit.trail import open_audit

    return open_audit(target, redact=redact)


class FastTrail:
    """The hook command's trail: ``common.LoggerTrail`` with the fast SQLite opener."""

    def __init__(self, target: str) -> None:
        self.target = target

    def write(self, record: Any) -> None:
        from aegis_cli.hooks.common import Decided, apply

        with open_logger(self.target, record.redact if isinstance(record, Decided) else ()) as log:
            apply(log, record)
