"""The audit trail's errors. All are ``AegisError``s; callers fail closed on any of them."""

from __future__ import annotations

from aegis_cli.engine.errors import AegisError


class AuditError(AegisError):
    """A record could not be written or read (disk full, database locked too long, bad file)."""


class NotAnAuditDatabase(AuditError):
    """The file is missing, is not SQLite, or holds no aegis audit trail."""


class NewerDatabaseError(AuditError):
    """The database was written by a newer aegis than this one."""
