"""One policy, the same meaning for Codex under `aegis hook codex` and `aegis wrap -- codex` (real CLI, offline).

The real Codex CLI (npm `@openai/codex` 0.171) talks to a stand-in Responses API on 127.0.0.1
(tests/model_standins.py) that asks for one tool call. The policy is written once, for the names
the hook reports (`Bash` with `command`, `apply_patch` per file). For each call: a control run
without aegis where it takes effect, then the hook run and the wrap run, where it does not, and
the two audit trails hold the same decisions (type, target, params, answer, rule) on target `codex`.

Codex itself refuses a plain `rm -rf PATH` ("rm -f style commands are not permitted"), which would
make a block look like aegis's doing; `echo build | xargs rm -rf` passes Codex's own check and
deletes, so a test that only sees the directory survive can tell aegis's block from Codex's.

The mapping units (each Codex tool the model can call, argv joining, code mode, MCP namespaces)
are tested without the CLI.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_standins import StandIn, offered_tools, shell_call
from typer.testing import CliRunner

from aegis_cli.cli import app
from aegis_cli.engine.policy import Policy
from aegis_cli.wrap import agents
from aegis_cli.wrap.codex_tools import CODE_MODE_REFUSAL, shlex_join
from aegis_cli.wrap.openai_responses import _call
from aegis_cli.wrap.tool_gate import ToolCall, ToolGate

BIN = Path(__file__).resolve().parent.parent / ".ci" / "node_modules" / ".bin"
POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-rm-rf
    match: {type: Bash}
    conditions: {param_matches: {command: "rm\\\\s+-rf"}}
    approval: block
    risk_level: critical
    reason: recursive deletes are not allowed
  - name: no-secrets
    match: {type: apply_patch, target: codex}
    conditions: {param_glob: {path: "secrets/**"}}
    approval: block
    risk_level: high
    reason: secrets stay out of the repository
"""
RM = "echo build | xargs rm -rf"
PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+ok\n*** Add File: secrets/key.txt\n+KEY=1\n*** End Patch\n"
CONFIG = """\
model = "{model}"
model_provider = "standin"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.standin]
name = "stand-in Responses API"
base_url = "{url}/v1"
wire_api = "responses"
"""


def codex() -> str:
    path = BIN / "codex"
    if not path.exists():
        pytest.skip(f"{path} is missing: run .ci/setup (npm install --prefix .ci @openai/codex@0.171.0)")
    return str(path)


def ask_patch(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    return ("apply_patch", {"input": PATCH}) if '"apply_patch"' in json.dumps(body.get("tools")) else None


def ask_code_mode(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    script = f"await tools.exec_command({{cmd: {json.dumps(RM)}}});"
    return ("exec", {"input": script}) if "exec" in {t.get("name") for t in offered_tools(body)} else None


def run_codex(tmp_path: Path, api: StandIn, mode: str,
              model: str = "gpt-5.5") -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """Codex in a fresh project and home: ``mode`` is control (no aegis), hook or wrap."""
    base = tmp_path / mode
    work, home, codex_home = base / "work", base / "home", base / "codex-home"
    (work / "build").mkdir(parents=True)
    (work / "build" / "out.o").write_text("object")
    home.mkdir()
    codex_home.mkdir()
    policy, db = base / "policy.yaml", base / "audit.db"
    policy.write_text(POLICY)
    config = CONFIG.format(url=api.url, model=model)
    if mode == "hook":
        result = CliRunner().invoke(app, ["hook", "codex", "-p", str(policy), "--audit-db", str(db),
                                          "--print-settings"])
        assert result.exit_code == 0, result.output
        config += "\n" + result.stdout
    (codex_home / "config.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "AEGIS_"))}
    env.update(HOME=str(home), CODEX_HOME=str(codex_home), OPENAI_API_KEY="sk-standin", NO_COLOR="1")
    # --dangerously-bypass-hook-trust: a person reviews and trusts a new hook once (/hooks); a test cannot
    command = [codex(), "exec", "--skip-git-repo-check", "--dangerously-bypass-hook-trust", "-C", str(work),
               "Tidy up the project."]
    if mode == "wrap":
        command = [sys.executable, "-m", "aegis_cli", "wrap", "-p", str(policy), "--audit-db", str(db),
                   "--approvals", "deny", "--", *command]
    try:
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=90,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # fail here, saying which run, before pytest's own timeout
        tail = [(x.decode(errors="replace") if isinstance(x, bytes) else x or "")[-1500:]
                for x in (exc.stdout, exc.stderr)]
        pytest.fail(f"the {mode} run of Codex did not finish in 90 s: {tail}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return work, db, proc


def decisions(db: Path) -> list[tuple[Any, ...]]:
    """What was decided, as both faces must agree on it: type, target, params, answer, rule."""
    verify = CliRunner().invoke(app, ["audit", "verify", "--audit-db", str(db)])
    assert verify.exit_code == 0, verify.output
    with sqlite3.connect(db) as conn:
        rows = [json.loads(body) for (body,) in conn.execute("SELECT body FROM audit ORDER BY id")]
    return [(r["action"]["type"], r["action"]["target"], r["action"]["params"], r["decision"]["approval"],
             r["decision"].get("rule")) for r in rows if r["kind"] == "decision"]


def told(api: StandIn) -> str:
    """The tool results Codex sent back to the model (what it was told under the hook)."""
    return "\n".join(json.dumps(item.get("output")) for seen in api.posts() if isinstance(seen.body, dict)
                     for item in seen.body.get("input") or []
                     if isinstance(item, dict) and str(item.get("type", "")).endswith("_call_output"))


@pytest.mark.timeout(300)
def test_rm_rf_blocked_under_hook_and_wrap_alike(tmp_path: Path) -> None:
    with StandIn(shell_call(RM)) as api:
        work, _, _ = run_codex(tmp_path, api, "control")
    assert not (work / "build").exists()  # Codex runs this rm -rf itself: a surviving directory is aegis's doing

    with StandIn(shell_call(RM)) as api:
        work, hook_db, _ = run_codex(tmp_path, api, "hook")
    assert (work / "build" / "out.o").exists()
    assert "no-rm-rf" in told(api) and "recursive deletes are not allowed" in told(api)

    with StandIn(shell_call(RM)) as api:
        work, wrap_db, out = run_codex(tmp_path, api, "wrap")
    assert (work / "build" / "out.o").exists()
    assert "[aegis] Tool call `exec_command` was blocked" in out.stdout and "rule 'no-rm-rf'" in out.stdout

    expected = [("Bash", "codex", {"command": RM}, "block", "no-rm-rf")]
    assert decisions(hook_db) == expected
    assert decisions(wrap_db) == expected


@pytest.mark.timeout(300)
def test_patch_into_secrets_blocked_under_hook_and_wrap_alike(tmp_path: Path) -> None:
    with StandIn(ask_patch) as api:
        work, _, _ = run_codex(tmp_path, api, "control")
    assert (work / "secrets" / "key.txt").exists() and (work / "notes.txt").exists()

    with StandIn(ask_patch) as api:
        work, hook_db, _ = run_codex(tmp_path, api, "hook")
    assert not (work / "secrets").exists() and not (work / "notes.txt").exists()  # the strictest file answers
    assert "no-secrets" in told(api)

    with StandIn(ask_patch) as api:
        work, wrap_db, out = run_codex(tmp_path, api, "wrap")
    assert not (work / "secrets").exists() and not (work / "notes.txt").exists()
    assert "[aegis] Tool call `apply_patch` was blocked" in out.stdout and "rule 'no-secrets'" in out.stdout

    hook, wrap = decisions(hook_db), decisions(wrap_db)
    assert [(t, target, p["path"], p["operation"], answer, rule) for t, target, p, answer, rule in hook] == [
        ("apply_patch", "codex", "notes.txt", "add", "auto", None),
        ("apply_patch", "codex", "secrets/key.txt", "add", "block", "no-secrets")]
    assert wrap == hook  # the same actions, params and answers, file by file


@pytest.mark.timeout(300)
def test_code_mode_the_hook_decides_each_call_and_wrap_refuses_the_script(tmp_path: Path) -> None:
    """gpt-5.6-sol is a code-mode model in Codex 0.171's catalogue: its only tool is ``exec``, JavaScript
    that calls the others. Codex runs those calls through its hooks; the proxy sees only the script."""
    model = "gpt-5.6-sol"
    with StandIn(ask_code_mode) as api:
        work, _, _ = run_codex(tmp_path, api, "control", model)
    assert not (work / "build").exists()  # the script's rm -rf ran

    with StandIn(ask_code_mode) as api:
        work, hook_db, _ = run_codex(tmp_path, api, "hook", model)
    assert (work / "build" / "out.o").exists()
    assert decisions(hook_db) == [("Bash", "codex", {"command": RM}, "block", "no-rm-rf")]

    with StandIn(ask_code_mode) as api:
        work, wrap_db, out = run_codex(tmp_path, api, "wrap", model)
    assert (work / "build" / "out.o").exists()
    assert "[aegis] Tool call `exec` was blocked" in out.stdout and "code mode" in out.stdout
    assert [(t, target, answer) for t, target, _, answer, _ in decisions(wrap_db)] == [("exec", "codex", "block")]


# --- the mapping, without the CLI ------------------------------------------------------------------------

@pytest.fixture
def gate() -> Any:
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None, agent="a", session="s")
    yield gate
    gate.close()


def mapped(gate: ToolGate, name: str, arguments: Any, agent: Any = agents.CODEX) -> list[tuple[str, str, Any]]:
    call = ToolCall("openai", "responses", "c1", name, arguments, coding_agent=agent)
    return [(a.type, a.target, a.params) for a in gate.actions_for(call)]


def test_codex_shell_tools_are_the_hooks_bash(gate: ToolGate) -> None:
    assert mapped(gate, "exec_command", {"cmd": "ls -la", "workdir": "src", "yield_time_ms": 1000}) == [
        ("Bash", "codex", {"command": "ls -la", "workdir": "src", "yield_time_ms": 1000})]
    assert mapped(gate, "shell_command", {"command": "rm -rf x", "login": False}) == [
        ("Bash", "codex", {"command": "rm -rf x", "login": False})]
    # an argv list is joined as Codex joins it for its hook (the Rust shlex crate's quoting)
    assert mapped(gate, "shell", {"command": ["bash", "-lc", "rm -rf build"], "timeout_ms": 5}) == [
        ("Bash", "codex", {"command": "bash -lc 'rm -rf build'", "timeout_ms": 5})]
    assert mapped(gate, "local_shell", {"type": "exec", "command": ["rm", "-rf", "a b"]})[0][2]["command"] == \
        "rm -rf 'a b'"
    # the mapped name goes through the policy's tools: section as the hook's does
    remap = ToolGate(Policy.from_string(POLICY + "tools:\n  Bash: {target: shell}\n"), audit_factory=None,
                     approvals=None)
    try:
        assert mapped(remap, "exec_command", {"cmd": "ls"})[0][:2] == ("Bash", "shell")
    finally:
        remap.close()
    # not Codex: the plain mapping
    assert mapped(gate, "exec_command", {"cmd": "ls"}, agent=None) == [("exec_command", "exec_command", {"cmd": "ls"})]
    assert mapped(gate, "view_image", {"path": "a.png"}) == [("view_image", "codex", {"path": "a.png"})]


@pytest.mark.parametrize(("name", "arguments"), [
    ("exec_command", {"command": "ls"}),  # Codex reads cmd: it would not run this
    ("exec_command", "ls"), ("shell", {"command": "ls"}), ("shell", {"command": []}),
    ("shell", {"command": ["echo", "a\x00b"]}),  # Codex would report "<command included NUL byte>"
    ("apply_patch", {"input": "echo hi"}), ("apply_patch", {"input": None}),
    ("exec", {"input": "await tools.exec_command({cmd: 'rm -rf build'})"}),  # code mode
])
def test_what_cannot_be_mapped_is_refused(gate: ToolGate, name: str, arguments: Any) -> None:
    with pytest.raises(ValueError):
        gate.actions_for(ToolCall("openai", "responses", "c1", name, arguments, coding_agent=agents.CODEX))


def test_code_mode_and_unreadable_patches_are_blocked_and_audited(tmp_path: Path) -> None:
    import asyncio

    from aegis_cli.audit.trail import open_audit

    db = tmp_path / "audit.db"
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=lambda: open_audit(str(db)), approvals=None)
    try:
        code = ToolCall("openai", "responses", "c1", "exec", {"input": "await tools.exec_command({cmd: 'ls'})"},
                        coding_agent=agents.CODEX)
        verdict = asyncio.run(gate.decide(code))
        assert not verdict.allowed and "code mode" in verdict.note and "aegis hook codex" in verdict.note
        patch = ToolCall("openai", "responses", "c2", "apply_patch", {"input": PATCH}, coding_agent=agents.CODEX)
        verdict = asyncio.run(gate.decide(patch))
        assert not verdict.allowed and "no-secrets" in verdict.note
    finally:
        gate.close()
    rows = decisions(db)
    assert rows[0][:2] == ("exec", "codex") and rows[0][3] == "block"
    assert [(r[0], r[2]["path"], r[3]) for r in rows[1:]] == [("apply_patch", "notes.txt", "auto"),
                                                           ("apply_patch", "secrets/key.txt", "block")]
    with sqlite3.connect(db) as conn:
        parts = [json.loads(b)["data"] for (b,) in conn.execute("SELECT body FROM audit WHERE id > 1 ORDER BY id")]
    assert [(p["part"], p["parts"], p["tool"]) for p in parts] == [(1, 2, "apply_patch"), (2, 2, "apply_patch")]
    assert CODE_MODE_REFUSAL.startswith("Codex is in code mode")


def test_argv_joined_as_codex_joins_it() -> None:
    # the Rust shlex crate's own examples (codex_shell_command::shlex_join is its try_join)
    cases = {"": "''", "foobar": "foobar", "foo bar": "'foo bar'", "'foo bar'": "\"'foo bar'\"", '"': "'\"'",
             "hello!world": "'hello!world'", "'hello!world": "\"'hello\"'!world'", "hello^": "hello'^'",
             "{a,b}": "'{a,b}'", "a,b": "'a,b'", "a..b": "a..b", "'$": "\"'\"'$'", "\"^": "'\"''^'",
             "héllo": "'héllo'"}
    for word, quoted in cases.items():
        assert shlex_join([word]) == quoted, word
    assert shlex_join(["bash", "-lc", "rm -rf build"]) == "bash -lc 'rm -rf build'"


def test_a_codex_mcp_tool_in_its_namespace_is_named_as_the_hook_names_it() -> None:
    # Codex 0.171 runs an MCP tool the model calls as {"namespace": "mcp__fs", "name": "list_directory"};
    # its hook reports mcp__fs__list_directory: type list_directory on target fs, under wrap too
    item = {"type": "function_call", "call_id": "c1", "namespace": "mcp__fs", "name": "list_directory",
            "arguments": '{"path": "."}'}
    assert _call(item, "gpt-5.5").name == "mcp__fs__list_directory"
    assert _call({**item, "namespace": "functions", "name": "exec_command"}, "m").name == "exec_command"
