"""``aegis hook codex``: Codex CLI's PreToolUse, PermissionRequest and PostToolUse command hooks.

Codex (0.171) sends ``hook_event_name``, ``tool_name`` (``Bash`` for shell commands,
``apply_patch``, ``mcp__<server>__<tool>``), ``tool_input``, ``session_id``, ``turn_id`` (a Codex
extension: no other agent sends it), ``model``, ``permission_mode``, and ``tool_use_id`` (not on
PermissionRequest). What Codex does with the answers, checked against the real CLI:

- PreToolUse: only ``permissionDecision: "deny"`` (with a reason, which the model is shown) is
  honoured. ``allow`` and ``ask`` are *unsupported*: Codex marks the hook failed and runs the call.
  So auto answers nothing, block denies, and approve denies too, saying that a person must approve
  it: nothing here can make Codex ask before a PreToolUse call (fail closed).
- PermissionRequest (Codex is about to ask a person, e.g. to run outside the sandbox):
  ``decision.behavior`` ``allow`` or ``deny``; no decision leaves the prompt to the person. auto
  allows, approve leaves Codex's own prompt to the person, block denies.
- PostToolUse: recorded as the call's execution; nothing is answered.
- Exit 2 with a reason on stderr blocks (PreToolUse, PermissionRequest); every refusal uses it.

An ``apply_patch`` call is decided file by file: one action per file the patch adds, updates,
deletes or moves (from and to), with ``path``, ``operation`` (add / update / delete / move),
``files`` (every path the patch touches) and ``patch``, so ``param_glob: {path: ...}`` rules see
each path. The strictest answer wins. A patch whose files cannot be read is refused.
"""

from __future__ import annotations

import json

from aegis_cli.engine.models import Action, Approval
from aegis_cli.engine.toolcalls import tool_call_to_action
from aegis_cli.hooks.common import (
    Answer,
    Call,
    Unreadable,
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

NAME = "codex"
TARGET = "codex"
EVENTS = ("PreToolUse", "PermissionRequest", "PostToolUse")
_PHASE = {"PreToolUse": "before", "PermissionRequest": "permission", "PostToolUse": "after"}
_KEEP = ("tool_use_id", "session_id", "turn_id", "cwd", "hook_event_name", "model", "permission_mode")
_MARKERS = (("*** Add File:", "add"), ("*** Update File:", "update"), ("*** Delete File:", "delete"),
            ("*** Move to:", "move"))


def patch_files(patch: str) -> list[tuple[str, str, str]]:
    """(path, operation, other path) for every file a Codex patch envelope touches.

    A move is ``*** Update File: a`` then ``*** Move to: b``: both a and b come back as ``move``,
    each naming the other. Raises ``Unreadable`` when the text is not a patch that names files.
    """
    lines = [line.strip() for line in patch.splitlines()]
    if not any(line == "*** Begin Patch" for line in lines):
        raise Unreadable("apply_patch input has no '*** Begin Patch' envelope")
    out: list[tuple[str, str, str]] = []
    for line in lines:
        for marker, operation in _MARKERS:
            if line.startswith(marker):
                path = line[len(marker):].strip()
                if not path:
                    raise Unreadable(f"apply_patch line '{marker}' names no file")
                if operation == "move":
                    if not out or out[-1][1] != "update":
                        raise Unreadable("apply_patch '*** Move to:' does not follow '*** Update File:'")
                    source = out.pop()[0]
                    out += [(source, "move", path), (path, "move", source)]
                else:
                    out.append((path, operation, ""))
    if not out:
        raise Unreadable("apply_patch input names no file to add, update, delete or move")
    return out


def _patch_text(tool_input: dict[str, Any]) -> str:
    for key in ("command", "input", "patch"):
        if isinstance(tool_input.get(key), str):
            return tool_input[key]
    raise Unreadable("apply_patch input carries no patch text")


class Codex:
    name = NAME
    target = TARGET

    def parse(self, data: Any) -> Call:
        data, event = require_object(data, "Codex", EVENTS)
        if not isinstance(data.get("turn_id"), str):  # required in every Codex tool event
            raise Unreadable(f"{event} input has no 'turn_id', so it is not Codex's "
                             "(a Claude Code event? install 'aegis hook claude-code' there)")
        tool, tool_input = tool_fields(data, event)
        session = data.get("session_id") if isinstance(data.get("session_id"), str) else ""
        use_id = data.get("tool_use_id")
        if event == "PermissionRequest" or not isinstance(use_id, str) or not use_id:
            if event != "PermissionRequest":
                raise Unreadable(f"{event} input has no 'tool_use_id'")
            use_id = call_key(tool, [data["turn_id"], tool_input])
        return Call(_PHASE[event], event, tool, tool_input, session, use_id, origin_of(NAME, data, _KEEP))

    def actions(self, call: Call, tools: Any) -> list[Action]:
        if call.tool != "apply_patch":
            return [tool_call_to_action(call.tool, call.tool_input, namespace=TARGET, tools=tools,
                                        session=call.session)]
        patch = _patch_text(call.tool_input)
        files = patch_files(patch)
        paths = list(dict.fromkeys(path for path, _, _ in files))
        actions = []
        for path, operation, other in files:
            params: dict[str, Any] = {"path": path, "operation": operation, "files": paths, "patch": patch}
            if operation == "move":
                params["moved_with"] = other
            actions.append(tool_call_to_action(call.tool, params, namespace=TARGET, tools=tools, session=call.session))
        return actions

    def answer(self, call: Call, approval: Approval, reason: str) -> Answer:
        if call.phase == "permission":
            if approval is Approval.APPROVE:  # Codex's own prompt asks the person
                return Answer()
            decision: dict[str, Any] = {"behavior": "allow" if approval is Approval.AUTO else "deny"}
            if approval is Approval.BLOCK:
                decision["message"] = reason
            return Answer(json.dumps({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                                                             "decision": decision}}) + "\n")
        if approval is Approval.AUTO:  # Codex treats "allow" as an unsupported answer: say nothing
            return Answer()
        if approval is Approval.APPROVE:
            reason += ("; a person must approve it, and Codex cannot ask before a call from a PreToolUse hook, "
                       "so it is denied")
        return Answer(json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                                         "permissionDecisionReason": reason}}) + "\n")

    def after(self, call: Call) -> Answer:
        return Answer()


AGENT = Codex()


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string (ASCII, \" \\ \uXXXX escapes) is a valid TOML basic string


def settings(policy_paths: list[str], audit_db: str, *, server: str | None = None,
             token_env: str | None = None, approval_timeout: float | None = None) -> str:
    """The TOML to add to ``~/.codex/config.toml``: the hook on every event it answers."""
    command = _toml_string(hook_command(NAME, policy_paths, audit_db, server=server, token_env=token_env,
                                        approval_timeout=approval_timeout))
    blocks = [f'[[hooks.{event}]]\nmatcher = "*"\n[[hooks.{event}.hooks]]\ntype = "command"\n'
              f"command = {command}\ntimeout = {hook_timeout(approval_timeout)}\n" for event in EVENTS]
    return "# aegis: every Codex tool call decided by the policy and audited (aegis hook codex)\n" + \
        "\n".join(blocks)
