"""Hold the action in the audit database until someone answers with ``aegis approvals approve|deny``.

The request lives in the same SQLite file as the audit trail, so any shell on the machine (or a CI
step, or another service) can answer it, and the answer is itself audited by the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aegis_cli.approvals.base import ApprovalAnswer, is_timeout
from aegis_cli.engine.models import Action, Decision

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.audit.approvals import ApprovalQueue

_STATUS = {"approved": "approved", "denied": "denied", "timed_out": "timed_out", "cancelled": "cancelled"}


class QueueApprovalHandler:
    """Queue the request in the audit database and wait for an answer from any shell.

    ``queue`` is a database path (usually the audit database), a PostgreSQL URL (the fleet's
    shared queue: any host answers) or an ``ApprovalQueue``.
    ``requested_by`` is stored with the request (which agent or service is asking); ``redact`` lists
    the parameters to hide in the stored request, as for the audit logger (pass ``policy.redact``).
    The person answers with ``aegis approvals approve ID`` or ``aegis approvals deny ID``.
    """

    def __init__(self, queue: str | Path | ApprovalQueue, *, timeout: float = 300.0, requested_by: str = "",
                 redact: Iterable[str] = ()) -> None:
        if isinstance(queue, (str, Path)):
            from aegis_cli.audit.approvals import ApprovalQueue

            queue = ApprovalQueue(queue, redact=redact)
        self.queue = queue
        self.timeout = timeout
        self.requested_by = requested_by
        self.last_request_id: int | None = None  # for tests and logs: the most recent queued request

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        # In a thread: a write may wait on SQLite's busy timeout, and the event loop must not.
        submitted = asyncio.ensure_future(asyncio.to_thread(
            self.queue.submit, action, decision, decision_id=decision_id, requested_by=self.requested_by,
            timeout=self.timeout))
        try:
            req = await asyncio.shield(submitted)
        except asyncio.CancelledError as exc:  # let the insert finish, then withdraw the request
            await asyncio.wait({submitted}, timeout=1.0)
            if submitted.done() and not submitted.cancelled() and submitted.exception() is None:
                self.last_request_id = submitted.result().id
                _close(self.queue.expire if is_timeout(exc) else self.queue.cancel, self.last_request_id)
            raise
        self.last_request_id = req.id
        try:
            req = await self.queue.wait_async(req.id, self.timeout)
        except asyncio.CancelledError as exc:
            # Leave no request pending that nobody waits for: a late "approve" must not look like it worked.
            _close(self.queue.expire if is_timeout(exc) else self.queue.cancel, req.id)
            raise
        status = _STATUS.get(req.status)
        if status is None:  # still pending after the wait, or a status we do not know: fail closed
            _close(self.queue.expire, req.id)
            return ApprovalAnswer.deny(req.answered_by or "",
                                       f"request {req.id} is {req.status!r} after waiting; denied",
                                       status="timed_out" if req.status == "pending" else "error")
        note = req.note or ""
        if status == "timed_out" and not note:
            note = f"no answer within {self.timeout:g}s (request {req.id})"
        return ApprovalAnswer(status == "approved", status, req.answered_by or "", note,
                              _as_datetime(req.answered_at))


def _close(method: Any, request_id: int) -> None:
    # ValueError: answered in the meantime; that answer stands in the queue and the audit trail.
    with contextlib.suppress(ValueError):
        method(request_id)


def _as_datetime(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
    if isinstance(value, str) and value:
        try:
            parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.UTC)
        except ValueError:
            pass
    return _dt.datetime.now(_dt.UTC)
