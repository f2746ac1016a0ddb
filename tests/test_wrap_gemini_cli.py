"""The real Gemini CLI (npm ``@google/gemini-cli``) under ``aegis wrap``, offline, against a stand-in Gemini API.

The stand-in asks for two shell commands in one turn: ``rm -rf build`` (the policy blocks it) and
``touch ran-ok`` (allowed). Without aegis both run; under ``aegis wrap`` the delete never reaches the
CLI, the other command runs, the model is told the rule in the next request, and the audit trail
verifies and holds both decisions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gemini_standin import GeminiStandIn, shell_calls
from pg import bodies, stored_text

ROOT = Path(__file__).resolve().parent.parent
GEMINI = ROOT / ".ci" / "node_modules" / ".bin" / "gemini"

pytestmark = pytest.mark.skipif(
    not GEMINI.exists(), reason=f"{GEMINI} is missing: run `npm install --prefix .ci @google/gemini-cli@0.61.0`")

POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-recursive-delete
    match: {type: run_shell_command}
    conditions: {param_matches: {command: "\\\\brm\\\\s+-[a-zA-Z]*[rR]"}}
    approval: block
    risk_level: critical
    reason: recursive deletes are not allowed
"""
#: What Gemini CLI needs to run headless and offline: an API key (a dummy: the stand-in ignores it),
#: a trusted workspace, and no telemetry or update checks.
SETTINGS = {"security": {"auth": {"selectedType": "gemini-api-key"}},
            "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
            "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}
PROMPT = "Clean the build directory."
KEY = "AIzaSy-dummy-key-for-the-stand-in-0123"


def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
    (work / "build").mkdir(parents=True)
    (work / "build" / "out.o").write_text("object")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GEMINI_API_KEY": KEY,
           "GEMINI_CLI_TRUST_WORKSPACE": "true", "NO_COLOR": "1", "TERM": "dumb"}
    return work, env


def gemini_argv() -> list[str]:
    # A fixed model skips the CLI's model router, which would first ask the API to classify the prompt.
    return [str(GEMINI), "-m", "gemini-2.5-flash", "-p", PROMPT, "--yolo"]


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def audit_rows(db: str) -> list[dict[str, Any]]:
    """The trail's records in order, read through aegis's reader (an SQLite file or a PostgreSQL URL)."""
    return bodies(db)


def model_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in body["contents"] if c.get("role") == "model" for p in c["parts"]]


def test_control_without_aegis_both_commands_run(tmp_path: Path) -> None:
    work, env = workspace(tmp_path)
    with GeminiStandIn(shell_calls("rm -rf build", "touch ran-ok")) as api:
        proc = run(gemini_argv(), work, {**env, "GOOGLE_GEMINI_BASE_URL": api.url})
    assert proc.returncode == 0, proc.stderr
    assert not (work / "build").exists()  # the delete ran
    assert (work / "ran-ok").exists()
    posts = api.posts()
    assert [p.path for p in posts] == ["/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"] * 2
    assert posts[0].headers["x-goog-api-key"] == KEY
    calls = [p["functionCall"]["name"] for p in model_parts(posts[1].body) if "functionCall" in p]
    assert calls == ["run_shell_command", "run_shell_command"]


def test_wrapped_blocked_command_does_not_run_and_the_model_is_told(tmp_path: Path, audit_target: str) -> None:
    work, env = workspace(tmp_path)
    policy, db = tmp_path / "policy.yaml", audit_target
    policy.write_text(POLICY)
    with GeminiStandIn(shell_calls("rm -rf build", "touch ran-ok")) as api:
        # The user's own base URL (here the stand-in) is where aegis forwards; the CLI is given the proxy.
        proc = run([sys.executable, "-m", "aegis_cli", "wrap", "-p", str(policy), "--audit-db", db,
                    "--approvals", "deny", "--", *gemini_argv()], work, {**env, "GOOGLE_GEMINI_BASE_URL": api.url})
    assert proc.returncode == 0, proc.stderr
    assert (work / "build" / "out.o").exists()  # the blocked delete never ran
    assert (work / "ran-ok").exists()  # the allowed command did
    assert "[aegis] Tool call `run_shell_command` was blocked" in proc.stdout  # the CLI shows the note
    posts = api.posts()
    assert len(posts) == 2 and all(p.path.endswith(":streamGenerateContent?alt=sse") for p in posts)
    assert posts[0].headers["x-goog-api-key"] == KEY  # forwarded untouched
    # The next request carries the model turn as the CLI kept it: the note in place of the delete.
    parts = model_parts(posts[1].body)
    note = "".join(p.get("text", "") for p in parts)
    assert "rule 'no-recursive-delete'" in note and "recursive deletes are not allowed" in note
    kept = [p for p in parts if "functionCall" in p]
    assert [p["functionCall"]["args"]["command"] for p in kept] == ["touch ran-ok"]
    assert kept[0].get("thoughtSignature")  # the blocked call's signature moved to the kept one

    verify = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", db],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    decisions = [r for r in audit_rows(db) if r["kind"] == "decision"]
    summary = sorted((r["action"]["params"]["command"], r["decision"]["approval"], r["decision"]["rule"])
                     for r in decisions)
    assert summary == [("rm -rf build", "block", "no-recursive-delete"), ("touch ran-ok", "auto", None)]
    assert all(r["origin"]["provider"] == "gemini" and r["origin"]["via"] == "wrap" for r in decisions)
    assert KEY not in stored_text(db)
