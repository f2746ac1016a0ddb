"""The values the engine passes around: actions in, decisions out."""

from __future__ import annotations

import datetime as _dt
from enum import Enum

from aegis_cli.engine.values import Value, _set, init

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any


class Approval(str, Enum):
    """What must happen before an action runs."""

    AUTO = "auto"
    APPROVE = "approve"
    BLOCK = "block"

    def __str__(self) -> str:
        return self.value

    @property
    def severity(self) -> int:
        return _APPROVAL_ORDER[self]


_APPROVAL_ORDER = {Approval.AUTO: 0, Approval.APPROVE: 1, Approval.BLOCK: 2}


class RiskLevel(str, Enum):
    """How much damage an action could do. Ordered: low < medium < high < critical."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value

    @property
    def severity(self) -> int:
        return _RISK_ORDER[self]


_RISK_ORDER = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2, RiskLevel.CRITICAL: 3}


_NEW_DICT: Any = {}  # a default that stands for "a new empty dict" (never stored, never changed)


class Action(Value):
    """One thing an agent wants to do: a type (``delete``) on a target (``production``)."""

    _fields = ("type", "target", "params", "agent", "session", "timestamp")
    __slots__ = _fields
    type: str
    target: str
    params: dict[str, Any]
    agent: str
    session: str
    timestamp: _dt.datetime | None

    def __init__(self, type: str, target: str, params: dict[str, Any] = _NEW_DICT, agent: str = "",
                 session: str = "", timestamp: _dt.datetime | None = None) -> None:
        # Field by field rather than through ``init``: an Action is made for every call decided, and this
        # takes half the time of ``init``'s loop (fields in ``_fields`` order; a test checks they all get set).
        _set(self, "type", type)
        _set(self, "target", target)
        _set(self, "params", {} if params is _NEW_DICT else params)
        _set(self, "agent", agent)
        _set(self, "session", session)
        _set(self, "timestamp", timestamp)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "target": self.target, "params": self.params}
        if self.agent:
            out["agent"] = self.agent
        if self.session:
            out["session"] = self.session
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        """Build an action from its JSON shape; raises ``ValueError`` on a wrong shape."""
        from aegis_cli.engine.errors import InputError

        if not isinstance(data, dict):
            raise InputError(f"an action must be a JSON object, not {_json_type(data)}")
        unknown = set(data) - _ACTION_KEYS
        if unknown:
            raise InputError(f"unknown action field(s): {', '.join(sorted(unknown))}")
        for key in ("type", "target"):
            if not isinstance(data.get(key), str):
                raise InputError(f"action field '{key}' must be a string")
        params = data.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InputError("action field 'params' must be an object")
        agent = data.get("agent")
        if agent is None:
            agent = data.get("agent_id")
        if agent is None:
            agent = ""
        if not isinstance(agent, str):
            raise InputError("action field 'agent' must be a string")
        session = data.get("session")
        if session is None:
            session = ""
        if not isinstance(session, str):
            raise InputError("action field 'session' must be a string")
        ts = data.get("timestamp")
        timestamp = parse_timestamp(ts) if ts is not None else None
        return cls(data["type"], data["target"], params, agent, session, timestamp)


_ACTION_KEYS = frozenset({"type", "target", "params", "agent", "agent_id", "session", "timestamp"})


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def parse_timestamp(value: Any) -> _dt.datetime:
    """Parse an ISO 8601 timestamp; naive times are taken as UTC."""
    from aegis_cli.engine.errors import InputError

    if isinstance(value, _dt.datetime):
        ts = value
    elif isinstance(value, str):
        try:
            ts = _dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise InputError(f"not an ISO 8601 timestamp: {value!r}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            ts = _dt.datetime.fromtimestamp(value, _dt.UTC)
        except (OverflowError, OSError, ValueError):  # out of range, NaN: bad input, not a crash
            raise InputError(f"timestamp out of range: {value!r}") from None
    else:
        raise InputError(f"not a timestamp: {value!r}")
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.UTC)
    return ts


class RuleCheck(Value):
    """Why one rule did or did not decide an action (one line of an explanation)."""

    _fields = ("rule", "matched", "why")
    __slots__ = _fields
    rule: str
    matched: bool
    why: str

    def __init__(self, rule: str, matched: bool, why: str) -> None:
        init(self, rule, matched, why)


class Decision(Value):
    """The policy's answer for one action.

    ``rule`` is the deciding rule's name, or None when the defaults applied. ``trace`` is
    filled when evaluation was asked to explain itself. ``tags`` are the data categories the
    deciding rule (or the defaults) declared, e.g. ``("phi",)``: what the action touches.
    """

    _fields = ("approval", "risk_level", "rule", "reason", "policy_hash", "trace", "tags")
    __slots__ = _fields
    approval: Approval
    risk_level: RiskLevel
    rule: str | None
    reason: str
    policy_hash: str
    trace: tuple[RuleCheck, ...] | None
    tags: tuple[str, ...]

    def __init__(self, approval: Approval, risk_level: RiskLevel, rule: str | None, reason: str,
                 policy_hash: str = "", trace: tuple[RuleCheck, ...] | None = None,
                 tags: tuple[str, ...] = ()) -> None:
        init(self, approval, risk_level, rule, reason, policy_hash, trace, tags)

    @property
    def allowed(self) -> bool:
        """True unless the action is blocked outright."""
        return self.approval is not Approval.BLOCK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "approval": self.approval.value,
            "risk_level": self.risk_level.value,
            "rule": self.rule,
            "reason": self.reason,
            "policy_hash": self.policy_hash,
        }
        if self.tags:  # absent when empty, as in the audit record, so untagged output is unchanged
            out["tags"] = list(self.tags)
        if self.trace is not None:
            out["explanation"] = [{"rule": c.rule, "matched": c.matched, "why": c.why} for c in self.trace]
        return out

    def explain(self) -> str:
        """A readable account of how this decision was reached."""
        head = (
            f"{self.approval.value} ({self.risk_level.value} risk) by "
            + (f"rule '{self.rule}'" if self.rule else "the policy defaults")
            + (f": {self.reason}" if self.reason else "")
            + (f" [tags: {', '.join(self.tags)}]" if self.tags else "")
        )
        if not self.trace:
            return head
        lines = [head]
        for check in self.trace:
            mark = "✓" if check.matched else "✗"
            lines.append(f"  {mark} {check.rule}: {check.why}")
        return "\n".join(lines)
