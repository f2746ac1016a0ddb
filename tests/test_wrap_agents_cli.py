"""`aegis wrap` in front of real coding-agent CLIs from npm (opencode, Codex CLI), offline.

Each agent talks to a stand-in model API on 127.0.0.1 (tests/model_standins.py) that asks for one
shell command. A control run without aegis shows the command runs; under `aegis wrap` it does not,
the agent is shown the rule, and the audit trail verifies and holds the decision.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_standins import StandIn, shell_call
from pg import bodies

BIN = Path(__file__).resolve().parent.parent / ".ci" / "node_modules" / ".bin"
POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-rm-rf
    match: {type: bash}
    conditions: {param_matches: {command: "rm\\\\s+-rf"}}
    approval: block
    risk_level: critical
    reason: recursive deletes are not allowed
  - name: no-marker-files
    match: {type: Bash, target: codex}  # Codex's exec_command {cmd}, as its hook reports it
    conditions: {param_matches: {command: "touch\\\\s+pwned"}}
    approval: block
    risk_level: critical
    reason: nothing may create pwned.txt
"""
NOT_GOVERNED = "made no model request through aegis"


def agent(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{path} is not installed (run .ci/setup)")
    return str(path)


def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "build").mkdir(parents=True)
    (proj / "build" / "out.o").write_text("object")
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    return proj


def wrapped(tmp_path: Path, command: list[str], db: str | None = None) -> list[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return [sys.executable, "-m", "aegis_cli", "wrap", "-p", str(policy),
            "--audit-db", db or str(tmp_path / "audit.db"), "--approvals", "deny", "--", *command]


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # PWD too: opencode runs its tools in $PWD, not in the directory it was started in
    return subprocess.run(command, cwd=cwd, env={**env, "PWD": str(cwd)}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=90)


def decisions(db: str) -> list[dict[str, Any]]:
    return bodies(db, "decision")


def check_trail(db: str, tool: str, rule: str, command: str) -> None:
    verify = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", db],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    blocked = [r for r in decisions(db) if r["decision"]["approval"] == "block"]
    assert [(r["action"]["type"], r["decision"]["rule"]) for r in blocked] == [(tool, rule)]
    assert command in json.dumps(blocked[0]["action"]["params"])


def base_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "OPENAI_", "CODEX_", "OPENCODE_", "AEGIS_", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_STATE_HOME=str(home / ".local/state"))
    return env


# -- opencode (AI SDK: posts to <ANTHROPIC_BASE_URL>/messages, the base ending in /v1) ---------------------


def opencode_env(tmp_path: Path, api: StandIn) -> dict[str, str]:
    return {**base_env(tmp_path), "ANTHROPIC_BASE_URL": api.url + "/v1", "ANTHROPIC_API_KEY": "sk-ant-standin",
            # offline: no model catalogue download, no update check, no plugin or LSP installs, no sharing
            "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_SHARE": "1"}


def opencode_command() -> list[str]:
    return [agent("opencode"), "run", "-m", "anthropic/claude-sonnet-4-5", "--auto", "Delete the build directory."]


def test_opencode_control_run_deletes(tmp_path: Path) -> None:
    proj = project(tmp_path)
    with StandIn(shell_call("rm -rf build")) as api:
        out = run(opencode_command(), proj, opencode_env(tmp_path, api))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (proj / "build").exists()  # without aegis the model's command runs
    assert any(r.path == "/v1/messages" for r in api.posts())


def test_opencode_under_wrap_is_blocked_and_told_the_rule(tmp_path: Path, audit_target: str) -> None:
    proj = project(tmp_path)
    with StandIn(shell_call("rm -rf build")) as api:
        out = run(wrapped(tmp_path, opencode_command(), audit_target), proj, opencode_env(tmp_path, api))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (proj / "build" / "out.o").exists()
    assert "[aegis] Tool call `bash` was blocked" in out.stdout and "rule 'no-rm-rf'" in out.stdout
    assert {r.path for r in api.posts()} == {"/v1/messages"}  # <proxy>/anthropic/v1/messages, normalised
    assert NOT_GOVERNED not in out.stderr
    check_trail(audit_target, "bash", "no-rm-rf", "rm -rf build")


# -- Codex CLI (reads no OPENAI_BASE_URL: aegis sets its base URL with -c) ------------------------------------
# Codex refuses `rm -rf` itself, so its blocked command creates a file instead.
TOUCH = "touch pwned.txt"


def codex_env(tmp_path: Path, config: str) -> dict[str, str]:
    home = tmp_path / "codex"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(config)
    return {**base_env(tmp_path), "CODEX_HOME": str(home), "STANDIN_API_KEY": "sk-standin",
            "OPENAI_API_KEY": "sk-standin"}


def custom_provider(api: StandIn) -> str:
    return (f'model = "gpt-5"\nmodel_provider = "standin"\n[model_providers.standin]\nname = "standin"\n'
            f'base_url = "{api.url}/v1"\nenv_key = "STANDIN_API_KEY"\nwire_api = "responses"\n')


def codex_command() -> list[str]:
    return [agent("codex"), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
            "Delete the build directory."]


def test_codex_control_run_deletes(tmp_path: Path) -> None:
    proj = project(tmp_path)
    with StandIn(shell_call(TOUCH)) as api:
        out = run(codex_command(), proj, codex_env(tmp_path, custom_provider(api)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (proj / "pwned.txt").exists()  # without aegis the model's command runs
    assert any(r.path == "/v1/responses" for r in api.posts())


def test_codex_custom_provider_under_wrap_is_blocked_and_told_the_rule(tmp_path: Path, audit_target: str) -> None:
    proj = project(tmp_path)
    with StandIn(shell_call(TOUCH)) as api:
        out = run(wrapped(tmp_path, codex_command(), audit_target), proj, codex_env(tmp_path, custom_provider(api)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (proj / "pwned.txt").exists()
    assert "[aegis] Tool call `exec_command` was blocked" in out.stdout and "no-marker-files" in out.stdout
    assert api.posts() and {r.path for r in api.posts()} == {"/v1/responses"}
    assert NOT_GOVERNED not in out.stderr
    check_trail(audit_target, "Bash", "no-marker-files", TOUCH)


def test_codex_openai_provider_under_wrap_is_blocked(tmp_path: Path, audit_target: str) -> None:
    """The built-in provider, its endpoint set by openai_base_url (OPENAI_BASE_URL would be ignored)."""
    proj = project(tmp_path)
    with StandIn(shell_call(TOUCH)) as api:
        env = {**codex_env(tmp_path, f'model = "gpt-5"\nopenai_base_url = "{api.url}/v1"\n'),
               "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # never used: Codex reads openai_base_url only
        out = run(wrapped(tmp_path, codex_command(), audit_target), proj, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (proj / "pwned.txt").exists()
    assert "[aegis] Tool call `exec_command` was blocked" in out.stdout
    assert "/v1/responses" in {r.path for r in api.posts()}
    check_trail(audit_target, "Bash", "no-marker-files", TOUCH)


def test_codex_provider_aegis_cannot_front_is_refused_before_it_runs(tmp_path: Path) -> None:
    proj = project(tmp_path)
    env = codex_env(tmp_path, 'model = "gpt-5"\nmodel_provider = "amazon-bedrock"\n')
    out = run(wrapped(tmp_path, [shutil.which("true") or "true", *codex_command()[1:]]), proj, env)
    assert out.returncode == 0  # `true` is not Codex: run as any command, with the not-governed warning
    assert NOT_GOVERNED in out.stderr
    out = run(wrapped(tmp_path, codex_command()), proj, env)
    assert out.returncode == 2
    assert out.stderr.startswith("aegis: Codex's provider 'amazon-bedrock'") and "aegis hook codex" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert (proj / "build" / "out.o").exists()
