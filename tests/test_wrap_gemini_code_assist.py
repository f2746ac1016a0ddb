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


def test_vertex_ai_wrapped_blocked_command_does_not_run(tmp_path: Path) -> None:
    work, env = workspace(tmp_path, "vertex-ai")
    policy, db = tmp_path / "policy.yaml", str(tmp_path / "audit.db")  # both stores: the Code Assist test
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


# The proxy alone, over the stand-in: generateContent (not streamed), the stream, and what passes through.

def proxy_over(upstream: str):  # type: ignore[no-untyped-def]
    from aegis_cli import Policy
    from aegis_cli.wrap.model_proxy import ModelProxy, Upstreams
    from aegis_cli.wrap.tool_gate import ToolGate

    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    return ModelProxy(gate.decide, Upstreams(code_assist=upstream))


SHELL_TOOLS = [{"functionDeclarations": [{"name": "run_shell_command", "parameters": {"type": "object"}}]}]
CA_REQUEST = {"model": "gemini-2.5-flash", "project": PROJECT,
              "request": {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], "tools": SHELL_TOOLS}}


def code_assist_post(proxy_url: str, method: str, body: Any, query: str = "") -> Any:
    import httpx

    return httpx.post(f"{proxy_url}/code-assist/v1internal:{method}{query}", json=body,
                      headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)


def test_proxy_decides_code_assist_generate_content_and_passes_the_rest() -> None:
    with CodeAssistStandIn(shell_calls("rm -rf build", "touch ran-ok")) as api, proxy_over(api.url) as proxy:
        assert proxy.child_env()["CODE_ASSIST_ENDPOINT"] == proxy.url + "/code-assist"
        loaded = code_assist_post(proxy.url, "loadCodeAssist", {"metadata": {}})
        reply = code_assist_post(proxy.url, "generateContent", CA_REQUEST)
        streamed = code_assist_post(proxy.url, "streamGenerateContent", CA_REQUEST, "?alt=sse")
    assert loaded.status_code == 200 and loaded.json()["cloudaicompanionProject"] == PROJECT
    assert reply.status_code == 200, reply.text
    parts = reply.json()["response"]["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["args"]["command"] for p in parts if "functionCall" in p] == ["touch ran-ok"]
    assert any("rule 'no-recursive-delete'" in p.get("text", "") for p in parts)
    assert parts[-1]["thoughtSignature"]  # the blocked first call's signature moved to the kept one
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    calls = [p["functionCall"]["args"]["command"] for e in events
             for p in e["response"]["candidates"][0]["content"]["parts"] if "functionCall" in p]
    assert calls == ["touch ran-ok"]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in api.posts())


def test_code_assist_rewriter_decides_top_level_candidates_and_withholds_unreadable_chunks() -> None:
    import asyncio

    from aegis_cli import Policy
    from aegis_cli.wrap import code_assist
    from aegis_cli.wrap.tool_gate import ToolGate

    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    rm = {"functionCall": {"name": "run_shell_command", "args": {"command": "rm -rf /"}}}
    both = {"candidates": [{"content": {"parts": [rm]}}], "response": {"candidates": [{"content": {"parts": [rm]}}]}}

    async def stream(data: bytes) -> bytes:
        async def chunks() -> Any:
            yield data
        return b"".join([b async for b in code_assist.rewrite_stream(chunks(), gate.decide)])

    out = asyncio.run(code_assist.rewrite_json(both, gate.decide))
    assert not code_assist.has_calls(out)
    assert "functionCall" not in json.dumps(out)
    bad = asyncio.run(stream(b'data: ["not", "an", "object"]\r\n\r\ndata: {"response": {}}\r\n\r\n'))
    assert b"withheld (fail closed)" in bad and b'"response"' not in bad
    assert b"functionCall" not in asyncio.run(stream(b"data: " + json.dumps(both).encode() + b"\n\n"))
