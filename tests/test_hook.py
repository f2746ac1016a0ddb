"""`aegis hook claude-code`: PreToolUse input in, allow / ask / deny out, every decision audited; anything
else exits 2 (a block to every agent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pg import bodies, verifies
from typer.testing import CliRunner

from aegis_cli.cli import app

SHARED_TRACE = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "claude-code-entire"

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: no-rm-rf
    match: {type: Bash}
    conditions: {param_matches: {command: "rm\\\\s+-rf"}}
    risk_level: critical
    approval: block
    reason: recursive deletes are not allowed
  - name: writes-need-review
    match: {type: "Write"}
    risk_level: medium
    approval: approve
    reason: a person reviews new files
  - name: no-linear-issues
    match: {type: create_issue, target: linear-server}
    risk_level: high
    approval: block
"""


def hook_input(tool: str, tool_input: Any, **extra: Any) -> str:
    return json.dumps({"session_id": "s-1", "transcript_path": "/tmp/t.jsonl", "cwd": "/repo",
                       "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tool_input,
                       "tool_use_id": "toolu_01", **extra})


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return policy


@pytest.fixture
def files(policy_file: Path, audit_target: str) -> tuple[Path, str]:
    """The policy, and the trail: an SQLite file, then a PostgreSQL URL (the hook takes either)."""
    return policy_file, audit_target


def run(policy: Path, db: str, stdin: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["hook", "claude-code", "-p", str(policy), "--audit-db", str(db)], input=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["hookSpecificOutput"]


def test_allow_ask_deny(files: tuple[Path, str]) -> None:
    policy, db = files
    out = run(policy, db, hook_input("Bash", {"command": "ls -la", "description": "list"}))
    assert out["hookEventName"] == "PreToolUse" and out["permissionDecision"] == "allow"
    out = run(policy, db, hook_input("Bash", {"command": "rm  -rf /", "description": "oops"}))
    assert out["permissionDecision"] == "deny"
    assert "no-rm-rf" in out["permissionDecisionReason"] and "recursive deletes" in out["permissionDecisionReason"]
    out = run(policy, db, hook_input("Write", {"file_path": "/repo/x.py", "content": "print(1)"}))
    assert out["permissionDecision"] == "ask" and "writes-need-review" in out["permissionDecisionReason"]
    # MCP tools inside Claude Code: mcp__<server>__<tool> is type <tool> on target <server>
    out = run(policy, db, hook_input("mcp__linear-server__create_issue", {"title": "t"}))
    assert out["permissionDecision"] == "deny"

    rows = bodies(db)
    assert [(r["action"]["type"], r["action"]["target"], r["decision"]["approval"]) for r in rows] == [
        ("Bash", "claude-code", "auto"), ("Bash", "claude-code", "block"), ("Write", "claude-code", "approve"),
        ("create_issue", "linear-server", "block")]
    assert rows[1]["action"]["params"]["command"] == "rm  -rf /" and rows[1]["action"]["session"] == "s-1"
    assert rows[1]["origin"]["tool_use_id"] == "toolu_01"
    assert verifies(db).ok


def refused(policy: Path, db: str, stdin: str) -> str:
    """Run the hook on input it must not decide: exit 2, nothing on stdout, one line on stderr."""
    result = CliRunner().invoke(app, ["hook", "claude-code", "-p", str(policy), "--audit-db", str(db)], input=stdin)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "fail closed" in result.stderr
    return result.stderr


@pytest.mark.parametrize("stdin", ["", "not json", "[1, 2]", json.dumps({"tool_input": {}}),
                                   json.dumps({"tool_name": "Bash", "tool_input": "rm -rf /"}),
                                   hook_input("Bash", "rm -rf /"),
                                   # Gemini CLI's and Codex's events are not Claude Code's
                                   json.dumps({"hook_event_name": "BeforeTool", "tool_name": "run_shell_command",
                                               "tool_input": {"command": "rm -rf build"}, "session_id": "g"}),
                                   hook_input("Bash", {"command": "rm -rf build"}, turn_id="t-1", model="gpt-5.5")])
def test_input_it_cannot_decide_is_refused_never_decided(files: tuple[Path, str], stdin: str) -> None:
    policy, db = files
    assert "unreadable claude-code hook input" in refused(policy, db, stdin)
    rows = bodies(db)
    assert [(r["kind"], r["decision_id"], r["data"]["status"]) for r in rows] == [("execution", None, "refused")]
    assert "unreadable" in rows[0]["data"]["reason"]


def test_broken_policy_or_audit_is_refused(tmp_path: Path, policy_file: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1'\nrules: [{match: {type: Bash}, approval: sometimes}]\n")
    assert "could not be loaded" in refused(bad, str(tmp_path / "audit.db"), hook_input("Bash", {"command": "ls"}))
    (tmp_path / "dir.db").mkdir()
    assert "audit" in refused(policy_file, str(tmp_path / "dir.db"), hook_input("Bash", {"command": "ls"}))


def test_post_tool_use_records_the_execution_of_the_decided_call(files: tuple[Path, str]) -> None:
    policy, db = files
    run(policy, db, hook_input("Write", {"file_path": "/repo/x.py", "content": "1"}, tool_use_id="toolu_w"))
    run(policy, db, hook_input("Bash", {"command": "ls"}, tool_use_id="toolu_b"))
    after = CliRunner().invoke(app, ["hook", "claude-code", "-p", str(policy), "--audit-db", str(db)],
                               input=hook_input("Write", {"file_path": "/repo/x.py", "content": "1"},
                                                hook_event_name="PostToolUse", tool_use_id="toolu_w",
                                                tool_response={"type": "create"}))
    assert after.exit_code == 0 and after.stdout == ""
    rows = bodies(db)
    assert [(r["kind"], r["decision_id"]) for r in rows] == [("decision", 1), ("decision", 2), ("execution", 1)]
    assert rows[0]["decision"]["approval"] == "approve" and rows[2]["data"]["status"] == "ok"


@pytest.mark.parametrize("where", ["arguments", "tool_use_id", "session_id"])
@pytest.mark.parametrize("odd", ["a\u0000b", "a\ud800b", "a\\u0000b"], ids=["nul", "lone-surrogate", "escaped-text"])
def test_post_tool_use_finds_its_decision_past_a_record_holding_odd_text(
        files: tuple[Path, str], store: str, odd: str, where: str, request: pytest.FixtureRequest) -> None:
    # What JSON can carry but PostgreSQL's json and jsonb refuse (a NUL, a lone surrogate) is kept escaped
    # in the record's body ("\u0000", "\ud800"), in the arguments or in the origin (the agent's call and
    # session ids); whatever an agent sent before, a later call's execution is recorded against its decision.
    policy, db = files
    odd_call = {"arguments": {}, "tool_use_id": {"tool_use_id": f"toolu_{odd}"},
                "session_id": {"session_id": f"s-{odd}"}}[where]
    run(policy, db, hook_input("Bash", {"command": f"printf '{odd}'"}, **{"tool_use_id": "toolu_odd", **odd_call}))
    run(policy, db, hook_input("Write", {"file_path": "/repo/x.py", "content": "1"}, tool_use_id="toolu_w"))
    after = CliRunner().invoke(app, ["hook", "claude-code", "-p", str(policy), "--audit-db", str(db)],
                               input=hook_input("Write", {"file_path": "/repo/x.py", "content": "1"},
                                                hook_event_name="PostToolUse", tool_use_id="toolu_w",
                                                tool_response={"type": "create"}))
    assert after.exit_code == 0, after.output
    rows = bodies(db)
    assert [(r["kind"], r["decision_id"]) for r in rows] == [("decision", 1), ("decision", 2), ("execution", 2)]
    assert rows[0]["action"]["params"]["command"] == f"printf '{odd}'" and verifies(db).ok


def test_print_settings(files: tuple[Path, str]) -> None:
    policy, db = files
    result = CliRunner().invoke(app, ["hook", "claude-code", "-p", str(policy), "--audit-db", str(db),
                                      "--print-settings"])
    assert result.exit_code == 0
    hook = json.loads(result.stdout)["hooks"]["PreToolUse"][0]
    assert hook["matcher"] == "*" and hook["hooks"][0]["type"] == "command"
    assert json.loads(result.stdout)["hooks"]["PostToolUse"][0]["hooks"] == hook["hooks"]
    command = hook["hooks"][0]["command"]
    assert "hook claude-code" in command and str(policy) in command and str(db) in command
    # run as Claude Code does (through a shell): a hook that cannot start still blocks (exit 2)
    broken = command.replace("hook claude-code", "no-such-subcommand", 1)
    assert subprocess.run(["sh", "-c", broken], input="{}", capture_output=True, text=True).returncode == 2
    missing = "/nonexistent/aegis " + command.split(" ", 1)[1]
    assert subprocess.run(["sh", "-c", missing], input="{}", capture_output=True, text=True).returncode == 2
    ok = subprocess.run(["sh", "-c", command], input=hook_input("Read", {"file_path": "x"}), capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "permissionDecision" in ok.stdout


def test_as_a_real_subprocess_like_claude_code_runs_it(files: tuple[Path, str]) -> None:
    policy, db = files
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    env["AEGIS_POLICY"] = str(policy)
    env["AEGIS_AUDIT_DB"] = str(db)
    proc = subprocess.run([sys.executable, "-m", "aegis_cli", "hook", "claude-code"],
                          input=hook_input("Bash", {"command": "rm -rf build"}), capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert [r["decision"]["rule"] for r in bodies(db)] == ["no-rm-rf"]


@pytest.mark.skipif(not SHARED_TRACE.is_dir(), reason="shared Claude Code traces are not present")
def test_every_tool_call_in_a_recorded_claude_code_session_gets_an_answer(policy_file: Path) -> None:
    from aegis_cli.hooks import run_hook

    policy = str(policy_file)
    seen: dict[str, int] = {}
    for path in sorted(SHARED_TRACE.glob("**/*.jsonl"))[:3]:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") != "assistant":
                continue
            for block in entry.get("message", {}).get("content", []):
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    raw = hook_input(block["name"], block["input"], session_id=entry.get("sessionId", ""))
                    answer = run_hook("claude-code", raw, [policy], None)
                    assert answer.exit_code == 0, answer.stderr
                    permission = json.loads(answer.stdout)["hookSpecificOutput"]["permissionDecision"]
                    seen[permission] = seen.get(permission, 0) + 1
    assert seen and set(seen) <= {"allow", "ask", "deny"}
    assert seen.get("allow", 0) > 0
