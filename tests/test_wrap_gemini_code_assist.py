"""The real Gemini CLI signed in with Google (the Code Assist API) and on Vertex AI, under ``aegis wrap``, offline.

Signed in with Google, Gemini CLI talks to ``CODE_ASSIST_ENDPOINT`` (default
``https://cloudcode-pa.googleapis.com``), not to ``GOOGLE_GEMINI_BASE_URL``; ``aegis wrap`` sets it to
the proxy and forwards to the endpoint aegis's own environment names. Here that is a stand-in
Code Assist API asking for ``rm -rf build`` (blocked) and ``touch ran-ok`` (allowed) in one turn.

How the CLI is signed in offline: ``security.auth.selectedType = "oauth-personal"`` with the access
token in ``GOOGLE_CLOUD_ACCESS_TOKEN`` (and ``GOOGLE_GENAI_USE_GCA=true``), which Gemini CLI uses as
is. A cached ``~/.gemini/oauth_creds.json`` cannot be used offline: the CLI first checks its token
at ``https://oauth2.googleapis.com/tokeninfo`` and, when that fails, asks for a browser login. Past
sign-in both take the same path (``CodeAssistServer``, bearer token), which is what is governed.

On Vertex AI (``vertex-ai``, an API key: express mode) the CLI reads ``GOOGLE_VERTEX_BASE_URL``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from code_assist_standin import PROJECT, CodeAssistStandIn
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
TOKEN = "ya29.standin-access-token-0123456789"
VERTEX_KEY = "AQ.standin-vertex-express-key-0123"
PROMPT = "Clean the build directory."


def workspace(tmp_path: Path, auth: str) -> tuple[Path, dict[str, str]]:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".gemini").mkdir(parents=True)
    settings = {"security": {"auth": {"selectedType": auth}},
                "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
                "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    (work / "build").mkdir(parents=True)
    (work / "build" / "out.o").write_text("object")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GEMINI_CLI_TRUST_WORKSPACE": "true",
           "NO_COLOR": "1", "TERM": "dumb"}
    if auth == "oauth-personal":
        env.update(GOOGLE_GENAI_USE_GCA="true", GOOGLE_CLOUD_ACCESS_TOKEN=TOKEN)
    else:
        env.update(GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_API_KEY=VERTEX_KEY)
    return work, env


def gemini_argv() -> list[str]:
    return [str(GEMINI), "-m", "gemini-2.5-flash", "-p", PROMPT, "--yolo"]


def wrapped(policy: Path, db: str) -> list[str]:
    return [sys.executable, "-m", "aegis_cli", "wrap", "-p", str(policy), "--audit-db", db,
            "--approvals", "deny", "--", *gemini_argv()]


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def model_parts(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in request["contents"] if c.get("role") == "model" for p in c["parts"]]


def check_trail(db: str, api: str) -> None:
    verify = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", db],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    decisions = [r for r in bodies(db) if r["kind"] == "decision"]
    summary = sorted((r["action"]["params"]["command"], r["action"]["target"], r["decision"]["approval"],
                      r["decision"]["rule"]) for r in decisions)
    assert summary == [("rm -rf build", "gemini-cli", "block", "no-recursive-delete"),
                       ("touch ran-ok", "gemini-cli", "auto", None)]
    assert {(r["origin"]["provider"], r["origin"]["api"], r["origin"]["via"]) for r in decisions} == {
        ("gemini", api, "wrap")}


def check_note(proc: subprocess.CompletedProcess[str], next_request: dict[str, Any]) -> None:
    assert "[aegis] Tool call `run_shell_command` was blocked" in proc.stdout  # the CLI shows the note
    parts = model_parts(next_request)  # and keeps it in the conversation the model reads next
    note = "".join(p.get("text", "") for p in parts)
    assert "rule 'no-recursive-delete'" in note and "recursive deletes are not allowed" in note
    kept = [p for p in parts if "functionCall" in p]
    assert [p["functionCall"]["args"]["command"] for p in kept] == ["touch ran-ok"]


def test_code_assist_control_without_aegis_both_commands_run(tmp_path: Path) -> None:
    work, env = workspace(tmp_path, "oauth-personal")
    with CodeAssistStandIn(shell_calls("rm -rf build", "touch ran-ok")) as api:
        proc = run(gemini_argv(), work, {**env, "CODE_ASSIST_ENDPOINT": api.url})
    assert proc.returncode == 0, proc.stderr
    assert not (work / "build").exists()  # the delete ran
    assert (work / "ran-ok").exists()
    turns = api.posts(":streamGenerateContent")
    assert len(turns) == 2 and turns[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert turns[0].body["project"] == PROJECT


def test_code_assist_wrapped_blocked_command_does_not_run(tmp_path: Path, audit_target: str) -> None:
    work, env = workspace(tmp_path, "oauth-personal")
    policy, db = tmp_path / "policy.yaml", audit_target
    policy.write_text(POLICY)
    with CodeAssistStandIn(shell_calls("rm -rf build", "touch ran-ok")) as api:
        # aegis's own CODE_ASSIST_ENDPOINT (here the stand-in) is the upstream; the CLI is given the proxy
        proc = run(wrapped(policy, db), work, {**env, "CODE_ASSIST_ENDPOINT": api.url})
    assert proc.returncode == 0, proc.stderr
    assert "not governed" not in proc.stderr
    assert (work / "build" / "out.o").exists()  # the blocked delete never ran
    assert (work / "ran-ok").exists()  # the allowed command did
    assert api.posts(":loadCodeAssist")  # set-up calls pass through the proxy untouched
    turns = api.posts(":streamGenerateContent")
    assert len(turns) == 2 and all(t.path.endswith("?alt=sse") for t in turns)
    assert turns[0].headers["authorization"] == f"Bearer {TOKEN}"  # forwarded untouched
    check_note(proc, turns[1].body["request"])
    check_trail(db, "codeAssist.generateContent")
    assert TOKEN not in stored_text(db)


def test_vertex_ai_wrapped_blocked_command_does_not_run(tmp_path: Path, audit_target: str) -> None:
    work, env = workspace(tmp_path, "vertex-ai")
    policy, db = tmp_path / "policy.yaml", audit_target
    policy.write_text(POLICY)
    with GeminiStandIn(shell_calls("rm -rf build", "touch ran-ok")) as api:
        proc = run(wrapped(policy, db), work, {**env, "GOOGLE_VERTEX_BASE_URL": api.url})
    assert proc.returncode == 0, proc.stderr
    assert (work / "build" / "out.o").exists()
    assert (work / "ran-ok").exists()
    posts = api.posts()
    assert len(posts) == 2 and all(":streamGenerateContent" in p.path for p in posts)
    assert "/publishers/google/models/" in posts[0].path  # a Vertex AI path, not the Gemini API's
    check_note(proc, posts[1].body)
    check_trail(db, "generateContent")
    assert VERTEX_KEY not in stored_text(db)
