"""``aegis hook claude-code``: Claude Code's PreToolUse and PostToolUse command hooks.

Claude Code runs the hook with a JSON event on stdin (``hook_event_name``, ``tool_name``,
``tool_input``, ``tool_use_id``, ``session_id``, ``cwd``, ...). Before a call it reads
``hookSpecificOutput.permissionDecision``: ``allow`` runs the tool, ``deny`` refuses it and shows
the reason to Claude, ``ask`` shows Claude Code's own permission prompt; the policy's answers map
one to one (auto -> allow, approve -> ask, block -> deny). After a call (PostToolUse) the hook
records that it ran. Exit 2 blocks the call with stderr shown to Claude: every refusal uses it.
"""

from __future__ import annotations

import json

from aegis_cli.engine.models import Action, Approval
from aegis_cli.engine.toolcalls import tool_call_to_action
from aegis_cli.hooks.common import (
    Answer,
    Call,
    Unreadable,
    hook_command,
    hook_timeout,
    origin_of,
    require_object,
    tool_fields,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

NAME = "claude-code"
TARGET = "claude-code"
_PERMISSION = {Approval.AUTO: "allow", Approval.APPROVE: "ask", Approval.BLOCK: "deny"}
_KEEP = ("tool_use_id", "session_id", "cwd", "hook_event_name", "permission_mode")


def hook_output(permission: str, reason: str) -> dict[str, Any]:
    """The JSON Claude Code reads from a PreToolUse hook's stdout."""
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": permission,
                                   "permissionDecisionReason": reason}}


class ClaudeCode:
    name = NAME
    target = TARGET

    def parse(self, data: Any) -> Call:
        data, event = require_object(data, "Claude Code", ("PreToolUse", "PostToolUse"))
        if "turn_id" in data:  # Codex's events carry turn_id (a Codex extension); Claude Code's never do
            raise Unreadable("this is a Codex event (it has turn_id): install 'aegis hook codex' in Codex")
        tool, tool_input = tool_fields(data, event)
        session = data.get("session_id")
        use_id = data.get("tool_use_id")
        failed = event == "PostToolUse" and isinstance(data.get("tool_response"), dict) \
            and data["tool_response"].get("is_error") is True
        return Call("before" if event == "PreToolUse" else "after", event, tool, tool_input,
                    session if isinstance(session, str) else "", use_id if isinstance(use_id, str) else "",
                    origin_of(NAME, data, _KEEP), failed)

    def actions(self, call: Call, tools: Any) -> list[Action]:
        # Built-in tools (Bash, Write, Edit, ...) act on target claude-code; mcp__<server>__<tool>
        # is type <tool> on target <server>, exactly as simulate maps a recorded session.
        return [tool_call_to_action(call.tool, call.tool_input, namespace=TARGET, tools=tools, session=call.session)]

    def answer(self, call: Call, approval: Approval, reason: str) -> Answer:
        return Answer(json.dumps(hook_output(_PERMISSION[approval], reason)) + "\n")

    def after(self, call: Call) -> Answer:
        return Answer()


AGENT = ClaudeCode()


def settings(policy_paths: list[str], audit_db: str, matcher: str = "*", *, server: str | None = None,
             token_env: str | None = None, approval_timeout: float | None = None) -> dict[str, Any]:
    """The ``.claude/settings.json`` fragment that installs the hook before and after every call."""
    command = hook_command(NAME, policy_paths, audit_db, server=server, token_env=token_env,
                           approval_timeout=approval_timeout)
    hook = {"type": "command", "command": command, "timeout": hook_timeout(approval_timeout)}
    return {"hooks": {"PreToolUse": [{"matcher": matcher, "hooks": [hook]}],
                      "PostToolUse": [{"matcher": matcher, "hooks": [hook]}]}}
