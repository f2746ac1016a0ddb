"""The SQLite audit sink: hash-chained, durable, safe with many writers (see store.py)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence

from aegis_cli.audit.canonical import Pending, Raw, canonical, pending
from aegis_cli.audit.redact import Redactor
from aegis_cli.audit.store import DEFAULT_BUSY_TIMEOUT, default_sync, open_writer, write
from aegis_cli.engine.models import Action, Decision

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "aegis_audit.db"
# A writer that has recorded this many records is one that stays open (serve, wrap, the runtime):
# its WAL checkpoints move to a thread of their own (audit/checkpoint.py, imported only then: the
# hooks import this module). SQLite's first automatic one comes at ~200-300 records.
RECORDS_BEFORE_CHECKPOINTER = 128


def action_record(action: Action, redactor: Redactor | None = None) -> dict[str, Any]:
    """The action as the audit trail stores it (fixed keys; params redacted)."""
    params = action.params or {}
    out: dict[str, Any] = {
        "type": action.type,
        "target": action.target,
        "params": redactor(params) if redactor else params,
        "agent": action.agent,
        "session": action.session,
    }
    if action.timestamp is not None:
        out["timestamp"] = action.timestamp.isoformat()
    return out


def action_text(action: Action, redactor: Redactor | None = None) -> str:
    """``canonical(action_record(action, redactor))``, built by hand: the hot path of recording."""
    params = action.params or {}
    if redactor:
        params = redactor(params)
    ts = f',"timestamp":{canonical(action.timestamp.isoformat())}' if action.timestamp is not None else ""
    return (f'{{"agent":{canonical(action.agent)},"params":{canonical(params)},'
            f'"session":{canonical(action.session)},"target":{canonical(action.target)}{ts},'
            f'"type":{canonical(action.type)}}}')


def decision_record(decision: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {"approval": decision.approval.value, "risk_level": decision.risk_level.value,
                           "rule": decision.rule, "reason": decision.reason}
    # "tags" only when there are some: the record's top-level keys are fixed, but the decision
    # object may grow a key, and leaving it out when empty keeps every untagged record (all
    # those written before tags existed) byte-for-byte what it was, so old chains verify.
    if decision.tags:
        out["tags"] = list(decision.tags)
    return out


_decision_json: dict[tuple[Any, ...], str] = {}


def _decision_text(decision: Decision) -> str:
    # A policy hands out the same few decisions again and again: serialise each once.
    key = (decision.approval, decision.risk_level, decision.rule, decision.reason, decision.tags)
    text = _decision_json.get(key)
    if text is None:
        if len(_decision_json) > 4096:
            _decision_json.clear()
        text = _decision_json[key] = canonical(decision_record(decision))
    return text


def decision_entry(action: Action, decision: Decision, source: Mapping[str, Any] | None = None,
                   extra: Mapping[str, Any] | None = None, redactor: Redactor | None = None) -> Pending:
    return pending("decision", action=Raw(action_text(action, redactor)), data=extra,
                   decision=Raw(_decision_text(decision)), policy_hash=decision.policy_hash or None,
                   origin=source)


def event_entry(kind: str, decision_id: int | None, data: Mapping[str, Any] | None) -> Pending:
    if kind == "decision":
        raise ValueError("use record_decision for decisions; record_event is for follow-up events")
    return pending(kind, data=data, decision_id=decision_id)


class SQLiteAuditLogger:
    """Append decisions and their follow-up events to a hash-chained SQLite audit trail.

    Each ``record_*`` call is one immediate transaction, committed before it returns: a reported
    decision survives SIGKILL. Batch with ``record_decisions`` for throughput. Thread-safe; several
    processes may write to one database. Failures raise ``AuditError``: callers must then fail closed.

    ``synchronous`` defaults to ``$AEGIS_AUDIT_SYNC`` or ``"normal"`` (no fsync per commit: only an
    OS crash or power cut can lose the last commits); ``"full"`` fsyncs every commit, so those
    survive too, at about 10x the write latency on ordinary disks.
    """

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_PATH, *, redact: Iterable[str] = (),
                 synchronous: str | None = None, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = os.fspath(path)
        self.redactor = Redactor(redact)
        self.db = open_writer(self.path, busy_timeout=busy_timeout, synchronous=synchronous)
        self._conn = self.db.conn
        self._lock = threading.Lock()
        # Once this writer has written enough to need a WAL checkpoint, they run on a thread of their
        # own (audit/checkpoint.py); a short-lived writer never starts it, and checkpoints as before.
        self._synchronous = synchronous or default_sync()
        self._checkpointer: Any = None
        self._until_checkpointer: int | None = None
        if self.path != ":memory:" and not self.path.startswith("file:"):
            self._until_checkpointer = RECORDS_BEFORE_CHECKPOINTER

    def record_decision(self, action: Action, decision: Decision, source: Mapping[str, Any] | None = None,
                        extra: Mapping[str, Any] | None = None) -> int:
        """Record one decision; returns its id once it is durable."""
        return self._write([decision_entry(action, decision, source, extra, self.redactor)])[0]

    def record_decisions(self, items: Iterable[Sequence[Any]]) -> list[int]:
        """Record ``(action, decision[, source[, extra]])`` items in one transaction; ids in order.

        Serialisation happens before the write lock is taken; only chaining and the insert run
        inside it.
        """
        entries = [decision_entry(*item[:4], redactor=self.redactor) if len(item) >= 2 else _bad(item)
                   for item in items]
        return self._write(entries)

    def record_event(self, kind: str, decision_id: int | None, data: Mapping[str, Any] | None) -> int:
        """Record a follow-up event ("approval", "execution", "policy_change") for a decision."""
        return self._write([event_entry(kind, decision_id, data)])[0]

    def _write(self, entries: list[Pending]) -> list[int]:
        with self._lock:
            ids = write(self._conn, entries)
            if self._checkpointer is not None:
                self._checkpointer.nudge()
            elif self._until_checkpointer is not None:
                self._until_checkpointer -= len(entries)
                if self._until_checkpointer <= 0:
                    self._start_checkpointer()
            return ids

    def _start_checkpointer(self) -> None:
        """Checkpoints to their own thread, this connection's own kept as the backstop; if the thread
        cannot start, they stay here, as SQLite does them."""
        from aegis_cli.audit.checkpoint import BACKSTOP_PAGES, Checkpointer

        self._until_checkpointer = None
        try:
            checkpointer = Checkpointer(self.path, self._synchronous).start()
        except (sqlite3.Error, OSError):
            return
        try:
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
        except sqlite3.Error:  # the commit before this stands: only the checkpoints stay here
            checkpointer.close()
            return
        self._checkpointer = checkpointer
        checkpointer.nudge()

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self.db.close()

    def __enter__(self) -> SQLiteAuditLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SQLiteAuditLogger {self.path!r}>"


def _bad(item: Any) -> Pending:
    raise ValueError(f"record_decisions takes (action, decision[, source[, extra]]) items, not {item!r}")


def open_audit(path: str | os.PathLike[str] = DEFAULT_PATH, **kwargs: Any) -> SQLiteAuditLogger:
    """Open (creating if needed) the audit trail at ``path`` for writing."""
    return SQLiteAuditLogger(path, **kwargs)
