"""The tamper-evident audit trail: every decision, and what became of it, hash-chained.

    from aegis_cli.audit import open_audit
    with open_audit("aegis_audit.db", redact=policy.redact) as log:   # or "postgresql://host/db"
        rid = log.record_decision(action, decision, source={"via": "cli"})
        log.record_event("execution", rid, {"status": "ok", "duration_ms": 12.5})

Sinks implement ``AuditLogger``; ``SQLiteAuditLogger`` is the durable one (``PostgresAuditLogger``
in ``.postgres`` the shared one for fleets: ``open_audit`` picks by the target), ``LoggingAuditLogger``
sends the same records to Python logging. Reading (tail, export, verify, stats) lives in
``aegis_cli.audit.query``, ``.export`` and ``.verify``; the approval queue in ``.approvals``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from aegis_cli.audit.batch import live_lines, record_stream
from aegis_cli.audit.canonical import GENESIS, KINDS, canonical, record_hash
from aegis_cli.audit.errors import AuditError, NewerDatabaseError, NotAnAuditDatabase
from aegis_cli.audit.logsink import LoggingAuditLogger
from aegis_cli.audit.redact import Redactor
from aegis_cli.audit.sqlite import DEFAULT_PATH, SQLiteAuditLogger
from aegis_cli.audit.trail import is_postgres, open_audit, open_queue, open_reader
from aegis_cli.engine.models import Action, Decision


@runtime_checkable
class AuditLogger(Protocol):
    """Where decisions are recorded. Every method returns only once the record is kept."""

    def record_decision(self, action: Action, decision: Decision, source: Mapping[str, Any] | None = None,
                        extra: Mapping[str, Any] | None = None) -> int:
        """Record one decision; returns its record id."""
        ...

    def record_decisions(self, items: Iterable[Sequence[Any]]) -> list[int]:
        """Record ``(action, decision[, source[, extra]])`` items as one batch; returns their ids."""
        ...

    def record_event(self, kind: str, decision_id: int | None, data: Mapping[str, Any] | None) -> int:
        """Record a follow-up ("approval", "execution", "policy_change") of decision ``decision_id``."""
        ...

    def close(self) -> None: ...


__all__ = [
    "DEFAULT_PATH",
    "GENESIS",
    "KINDS",
    "AuditError",
    "AuditLogger",
    "LoggingAuditLogger",
    "NewerDatabaseError",
    "NotAnAuditDatabase",
    "Redactor",
    "SQLiteAuditLogger",
    "canonical",
    "is_postgres",
    "live_lines",
    "open_audit",
    "open_queue",
    "open_reader",
    "record_hash",
    "record_stream",
]
