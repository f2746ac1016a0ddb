"""`aegis wrap` model-API proxy, end to end: the real anthropic and openai SDKs in a wrapped child process,
a local upstream replaying provider responses, a real audit database and approval queue."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pg import bodies, stored_text, trail_exists

from aegis_cli.engine.policy import Policy
from aegis_cli.wrap.model_proxy import Upstreams, run_wrapped_agent

REPLAYS = Path(__file__).parent / "data" / "provider_replays"
AGENT = REPLAYS / "sdk_agent.py"
ALL = ["anthropic-json", "anthropic-stream", "anthropic-raw-stream", "chat-json", "chat-stream",
       "chat-raw-stream", "responses-json", "responses-stream"]
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-secret-0123456789", "OPENAI_API_KEY": "sk-proj-secret-0123456789"}

POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
    reason: deleting files is not allowed
"""
BLOCK_ALL = """\
version: "1"
defaults: {approval: block, risk_level: high, reason: nothing runs here}
"""
APPROVE_WEATHER = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
    reason: deleting files is not allowed
  - name: ask-weather
    match: {type: get_weather}
    approval: approve
    risk_level: medium
    reason: a person checks weather lookups
"""


class Replay(BaseHTTPRequestHandler):
    """Answers like the providers do, from tests/data/provider_replays; records every request."""

    seen: list[dict[str, Any]]
    chunk = 37  # odd-sized writes, so events arrive split across reads

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "headers": self._headers(), "body": None})
        if self.path == "/v1/models":
            self._send(200, "application/json", json.dumps({"object": "list", "data": [
                {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"}]}).encode())
        else:
            self._send(404, "application/json", b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append({"path": self.path, "headers": self._headers(), "body": body})
        name = {"/v1/messages": "anthropic_messages", "/v1/chat/completions": "openai_chat",
                "/v1/responses": "openai_responses"}.get(self.path.split("?")[0])
        if name is None:
            self._send(404, "application/json", b'{"error": {"message": "not found"}}')
        elif body.get("stream"):
            self._send(200, "text/event-stream", (REPLAYS / f"{name}.sse").read_bytes(), stream=True)
        else:
            self._send(200, "application/json", (REPLAYS / f"{name}.json").read_bytes())

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _send(self, status: int, ctype: str, data: bytes, stream: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("request-id", "req_replay_01")
        if not stream and "gzip" in self.headers.get("accept-encoding", ""):
            data = gzip.compress(data)
            self.send_header("content-encoding", "gzip")
        if stream:
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            for i in range(0, len(data), self.chunk):
                self.wfile.write(data[i:i + self.chunk])
                self.wfile.flush()
        else:
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


@pytest.fixture
def upstream() -> Any:
    handler = type("ReplayHandler", (Replay,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield Upstreams(anthropic=url, openai=url + "/v1"), handler.seen
    server.shutdown()
    server.server_close()


def write_policy(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_agent(tmp_path: Path, upstreams: Upstreams, policy_text: str, scenarios: list[str], *,
              approvals: str = "deny", timeout: float = 5.0,
              db: str | None = None) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run the SDK agent wrapped; it writes one JSON line per scenario to a file; the trail is ``db``."""
    out = tmp_path / "agent.out"
    policy = write_policy(tmp_path, policy_text)
    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ.update(KEYS)
    try:
        code = run_wrapped_agent([str(policy)], [sys.executable, str(AGENT), "--out", str(out), *scenarios],
                                 audit_db=db or tmp_path / "audit.db", approval_timeout=timeout,
                                 approvals=approvals, upstreams=upstreams)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = out.read_text() if out.exists() else ""
    results = {r["scenario"]: r for r in map(json.loads, filter(None, text.splitlines()))}
    return code, results, text


def audit_rows(db: str) -> list[dict[str, Any]]:
    """The trail's records in order, read through aegis's reader (an SQLite file or a PostgreSQL URL)."""
    return bodies(db)


# -- the SDKs see the decided reply --------------------------------------------------------------


def test_blocked_call_removed_allowed_call_kept_every_api(tmp_path: Path, upstream: Any, audit_target: str) -> None:
    upstreams, seen = upstream
    code, results, raw = run_agent(tmp_path, upstreams, POLICY, ALL, db=audit_target)
    assert code == 0, raw
    assert set(results) == set(ALL)
    for name, r in results.items():
        names = [c[0] for c in r["calls"]]
        assert names == ["get_weather"], (name, r)
        assert "[aegis] Tool call `delete_file` was blocked" in r["text"], (name, r)
        assert "rule 'no-deletes'" in r["text"] and "deleting files is not allowed" in r["text"]
    # one call remains, so the turn still asks for tools
    for name in ("anthropic-json", "anthropic-stream", "anthropic-raw-stream"):
        assert results[name]["stop"] == "tool_use"
    for name in ("chat-json", "chat-stream", "chat-raw-stream"):
        assert results[name]["stop"] == "tool_calls"
    # full arguments survive the hold-and-release (parsed by the SDK from the streamed fragments)
    for name in ("anthropic-json", "anthropic-stream", "chat-json", "chat-stream", "responses-json",
                 "responses-stream"):
        assert results[name]["calls"][0][1] == {"location": "Paris, France", "unit": "celsius"}, name
    # block indexes stay consistent: the blocked block is a text block in its place
    assert results["anthropic-stream"]["blocks"] == ["text", "tool_use", "text"]
    assert results["responses-stream"]["items"] == ["message", "function_call", "message"]
    assert results["anthropic-stream"]["streamed_text"].startswith("I'll check the weather")
    # requests were forwarded untouched, keys included
    posts = [s for s in seen if s["body"] is not None]
    assert len(posts) == len(ALL)
    assert all(KEYS["ANTHROPIC_API_KEY"] in (s["headers"].get("x-api-key"), s["headers"].get("authorization", "")[7:])
               for s in posts if s["path"].startswith("/v1/messages"))
    assert all(s["headers"]["anthropic-version"] for s in posts if s["path"].startswith("/v1/messages"))
    assert all(s["headers"].get("authorization") == f"Bearer {KEYS['OPENAI_API_KEY']}" for s in posts
               if not s["path"].startswith("/v1/messages"))
    assert posts[0]["body"]["messages"][0]["content"].startswith("What's the weather")
    # every decision audited (two calls per reply), with the call id, never with an API key
    db = audit_target
    rows = audit_rows(db)
    decisions = [r for r in rows if r["kind"] == "decision"]
    assert len(decisions) == 2 * len(ALL)
    assert sorted({(r["action"]["type"], r["decision"]["approval"], r["decision"]["rule"]) for r in decisions}) == [
        ("delete_file", "block", "no-deletes"), ("get_weather", "auto", None)]
    dump = json.dumps(rows, default=str)
    assert "toolu_01B7Hk2mN4pQ8rS6tU9vW3xY" in dump and "call_9xQm2Lk7Jp4Hn6Gf3Ds1Aa0Z" in dump
    for key in KEYS.values():
        assert key not in dump
        assert key not in stored_text(db)


def test_every_call_blocked_turn_ends_other_endpoints_untouched(tmp_path: Path, upstream: Any) -> None:
    code, results, raw = run_agent(tmp_path, upstream[0], BLOCK_ALL, [*ALL, "models"])
    assert code == 0, raw
    assert results.pop("models")["models"] == ["gpt-4o"]  # other endpoints pass through
    for name, r in results.items():
        assert r["calls"] == [], (name, r)
        assert r["text"].count("[aegis] Tool call") == 2, (name, r)
    for name in ("anthropic-json", "anthropic-stream", "anthropic-raw-stream"):
        assert results[name]["stop"] == "end_turn"
    for name in ("chat-json", "chat-stream", "chat-raw-stream"):
        assert results[name]["stop"] == "stop"
    assert results["responses-stream"]["items"] == ["message", "message", "message"]


# -- approvals ---------------------------------------------------------------------------------------


def test_approval_timeout_is_a_block(tmp_path: Path, upstream: Any, audit_target: str) -> None:
    code, results, raw = run_agent(tmp_path, upstream[0], APPROVE_WEATHER, ["anthropic-stream", "chat-json"],
                                   approvals="queue", timeout=0.2, db=audit_target)
    assert code == 0, raw
    for name, r in results.items():
        assert r["calls"] == [], (name, r)
        assert "`get_weather` was not approved (no answer in time" in r["text"], (name, r)
    assert results["anthropic-stream"]["stop"] == "end_turn"
    assert results["chat-json"]["stop"] == "stop"
    statuses = [r["data"]["status"] for r in audit_rows(audit_target) if r["kind"] == "approval"]
    assert statuses == ["timed_out", "timed_out"]


def test_approval_granted_from_another_process(tmp_path: Path, upstream: Any, audit_target: str) -> None:
    from aegis_cli.audit.approvals import ApprovalQueue

    db = audit_target
    stop = threading.Event()

    def approver() -> None:  # what `aegis approvals approve ID` does, from another connection
        while not stop.is_set():
            if trail_exists(db):
                with ApprovalQueue(db) as queue:
                    for req in queue.list("pending"):
                        queue.answer(req.id, True, by="alice", note="fine")
            time.sleep(0.05)

    thread = threading.Thread(target=approver, daemon=True)
    thread.start()
    try:
        code, results, raw = run_agent(tmp_path, upstream[0], APPROVE_WEATHER, ["anthropic-stream", "responses-json"],
                                       approvals="queue", timeout=20, db=db)
    finally:
        stop.set()
        thread.join()
    assert code == 0, raw
    for name, r in results.items():
        assert [c[0] for c in r["calls"]] == ["get_weather"], (name, r)
        assert "delete_file" in r["text"]
    dump = json.dumps(audit_rows(db), default=str)
    assert "alice" in dump


# -- through the CLI ---------------------------------------------------------------------------------


def test_cli_subprocess_upstream_from_environment(tmp_path: Path, upstream: Any) -> None:
    upstreams, seen = upstream
    policy = write_policy(tmp_path, POLICY)
    out = tmp_path / "agent.out"
    env = {**os.environ, **KEYS, "ANTHROPIC_BASE_URL": upstreams.anthropic, "OPENAI_BASE_URL": upstreams.openai}
    env.pop("AEGIS_POLICY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "aegis_cli", "wrap", "-p", str(policy), "--audit-db", str(tmp_path / "a.db"),
         "--approvals", "deny", "--", sys.executable, str(AGENT), "--out", str(out), "anthropic-stream",
         "chat-stream"],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    results = {r["scenario"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert [c[0] for c in results["anthropic-stream"]["calls"]] == ["get_weather"]
    assert [c[0] for c in results["chat-stream"]["calls"]] == ["get_weather"]
    assert len([s for s in seen if s["body"] is not None]) == 2  # the upstream aegis itself was given
    assert proc.stdout == ""


def test_cli_runner_exit_status_is_the_childs(tmp_path: Path, upstream: Any) -> None:
    from typer.testing import CliRunner

    from aegis_cli.cli import app

    upstreams, _ = upstream
    policy = write_policy(tmp_path, BLOCK_ALL)
    out = tmp_path / "agent.out"
    env = {**KEYS, "ANTHROPIC_BASE_URL": upstreams.anthropic, "OPENAI_BASE_URL": upstreams.openai}
    result = CliRunner().invoke(app, ["wrap", "-p", str(policy), "--audit-db", str(tmp_path / "a.db"),
                                      "--approvals", "deny", "--", sys.executable, str(AGENT), "--out", str(out),
                                      "responses-json"], env=env)
    assert result.exit_code == 0, result.output
    (only,) = map(json.loads, out.read_text().splitlines())
    assert only["calls"] == [] and only["text"].count("[aegis]") == 2
    result = CliRunner().invoke(app, ["wrap", "-p", str(policy), "--audit-db", str(tmp_path / "a.db"), "--",
                                      sys.executable, "-c", "raise SystemExit(3)"], env=env)
    assert result.exit_code == 3


def test_without_httpx_the_proxy_names_its_extra_in_one_line(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The core install has no httpx: the proxy would start, then 502 every gzipped reply."""
    import importlib.util

    from typer.testing import CliRunner

    from aegis_cli.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "httpx" else real(name, *a))
    result = CliRunner().invoke(app, ["wrap", "-p", str(write_policy(tmp_path, POLICY)), "--audit-db",
                                      str(tmp_path / "a.db"), "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert result.exit_code == 2
    assert result.stderr == "aegis: aegis wrap without --mcp needs httpx: pip install 'aegis-cli[wrap]'\n"
    assert not (tmp_path / "a.db").exists()  # refused before anything started


# -- the wrapped process --------------------------------------------------------------------------


def test_exit_status_and_env(tmp_path: Path, upstream: Any) -> None:
    policy = write_policy(tmp_path, POLICY)
    script = ("import os, sys; print(os.environ['ANTHROPIC_BASE_URL'], os.environ['OPENAI_BASE_URL']); "
              "sys.exit(7)")
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys; from aegis_cli.wrap.model_proxy import run_wrapped_agent; "
         f"sys.exit(run_wrapped_agent(policy_paths=[{str(policy)!r}], command=[sys.executable, '-c', {script!r}], "
         f"audit_db={str(tmp_path / 'a.db')!r}, approval_timeout=1.0, approvals='deny'))"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 7, out.stderr
    anthropic_url, openai_url = out.stdout.split()
    assert anthropic_url.startswith("http://127.0.0.1:") and anthropic_url.endswith("/anthropic")
    assert openai_url.startswith("http://127.0.0.1:") and openai_url.endswith("/openai/v1")


def test_signal_forwarded_to_child(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    child = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(42)); "
             "print('ready', flush=True); time.sleep(30)")
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from aegis_cli.wrap.model_proxy import run_wrapped_agent; "
         f"sys.exit(run_wrapped_agent([{str(policy)!r}], [sys.executable, '-c', {child!r}], "
         f"{str(tmp_path / 'a.db')!r}, 1.0, 'deny'))"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.terminate()
    assert proc.wait(timeout=20) == 42


def test_command_not_found(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    policy = Policy.from_string(POLICY)
    code = run_wrapped_agent([], ["aegis-no-such-command-xyz"], tmp_path / "a.db", 1.0, "deny", policy=policy)
    assert code == 127
    assert "aegis-no-such-command-xyz: command not found" in capfd.readouterr().err


# -- the proxy itself ----------------------------------------------------------------------------------


def test_proxy_errors_are_provider_shaped(upstream: Any) -> None:
    import httpx

    from aegis_cli.wrap.model_proxy import ModelProxy
    from aegis_cli.wrap.tool_gate import ToolGate

    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    with socket_port() as dead, ModelProxy(gate.decide, Upstreams(f"http://127.0.0.1:{dead}",
                                                                  f"http://127.0.0.1:{dead}/v1")) as proxy:
        r = httpx.post(proxy.url + "/anthropic/v1/messages", json={"model": "m"})
        assert r.status_code == 502 and r.json()["type"] == "error" and "unreachable" in r.json()["error"]["message"]
        r = httpx.post(proxy.url + "/openai/v1/responses", json={"model": "m"})
        assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
        assert httpx.get(proxy.url + "/elsewhere").status_code == 404
    with ModelProxy(gate.decide, upstream[0]) as proxy:
        r = httpx.post(proxy.url + "/openai/v1/embeddings", json={"input": "x"})  # the upstream's own 404
        assert r.status_code == 404 and r.json() == {"error": {"message": "not found"}}
        assert r.headers["request-id"] == "req_replay_01"
    gate.close()


@contextlib.contextmanager
def socket_port() -> Any:
    """A port nothing listens on (bound, never listening, so connections are refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_accept_encoding_narrowed_to_what_the_proxy_can_read(upstream: Any) -> None:
    # every reply is read: decided, or (other paths) checked for tool calls before it is passed on
    import httpx

    from aegis_cli.wrap.model_proxy import ModelProxy
    from aegis_cli.wrap.tool_gate import ToolGate

    upstreams, seen = upstream
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    offered = {"accept-encoding": "gzip, made-up-encoding;q=0.5"}
    with ModelProxy(gate.decide, upstreams) as proxy:
        r = httpx.post(proxy.url + "/anthropic/v1/messages", json={"model": "m"}, headers=offered)
        assert r.status_code == 200 and "delete_file` was blocked" in r.text
        httpx.get(proxy.url + "/openai/v1/models", headers=offered)
    gate.close()
    assert seen[0]["headers"]["accept-encoding"] == "gzip"
    assert seen[1]["headers"]["accept-encoding"] == "gzip"


def test_unusable_audit_database_stops_before_the_command_runs(tmp_path: Path) -> None:
    from aegis_cli.audit import AuditError

    marker = tmp_path / "ran"
    with pytest.raises(AuditError):
        run_wrapped_agent([], [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], tmp_path, 1.0, "deny",
                          policy=Policy.from_string(POLICY))
    assert not marker.exists()
