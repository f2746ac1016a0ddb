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

# Eager: the function ``canonical`` must win over the submodule of the same name, which Python sets
# as a package attribute whenever it is imported; every writer needs this module anyway.
from aegis_cli.audit.canonical import GENESIS, KINDS, canonical, record_hash

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up

# Other names are imported from their modules on first use: a hook process that only appends records
# (aegis_cli.hooks.fast_sqlite) must not pay for logging, queries and the PostgreSQL dispatch.
_LAZY = {
    "live_lines": "batch", "record_stream": "batch",
    "AuditLogger": "logger",
    "AuditError": "errors", "NewerDatabaseError": "errors", "NotAnAuditDatabase": "errors",
    "LoggingAuditLogger": "logsink",
    "Redactor": "redact",
    "DEFAULT_PATH": "sqlite", "SQLiteAuditLogger": "sqlite",
    "is_postgres": "trail", "open_audit": "trail", "open_queue": "trail", "open_reader": "trail",
}

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from aegis_cli.audit.batch import live_lines, record_stream
    from aegis_cli.audit.errors import AuditError, NewerDatabaseError, NotAnAuditDatabase
    from aegis_cli.audit.logger import AuditLogger
    from aegis_cli.audit.logsink import LoggingAuditLogger
    from aegis_cli.audit.redact import Redactor
    from aegis_cli.audit.sqlite import DEFAULT_PATH, SQLiteAuditLogger
    from aegis_cli.audit.trail import is_postgres, open_audit, open_queue, open_reader


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aegis_cli.audit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"aegis_cli.audit.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


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
