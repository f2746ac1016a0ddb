"""Checking the hash chain, in the database or in an export.

A record verifies when its hash is the sha256 of its canonical body, its ``prev_hash`` is the
previous record's hash (the genesis hash for record 1) and its id follows the previous id. An
edited field breaks the first rule; a deleted, inserted or moved record breaks the second or
third at the record after the change; removing records from the end breaks the head kept in
``audit_head``. What a chain cannot catch alone is someone rewriting every hash after their
edit: anchor the head (``aegis audit verify`` prints it) somewhere the writer cannot reach.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from aegis_cli.audit.canonical import GENESIS, body_of, link_of


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int  # how many verified before the first problem (all of them when ok)
    head_id: int
    head_hash: str
    bad_id: int | None = None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.ok:
            return f"chain intact: {self.records:,} records, head #{self.head_id} {self.head_hash}"
        return f"chain broken at record #{self.bad_id}: {self.problem}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_db(conn: sqlite3.Connection) -> VerifyResult:
    """Walk the whole chain in the database, streaming (constant memory)."""
    return verify_chain(conn.execute("SELECT id, hash, body FROM audit ORDER BY id"),
                        lambda: conn.execute("SELECT last_id, last_hash FROM audit_head WHERE id = 1").fetchone())


def verify_chain(rows: Iterable[tuple[int, str, str]], head: Callable[[], tuple[int, str]]) -> VerifyResult:
    """Walk ``(id, hash, body)`` rows in id order, then compare the last with ``head()``.

    Any store's rows: SQLite's and PostgreSQL's hold the same records, so they verify alike.
    """
    walk = ChainWalk()
    for rid, stored, body in rows:
        if not walk.step(rid, stored, body):
            return walk.result()
    return walk.finish(head())


class ChainWalk:
    """The chain check one row at a time, for readers that do more with each row (``aegis report``).

    ``step`` returns False at the first row that does not verify (and ignores every row after it);
    ``finish(head)`` compares the end of the chain with the stored head.
    """

    __slots__ = ("bad", "expected_id", "expected_prev", "n")

    def __init__(self) -> None:
        self.expected_prev, self.expected_id, self.n = GENESIS, 1, 0
        self.bad: VerifyResult | None = None

    def step(self, rid: int, stored: str, body: str) -> bool:
        if self.bad is not None:
            return False
        # No JSON parsing: the link sits at a fixed place at the body's end (canonical.link_of), and
        # the body's own id needs no check, since ids must run 1, 2, 3 ... and each record's
        # prev_hash pins the one before it.
        problem = ""
        expected_id = self.expected_id
        prev = link_of(body)
        if rid != expected_id:
            problem = (f"expected record #{expected_id} next; records are missing or were renumbered"
                       if rid > expected_id else "ids out of order")
        elif prev is None:
            problem = "it is not a record as aegis writes them (the record was edited)"
        elif prev != self.expected_prev:
            problem = (f"its prev_hash is not the hash of record #{rid - 1} "
                       "(a record before it was deleted, inserted, replaced or moved)" if rid > 1 else
                       "the first record does not start from the genesis hash")
        elif _sha(body) != stored:
            problem = "its hash does not match its contents (the record was edited)"
        if problem:
            self.bad = VerifyResult(False, self.n, expected_id - 1, self.expected_prev, rid, problem)
            return False
        self.expected_prev, self.expected_id, self.n = stored, rid + 1, self.n + 1
        return True

    def result(self) -> VerifyResult:
        """The first problem found, or (before ``finish``) the chain so far as intact."""
        if self.bad is not None:
            return self.bad
        return VerifyResult(True, self.n, self.expected_id - 1, self.expected_prev)

    def finish(self, head: tuple[int, str]) -> VerifyResult:
        if self.bad is not None:
            return self.bad
        last_id = self.expected_id - 1
        head_id, head_hash = head
        if head_id != last_id or head_hash != self.expected_prev:
            return VerifyResult(False, self.n, last_id, self.expected_prev,
                                last_id + 1 if head_id > last_id else head_id,
                                f"the chain ends at record #{last_id} but its head says #{head_id} "
                                "(records were removed from, or added to, the end)")
        return VerifyResult(True, self.n, last_id, self.expected_prev)


def verify_records(records: Iterable[dict[str, Any]], prev_hash: str | None = GENESIS) -> VerifyResult:
    """Verify exported records (dicts with ``hash``), in order.

    ``prev_hash=None`` accepts whatever the first record links to: use it for a partial export
    (``--since``), which can only show that its records are unbroken among themselves.
    """
    expected_prev, last_id, n = prev_hash, None, 0
    for rec in records:
        rid = rec.get("id")
        if last_id is not None and rid != last_id + 1:
            return VerifyResult(False, n, last_id, expected_prev or "", rid,
                                f"expected record #{last_id + 1} next; records are missing or out of order")
        if expected_prev is not None and rec.get("prev_hash") != expected_prev:
            return VerifyResult(False, n, last_id or 0, expected_prev, rid,
                                "its prev_hash is not the hash of the record before it")
        if _sha(body_of(rec)) != rec.get("hash"):
            return VerifyResult(False, n, last_id or 0, expected_prev or "", rid,
                                "its hash does not match its contents (the record was edited)")
        expected_prev, last_id, n = rec["hash"], rid, n + 1
    return VerifyResult(True, n, last_id or 0, expected_prev or GENESIS)


def read_export(path: str) -> Iterable[dict[str, Any]]:
    """Records from a JSONL or JSON-array export (streams JSONL; a JSON array is read whole)."""
    with open(path, encoding="utf-8") as f:
        first = f.read(1)
        while first and first.isspace():
            first = f.read(1)
        if first == "[":
            f.seek(0)
            yield from json.load(f)
            return
        f.seek(0)
        for line in f:
            if line.strip():
                yield json.loads(line)
