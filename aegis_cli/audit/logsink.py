"""An audit sink that writes each record as one JSON line to Python logging.

Records have the same shape and hash chain as the SQLite trail (the chain lives for the
logger's lifetime, starting at id 1 from the genesis hash), so logs shipped elsewhere can be
checked the same way as an export. Durability is whatever the configured handlers give.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aegis_cli.audit.canonical import GENESIS, Pending, record_hash, utc_now
from aegis_cli.audit.redact import Redactor
from aegis_cli.audit.sqlite import decision_entry, event_entry
from aegis_cli.engine.models import Action, Decision


class LoggingAuditLogger:
    """Emit audit records through ``logging`` (logger ``aegis.audit`` at INFO by default)."""

    def __init__(self, logger: logging.Logger | str = "aegis.audit", *, level: int = logging.INFO,
                 redact: Iterable[str] = ()) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.redactor = Redactor(redact)
        self._lock = threading.Lock()
        self._last_id = 0
        self._prev = GENESIS

    def record_decision(self, action: Action, decision: Decision, source: Mapping[str, Any] | None = None,
                        extra: Mapping[str, Any] | None = None) -> int:
        return self._emit([decision_entry(action, decision, source, extra, self.redactor)])[0]

    def record_decisions(self, items: Iterable[Sequence[Any]]) -> list[int]:
        return self._emit([decision_entry(*item[:4], redactor=self.redactor) for item in items])

    def record_event(self, kind: str, decision_id: int | None, data: Mapping[str, Any] | None) -> int:
        return self._emit([event_entry(kind, decision_id, data)])[0]

    def _emit(self, entries: list[Pending]) -> list[int]:
        ids = []
        with self._lock:
            for e in entries:
                self._last_id += 1
                body = e.body(self._last_id, self._prev, utc_now())
                self._prev = record_hash(body)
                # The line is the exported record: body plus its hash.
                self.logger.log(self.level, "%s", f'{body[:-1]},"hash":"{self._prev}"}}')
                ids.append(self._last_id)
        return ids

    def close(self) -> None:
        for handler in self.logger.handlers:
            handler.flush()
