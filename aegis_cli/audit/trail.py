"""Opening an audit trail by where it lives: an SQLite file (the default) or a PostgreSQL URL.

    log = open_audit(target)      # writing: SQLiteAuditLogger or PostgresAuditLogger
    reader = open_reader(target)  # reading: head, newest, rows, follow, count, stats, verify
    queue = open_queue(target)    # the approval queue in the same store

``target`` is a path, or a URL starting ``postgresql://`` or ``postgres://`` (libpq's ``PG*``
variables and service files fill in what the URL leaves out: ``postgresql://`` alone uses them
all). Every command and server opens its trail through here, so each works on both stores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aegis_cli.audit.query import Filters, Row
from aegis_cli.audit.target import SCHEMES, is_postgres, shown

__all__ = ["SCHEMES", "SQLiteReader", "is_postgres", "open_audit", "open_queue", "open_reader", "shown"]


def open_audit(target: str | os.PathLike[str] = "aegis_audit.db", *, redact: Iterable[str] = (),
               **kwargs: Any) -> Any:
    """Open (creating and migrating if needed) the trail at ``target`` for writing.

    Keyword arguments go to the store's logger (``synchronous=`` is SQLite's, ``pool_size=``
    PostgreSQL's); one that the other store does not take is dropped for it.
    """
    if is_postgres(target):
        from aegis_cli.audit.postgres import PostgresAuditLogger

        kwargs.pop("synchronous", None)
        kwargs.pop("busy_timeout", None)
        return PostgresAuditLogger(str(target), redact=redact, **kwargs)
    from aegis_cli.audit.sqlite import SQLiteAuditLogger

    kwargs.pop("pool_size", None)
    return SQLiteAuditLogger(target, redact=redact, **kwargs)


def open_reader(target: str | os.PathLike[str]) -> Any:
    """Open an existing trail read-only (``SQLiteReader`` or ``PostgresReader``)."""
    if is_postgres(target):
        from aegis_cli.audit.postgres import PostgresReader

        return PostgresReader(str(target))
    return SQLiteReader(target)


def open_queue(target: str | os.PathLike[str], *, redact: Iterable[str] = ()) -> Any:
    """The approval queue kept with the trail at ``target``."""
    from aegis_cli.audit.approvals import ApprovalQueue

    return ApprovalQueue(target, redact=redact)


class SQLiteReader:
    """Reading an SQLite trail: the functions of ``query`` and ``verify`` on one read-only connection."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from aegis_cli.audit.store import open_reader as open_sqlite

        self.path = os.fspath(path)
        self.db = open_sqlite(path)
        self.conn = self.db.conn

    def head(self) -> tuple[int, str]:
        from aegis_cli.audit import query

        return query.head(self.conn)

    def version(self) -> int:
        """Changes whenever another connection commits (``PRAGMA data_version``)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def rows(self, filters: Filters = Filters(), *, after_id: int = 0, before_id: int | None = None,
             limit: int | None = None) -> Iterator[Row]:
        from aegis_cli.audit import query

        it = query.rows(self.conn, filters, after_id=after_id, before_id=before_id)
        if limit is None:
            return it
        return iter([row for _, row in zip(range(limit), it, strict=False)])

    def count(self, filters: Filters = Filters()) -> int:
        from aegis_cli.audit import query

        return query.count(self.conn, filters)

    def newest(self, n: int, filters: Filters = Filters()) -> list[Row]:
        from aegis_cli.audit import query

        return query.newest(self.conn, n, filters)

    def follow(self, filters: Filters = Filters(), *, after_id: int = 0, interval: float = 0.2,
               stop: Callable[[], bool] = lambda: False) -> Iterator[Row]:
        from aegis_cli.audit import query

        return query.follow(self.conn, filters, after_id=after_id, interval=interval, stop=stop)

    def stats(self, filters: Filters = Filters(), *, top: int = 10) -> dict[str, Any]:
        from aegis_cli.audit import query

        return query.stats(self.conn, filters, top=top)

    def verify(self) -> Any:
        from aegis_cli.audit.verify import verify_db

        return verify_db(self.conn)

    def approvals(self) -> list[dict[str, Any]]:
        """Every approval request, as stored, in id order."""
        cur = self.conn.execute("SELECT * FROM approvals ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SQLiteReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
