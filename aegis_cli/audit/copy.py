"""Moving a trail between stores (SQLite and PostgreSQL, either way): ``aegis audit copy SRC DST``.

Records are copied verbatim (id, hash, canonical body), so the copy's chain and head are the
source's; approval requests keep their ids and states. The destination must be empty; it is
filled in one transaction, so a failed copy leaves nothing behind. A live source may go on
growing: the copy takes every record up to the head it read first. The source is verified before
copying (a broken chain is not moved silently) and the copy after.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aegis_cli.audit.errors import AuditError
from aegis_cli.audit.query import Row
from aegis_cli.audit.trail import is_postgres, open_reader, shown
from aegis_cli.audit.verify import VerifyResult


@dataclass(frozen=True, slots=True)
class CopyResult:
    records: int
    approvals: int
    source: VerifyResult
    copy: VerifyResult

    @property
    def ok(self) -> bool:
        return (self.copy.ok and self.copy.head_id == self.source.head_id
                and self.copy.head_hash == self.source.head_hash)


def copy_trail(src: str | os.PathLike[str], dst: str | os.PathLike[str],
               progress: Callable[[int], None] | None = None) -> CopyResult:
    """Copy the trail and approval queue at ``src`` into the empty store at ``dst``.

    Raises ``AuditError`` if either cannot be used, ``ValueError`` if ``dst`` is not empty or the
    source's chain is broken.
    """
    if os.fspath(src) == os.fspath(dst):
        raise ValueError("source and destination are the same")
    reader = open_reader(src)
    try:
        source = reader.verify()
        if not source.ok:
            raise ValueError(f"{shown(src)}: {source}; not copying a broken chain")
        approvals = reader.approvals()
        counted = _Counter(reader.rows(before_id=source.head_id + 1), progress)
        head = (source.head_id, source.head_hash)
        if is_postgres(dst):
            from aegis_cli.audit.postgres import import_trail

            import_trail(os.fspath(dst), counted, head, approvals)
        else:
            _into_sqlite(os.fspath(dst), counted, head, approvals)
    finally:
        reader.close()
    after = open_reader(dst)
    try:
        copied = after.verify()
    finally:
        after.close()
    return CopyResult(counted.n, len(approvals), source, copied)


class _Counter:
    def __init__(self, rows: Iterable[Row], progress: Callable[[int], None] | None) -> None:
        self.rows, self.progress, self.n = rows, progress, 0

    def __iter__(self) -> Iterator[Row]:
        for row in self.rows:
            self.n += 1
            if self.progress is not None and self.n % 10000 == 0:
                self.progress(10000)
            yield row


def _into_sqlite(path: str, rows: Iterable[Row], head: tuple[int, str], approvals: list[dict[str, Any]]) -> None:
    import sqlite3

    from aegis_cli.audit.store import open_writer

    db = open_writer(path)
    conn = db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            last_id = conn.execute("SELECT last_id FROM audit_head WHERE id = 1").fetchone()[0]
            if last_id or conn.execute("SELECT count(*) FROM approvals").fetchone()[0]:
                raise ValueError(f"{path} already holds an audit trail or approval requests; "
                                 "copy into an empty database")
            conn.executemany("INSERT INTO audit (id, hash, body) VALUES (?, ?, ?)", rows)
            conn.execute("UPDATE audit_head SET last_id = ?, last_hash = ? WHERE id = 1", head)
            if approvals:
                names = list(approvals[0])
                conn.executemany(f"INSERT INTO approvals ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                                 [[req[n] for n in names] for req in approvals])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise AuditError(f"could not copy into {path}: {exc}") from exc
    finally:
        db.close()
