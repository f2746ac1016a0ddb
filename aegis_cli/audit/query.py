"""Reading the audit trail: filters, the newest records, following new ones, summaries.

Rows come back as ``(id, hash, body)``; ``record(row)`` turns one into the exported record (the
body's fields plus ``hash``). Filters on action and decision fields select decision records
only; use ``kind`` to select follow-up events.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aegis_cli.audit.canonical import KINDS, format_ts
from aegis_cli.engine.matching import compile_glob, normalize
from aegis_cli.engine.models import parse_timestamp

Row = tuple[int, str, str]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: _dt.datetime | None = None) -> str:
    """An ISO 8601 time, or a duration ago (``90s``, ``15m``, ``24h``, ``7d``, ``2w``), in ts format.

    Raises ``ValueError`` with a readable message.
    """
    m = _DURATION.match(text)
    if m:
        now = now or _dt.datetime.now(_dt.UTC)
        try:
            return format_ts(now - _dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)]))
        except (OverflowError, ValueError):
            raise ValueError(f"duration too long: {text!r}") from None
    try:
        return format_ts(parse_timestamp(text))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or a duration like 24h: {text!r}") from None


@dataclass(frozen=True, slots=True)
class Filters:
    """Which records to read. ``agent`` and ``type`` are globs (case-insensitive, like policies)."""

    approval: str | None = None
    agent: str | None = None
    type: str | None = None
    kind: str | None = None
    since: str | None = None  # ts format (see parse_time); inclusive
    until: str | None = None  # exclusive
    decision_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown record kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.approval is not None and self.approval not in ("auto", "approve", "block"):
            raise ValueError(f"unknown approval {self.approval!r}; expected auto, approve or block")

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause (possibly empty, starting with ' AND ') and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", self.kind), ("approval", self.approval), ("decision_id", self.decision_id)):
            if value is not None:
                parts.append(f"{column} = ?")
                params.append(value)
        for column, pattern in (("agent", self.agent), ("type", self.type)):
            if pattern is not None:
                parts.append(f"aegis_glob(?, {column})")
                params.append(pattern)
        if self.since is not None:
            parts.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            parts.append("ts < ?")
            params.append(self.until)
        return "".join(f" AND {p}" for p in parts), params


def _glob_function() -> Callable[[str, str | None], bool]:
    cache: dict[str, Callable[[str], bool]] = {}

    def aegis_glob(pattern: str, value: str | None) -> bool:
        if value is None:
            return False
        test = cache.get(pattern)
        if test is None:
            test = cache[pattern] = compile_glob(pattern).test
        return test(normalize(value))

    return aegis_glob


def prepare(conn: sqlite3.Connection) -> None:
    """Register the SQL functions the filters use (once per connection)."""
    conn.create_function("aegis_glob", 2, _glob_function(), deterministic=True)


def rows(conn: sqlite3.Connection, filters: Filters = Filters(), *, after_id: int = 0,
         before_id: int | None = None) -> Iterator[Row]:
    """Matching rows in id order, streamed (one statement: a consistent snapshot)."""
    where, params = filters.sql()
    sql = f"SELECT id, hash, body FROM audit WHERE id > ?{where}"
    args: list[Any] = [after_id, *params]
    if before_id is not None:
        sql += " AND id < ?"
        args.append(before_id)
    prepare(conn)
    return iter(conn.execute(sql + " ORDER BY id", args))


def count(conn: sqlite3.Connection, filters: Filters = Filters()) -> int:
    where, params = filters.sql()
    prepare(conn)
    return int(conn.execute(f"SELECT count(*) FROM audit WHERE 1{where}", params).fetchone()[0])


def newest(conn: sqlite3.Connection, n: int, filters: Filters = Filters()) -> list[Row]:
    """The newest ``n`` matching rows, oldest first."""
    where, params = filters.sql()
    prepare(conn)
    out = conn.execute(f"SELECT id, hash, body FROM audit WHERE 1{where} ORDER BY id DESC LIMIT ?",
                       [*params, max(n, 0)]).fetchall()
    out.reverse()
    return out


def follow(conn: sqlite3.Connection, filters: Filters = Filters(), *, after_id: int = 0,
           interval: float = 0.2, stop: Callable[[], bool] = lambda: False) -> Iterator[Row]:
    """Rows written after ``after_id``, as other processes commit them, until ``stop()``.

    Polls (WAL readers see each commit as it lands); ``PRAGMA data_version`` makes an idle poll
    cost one page read.
    """
    seen_version = None
    while not stop():
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != seen_version:
            seen_version = version
            for row in rows(conn, filters, after_id=after_id):
                after_id = row[0]
                yield row
        time.sleep(interval)


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The id and hash of the last record (0 and the genesis hash when there is none)."""
    last_id, last_hash = conn.execute("SELECT last_id, last_hash FROM audit_head WHERE id = 1").fetchone()
    return int(last_id), str(last_hash)


def record(row: Row) -> dict[str, Any]:
    """The exported record: the body's fields plus ``hash``."""
    out = json.loads(row[2])
    out["hash"] = row[1]
    return out


def record_line(row: Row) -> str:
    """The exported record as one JSON line, without re-serialising the body."""
    return f'{row[2][:-1]},"hash":"{row[1]}"}}'


def stats(conn: sqlite3.Connection, filters: Filters = Filters(), *, top: int = 10) -> dict[str, Any]:
    """Counts of decisions by approval, risk, rule and agent, and of follow-up outcomes."""
    where, params = filters.sql()
    prepare(conn)

    def grouped(expr: str, kind: str, limit: int | None = None, none: str = "(none)") -> dict[str, int]:
        sql = (f"SELECT {expr} AS k, count(*) AS n FROM audit WHERE kind = ?{where} "
               f"GROUP BY k ORDER BY n DESC, k")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return {(none if k is None or k == "" else str(k)): n for k, n in conn.execute(sql, [kind, *params])}

    totals = conn.execute(f"SELECT min(ts), max(ts), count(*) FROM audit WHERE 1{where}", params).fetchone()
    by_kind = {k: n for k, n in conn.execute(
        f"SELECT kind, count(*) FROM audit WHERE 1{where} GROUP BY kind ORDER BY kind", params)}
    return stats_report(totals, by_kind, grouped, "json_extract(body, '$.data.status')", top)


def stats_report(totals: tuple[Any, Any, int], by_kind: dict[str, int],
                 grouped: Callable[..., dict[str, int]], status: str, top: int) -> dict[str, Any]:
    """The shape ``aegis audit stats`` prints, built the same way for SQLite and PostgreSQL.

    ``grouped(column, kind, limit=None, none="(none)")`` counts one column's values among the records
    of one kind; ``status`` is how the store names an outcome's status (a JSON path in SQLite, a
    column in PostgreSQL).
    """
    first, last, total = totals
    return {
        "records": total,
        "first": first,
        "last": last,
        "by_kind": by_kind,
        "decisions": {
            "by_approval": grouped("approval", "decision"),
            "by_risk_level": grouped("risk_level", "decision"),
            "by_rule": grouped("rule", "decision", top, "(defaults)"),
            "by_agent": grouped("agent", "decision", top),
        },
        "approvals": grouped(status, "approval"),
        "executions": grouped(status, "execution"),
    }
