"""`aegis hook codex | gemini | claude-code` against the real coding-agent CLIs from npm, offline.

Each CLI is pointed at a local stand-in for its model API (tests/model_standins.py for Codex's
Responses API and Claude Code's Messages API, tests/gemini_standin.py for Gemini CLI) that asks for
one tool call. For each agent: a control run without aegis where the command runs; a run with the
hook installed exactly as ``--print-settings`` prints it, where the blocked command does not run, the
model is told the rule (the stand-in sees it in the next request) and the trail verifies and holds
the decision on the agent's target; an allowed call and the execution record linked to its
decision; and another agent's hook, which must block rather than let the call through.

The protocol units (answers, refusals, apply_patch files, MCP names) are tested without the CLIs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from gemini_standin import GeminiStandIn, shell_calls
from model_standins import StandIn, shell_call
from typer.testing import CliRunner

from aegis_cli.audit.approvals import ApprovalQueue
from aegis_cli.cli import app
from aegis_cli.hooks import run_hook
from aegis_cli.hooks.codex import patch_files
from aegis_cli.hooks.common import Unreadable

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".ci" / "node_modules" / ".bin"
PACKAGES = {"codex": "@openai/codex@0.171.0", "gemini": "@google/gemini-cli@0.61.0",
            "claude": "@anthropic-ai/claude-code@2.1.197"}

POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: "*"}
    conditions: {param_matches: {command: "\\\\brm\\\\s"}}
    approval: block
    risk_level: critical
    reason: deleting files is not allowed here
  - name: no-env-files
    match: {type: apply_patch}
    conditions: {param_glob: {path: ["**/.env", ".env"]}}
    approval: block
    risk_level: high
    reason: secrets stay out of the repository
  - name: docs-need-review
    match: {type: apply_patch}
    conditions: {param_glob: {path: "docs/**"}}
    approval: approve
    risk_level: medium
    reason: a person reviews documentation
  - name: writes-need-review
    match: {type: Write}
    approval: approve
    risk_level: medium
    reason: a person reviews new files
  - name: deploys-need-a-person
    match: {type: "*"}
    conditions: {param_matches: {command: "deploy"}}
    approval: approve
    risk_level: high
    reason: a person says when to deploy
"""


def cli(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{path} is missing: run .ci/setup (npm install --prefix .ci {PACKAGES[name]})")
    return path


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def settings(agent: str, policy: Path, db: Path, *options: str) -> str:
    result = CliRunner().invoke(app, ["hook", agent, "-p", str(policy), "--audit-db", str(db), "--print-settings",
                                      *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def audit_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        return [json.loads(body) for (body,) in conn.execute("SELECT body FROM audit ORDER BY id")]


def verified(db: Path) -> bool:
    result = CliRunner().invoke(app, ["audit", "verify", "--audit-db", str(db)])
    return result.exit_code == 0


def project(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "build").mkdir(parents=True)
    (work / "build" / "out.o").write_text("object")
    return work


def base_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}


def run(argv: list[Any], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


# --- what the model was told: the tool results in later requests ---------------------------------------

def told(api: Any) -> str:
    """Every tool result the agent sent back to the stand-in, as one text."""
    out = []
    for seen in api.posts():
        body = seen.body if isinstance(seen.body, dict) else {}
        for item in body.get("input") or []:  # Responses API
            if isinstance(item, dict) and item.get("type", "").endswith("_call_output"):
                out.append(json.dumps(item.get("output")))
        for message in body.get("messages") or []:  # Messages API
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append(json.dumps(block.get("content")))
        for content in body.get("contents") or []:  # Gemini API
            for part in content.get("parts") or []:
                if isinstance(part, dict) and "functionResponse" in part:
                    out.append(json.dumps(part["functionResponse"].get("response")))
    return "\n".join(out)


# --- protocol units --------------------------------------------------------------------------------------

def answer(agent: str, event: dict[str, Any], policy: Path, db: Path | None = None) -> Any:
    return run_hook(agent, json.dumps(event), [str(policy)], str(db) if db else None)


def codex_event(tool: str, tool_input: dict[str, Any], event: str = "PreToolUse", **extra: Any) -> dict[str, Any]:
    base = {"session_id": "s-1", "turn_id": "t-1", "transcript_path": None, "cwd": "/repo", "hook_event_name": event,
            "model": "gpt-5.5", "permission_mode": "default", "tool_name": tool, "tool_input": tool_input,
            "tool_use_id": "call_1"}
    if event == "PermissionRequest":
        del base["tool_use_id"]
    return {**base, **extra}


def gemini_event(tool: str, tool_input: dict[str, Any], event: str = "BeforeTool", **extra: Any) -> dict[str, Any]:
    return {"session_id": "g-1", "transcript_path": "/t.json", "cwd": "/repo", "hook_event_name": event,
            "timestamp": "2026-12-01T00:00:00.000Z", "tool_name": tool, "tool_input": tool_input, **extra}


PATCH = "*** Begin Patch\n*** Add File: src/new.py\n+x = 1\n*** Update File: a.py\n*** Move to: docs/a.py\n" \
        "@@\n-1\n+2\n*** Delete File: old.txt\n*** End Patch\n"


def test_apply_patch_files() -> None:
    assert patch_files(PATCH) == [("src/new.py", "add", ""), ("a.py", "move", "docs/a.py"),
                                  ("docs/a.py", "move", "a.py"), ("old.txt", "delete", "")]
    for bad in ("echo hi", "*** Begin Patch\n*** End Patch\n", "*** Begin Patch\n*** Move to: x\n*** End Patch"):
        with pytest.raises(Unreadable):
            patch_files(bad)


def test_codex_answers(policy: Path, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    # auto: nothing (Codex runs the call); "allow" would be an unsupported answer to Codex
    ok = answer("codex", codex_event("Bash", {"command": "ls"}), policy, db)
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "", "")
    no = answer("codex", codex_event("Bash", {"command": "rm -r build"}), policy, db)
    out = json.loads(no.stdout)["hookSpecificOutput"]
    assert no.exit_code == 0 and out["permissionDecision"] == "deny" and "no-deletes" in out["permissionDecisionReason"]
    # a patch: one decision per file, the strictest answers; approve is a deny on Codex (it cannot ask)
    patch = answer("codex", codex_event("apply_patch", {"command": PATCH}), policy, db)
    reason = json.loads(patch.stdout)["hookSpecificOutput"]["permissionDecisionReason"]
    assert "docs-need-review" in reason and "a person must approve" in reason
    env = answer("codex", codex_event("apply_patch", {"command": PATCH.replace("src/new.py", "app/.env")}), policy, db)
    assert "no-env-files" in json.loads(env.stdout)["hookSpecificOutput"]["permissionDecisionReason"]
    bad = answer("codex", codex_event("apply_patch", {"command": "not a patch"}), policy, db)
    assert bad.exit_code == 2 and "Begin Patch" in bad.stderr
    # PermissionRequest: auto allows, block denies with the reason, approve leaves Codex's prompt to the person
    allow = answer("codex", codex_event("Bash", {"command": "ls", "description": "d"}, "PermissionRequest"), policy)
    assert json.loads(allow.stdout)["hookSpecificOutput"]["decision"] == {"behavior": "allow"}
    deny = answer("codex", codex_event("Bash", {"command": "rm -r x"}, "PermissionRequest"), policy)
    assert json.loads(deny.stdout)["hookSpecificOutput"]["decision"]["behavior"] == "deny"
    # MCP tools: type <tool> on target <server>
    answer("codex", codex_event("mcp__linear__create_issue", {"title": "t"}, tool_use_id="call_m"), policy, db)
    rows = audit_rows(db)
    decisions = [(r["action"]["type"], r["action"]["target"], r["action"]["params"].get("path"),
                  r["decision"]["approval"]) for r in rows if r["kind"] == "decision"]
    assert decisions[:2] == [("Bash", "codex", None, "auto"), ("Bash", "codex", None, "block")]
    assert ("apply_patch", "codex", "docs/a.py", "approve") in decisions
    assert ("apply_patch", "codex", "app/.env", "block") in decisions
    assert decisions[-1] == ("create_issue", "linear", None, "auto")
    assert rows[-2]["kind"] == "execution" and rows[-2]["data"]["status"] == "refused"  # the bad patch


def test_gemini_answers_and_mcp_names(policy: Path, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    no = answer("gemini", gemini_event("run_shell_command", {"command": "rm -rf build"}), policy, db)
    out = json.loads(no.stdout)
    assert out["decision"] == "deny" and "no-deletes" in out["reason"] and "deleting files" in out["reason"]
    ok = answer("gemini", gemini_event("read_file", {"file_path": "a"}), policy, db)
    assert json.loads(ok.stdout)["decision"] == "allow"
    # Gemini CLI names MCP tools mcp_<server>_<tool>; mcp_context says the server even when it has "_" in it
    answer("gemini", gemini_event("mcp_my_srv_create_issue", {}, mcp_context={
        "server_name": "my_srv", "tool_name": "create_issue"}), policy, db)
    answer("gemini", gemini_event("mcp_linear_create_issue", {}), policy, db)
    after = answer("gemini", gemini_event("read_file", {"file_path": "a"}, "AfterTool",
                                          tool_response={"llmContent": "x", "returnDisplay": "x"}), policy, db)
    assert (after.exit_code, after.stdout) == (0, "{}\n")
    rows = audit_rows(db)
    assert [(r["action"]["type"], r["action"]["target"]) for r in rows if r["kind"] == "decision"] == [
        ("run_shell_command", "gemini-cli"), ("read_file", "gemini-cli"), ("create_issue", "my_srv"),
        ("create_issue", "linear")]
    assert rows[-1]["kind"] == "execution" and rows[-1]["decision_id"] == 2


@pytest.mark.parametrize(("agent", "event"), [
    ("codex", gemini_event("run_shell_command", {"command": "rm -rf build"})),
    ("codex", {**codex_event("Bash", {"command": "ls"}), "turn_id": None}),  # a Claude Code event
    ("gemini", codex_event("Bash", {"command": "ls"})),
    ("gemini", {"hook_event_name": "BeforeTool", "tool_name": "x", "tool_input": "rm -rf /"}),
    ("claude-code", codex_event("Bash", {"command": "ls"})),
    ("claude-code", gemini_event("run_shell_command", {"command": "ls"})),
])
def test_another_agents_event_is_refused(policy: Path, tmp_path: Path, agent: str, event: dict[str, Any]) -> None:
    db = tmp_path / "audit.db"
    out = answer(agent, event, policy, db)
    assert out.exit_code == 2 and out.stdout == "" and out.stderr.startswith(f"aegis: unreadable {agent} hook input")
    [row] = audit_rows(db)
    assert row["kind"] == "execution" and row["decision_id"] is None and row["data"]["status"] == "refused"


def test_print_settings_formats(policy: Path, tmp_path: Path) -> None:
    import tomllib

    db = tmp_path / "audit.db"
    codex = tomllib.loads(settings("codex", policy, db))["hooks"]
    assert set(codex) == {"PreToolUse", "PermissionRequest", "PostToolUse"}
    command = codex["PreToolUse"][0]["hooks"][0]["command"]
    assert command.endswith(" || exit 2") and str(policy) in command and "hook codex" in command
    gemini = json.loads(settings("gemini", policy, db))["hooks"]
    assert set(gemini) == {"BeforeTool", "AfterTool"}
    assert gemini["BeforeTool"][0]["hooks"][0]["command"].endswith(" || exit 2")
    # a hook that cannot start still blocks: exit 2 through the shell the agents use
    broken = command.replace("hook codex", "no-such-command", 1)
    assert subprocess.run(["sh", "-c", broken], input="{}", capture_output=True, text=True).returncode == 2


# --- Codex CLI ------------------------------------------------------------------------------------------

CODEX_CONFIG = """\
model = "gpt-5.5"
model_provider = "standin"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.standin]
name = "stand-in Responses API"
base_url = "{url}/v1"
wire_api = "responses"
"""


def codex_run(tmp_path: Path, api: StandIn, hooks: str = "") -> tuple[Path, subprocess.CompletedProcess[str]]:
    codex = cli("codex")
    work = project(tmp_path)
    home = tmp_path / "codex-home"
    env = base_env(tmp_path / "home")
    home.mkdir()
    (home / "config.toml").write_text(CODEX_CONFIG.format(url=api.url) + "\n" + hooks)
    env.update(CODEX_HOME=str(home), OPENAI_API_KEY="sk-standin")
    # --dangerously-bypass-hook-trust: a person reviews and trusts a new hook once (/hooks); a test cannot
    proc = run([codex, "exec", "--skip-git-repo-check", "--dangerously-bypass-hook-trust", "-C", work,
                "Clean the build directory."], work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return work, proc


def test_codex_control_without_aegis_the_command_runs(tmp_path: Path) -> None:
    with StandIn(shell_call("rm -r build")) as api:
        work, _ = codex_run(tmp_path, api)
    assert not (work / "build").exists()


def test_codex_hook_blocks_tells_the_model_and_audits(tmp_path: Path, policy: Path) -> None:
    db = tmp_path / "audit.db"
    with StandIn(shell_call("rm -r build")) as api:
        work, _ = codex_run(tmp_path, api, settings("codex", policy, db))
    assert (work / "build" / "out.o").exists()
    assert "no-deletes" in told(api) and "deleting files is not allowed" in told(api)
    rows = audit_rows(db)
    assert [(r["kind"], r["action"]["type"], r["action"]["target"], r["decision"]["approval"]) for r in rows] == [
        ("decision", "Bash", "codex", "block")]
    assert rows[0]["action"]["params"] == {"command": "rm -r build"} and verified(db)


def test_codex_allowed_call_runs_and_its_execution_is_linked(tmp_path: Path, policy: Path) -> None:
    db = tmp_path / "audit.db"
    with StandIn(shell_call("touch ran-ok")) as api:
        work, _ = codex_run(tmp_path, api, settings("codex", policy, db))
    assert (work / "ran-ok").exists()
    rows = audit_rows(db)
    assert [(r["kind"], r["decision_id"]) for r in rows] == [("decision", 1), ("execution", 1)]
    assert rows[0]["decision"]["approval"] == "auto" and rows[1]["data"]["status"] == "ok" and verified(db)


def test_codex_apply_patch_paths_are_decided(tmp_path: Path, policy: Path) -> None:
    db = tmp_path / "audit.db"
    patch = "*** Begin Patch\n*** Add File: notes.txt\n+ok\n*** Add File: config/.env\n+KEY=1\n*** End Patch\n"

    def ask(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        return ("apply_patch", {"input": patch}) if '"apply_patch"' in json.dumps(body.get("tools")) else None

    with StandIn(ask) as api:
        work, _ = codex_run(tmp_path, api, settings("codex", policy, db))
    assert not (work / "config" / ".env").exists() and not (work / "notes.txt").exists()
    assert "no-env-files" in told(api)
    decided = [(r["action"]["params"]["path"], r["decision"]["approval"]) for r in audit_rows(db)]
    assert decided == [("notes.txt", "auto"), ("config/.env", "block")] and verified(db)


class Person(threading.Thread):
    """Answers the first approval request that shows up in the queue, as `aegis approvals` would."""

    def __init__(self, db: Path, approve: bool) -> None:
        super().__init__(daemon=True)
        self.db, self.approve = db, approve
        self.answered: int | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.answered is None:
            if self.db.exists():
                with ApprovalQueue(self.db) as queue:
                    for request in queue.list():
                        queue.answer(request.id, self.approve, by="alice", note="checked the release")
                        self.answered = request.id
            time.sleep(0.2)


def test_approvals_queue_holds_the_call_until_a_person_answers(policy: Path, tmp_path: Path) -> None:
    deploy = codex_event("Bash", {"command": "./deploy.sh"})
    for agent, event, allowed in (("codex", deploy, ""), ("claude-code", {**deploy, "turn_id": None}, '"allow"'),
                                  ("gemini", gemini_event("run_shell_command", {"command": "./deploy.sh"}),
                                   '"allow"')):
        event = {k: v for k, v in event.items() if v is not None}
        for approve in (True, False):
            db = tmp_path / f"{agent}-{approve}.db"
            person = Person(db, approve)
            person.start()
            got = run_hook(agent, json.dumps(event), [str(policy)], str(db), approval_timeout=60)
            person.join(5)
            assert got.exit_code == 0 and person.answered is not None, (agent, got)
            if approve:
                assert got.stdout.strip() == allowed or allowed in got.stdout, (agent, got.stdout)
            else:
                assert "deny" in got.stdout and "was denied by alice (checked the release)" in got.stdout, got.stdout
            rows = audit_rows(db)
            assert [(r["kind"], r["decision_id"]) for r in rows] == [("decision", 1), ("approval", 1)], rows
            assert rows[1]["data"]["status"] == ("approved" if approve else "denied") and verified(db)
    # nobody answers: denied when the time is up, and the time-out is in the trail
    db = tmp_path / "nobody.db"
    got = run_hook("codex", json.dumps(deploy), [str(policy)], str(db), approval_timeout=0.5)
    assert '"deny"' in got.stdout and "no one answered approval request 1 within 0.5s" in got.stdout
    assert [r["data"].get("status") for r in audit_rows(db)] == [None, "timed_out"]
    # without --approvals queue, Codex cannot ask: denied at once, nothing queued
    db = tmp_path / "agent.db"
    got = run_hook("codex", json.dumps(deploy), [str(policy)], str(db))
    assert '"deny"' in got.stdout and "a person must approve it" in got.stdout
    assert [r["kind"] for r in audit_rows(db)] == ["decision"]


def test_codex_approvals_queue_runs_the_call_once_a_person_approves(tmp_path: Path, policy: Path) -> None:
    hooks_settings = settings("codex", policy, tmp_path / "audit.db", "--approvals", "queue",
                              "--approval-timeout", "60")
    assert "--approvals queue --approval-timeout 60" in hooks_settings and "timeout = 76" in hooks_settings
    for approve in (True, False):
        db = tmp_path / "audit.db"
        db.unlink(missing_ok=True)
        person = Person(db, approve)
        person.start()
        with StandIn(shell_call("touch deploy-done")) as api:
            work, _ = codex_run(tmp_path / str(approve), api, hooks_settings)
        person.join(5)
        assert person.answered is not None
        assert (work / "deploy-done").exists() is approve
        if not approve:
            assert "deploys-need-a-person" in told(api) and "denied by alice" in told(api)
        kinds = [(r["kind"], r["decision_id"]) for r in audit_rows(db)]
        assert kinds[:2] == [("decision", 1), ("approval", 1)] and verified(db)
        assert kinds[2:] == ([("execution", 1)] if approve else [])


def test_codex_with_another_agents_hook_blocks(tmp_path: Path, policy: Path) -> None:
    db = tmp_path / "audit.db"
    gemini_hook = json.loads(settings("gemini", policy, db))["hooks"]["BeforeTool"][0]["hooks"][0]["command"]
    hooks = f'[[hooks.PreToolUse]]\nmatcher = "*"\n[[hooks.PreToolUse.hooks]]\ntype = "command"\n' \
            f"command = {json.dumps(gemini_hook)}\n"
    with StandIn(shell_call("touch ran-ok")) as api:
        work, _ = codex_run(tmp_path, api, hooks)
    assert not (work / "ran-ok").exists() and "unreadable gemini hook input" in told(api)
    assert [r["data"]["status"] for r in audit_rows(db)] == ["refused"]


# --- Gemini CLI ------------------------------------------------------------------------------------------

GEMINI_SETTINGS = {"security": {"auth": {"selectedType": "gemini-api-key"}},
                   "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
                   "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}


def gemini_run(tmp_path: Path, api: GeminiStandIn, hooks: dict[str, Any] | None = None) -> Path:
    gemini = cli("gemini")
    work = project(tmp_path)
    env = base_env(tmp_path / "home")
    (tmp_path / "home" / ".gemini").mkdir()
    (tmp_path / "home" / ".gemini" / "settings.json").write_text(json.dumps({**GEMINI_SETTINGS, **(hooks or {})}))
    env.update(GEMINI_API_KEY="AIzaSy-dummy-key-for-the-stand-in-0123", GEMINI_CLI_TRUST_WORKSPACE="true",
               GOOGLE_GEMINI_BASE_URL=api.url)
    # a fixed model skips the CLI's model router (another request to classify the prompt)
    proc = run([gemini, "-m", "gemini-2.5-flash", "-p", "Clean the build directory.", "--yolo"], work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return work


def test_gemini_control_without_aegis_the_command_runs(tmp_path: Path) -> None:
    with GeminiStandIn(shell_calls("rm -rf build")) as api:
        work = gemini_run(tmp_path, api)
    assert not (work / "build").exists()


def test_gemini_hook_blocks_tells_the_model_and_audits(tmp_path: Path, policy: Path) -> None:
    db = tmp_path / "audit.db"
    with GeminiStandIn(shell_calls("rm -rf build")) as api:
        work = gemini_run(tmp_path, api, json.loads(settings("gemini", policy, db)))
    assert (work / "build" / "out.o").exists()
    assert "no-deletes" in told(api) and "deleting files is not allowed" in told(api)
    rows = audit_rows(db)
    assert [(r["kind"], r["action"]["type"], r["action"]["target"], r["decision"]["approval"]) for r in rows] == [
        ("decision", "run_shell_command", "gemini-cli", "block")]
    assert verified(db)


def test_gemini_allowed_call_runs_and_its_execution_is_linked(tmp_path: Path, policy: Path) -> None:
    db = tmp_path / "audit.db"
    with GeminiStandIn(shell_calls("touch ran-ok")) as api:
        work = gemini_run(tmp_path, api, json.loads(settings("gemini", policy, db)))
    assert (work / "ran-ok").exists()
    rows = audit_rows(db)
    assert [(r["kind"], r["decision_id"]) for r in rows] == [("decision", 1), ("execution", 1)]
    assert rows[1]["data"]["status"] == "ok" and verified(db)


def test_gemini_with_the_claude_code_hook_blocks(tmp_path: Path, policy: Path) -> None:
    """The case that slipped through: Gemini CLI ignores Claude's answer format, so the hook must refuse."""
    db = tmp_path / "audit.db"
    claude_hook = json.loads(settings("claude-code", policy, db))["hooks"]["PreToolUse"][0]["hooks"][0]
    hooks = {"hooks": {"BeforeTool": [{"matcher": "*", "hooks": [dict(claude_hook, timeout=30000)]}]}}
    with GeminiStandIn(shell_calls("rm -rf build")) as api:
        work = gemini_run(tmp_path, api, hooks)
    assert (work / "build" / "out.o").exists()
    assert "unreadable claude-code hook input" in told(api)
    [row] = audit_rows(db)
    assert row["kind"] == "execution" and row["data"]["status"] == "refused" and verified(db)


# --- Claude Code -----------------------------------------------------------------------------------------

def claude_run(tmp_path: Path, api: StandIn, hooks: dict[str, Any] | None = None) -> Path:
    claude = cli("claude")
    work = project(tmp_path)
    home = tmp_path / "home"
    env = base_env(home)
    (home / "settings.json").write_text(json.dumps(hooks or {}))
    env.update(ANTHROPIC_API_KEY="sk-ant-standin", ANTHROPIC_BASE_URL=api.url, CLAUDE_CONFIG_DIR=str(home / ".claude"),
               DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    proc = run([claude, "-p", "Clean the build directory.", "--settings", home / "settings.json",
                "--permission-mode", "acceptEdits", "--allowedTools=Bash"], work, env)
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-1000:]
    return work


def bash_call(cmd: str) -> Any:
    def ask(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        return ("Bash", {"command": cmd, "description": "Run it"}) if '"Bash"' in json.dumps(body.get("tools")) \
            else None
    return ask


def write_call(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    return ("Write", {"file_path": "made.txt", "content": "hi\n"}) if '"Write"' in json.dumps(body.get("tools")) \
        else None


def test_claude_code_control_without_aegis_the_command_runs(tmp_path: Path) -> None:
    with StandIn(bash_call("rm -rf build")) as api:
        work = claude_run(tmp_path, api)
    assert not (work / "build").exists()


def test_claude_code_hook_blocks_and_records_what_ran(tmp_path: Path, policy: Path) -> None:
    db = tmp_path / "audit.db"
    hooks = json.loads(settings("claude-code", policy, db))
    with StandIn(bash_call("rm -rf build")) as api:
        work = claude_run(tmp_path / "blocked", api, hooks)
    assert (work / "build" / "out.o").exists() and "no-deletes" in told(api)
    with StandIn(bash_call("touch ran-ok")) as api:
        work = claude_run(tmp_path / "allowed", api, hooks)
    assert (work / "ran-ok").exists()
    # approve -> Claude Code's own prompt; headless (-p) nobody answers it, so the file is not written
    with StandIn(write_call) as api:
        work = claude_run(tmp_path / "asked", api, hooks)
    assert not (work / "made.txt").exists()
    rows = audit_rows(db)
    assert [(r["kind"], r["decision_id"], (r["decision"] or {}).get("approval")) for r in rows] == [
        ("decision", 1, "block"), ("decision", 2, "auto"), ("execution", 2, None), ("decision", 4, "approve")]
    assert rows[1]["action"]["target"] == "claude-code" and verified(db)
