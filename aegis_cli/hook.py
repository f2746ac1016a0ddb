"""``aegis hook claude-code``: Claude Code's PreToolUse command hook.

Claude Code runs the hook before every tool call with a JSON object on stdin (``tool_name``,
``tool_input``, ``session_id``, ``tool_use_id``, ``cwd``, ...) and reads back
``hookSpecificOutput.permissionDecision``: ``allow`` runs the tool, ``deny`` refuses it and shows
the reason to Claude, ``ask`` shows Claude Code's own permission prompt. The policy's three
answers map onto those one to one (auto -> allow, approve -> ask, block -> deny).

A hook that crashes or prints nothing lets the call through, so nothing here may fail that way:
bad input, a policy that does not load, an audit trail that cannot be written all come back as
``deny`` with the reason.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from typing import Any

from aegis_cli.engine.models import Action, Approval, Decision
from aegis_cli.engine.toolcalls import tool_call_to_action

TARGET = "claude-code"
_PERMISSION = {Approval.AUTO: "allow", Approval.APPROVE: "ask", Approval.BLOCK: "deny"}


def hook_output(permission: str, reason: str) -> dict[str, Any]:
    """The JSON Claude Code reads from a PreToolUse hook's stdout."""
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": permission,
                                   "permissionDecisionReason": reason}}


def action_from_hook_input(data: Any, tools: Any = None) -> Action:
    """The action for one PreToolUse input; ``ValueError`` when it is not one."""
    if not isinstance(data, dict):
        raise ValueError("hook input must be a JSON object")
    name = data.get("tool_name")
    if not isinstance(name, str) or not name:
        raise ValueError("hook input has no 'tool_name'")
    tool_input = data.get("tool_input", {})
    if tool_input is not None and not isinstance(tool_input, dict):
        raise ValueError("'tool_input' must be an object")
    session = data.get("session_id")
    # Built-in tools (Bash, Write, Edit, ...) act on target claude-code; mcp__<server>__<tool>
    # becomes type <tool> on target <server>, exactly as simulate maps a recorded session.
    return tool_call_to_action(name, tool_input or {}, namespace=TARGET, tools=tools,
                               session=session if isinstance(session, str) else "")


def reason_text(action: Action, decision: Decision, tool: str) -> str:
    rule = f"rule '{decision.rule}'" if decision.rule else "the policy defaults"
    reason = f": {decision.reason}" if decision.reason else ""
    head = {Approval.AUTO: "aegis allowed", Approval.APPROVE: "aegis asks before", Approval.BLOCK: "aegis blocked"}
    return (f"{head[decision.approval]} {tool} ({action.type} on {action.target}, "
            f"{decision.risk_level.value} risk) by {rule}{reason}")


def decide(raw: str, policy: Any, record: Callable[[Action, Decision, dict[str, Any]], Any] | None) -> dict[str, Any]:
    """Decide one hook input against a loaded policy; every failure is a ``deny``."""
    try:
        data = json.loads(raw)
        action = action_from_hook_input(data, policy.tools)
    except ValueError as exc:
        return hook_output("deny", f"aegis: unreadable PreToolUse input ({exc}); denied (fail closed)")
    tool = data["tool_name"]
    try:
        decision = policy.evaluate(action)
    except Exception as exc:
        return hook_output("deny", f"aegis: {tool} could not be decided ({exc}); denied (fail closed)")
    if record is not None:
        source = {"via": "claude-code", "tool": tool}
        for key in ("tool_use_id", "session_id", "cwd", "hook_event_name"):
            if isinstance(data.get(key), str):
                source[key] = data[key]
        try:
            record(action, decision, source)
        except Exception as exc:
            return hook_output("deny", f"aegis: the decision on {tool} could not be audited "
                                       f"({type(exc).__name__}: {exc}); denied (fail closed)")
    return hook_output(_PERMISSION[decision.approval], reason_text(action, decision, tool))


def run_claude_code_hook(raw: str, policy_paths: list[str], audit_db: str | None) -> dict[str, Any]:
    """Load the policy, decide, audit. Never raises: any failure is a ``deny`` naming it."""
    try:
        from aegis_cli.engine.errors import PolicyError
        from aegis_cli.engine.policy import Policy

        if not policy_paths:
            return hook_output("deny", "aegis: no policy given (-p or $AEGIS_POLICY); denied (fail closed)")
        try:
            policy = Policy.from_yaml_files(*policy_paths)
        except (PolicyError, OSError) as exc:
            issues = getattr(exc, "issues", None)
            text = "; ".join(str(i) for i in issues[:3]) if issues else str(exc)
            return hook_output("deny", f"aegis: the policy could not be loaded ({text}); denied (fail closed)")
        if audit_db is None:
            return decide(raw, policy, None)
        from aegis_cli.audit import SQLiteAuditLogger

        try:
            log = SQLiteAuditLogger(audit_db, redact=policy.redact)
        except Exception as exc:
            return hook_output("deny", f"aegis: the audit trail {audit_db} could not be opened "
                                       f"({type(exc).__name__}: {exc}); denied (fail closed)")
        try:
            return decide(raw, policy, lambda a, d, s: log.record_decision(a, d, source=s,
                                                                            extra={"via": "claude-code-hook"}))
        finally:
            log.close()
    except Exception as exc:  # the last line of defence: a crashed hook would let the call run
        return hook_output("deny", f"aegis: hook failed ({type(exc).__name__}: {exc}); denied (fail closed)")


def settings_snippet(policy_paths: list[str], audit_db: str, matcher: str = "*") -> dict[str, Any]:
    """The ``.claude/settings.json`` fragment that installs the hook (absolute paths throughout)."""
    exe = shutil.which("aegis")
    base = [exe] if exe else [sys.executable, "-m", "aegis_cli"]
    argv = [*base, "hook", "claude-code"]
    for path in policy_paths:
        argv += ["-p", os.path.abspath(path)]
    argv += ["--audit-db", os.path.abspath(audit_db)]
    # Claude Code runs a call when its hook exits with anything but 0 or 2; "|| exit 2" turns a hook
    # that could not even start (aegis not found, a broken install) into a block.
    return {"hooks": {"PreToolUse": [{"matcher": matcher, "hooks": [
        {"type": "command", "command": shlex.join(argv) + " || exit 2", "timeout": 30}]}]}}
