"""What every approval handler shares: the protocol, the answer, and ``ask()``, which enforces the rules.

A handler asks someone whether an action may run. ``ask()`` is the only way the runtime calls one,
because it is where the guarantees live: every handler has a timeout, no answer in time is a denial
(``timed_out``), an exception is a denial (``error``), and an answer that contradicts itself is a
denial. A handler can therefore be ten naive lines and still fail closed.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aegis_cli.engine.models import Action, Decision

log = logging.getLogger("aegis.approvals")

#: Used when a handler has no usable ``timeout`` attribute: long enough for a person, never forever.
DEFAULT_TIMEOUT = 300.0

#: ``ask()`` cancels a handler that ran out of time with this message, so the handler can tell a
#: timeout (mark the request expired) from any other cancellation (withdraw the request).
TIMEOUT_CANCEL_MSG = "aegis: approval timed out"

#: How long ``ask()`` lets a cancelled handler clean up before giving up on it.
_CLEANUP_GRACE = 2.0

STATUSES = ("approved", "denied", "timed_out", "error", "cancelled")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


@dataclass(frozen=True, slots=True)
class ApprovalAnswer:
    """The outcome of asking. ``approved`` is True only when ``status`` is ``"approved"``."""

    approved: bool
    status: str
    by: str = ""
    note: str = ""
    at: _dt.datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"approval status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.approved != (self.status == "approved"):
            raise ValueError(f"approved={self.approved} contradicts status {self.status!r}")

    @classmethod
    def approve(cls, by: str = "", note: str = "") -> ApprovalAnswer:
        return cls(True, "approved", by, note)

    @classmethod
    def deny(cls, by: str = "", note: str = "", status: str = "denied") -> ApprovalAnswer:
        return cls(False, status, by, note)

    def to_dict(self) -> dict[str, Any]:
        """The audit ``approval`` event's data."""
        return {"status": self.status, "by": self.by, "note": self.note, "at": self.at.isoformat()}

    def describe(self) -> str:
        who = f" by {self.by}" if self.by else ""
        note = f": {self.note}" if self.note else ""
        return {
            "approved": f"approved{who}{note}",
            "denied": f"denied{who}{note}",
            "timed_out": f"no answer in time; denied{note}",
            "error": f"approval failed; denied{note}",
            "cancelled": f"approval cancelled{note}",
        }[self.status]


@dataclass(frozen=True, slots=True)
class ApprovalRequestInfo:
    """Everything a person needs to answer: what, how risky, which rule, why; and until when."""

    action: Action
    decision: Decision
    decision_id: int | None
    requested_at: _dt.datetime
    timeout: float

    @classmethod
    def build(cls, action: Action, decision: Decision, decision_id: int | None, timeout: float) -> ApprovalRequestInfo:
        return cls(action, decision, decision_id, _now(), timeout)

    @property
    def expires_at(self) -> _dt.datetime:
        return self.requested_at + _dt.timedelta(seconds=self.timeout)

    def summary(self) -> str:
        """One line: ``write on salesforce (high risk, rule 'crm-writes'): reason``."""
        rule = f"rule '{self.decision.rule}'" if self.decision.rule else "policy defaults"
        agent = f" by agent {self.action.agent}" if self.action.agent else ""
        reason = f": {self.decision.reason}" if self.decision.reason else ""
        return (f"{self.action.type} on {self.action.target}{agent} "
                f"({self.decision.risk_level.value} risk, {rule}){reason}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.to_dict(),
            "decision": self.decision.to_dict(),
            "decision_id": self.decision_id,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "timeout": self.timeout,
            "summary": self.summary(),
        }


@runtime_checkable
class ApprovalHandler(Protocol):
    """Asks someone whether an action may run. Call it through ``ask()``, never directly."""

    timeout: float

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        ...


def handler_timeout(handler: Any) -> float:
    """The handler's timeout in seconds, or ``DEFAULT_TIMEOUT`` when it has none usable."""
    value = getattr(handler, "timeout", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return DEFAULT_TIMEOUT


def is_timeout(exc: BaseException) -> bool:
    """True for the cancellation ``ask()`` sends when a handler runs out of time."""
    return isinstance(exc, asyncio.CancelledError) and TIMEOUT_CANCEL_MSG in exc.args


async def ask(handler: ApprovalHandler | None, action: Action, decision: Decision, *,
              decision_id: int | None = None) -> ApprovalAnswer:
    """Ask ``handler`` about ``action``; always returns an answer, and only a clear yes approves.

    No handler, a timeout, an exception or a malformed answer all come back as denials with the
    reason in ``note``. Cancelling the caller cancels the handler and propagates.
    """
    if handler is None:
        return _no_approver()
    timeout = handler_timeout(handler)
    name = type(handler).__name__
    try:
        task = asyncio.ensure_future(handler.request(action, decision, decision_id=decision_id))
    except Exception as exc:  # request() is not a coroutine function, or raised before its first await
        log.warning("approval handler %s failed: %r", name, exc)
        return ApprovalAnswer.deny(name, f"handler error: {type(exc).__name__}: {exc}", status="error")
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        await _settle(task)
        raise
    if not done:
        task.cancel(TIMEOUT_CANCEL_MSG)
        await _settle(task)
        return ApprovalAnswer.deny(name, f"no answer within {timeout:g}s", status="timed_out")
    if task.cancelled():
        return ApprovalAnswer.deny(name, "the handler was cancelled", status="cancelled")
    exc = task.exception()
    if exc is not None:
        log.warning("approval handler %s failed: %r", name, exc)
        return ApprovalAnswer.deny(name, f"handler error: {type(exc).__name__}: {exc}", status="error")
    answer = task.result()
    if not isinstance(answer, ApprovalAnswer):
        return ApprovalAnswer.deny(name, f"handler returned {type(answer).__name__}, not an ApprovalAnswer",
                                   status="error")
    return answer


async def _settle(task: asyncio.Future[Any]) -> None:
    """Give a cancelled handler a moment to clean up (withdraw a request); never wait forever."""
    await asyncio.wait({task}, timeout=_CLEANUP_GRACE)
    if task.done() and not task.cancelled():
        task.exception()  # mark retrieved: a handler failing during cleanup is not worth a warning


class DenyAllApprovalHandler:
    """The default: nobody was configured to approve, so nothing that needs approval runs."""

    timeout = 1.0

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        return _no_approver()


def _no_approver() -> ApprovalAnswer:
    return ApprovalAnswer.deny("aegis", "no approver was configured (pass approval_handler= to the Runtime); "
                                        "actions that need approval are denied")
