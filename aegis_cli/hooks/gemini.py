"""``aegis hook gemini``: Gemini CLI's BeforeTool and AfterTool command hooks.

Gemini CLI (0.61) sends ``hook_event_name`` (``BeforeTool`` / ``AfterTool``), ``tool_name``
(``run_shell_command``, ``write_file``, ``replace``, ... or ``mcp_<server>_<tool>``),
``tool_input``, ``mcp_context`` (``server_name``, ``tool_name``, ... for MCP tools),
``session_id``, ``cwd``, ``timestamp``, and after the call ``tool_response`` (``llmContent``,
``returnDisplay``, ``error``). It gives the call no id, so its before and after events are
matched by a key made from the tool and its arguments.

It reads a top-level ``decision``: ``deny`` (or ``block``) refuses the call and sends ``reason`` to
the model as the tool's error ("Tool execution blocked: <reason>"); ``ask`` makes Gemini CLI ask
the person; ``allow`` leaves the call to Gemini CLI's own approval settings. Claude Code's
``hookSpecificOutput.permissionDecision`` means nothing to it: such an answer lets the call run.
Exit 2 blocks with stderr as the reason; a hook that exits with anything else, or prints
something that is not JSON, lets the call run, hence ``|| exit 2`` in the settings.
"""

from __future__ import annotations

import json

from aegis_cli.engine.models import Action, Approval
from aegis_cli.engine.toolcalls import split_gemini_mcp_name, tool_call_to_action
from aegis_cli.hooks.common import (
    Answer,
    Call,
    call_key,
    hook_command,
    hook_timeout,
    origin_of,
    require_object,
    tool_fields,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

NAME = "gemini"
TARGET = "gemini-cli"
_DECISION = {Approval.AUTO: "allow", Approval.APPROVE: "ask", Approval.BLOCK: "deny"}
_KEEP = ("session_id", "cwd", "hook_event_name", "timestamp")


def mcp_of(data: dict[str, Any], tool: str) -> tuple[str, str] | None:
    """(server, tool) for an MCP tool: from ``mcp_context`` when Gemini CLI gave it, else the name."""
    context = data.get("mcp_context")
    if isinstance(context, dict):
        server, name = context.get("server_name"), context.get("tool_name")
        if isinstance(server, str) and server and isinstance(name, str) and name:
            return server, name
    return split_gemini_mcp_name(tool)


class Gemini:
    name = NAME
    target = TARGET

    def parse(self, data: Any) -> Call:
        data, event = require_object(data, "Gemini CLI", ("BeforeTool", "AfterTool"))
        tool, tool_input = tool_fields(data, event)
        session = data.get("session_id") if isinstance(data.get("session_id"), str) else ""
        response = data.get("tool_response")
        failed = event == "AfterTool" and isinstance(response, dict) and bool(response.get("error"))
        origin = origin_of(NAME, data, _KEEP)
        mcp = mcp_of(data, tool)
        if mcp is not None:
            origin["mcp_server"], origin["mcp_tool"] = mcp
        return Call("before" if event == "BeforeTool" else "after", event, tool, tool_input, session,
                    call_key(tool, tool_input), origin, failed)

    def actions(self, call: Call, tools: Any) -> list[Action]:
        mcp = (call.origin["mcp_server"], call.origin["mcp_tool"]) if "mcp_server" in call.origin else None
        return [tool_call_to_action(call.tool, call.tool_input, namespace=TARGET, tools=tools, session=call.session,
                                    mcp=mcp)]

    def answer(self, call: Call, approval: Approval, reason: str) -> Answer:
        out: dict[str, Any] = {"decision": _DECISION[approval], "reason": reason}
        if approval is not Approval.AUTO:
            out["systemMessage"] = reason  # shown to the person in the terminal
        return Answer(json.dumps(out) + "\n")

    def after(self, call: Call) -> Answer:
        return Answer("{}\n")


AGENT = Gemini()


def settings(policy_paths: list[str], audit_db: str, matcher: str = "*", *, server: str | None = None,
             token_env: str | None = None, approval_timeout: float | None = None) -> dict[str, Any]:
    """The ``hooks`` entry for ``~/.gemini/settings.json`` (Gemini CLI's timeouts are in milliseconds)."""
    command = hook_command(NAME, policy_paths, audit_db, server=server, token_env=token_env,
                           approval_timeout=approval_timeout)
    hook = {"name": "aegis", "type": "command", "command": command, "timeout": hook_timeout(approval_timeout) * 1000}
    return {"hooks": {"BeforeTool": [{"matcher": matcher, "hooks": [hook]}],
                      "AfterTool": [{"matcher": matcher, "hooks": [dict(hook, name="aegis-after")]}]}}
