"""``AuditLogger``: what every audit sink provides (SQLite, PostgreSQL, Python logging).

A module of its own so that ``aegis_cli.audit`` itself does not import ``typing`` (a hook process,
which only appends, never needs the protocol).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

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
