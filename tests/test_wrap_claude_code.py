"""One mapping everywhere: a rule on target ``claude-code`` means the same under ``aegis hook claude-code``
and ``aegis wrap -- claude``.

The real Claude Code CLI (.ci/node_modules) talks to a local stand-in Anthropic Messages server
(tests/model_standins.py) that asks for one Bash call creating a file. A control run creates it;
with the hook, and under ``aegis wrap`` (recognised by the wrapped command, and by Claude Code's own
User-Agent when the command does not give it away), the same policy blocks it, the agent is told the
rule, and the trail verifies and holds ``Bash`` on ``claude-code``. The recognition itself (the
User-Agents the real Claude Code, Codex and Gemini CLI send) and the plain mapping for other clients
are checked without the CLIs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_standins import StandIn
from pg import bodies

from aegis_cli import Policy
from aegis_cli.wrap import agents
from aegis_cli.wrap.tool_gate import ToolCall, ToolGate

CLAUDE = Path(__file__).resolve().parent.parent / ".ci" / "node_modules" / ".bin" / "claude"
POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-pwned-files
    match: {type: Bash, target: claude-code}
    conditions: {param_matches: {command: "pwned"}}
    approval: block
    risk_level: critical
    reason: nothing may create pwned.txt
"""
PROMPT = ["-p", "Make the file.", "--permission-mode", "acceptEdits", "--allowedTools=Bash"]


def claude() -> str:
    if not CLAUDE.exists():
        pytest.skip(f"{CLAUDE} is missing: run .ci/setup (npm install --prefix .ci @anthropic-ai/claude-code)")
    return str(CLAUDE)


def bash_call(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    tools = json.dumps(body.get("tools"))
    return ("Bash", {"command": "touch pwned.txt", "description": "Make it"}) if '"Bash"' in tools else None


def setup(tmp_path: Path, api: StandIn) -> tuple[Path, Path, dict[str, str]]:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(parents=True)
    (home / ".claude").mkdir(parents=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AEGIS_", "CLAUDE"))}
    env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"), ANTHROPIC_API_KEY="sk-ant-standin",
               ANTHROPIC_BASE_URL=api.url, DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
               NO_COLOR="1", TERM="dumb")
    return work, policy, env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def aegis(*args: str) -> list[str]:
    return [sys.executable, "-m", "aegis_cli", *args]


def blocked_rows(db: str) -> list[dict[str, Any]]:
    rows = bodies(db, "decision")
    verify = subprocess.run(aegis("audit", "verify", "--audit-db", db), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return [r for r in rows if r["decision"]["approval"] == "block"]


def test_control_without_aegis_the_file_is_made(tmp_path: Path) -> None:
    with StandIn(bash_call) as api:
        work, _, env = setup(tmp_path, api)
        proc = run([claude(), *PROMPT], work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / "pwned.txt").exists()


def test_a_claude_code_rule_blocks_under_the_hook(tmp_path: Path, audit_target: str) -> None:
    with StandIn(bash_call) as api:
        work, policy, env = setup(tmp_path, api)
        db = audit_target
        settings = run(aegis("hook", "claude-code", "-p", str(policy), "--audit-db", db, "--print-settings"),
                       work, env)
        (tmp_path / "settings.json").write_text(settings.stdout)
        proc = run([claude(), *PROMPT, "--settings", str(tmp_path / "settings.json")], work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (work / "pwned.txt").exists()
    told = json.dumps([s.body for s in api.posts()][1:])
    assert "no-pwned-files" in told
    [row] = blocked_rows(db)
    assert (row["action"]["type"], row["action"]["target"], row["decision"]["rule"]) == \
        ("Bash", "claude-code", "no-pwned-files")


@pytest.mark.parametrize("how", ["command", "user-agent"])
def test_the_same_rule_blocks_under_wrap(tmp_path: Path, how: str, audit_target: str) -> None:
    with StandIn(bash_call) as api:
        work, policy, env = setup(tmp_path, api)
        db = audit_target
        command = [claude(), *PROMPT]
        if how == "user-agent":  # a command that does not give Claude Code away: its requests still do
            command = ["sh", "-c", shlex.join(command)]
            assert agents.from_command(command) is None
        proc = run(aegis("wrap", "-p", str(policy), "--audit-db", db, "--approvals", "deny", "--", *command),
                   work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (work / "pwned.txt").exists()
    assert "[aegis] Tool call `Bash` was blocked" in proc.stdout and "no-pwned-files" in proc.stdout
    assert api.posts() and all(s.headers["user-agent"].startswith("claude-cli/") for s in api.posts())
    [row] = blocked_rows(db)
    assert (row["action"]["type"], row["action"]["target"], row["decision"]["rule"]) == \
        ("Bash", "claude-code", "no-pwned-files")
    assert row["origin"]["via"] == "wrap" and row["origin"]["agent"] == "claude-code"


# User-Agents as the real CLIs sent them to a stand-in (Claude Code 2.1.197 and 2.1.332 under the Agent SDK,
# Codex 0.171.0 exec, Gemini CLI 0.61.0).
SEEN = [({"user-agent": "claude-cli/2.1.197 (external, sdk-cli)", "x-app": "cli"}, "claude-code"),
        ({"user-agent": "claude-cli/2.1.332 (external, sdk-py, agent-sdk/0.2.189)"}, "claude-code"),
        ({"user-agent": "codex_exec/0.171.0 (Debian 12.0.0; x86_64) dumb (codex_exec; 0.171.0)",
          "originator": "codex_exec"}, "codex"),
        ({"originator": "codex_cli_rs"}, "codex"),
        ({"user-agent": "GeminiCLI-tui/0.61.0/gemini-2.5-flash (linux; x64; terminal)"}, "gemini-cli"),
        ({"user-agent": "Anthropic/Python 0.94.0"}, None), ({"user-agent": "OpenAI/JS 5.1.0"}, None), ({}, None)]


@pytest.mark.parametrize(("headers", "target"), SEEN)
def test_agents_are_recognised_by_what_they_send(headers: dict[str, str], target: str | None) -> None:
    found = agents.from_headers(headers)
    assert (found.target if found else None) == target


def test_agents_are_recognised_by_the_wrapped_command() -> None:
    cases = [(["claude", "-p", "x"], "claude-code"), (["/opt/bin/codex", "exec", "hi"], "codex"),
             (["npx", "-y", "@google/gemini-cli@0.61.0"], "gemini-cli"), (["env", "A=1", "gemini"], "gemini-cli"),
             (["npx", "@anthropic-ai/claude-code"], "claude-code"), (["python", "agent.py"], None),
             (["sh", "-c", "claude -p hi"], None)]
    for command, target in cases:
        found = agents.from_command(command)
        assert (found.target if found else None) == target, command


def test_one_mapping_built_ins_on_the_agent_mcp_on_the_server_others_on_the_tool() -> None:
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    try:
        def action(name: str, agent: agents.CodingAgent | None) -> tuple[str, str]:
            a = gate.action_for(ToolCall("anthropic", "messages", "t", name, {}, coding_agent=agent))
            return a.type, a.target

        assert action("Bash", agents.CLAUDE_CODE) == ("Bash", "claude-code")
        assert action("exec_command", agents.CODEX) == ("exec_command", "codex")  # the plain mapping; but
        shell = ToolCall("openai", "responses", "t", "exec_command", {"cmd": "ls"}, coding_agent=agents.CODEX)
        assert [(a.type, a.target) for a in gate.actions_for(shell)] == [("Bash", "codex")]  # as Codex's hook says
        assert action("run_shell_command", agents.GEMINI_CLI) == ("run_shell_command", "gemini-cli")
        assert action("mcp__github__delete_repo", agents.CLAUDE_CODE) == ("delete_repo", "github")
        assert action("mcp__github__delete_repo", agents.CODEX) == ("delete_repo", "github")
        assert action("mcp_github_delete_repo", agents.GEMINI_CLI) == ("delete_repo", "github")
        assert action("Bash", None) == ("Bash", "Bash")  # a client that is no coding agent: target = tool name
    finally:
        gate.close()
