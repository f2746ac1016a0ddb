"""The path every agent hook shares: read the event, decide, audit, answer; refuse what it cannot read.

An agent module (``claude_code``, ``codex``, ``gemini``) only knows its agent's event and answer
formats; everything else is here, once:

- the input is read as JSON and handed to the agent's ``parse``, which accepts only that agent's
  own events (``hook_event_name`` and shape) and raises ``Unreadable`` for anything else;
- an event before a call is turned into actions (one mapping, ``tool_call_to_action``), decided,
  every decision audited before the answer, and answered in the agent's own format;
- an event after a call adds an ``execution`` record linked to the decision for the same call, so
  the trail shows whether a call that was asked about went on to run;
- whatever cannot be decided (an event of another agent, bad JSON, a policy that does not load, an
  audit trail that cannot be written, a crash) exits 2 with one line on stderr: the answer Claude
  Code, Codex and Gemini CLI all take as "block", whatever they make of stdout. A refused event
  is audited as an ``execution`` record with status ``refused`` and no decision, never as a decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aegis_cli.engine.models import Action, Approval, Decision

EXIT_BLOCK = 2
_STRICTNESS = {Approval.AUTO: 0, Approval.APPROVE: 1, Approval.BLOCK: 2}
# How far back a follow-up event looks for the decision on its call: hooks answer within seconds,
# so the decision is among the newest records; the bound keeps the lookup cheap on a large trail.
LOOKBACK = 20_000


class Unreadable(ValueError):
    """The hook was handed something that is not its agent's event; the call is refused."""


@dataclass(frozen=True)
class Call:
    """One tool call as an agent's hook event reports it."""

    phase: str  # "before" (decide it), "after" (it ran) or "permission" (the agent is about to ask a person)
    event: str  # the agent's hook_event_name
    tool: str
    tool_input: dict[str, Any]
    session: str = ""
    call_id: str = ""  # the agent's id for the call, or a key made from the call itself
    origin: dict[str, Any] = field(default_factory=dict)  # what the audit record keeps of the event
    failed: bool = False  # after: the tool reported an error


@dataclass(frozen=True)
class Answer:
    """What the hook process prints and exits with."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


class Agent(Protocol):
    name: str  # as in `aegis hook <name>`
    target: str  # the target of the agent's own tools

    def parse(self, data: Any) -> Call: ...

    def actions(self, call: Call, tools: Any) -> list[Action]: ...

    def answer(self, call: Call, approval: Approval, reason: str) -> Answer: ...

    def after(self, call: Call) -> Answer: ...


def refuse(reason: str) -> Answer:
    """Exit 2 and one line on stderr: every supported agent blocks the call on that."""
    line = " ".join(reason.split())
    return Answer(stderr=f"aegis: {line}; blocked (fail closed)\n", exit_code=EXIT_BLOCK)


def call_key(tool: str, tool_input: Any) -> str:
    """A stable key for a call whose agent gives it no id (its before and after events share it)."""
    text = json.dumps([tool, tool_input], sort_keys=True, separators=(",", ":"), default=str)
    return "k-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def require_object(data: Any, agent: str, events: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """The event object and its hook_event_name, when it is one of ``events``; else ``Unreadable``."""
    if not isinstance(data, dict):
        raise Unreadable(f"the {agent} hook input must be a JSON object")
    event = data.get("hook_event_name")
    if event not in events:
        shown = json.dumps(event)[:60] if event is not None else "none"
        raise Unreadable(f"hook_event_name {shown} is not a {agent} event aegis answers "
                         f"({', '.join(events)}); is this hook installed for another agent?")
    return data, str(event)


def tool_fields(data: Mapping[str, Any], event: str) -> tuple[str, dict[str, Any]]:
    name = data.get("tool_name")
    if not isinstance(name, str) or not name:
        raise Unreadable(f"{event} input has no 'tool_name'")
    tool_input = data.get("tool_input")
    if not isinstance(tool_input, dict):
        raise Unreadable(f"{event} input's 'tool_input' must be an object")
    return name, tool_input


def origin_of(agent: str, data: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    origin: dict[str, Any] = {"via": agent}
    for key in keys:
        if isinstance(data.get(key), str):
            origin[key] = data[key]
    return origin


def reason_text(action: Action, decision: Decision, tool: str) -> str:
    rule = f"rule '{decision.rule}'" if decision.rule else "the policy defaults"
    reason = f": {decision.reason}" if decision.reason else ""
    head = {Approval.AUTO: "aegis allowed", Approval.APPROVE: "aegis asks before", Approval.BLOCK: "aegis blocked"}
    return (f"{head[decision.approval]} {tool} ({action.type} on {action.target}, "
            f"{decision.risk_level.value} risk) by {rule}{reason}")


def run(agent: Agent, raw: str, policy_paths: list[str], audit_db: str | None) -> Answer:
    """Answer one hook event. Never raises: every failure is a refusal naming it."""
    try:
        try:
            call = agent.parse(json.loads(raw))
        except (ValueError, RecursionError) as exc:  # Unreadable is a ValueError, so is bad JSON
            why = str(exc) if isinstance(exc, Unreadable) else f"the hook input is not JSON ({exc})"
            _audit_refusal(agent, why, raw, audit_db)
            return refuse(f"unreadable {agent.name} hook input: {why}")
        if call.phase == "after":
            return _after(agent, call, audit_db)
        return _decide(agent, call, policy_paths, audit_db)
    except Exception as exc:  # the last line of defence: a crashed hook may let the call run
        return refuse(f"the {agent.name} hook failed ({type(exc).__name__}: {exc})")


def _decide(agent: Agent, call: Call, policy_paths: list[str], audit_db: str | None) -> Answer:
    from aegis_cli.engine.errors import PolicyError
    from aegis_cli.engine.policy import Policy

    if not policy_paths:
        return refuse("no policy given (-p or $AEGIS_POLICY)")
    try:
        policy = Policy.from_yaml_files(*policy_paths)
    except (PolicyError, OSError) as exc:
        issues = getattr(exc, "issues", None)
        text = "; ".join(str(i) for i in issues[:3]) if issues else str(exc)
        return refuse(f"the policy could not be loaded ({text})")
    try:
        actions = agent.actions(call, policy.tools)
    except Unreadable as exc:
        _audit_refusal(agent, str(exc), "", audit_db, call)
        return refuse(f"{call.tool} could not be read ({exc})")
    try:
        decided = [(action, policy.evaluate(action)) for action in actions]
    except Exception as exc:
        return refuse(f"{call.tool} could not be decided ({exc})")
    # Several actions (a patch touching several files): the strictest answer wins, and it is recorded
    # last so that the call's follow-up events link to the decision that answered.
    order = sorted(range(len(decided)), key=lambda i: _STRICTNESS[decided[i][1].approval])
    action, decision = decided[order[-1]]
    if audit_db is not None:
        try:
            _record(audit_db, policy.redact, [decided[i] for i in order], call, agent)
        except Exception as exc:
            return refuse(f"the decision on {call.tool} could not be audited ({type(exc).__name__}: {exc})")
    return agent.answer(call, decision.approval, reason_text(action, decision, call.tool))


def _origin(call: Call, agent: Agent) -> dict[str, Any]:
    origin = {"via": agent.name, "tool": call.tool, **call.origin}
    if call.call_id:
        origin["call_id"] = call.call_id
    return origin


def _record(audit_db: str, redact: Any, decided: list[tuple[Action, Decision]], call: Call, agent: Agent) -> None:
    from aegis_cli.audit import SQLiteAuditLogger

    with SQLiteAuditLogger(audit_db, redact=redact) as log:
        origin = _origin(call, agent)
        extra = {"via": f"{agent.name}-hook"}
        if len(decided) == 1:
            log.record_decision(decided[0][0], decided[0][1], source=origin, extra=extra)
        else:
            log.record_decisions([(a, d, origin, {**extra, "part": n + 1, "parts": len(decided)})
                                  for n, (a, d) in enumerate(decided)])


def _after(agent: Agent, call: Call, audit_db: str | None) -> Answer:
    """Record that the call ran, linked to its decision; no decision found is recorded as such."""
    if audit_db is None:
        return agent.after(call)
    from aegis_cli.audit import SQLiteAuditLogger

    try:
        with SQLiteAuditLogger(audit_db) as log:
            decision_id = find_decision(log.db.conn, agent.name, call)
            data: dict[str, Any] = {"status": "error" if call.failed else "ok", "via": f"{agent.name}-hook",
                                    "tool": call.tool, "event": call.event}
            if call.call_id:
                data["call_id"] = call.call_id
            if decision_id is None:
                data["note"] = "no decision on this call was found in the audit trail"
            log.record_event("execution", decision_id, data)
    except Exception as exc:
        return refuse(f"the run of {call.tool} could not be audited ({type(exc).__name__}: {exc})")
    return agent.after(call)


def find_decision(conn: Any, via: str, call: Call) -> int | None:
    """The newest decision this hook recorded for the same call that has no execution record yet."""
    if not call.call_id:
        return None
    row = conn.execute(
        "SELECT d.id FROM audit d WHERE d.kind = 'decision' AND d.id > "
        "(SELECT COALESCE(MAX(id), 0) FROM audit) - ? "
        "AND json_extract(d.body, '$.origin.via') = ? AND json_extract(d.body, '$.origin.call_id') = ? "
        "AND COALESCE(json_extract(d.body, '$.origin.session_id'), '') = ? "
        "AND NOT EXISTS (SELECT 1 FROM audit e WHERE e.decision_id = d.id AND e.kind = 'execution') "
        "ORDER BY d.id DESC LIMIT 1", (LOOKBACK, via, call.call_id, call.session)).fetchone()
    return int(row[0]) if row else None


def _audit_refusal(agent: Agent, why: str, raw: str, audit_db: str | None, call: Call | None = None) -> None:
    """Best effort: the refusal itself stands whether or not it could be written down."""
    if audit_db is None:
        return
    data: dict[str, Any] = {"status": "refused", "via": f"{agent.name}-hook",
                            "reason": f"unreadable {agent.name} hook input: {why}"}
    if call is not None:
        data.update(tool=call.tool, event=call.event)
    else:
        try:
            event = json.loads(raw).get("hook_event_name")
            if isinstance(event, str):
                data["event"] = event[:100]
        except Exception:
            pass
    try:
        from aegis_cli.audit import SQLiteAuditLogger

        with SQLiteAuditLogger(audit_db) as log:
            log.record_event("execution", None, data)
    except Exception:
        pass


def hook_command(agent: str, policy_paths: list[str], audit_db: str) -> str:
    """The shell command an agent runs: absolute paths, and ``|| exit 2`` so that a hook that cannot
    even start (aegis not found, a broken install) blocks instead of letting the call run."""
    exe = shutil.which("aegis")
    base = [exe] if exe else [sys.executable, "-m", "aegis_cli"]
    argv = [*base, "hook", agent]
    for path in policy_paths:
        argv += ["-p", os.path.abspath(path)]
    argv += ["--audit-db", os.path.abspath(audit_db)]
    return shlex.join(argv) + " || exit 2"


def read_stdin(read: Callable[[], bytes]) -> str:
    try:
        return read().decode("utf-8", "replace")
    except Exception as exc:  # unreadable stdin is refused like any other unreadable input
        return f"<stdin unreadable: {exc}>"
