"""adapters.claude_agent_sdk: the real SDK running the real Claude Code CLI it ships with, offline.

Claude Code is pointed at a local stand-in Anthropic Messages server (tests/model_standins.py) that
asks for one Bash call creating a file. A control run without aegis creates it; governed, a blocked
command does not run and the model is told the rule, an allowed one runs and its execution is linked
to its decision, an approve rule waits for the approval queue (approved: runs; no answer in time:
denied), the user's own hooks and can_use_tool still refuse, and the trail verifies.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("claude_agent_sdk")

from adapter_kit import Approver, decisions, events, outcome, records, verify
from claude_agent_sdk import (
    ClaudeAgentOptions,
    CLIConnectionError,
    HookMatcher,
    PermissionResultDeny,
    ResultMessage,
    query,
)
from model_standins import StandIn

from aegis_cli import Policy, Runtime, SQLiteAuditLogger
from aegis_cli.adapters.claude_agent_sdk import Gate, govern
from aegis_cli.approvals import QueueApprovalHandler

ROOT = Path(__file__).resolve().parent.parent
OLD_CLAUDE = ROOT / ".ci" / "node_modules" / ".bin" / "claude"  # 2.1.197: does not honour on_failure

POLICY = """
version: "1"
defaults: {risk_level: low, approval: auto, reason: nothing risky}
rules:
  - name: no-forbidden-files
    match: {type: Bash, target: claude-code}
    conditions: {param_matches: {command: "forbidden"}}
    risk_level: critical
    approval: block
    reason: forbidden files are never created
  - name: reviewed-files
    match: {type: Bash, target: claude-code}
    conditions: {param_matches: {command: "reviewed"}}
    risk_level: high
    approval: approve
    reason: a person checks these first
  - name: linear-issues
    match: {type: create_issue, target: linear}
    risk_level: medium
    approval: block
    reason: issues are filed by people
"""


def bash_call(cmd: str) -> Any:
    def ask(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        return ("Bash", {"command": cmd, "description": "Make the file"}) \
            if '"Bash"' in json.dumps(body.get("tools")) else None
    return ask


def told(api: StandIn) -> str:
    """Every tool result Claude Code sent back to the model, as one text."""
    out = []
    for seen in api.posts():
        for message in (seen.body or {}).get("messages") or []:
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append(json.dumps(block.get("content")))
    return "\n".join(out)


def make_runtime(tmp_path: Path, timeout: float = 10.0) -> tuple[Runtime, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "audit.db"
    handler = QueueApprovalHandler(db, timeout=timeout, requested_by="claude-agent-sdk-test")
    return Runtime(policy=Policy.from_string(POLICY), approval_handler=handler, audit=SQLiteAuditLogger(db)), db


def options(tmp_path: Path, api: StandIn, **extra: Any) -> tuple[ClaudeAgentOptions, Path]:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {"ANTHROPIC_API_KEY": "sk-ant-standin", "ANTHROPIC_BASE_URL": api.url, "HOME": str(home),
           "CLAUDE_CONFIG_DIR": str(home / ".claude"), "DISABLE_AUTOUPDATER": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    extra.setdefault("allowed_tools", ["Bash"])  # Claude Code runs Bash without asking a person
    return ClaudeAgentOptions(cwd=str(work), env=env, setting_sources=[], max_turns=4, **extra), work


def run(opts: ClaudeAgentOptions) -> ResultMessage:
    async def go() -> ResultMessage:
        result = None
        async for message in query(prompt="Make the file.", options=opts):
            if isinstance(message, ResultMessage):
                result = message
        assert result is not None
        return result

    return asyncio.run(asyncio.wait_for(go(), 120))


def test_control_without_aegis_the_command_runs(tmp_path: Path) -> None:
    with StandIn(bash_call("touch made.txt")) as api:
        opts, work = options(tmp_path, api)
        run(opts)
    assert (work / "made.txt").exists()
    assert "claude-cli/" in api.posts()[0].headers["user-agent"]  # the real Claude Code made the requests


def test_blocked_never_runs_the_model_is_told_allowed_runs_and_is_recorded(tmp_path: Path) -> None:
    runtime, db = make_runtime(tmp_path)
    with StandIn(bash_call("touch forbidden.txt")) as api:
        opts, work = options(tmp_path / "blocked", api)
        run(govern(opts, runtime))
    assert not (work / "forbidden.txt").exists()
    assert "no-forbidden-files" in told(api) and "forbidden files are never created" in told(api)
    with StandIn(bash_call("touch allowed.txt")) as api:
        opts, work = options(tmp_path / "allowed", api)
        run(govern(opts, runtime))
    assert (work / "allowed.txt").exists()
    blocked, allowed = decisions(db)
    for row in (blocked, allowed):
        assert (row["action"]["type"], row["action"]["target"]) == ("Bash", "claude-code")
        assert row["origin"]["via"] == "claude-agent-sdk" and row["origin"]["tool"] == "Bash"
        assert row["origin"]["tool_use_id"] == "toolu_standin_01" and row["origin"]["session_id"]
    assert blocked["decision"]["rule"] == "no-forbidden-files" and outcome(db, blocked) == "blocked"
    assert events(db, blocked["decision_id"], "execution") == []
    assert allowed["decision"]["approval"] == "auto" and outcome(db, allowed) == "ok"
    verify(db)


def test_approve_waits_for_the_handler_and_a_timeout_denies(tmp_path: Path) -> None:
    runtime, db = make_runtime(tmp_path, timeout=30)
    with StandIn(bash_call("touch reviewed.txt")) as api, Approver(db, delay=0.5) as person:
        opts, work = options(tmp_path / "approved", api)
        run(govern(opts, runtime))
    assert person.answered and (work / "reviewed.txt").exists()
    [approved] = decisions(db)
    assert [e["status"] for e in events(db, approved["decision_id"], "approval")] == ["approved"]
    assert outcome(db, approved) == "ok"

    runtime, db = make_runtime(tmp_path / "t", timeout=1.0)  # nobody answers
    with StandIn(bash_call("touch reviewed.txt")) as api:
        opts, work = options(tmp_path / "timed-out", api)
        run(govern(opts, runtime))
    assert not (work / "reviewed.txt").exists()
    assert "reviewed-files" in told(api) and "no answer in time" in told(api)
    [timed_out] = decisions(db)
    assert outcome(db, timed_out) == "timed_out" and events(db, timed_out["decision_id"], "execution") == []
    verify(db)

    # Claude Code stops waiting for the hook first (hook_timeout): the call is blocked, the wait cancelled
    runtime, db = make_runtime(tmp_path / "h", timeout=60)
    with StandIn(bash_call("touch reviewed.txt")) as api:
        opts, work = options(tmp_path / "hook-timeout", api)
        run(govern(opts, runtime, hook_timeout=2))
    assert not (work / "reviewed.txt").exists()
    [cancelled] = decisions(db)
    assert outcome(db, cancelled) == "cancelled"
    verify(db)


def test_the_users_hooks_and_can_use_tool_still_refuse(tmp_path: Path) -> None:
    runtime, db = make_runtime(tmp_path)
    asked: list[str] = []

    async def their_hook(data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        asked.append(data["tool_name"])
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                       "permissionDecisionReason": "the team hook says no"}}

    with StandIn(bash_call("touch allowed.txt")) as api:
        opts, work = options(tmp_path / "hook", api, hooks={"PreToolUse": [HookMatcher(hooks=[their_hook])]})
        governed = govern(opts, runtime)
        run(governed)
    assert asked == ["Bash"] and not (work / "allowed.txt").exists() and "the team hook says no" in told(api)
    assert opts.hooks is not None and len(opts.hooks["PreToolUse"]) == 1  # the user's options are not changed

    async def their_permission(tool: str, tool_input: dict[str, Any], context: Any) -> Any:
        asked.append(f"can_use_tool:{tool}")
        return PermissionResultDeny(message="the team callback says no")

    with StandIn(bash_call("touch allowed.txt")) as api:
        opts, work = options(tmp_path / "callback", api, can_use_tool=their_permission, allowed_tools=[])
        run(govern(opts, runtime))
    assert asked[-1] == "can_use_tool:Bash" and not (work / "allowed.txt").exists()
    by_hook, by_callback = decisions(db)
    # aegis allowed both; neither ran, and the trail says so
    assert by_hook["decision"]["approval"] == by_callback["decision"]["approval"] == "auto"
    [hook_run] = events(db, by_hook["decision_id"], "execution")
    [callback_run] = events(db, by_callback["decision_id"], "execution")
    assert hook_run["status"] == "error" and "did not run" in hook_run["error"]
    assert callback_run["status"] == "error" and "the team callback says no" in callback_run["error"]
    verify(db)


def test_mcp_tools_map_as_the_hook_maps_them_and_unreadable_events_are_denied(tmp_path: Path) -> None:
    runtime, db = make_runtime(tmp_path)
    gate = Gate(runtime)
    event = {"hook_event_name": "PreToolUse", "session_id": "s-1", "cwd": "/repo",
             "tool_name": "mcp__linear__create_issue", "tool_input": {"title": "t"}, "tool_use_id": "toolu_1"}
    answer = asyncio.run(gate.before(event, "toolu_1", {}))
    assert answer["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert "linear-issues" in answer["hookSpecificOutput"]["permissionDecisionReason"]
    [row] = decisions(db)
    assert (row["action"]["type"], row["action"]["target"]) == ("create_issue", "linear")
    for bad in ({"hook_event_name": "BeforeTool", "tool_name": "run_shell_command", "tool_input": {}},
                {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": "ls"}, None):
        refused = asyncio.run(gate.before(bad, None, {}))
        assert refused["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert len(records(db)) == 1  # nothing unreadable was recorded as a decision


def test_a_claude_code_that_cannot_honour_on_failure_refuses_to_start(tmp_path: Path) -> None:
    if not OLD_CLAUDE.exists():
        pytest.skip(f"{OLD_CLAUDE} is missing: run .ci/setup")
    runtime, _ = make_runtime(tmp_path)
    with StandIn(bash_call("touch allowed.txt")) as api:
        opts, work = options(tmp_path, api, cli_path=str(OLD_CLAUDE))
        with pytest.raises(CLIConnectionError, match="on_failure"):
            run(govern(opts, runtime))
    assert not (work / "allowed.txt").exists() and api.posts() == []


def test_govern_takes_options_only(tmp_path: Path) -> None:
    runtime, _ = make_runtime(tmp_path)
    with pytest.raises(TypeError, match="ClaudeAgentOptions"):
        govern({"hooks": {}}, runtime)
