"""Opening the audit database and appending to its chain.

Every write runs inside ``BEGIN IMMEDIATE``: the write lock is taken before the chain's head is
read, so writers in several processes queue on SQLite's lock (``busy_timeout``) and each extends
the head the previous one committed; the chain never forks. WAL mode lets readers (``tail-audit
-f``, export) run alongside writers.

Durability: every ``record_*`` call has committed to the WAL file before it returns, so a decision
that was reported survives SIGKILL of the writer. ``$AEGIS_AUDIT_SYNC`` (or ``synchronous=``)
chooses whether each commit is also fsynced: ``normal`` (the default) does not, so an OS crash or
power cut can lose the last commits (never corrupt the chain); ``full`` does, at roughly 10x the
write latency on ordinary disks.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence

from aegis_cli.audit.canonical import Pending, record_hash, utc_now
from aegis_cli.audit.errors import AuditError, NotAnAuditDatabase
from aegis_cli.audit.migrations import check_not_newer, migrate

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up

if TYPE_CHECKING:  # sqlite-utils loads on first open: the hooks' append path runs without it
    from sqlite_utils import Database

DEFAULT_BUSY_TIMEOUT = 30.0
SYNC_MODES = ("normal", "full", "extra")
SYNC_ENV = "AEGIS_AUDIT_SYNC"


def default_sync() -> str:
    return os.environ.get(SYNC_ENV, "normal").strip().lower() or "normal"


def open_writer(path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                synchronous: str | None = None) -> Database:
    """Open (creating and migrating as needed) the audit database for writing."""
    if synchronous is None:
        synchronous = default_sync()
    if synchronous.lower() not in SYNC_MODES:
        raise AuditError(f"audit synchronous mode (AEGIS_AUDIT_SYNC) must be one of {', '.join(SYNC_MODES)}, "
                         f"not {synchronous!r}")
    name = os.fspath(path)
    if name != ":memory:" and os.path.isdir(name):
        raise NotAnAuditDatabase(f"{name} is a directory, not an audit database")

    def setup(conn: sqlite3.Connection, db: Database) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        _check_ours(db, name, allow_empty=True)
        migrate(db, name)

    return _connect(name, name, busy_timeout, setup)


def _open_error(name: str, exc: sqlite3.DatabaseError) -> AuditError:
    if "not a database" in str(exc):
        return NotAnAuditDatabase(f"{name} is not an SQLite database ({exc})")
    return AuditError(f"cannot open audit database {name}: {exc}")


def open_reader(path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Database:
    """Open an existing audit database read-only: nothing is created, migrated or changed."""
    from pathlib import Path  # not at the top: the hooks' append path imports this module

    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise NotAnAuditDatabase(f"no audit database at {name}")
    if p.is_dir():
        raise NotAnAuditDatabase(f"{name} is a directory, not an audit database")
    uri = p.resolve().as_uri() + "?mode=ro"

    def setup(conn: sqlite3.Connection, db: Database) -> None:
        _check_ours(db, name, allow_empty=False)
        check_not_newer(conn, name)

    return _connect(name, uri, busy_timeout, setup, uri=True)


def _connect(name: str, target: str, busy_timeout: float, setup: Callable[[sqlite3.Connection, Database], None],
             *, uri: bool = False) -> Database:
    """Connect, then ``setup``; any failure closes the connection and is reported as an AuditError."""
    Database = _sqlite_utils_database()

    try:
        conn = sqlite3.connect(target, uri=uri, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open audit database {name}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        db = Database(conn, execute_plugins=False)
        setup(conn, db)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _open_error(name, exc) from None
    except BaseException:
        conn.close()
        raise
    return db


def _sqlite_utils_database() -> type[Database]:
    """``sqlite_utils.Database``, imported without pandas and numpy.

    sqlite-utils imports both whenever they are installed (common beside agent frameworks), only to
    map their types on insert, which aegis never does: that cost every aegis process 150 ms to
    seconds of start-up, and numpy's OpenBLAS threads kept waking inside the model-API proxy. So
    the two are hidden while sqlite-utils loads, unless something already imported them (then
    sqlite-utils gets the real ones, as before).
    """
    import sys

    if "sqlite_utils.db" not in sys.modules:
        hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
        try:
            import sqlite_utils.db  # noqa: F401
        finally:
            for name in hidden:
                if sys.modules.get(name, False) is None:
                    del sys.modules[name]
    from sqlite_utils import Database

    return Database


def _check_ours(db: Database, name: str, *, allow_empty: bool) -> None:
    tables = set(db.table_names())
    if "audit" in tables and "audit_head" in tables:
        return
    if allow_empty and "audit" not in tables:
        return  # a new (or foreign) database: the migrations add aegis's tables
    raise NotAnAuditDatabase(f"{name} is not an aegis audit database (it has no audit trail)")


_HEAD = "SELECT last_id, last_hash, (SELECT max(id) FROM audit) FROM audit_head WHERE id = 1"
_INSERT = "INSERT INTO audit (id, hash, body) VALUES (?, ?, ?)"


def append(conn: sqlite3.Connection, entries: Sequence[Pending]) -> list[int]:
    """Chain and insert ``entries``; the caller holds ``BEGIN IMMEDIATE`` and commits."""
    if not entries:
        return []
    # The head and the last record's id in one statement (each statement is a round through the
    # sqlite3 module; max(id) is a seek to the table's last row).
    last_id, prev, actual = conn.execute(_HEAD).fetchone()
    actual = actual or 0
    if actual != last_id:
        # Fail closed: extending a chain whose head was tampered with would bless the damage.
        raise AuditError(f"the audit chain's head (#{last_id}) does not match its last record (#{actual}); "
                         "run 'aegis audit verify'")
    first = last_id + 1
    rows = []
    for e in entries:
        last_id += 1
        # utc_now per record, inside the lock, so timestamps follow the chain order across processes
        body = e.body(last_id, prev, utc_now())
        prev = record_hash(body)
        rows.append((last_id, prev, body))
    if len(rows) == 1:  # most writes hold one record: execute costs less than executemany's iteration
        conn.execute(_INSERT, rows[0])
    else:
        conn.executemany(_INSERT, rows)
    conn.execute("UPDATE audit_head SET last_id = ?, last_hash = ? WHERE id = 1", (last_id, prev))
    return list(range(first, last_id + 1))


def write(conn: sqlite3.Connection, entries: Sequence[Pending]) -> list[int]:
    """Append ``entries`` in one immediate transaction and commit; errors become AuditError."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = append(conn, entries)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise AuditError(f"could not write to the audit trail: {exc}") from exc
    return ids
