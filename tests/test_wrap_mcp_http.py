"""`aegis wrap --mcp --url`: a real MCP server over HTTP (the official SDK's MCPServer), driven by
the official client over stdio through aegis.

The server (tests/mcp_http_server.py) keeps a counter in a file, so a test can see that a blocked
or refused call never ran. Each test checks what the host saw, what the server did and what the
audit trail holds.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mt
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from pg import bodies, stored_text, trail_exists, verifies

pytest.importorskip("httpx")

HERE = Path(__file__).parent
SERVER = HERE / "mcp_http_server.py"

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: no-big-jumps
    match: {type: increment, target: counter-server}
    conditions: {param_matches: {by: "^[0-9]{2,}$"}}
    risk_level: high
    approval: block
    reason: big jumps are off limits
"""

APPROVE_POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: count-needs-a-human
    match: {type: increment, target: counter-server}
    risk_level: high
    approval: approve
    reason: someone must agree
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    counter: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def count(self) -> int:
        return int(self.counter.read_text())


def start_server(tmp: Path, *args: str, path: str = "/mcp", port: int | None = None) -> Server:
    port = port or free_port()
    counter, log = tmp / f"counter-{port}", tmp / f"log-{port}"
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), "--counter", str(counter),
                             "--log", str(log), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60  # importing the SDK's server takes seconds on a loaded 2-core machine
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None, "the MCP server exited"
            time.sleep(0.05)
    else:
        raise AssertionError("the MCP server did not start")
    return Server(f"http://127.0.0.1:{port}{path}", counter, log, proc)


def stop(server: Server) -> None:
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("http"))
    yield server
    stop(server)


@pytest.fixture(scope="module")
def sse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("sse"), "--transport", "sse", path="/sse")
    yield server
    stop(server)


def aegis_params(tmp: Path, url: str, *extra: str, policy: str = POLICY, env: dict[str, str] | None = None,
                 db: str | None = None) -> StdioServerParameters:
    """`aegis wrap --mcp --url` as the host starts it; the trail is ``db`` (a file or URL), else tmp/audit.db."""
    (tmp / "policy.yaml").write_text(policy)
    argv = [sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(tmp / "policy.yaml"),
            "--audit-db", db or str(tmp / "audit.db"), "--url", url, *extra]
    base = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    return StdioServerParameters(command=argv[0], args=argv[1:], env={**base, **(env or {})})


def audit_rows(db: Path | str) -> list[dict[str, Any]]:
    """The trail's records in order, read through aegis's reader (an SQLite file or a PostgreSQL URL)."""
    return bodies(db)


def verify(db: Path | str) -> Any:
    return verifies(db)


def text_of(result: mt.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mt.TextContent))


# -- decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_allowed_calls_run_and_blocked_ones_do_not(tmp_path: Path, http_server: Server, mode: str,
                                                    audit_target: str) -> None:
    trace = tmp_path / "trace.jsonl"
    params = aegis_params(tmp_path, http_server.url, "--record-trace", str(trace), db=audit_target)
    before = http_server.count()

    async def session() -> tuple[list[str], mt.CallToolResult, mt.CallToolResult]:
        async with Client(params, mode=mode) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            ok = await client.call_tool("increment", {"by": 1})
            blocked = await client.call_tool("increment", {"by": 50})
            return tools, ok, blocked

    tools, ok, blocked = anyio.run(session)
    assert "increment" in tools and "ask_name" in tools
    assert not ok.is_error and ok.structured_content == {"result": before + 1}
    assert blocked.is_error and "no-big-jumps" in text_of(blocked) and "big jumps are off limits" in text_of(blocked)
    assert http_server.count() == before + 1  # the blocked call never reached the server

    decisions = [r for r in audit_rows(audit_target) if r["kind"] == "decision"]
    assert [(d["action"]["type"], d["action"]["target"], d["decision"]["approval"]) for d in decisions] == [
        ("increment", "counter-server", "auto"), ("increment", "counter-server", "block")]
    assert verify(audit_target).ok
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    assert {x["server"] for x in lines} == {"counter-server"}
    assert [x["msg"]["params"]["arguments"] for x in lines if x["msg"].get("method") == "tools/call"] == [
        {"by": 1}, {"by": 50}]


def test_hide_blocked_and_target_name(tmp_path: Path, http_server: Server) -> None:
    policy = POLICY + """\
  - name: no-questions
    match: {type: ask_name}
    approval: block
"""
    params = aegis_params(tmp_path, http_server.url, "--hide-blocked", policy=policy)

    async def session() -> list[str]:
        async with Client(params) as client:
            return [t.name for t in (await client.list_tools()).tools]

    tools = anyio.run(session)
    assert "ask_name" not in tools and "increment" in tools  # a conditional block keeps the tool listed


# -- what the server sends reaches the host ---------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_notifications_and_elicitation_from_the_server_reach_the_host(tmp_path: Path, http_server: Server,
                                                                       mode: str) -> None:
    params = aegis_params(tmp_path, http_server.url)
    progress: list[tuple[float, str | None]] = []
    logs: list[Any] = []
    asked: list[str] = []

    async def on_log(params: mt.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def on_elicit(context: Any, params: Any) -> mt.ElicitResult:
        asked.append(params.message)
        return mt.ElicitResult(action="accept", content={"name": "Ada"})

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async def session() -> tuple[mt.CallToolResult, mt.CallToolResult, mt.CallToolResult]:
        async with Client(params, mode=mode, logging_callback=on_log, elicitation_callback=on_elicit) as client:
            steps = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
            named = await client.call_tool("ask_name", {})
            # the server cuts this call's stream; aegis resumes it with Last-Event-ID
            resumed = await client.call_tool("close_stream", {})
            return steps, named, resumed

    steps, named, resumed = anyio.run(session)
    assert text_of(steps) == "3 steps done"
    assert progress == [(1.0, "step 1"), (2.0, "step 2"), (3.0, "step 3")]
    assert logs[:3] == ["did step 1", "did step 2", "did step 3"] and "before the cut" in logs
    assert asked == ["What is your name?"] and text_of(named) == "hello Ada"
    assert not resumed.is_error and text_of(resumed) == "answered after the cut"


def test_legacy_http_sse_transport(tmp_path: Path, sse_server: Server) -> None:
    params = aegis_params(tmp_path, sse_server.url)
    before = sse_server.count()
    logs: list[Any] = []

    async def on_log(params: mt.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def session() -> list[mt.CallToolResult]:
        async with Client(params, mode="legacy", logging_callback=on_log) as client:
            return [await client.call_tool("increment", {"by": 2}), await client.call_tool("increment", {"by": 20}),
                    await client.call_tool("progress", {"steps": 1})]

    ok, blocked, steps = anyio.run(session)
    assert not ok.is_error and ok.structured_content == {"result": before + 2}
    assert blocked.is_error and "no-big-jumps" in text_of(blocked)
    assert text_of(steps) == "1 steps done" and logs == ["did step 1"]
    assert sse_server.count() == before + 2


# -- approvals ----------------------------------------------------------------------------------


def test_approval_by_elicitation(tmp_path: Path, http_server: Server, audit_target: str) -> None:
    params = aegis_params(tmp_path, http_server.url, "--approvals", "deny", policy=APPROVE_POLICY, db=audit_target)
    answers = [True, False]
    before = http_server.count()

    async def on_elicit(context: Any, params: Any) -> mt.ElicitResult:
        return mt.ElicitResult(action="accept", content={"approve": answers.pop(0)})

    async def session() -> list[mt.CallToolResult]:
        async with Client(params, mode="legacy", elicitation_callback=on_elicit) as client:
            return [await client.call_tool("increment", {"by": 1}) for _ in range(2)]

    yes, no = anyio.run(session)
    assert not yes.is_error and yes.structured_content == {"result": before + 1}
    assert no.is_error and "not approved" in text_of(no) and "count-needs-a-human" in text_of(no)
    assert http_server.count() == before + 1
    statuses = [r["data"]["status"] for r in audit_rows(audit_target) if r["kind"] == "approval"]
    assert statuses == ["approved", "denied"]


def answer_from_queue(db: str, approve: bool, found: list[int]) -> threading.Thread:
    """Another person, in another shell: `aegis approvals approve|deny ID` once a request is pending."""
    def run() -> None:
        from aegis_cli.audit.approvals import ApprovalQueue

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if trail_exists(db):
                try:
                    with ApprovalQueue(str(db)) as queue:
                        pending = queue.list("pending")
                except Exception:
                    pending = []
                if pending:
                    found.append(pending[0].id)
                    subprocess.run([sys.executable, "-m", "aegis_cli", "approvals",
                                    "approve" if approve else "deny", str(pending[0].id), "--audit-db", str(db)],
                                   check=True, capture_output=True)
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_approval_by_the_queue_and_a_timeout_denies(tmp_path: Path, http_server: Server, new_trail: Any) -> None:
    params = aegis_params(tmp_path, http_server.url, "--no-elicitation", "--approval-timeout", "20",
                          policy=APPROVE_POLICY, db=new_trail("audit"))
    before = http_server.count()
    found: list[int] = []

    async def session() -> mt.CallToolResult:
        async with Client(params, mode="legacy") as client:
            return await client.call_tool("increment", {"by": 3})

    answerer = answer_from_queue(new_trail("audit"), True, found)
    approved = anyio.run(session)
    answerer.join(5)
    assert found and not approved.is_error and approved.structured_content == {"result": before + 3}

    timed = tmp_path / "timeout"
    timed.mkdir()
    params = aegis_params(timed, http_server.url, "--no-elicitation", "--approval-timeout", "0.5",
                          policy=APPROVE_POLICY, db=new_trail("timeout"))
    refused = anyio.run(session)
    assert refused.is_error and "not approved" in text_of(refused)
    assert http_server.count() == before + 3  # the unanswered call never ran
    statuses = [r["data"]["status"] for r in audit_rows(new_trail("timeout")) if r["kind"] == "approval"]
    assert statuses and statuses[-1] in ("timed_out", "expired")


# -- fail closed ----------------------------------------------------------------------------------


def test_unreachable_server_is_refused_with_the_reason(tmp_path: Path, audit_target: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    params = aegis_params(tmp_path, url, "--target", "counter-server", db=audit_target)
    (tmp_path / "policy.yaml").write_text(POLICY)

    async def session() -> Any:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import stdio_client

        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            try:
                await s.initialize()
                initialized = "yes"
            except Exception as exc:
                initialized = str(exc)
            return initialized, await s.call_tool("increment", {"by": 1})

    initialized, result = anyio.run(session)
    assert "could not be reached" in initialized
    assert result.is_error and "could not be reached" in text_of(result) and "increment" in text_of(result)
    decisions = [r for r in audit_rows(audit_target) if r["kind"] == "decision"]
    assert [d["decision"]["approval"] for d in decisions] == ["auto"]  # decided, forwarded, refused on failure


@pytest.mark.parametrize("face", ["url", "listen"])
def test_a_session_the_server_forgot_is_renewed_and_the_call_sent_again_once(
        tmp_path: Path, listen_stop: list[Listening], face: str) -> None:
    # The server restarts (a deploy) and forgets its sessions: the next call, in the old session,
    # is answered 404. aegis starts a new session as the host started the first and sends the call
    # again, once; the host's own session with aegis goes on as if nothing happened.
    server = start_server(tmp_path)
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    if face == "url":
        target: Any = aegis_params(tmp_path, server.url)
    else:
        listening = start_listen(tmp_path, "--url", server.url)
        listen_stop.append(listening)
        target = listening.url

    def restart() -> None:
        nonlocal server
        stop(server)
        server = start_server(tmp_path, port=port)

    async def session() -> list[mt.CallToolResult]:
        with anyio.fail_after(90):
            async with Client(target, mode="legacy") as client:
                first = await client.call_tool("increment", {"by": 1})
                await anyio.to_thread.run_sync(restart)
                return [first, await client.call_tool("increment", {"by": 5}),
                        await client.call_tool("increment", {"by": 1})]

    try:
        results = anyio.run(session)
    finally:
        stop(server)
    assert [text_of(r) for r in results] == ["1", "5", "6"], [text_of(r) for r in results]
    assert server.count() == 6  # the new server ran the call sent again once, not twice
    decisions = [r for r in audit_rows(tmp_path / "audit.db") if r["kind"] == "decision"]
    assert [d["decision"]["approval"] for d in decisions] == ["auto"] * 3  # decided once each
    assert verify(tmp_path / "audit.db").ok


def test_refusals_without_an_id_and_a_session_that_cannot_be_renewed_are_answered(tmp_path: Path) -> None:
    # The SDK's servers refuse a request they could not take with "id": null (a wrong protocol version,
    # an unknown session): the host gets it for its own request, not an answer to nobody. A session the
    # server forgot and will not renew (initialize refused) fails the call naming why; the next call
    # tries again, and runs once the server takes the new session.
    from http.server import BaseHTTPRequestHandler

    state = {"session": "s1", "calls": 0, "initializes": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def send(self, status: str, body: bytes = b"", session: str | None = None) -> None:
            head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            head += f"mcp-session-id: {session}\r\n" if session else ""
            self.wfile.write(head.encode() + b"content-length: %d\r\n\r\n%s" % (len(body), body))
            self.wfile.flush()

        def do_GET(self) -> None:
            self.send("405 Method Not Allowed")

        def do_DELETE(self) -> None:
            self.send("200 OK")

        def do_POST(self) -> None:
            msg = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if msg.get("method") == "initialize":
                state["initializes"] += 1
                if state["initializes"] == 2:  # the first renewal
                    self.send("503 Service Unavailable")
                    return
                state["session"] = f"s{state['initializes']}"
                self.send("200 OK", json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "forgetful", "version": "1"}}}).encode(), state["session"])
                return
            if self.headers.get("mcp-session-id") != state["session"]:
                self.send("404 Not Found", b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
                                           b'"message":"Session not found"}}')
                return
            if "id" not in msg:
                self.send("202 Accepted")
                return
            if msg["method"] == "tools/list":
                tools = [{"name": n, "inputSchema": {"type": "object"}} for n in ("old", "forget", "run")]
                self.send("200 OK", json.dumps({"jsonrpc": "2.0", "id": msg["id"],
                                                "result": {"tools": tools}}).encode())
                return
            name = msg["params"]["name"]
            if name == "old":
                self.send("400 Bad Request", b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
                                             b'"message":"Bad Request: Unsupported protocol version"}}')
                return
            if name == "forget":
                state["session"] = "gone"
            else:
                state["calls"] += 1
            self.send("200 OK", json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                "content": [{"type": "text", "text": f"{name} ran"}], "isError": False}}).encode())

    server = serve_threaded(Handler)
    params = aegis_params(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/mcp")

    async def session() -> list[Any]:
        with anyio.fail_after(60):
            async with Client(params, mode="legacy") as client:
                await client.list_tools()  # known now: the client does not ask again after a call
                out: list[Any] = []
                for name in ("old", "forget", "run", "run"):
                    try:
                        out.append(await client.call_tool(name, {}))
                    except Exception as exc:  # the server's JSON-RPC error, raised by the client
                        out.append(exc)
                return out

    try:
        old, forget, refused, ran = anyio.run(session)
    finally:
        server.shutdown()
    assert "Unsupported protocol version" in str(old)
    assert text_of(forget) == "forget ran"
    assert refused.is_error and "ended the session (HTTP 404)" in text_of(refused)
    assert "HTTP 503 to initialize" in text_of(refused)
    assert not ran.is_error and text_of(ran) == "run ran" and state["calls"] == 1
    assert state["initializes"] == 3 and state["session"] == "s3"


def test_listen_without_its_extra_names_it_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from aegis_cli.cli import app

    (tmp_path / "policy.yaml").write_text(POLICY)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "starlette" else real(name, *a))
    result = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--listen",
                                      "127.0.0.1:1", "--", sys.executable, "-c", "pass"])
    assert result.exit_code == 2
    assert result.stderr == "aegis: --listen needs starlette: pip install 'aegis-cli[wrap]'\n"


def test_headers_name_environment_variables_and_stay_secret(tmp_path: Path, http_server: Server,
                                                            audit_target: str) -> None:
    from aegis_cli.wrap.mcp_http import HeaderError, parse_header

    assert parse_header("Authorization: Bearer ${TOK}", {"TOK": "s3cret"}) == ("Authorization", "Bearer s3cret")
    with pytest.raises(HeaderError) as err:
        parse_header("Authorization: Bearer ${MISSING_TOKEN}", {})
    assert "MISSING_TOKEN" in str(err.value)
    with pytest.raises(HeaderError):
        parse_header("no colon here", {})

    secret = "very-secret-header-value-123"
    params = aegis_params(tmp_path, http_server.url, "--header", "X-Api-Key: ${AEGIS_TEST_SECRET}",
                          env={"AEGIS_TEST_SECRET": secret}, db=audit_target)
    trace = tmp_path / "trace.jsonl"
    params.args += ["--record-trace", str(trace)]

    async def session() -> mt.CallToolResult:
        async with Client(params, mode="legacy") as client:
            return await client.call_tool("increment", {"by": 1})

    assert not anyio.run(session).is_error
    assert audit_rows(audit_target) and secret not in stored_text(audit_target)
    assert secret not in trace.read_text()

    from typer.testing import CliRunner

    from aegis_cli.cli import app

    missing = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--url",
                                       http_server.url, "--header", "Authorization: Bearer ${AEGIS_NOT_SET_X}"])
    assert missing.exit_code == 2 and "AEGIS_NOT_SET_X is not set" in missing.output
    both = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--url",
                                    http_server.url, "--", "some-server"])
    assert both.exit_code == 2 and "either --url or a COMMAND" in both.output
    wide = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--listen",
                                    "0.0.0.0:1", "--url", http_server.url], env={"AEGIS_API_TOKEN": ""})
    assert wide.exit_code == 2 and "without a token" in wide.output
    bad = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--listen", "nonsense",
                                   "--url", http_server.url])
    assert bad.exit_code == 2 and "HOST:PORT" in bad.output
    with socket.socket() as taken:  # a port another program holds: one line, exit 2
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--listen",
                                        f"127.0.0.1:{taken.getsockname()[1]}", "--url", http_server.url])
    assert busy.exit_code == 2 and "cannot listen on 127.0.0.1:" in busy.output


# -- --listen: Streamable HTTP toward the host ---------------------------------------------------


@dataclass
class Listening:
    url: str
    proc: subprocess.Popen[bytes]
    db: str


#: aegis's CLI with the held-call keepalive interval (aegis_cli.wrap.mcp.KEEPALIVE_INTERVAL) shortened
#: to the first argument, so a test sees several beats within a second.
KEEPALIVE_CLI = ("import sys, aegis_cli.wrap.mcp as w; w.KEEPALIVE_INTERVAL = float(sys.argv.pop(1)); "
                 "from aegis_cli.cli import main; main()")


def start_listen(tmp: Path, *backend: str, policy: str = POLICY, extra: tuple[str, ...] = (),
                 db: str | None = None, env: dict[str, str] | None = None,
                 keepalive: float | None = None) -> Listening:
    db = db or str(tmp / "audit.db")
    (tmp / "policy.yaml").write_text(policy)
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    cli = ["-m", "aegis_cli"] if keepalive is None else ["-c", KEEPALIVE_CLI, str(keepalive)]
    proc = subprocess.Popen([sys.executable, *cli, "wrap", "--mcp", "-p", str(tmp / "policy.yaml"),
                             "--audit-db", db, "--listen", f"127.0.0.1:{port}", *extra, *backend],
                            env={**base, **(env or {})}, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert f"http://127.0.0.1:{port}/mcp" in line, line
    return Listening(f"http://127.0.0.1:{port}/mcp", proc, db)


@pytest.fixture
def listen_stop() -> Iterator[list[Listening]]:
    started: list[Listening] = []
    yield started
    for item in started:
        item.proc.terminate()
        item.proc.wait(timeout=20)


def raw_listen_session(tmp: Path) -> tuple[Listening, int, str]:
    """``--listen`` in front of the stdio test server, and a session initialized over plain HTTP:
    (the listener, its port, the session id)."""
    import http.client

    listening = start_listen(tmp, "--", sys.executable, str(SERVER), "--transport", "stdio", "--counter",
                             str(tmp / "counter"))
    port = int(listening.url.rsplit(":", 1)[1].split("/")[0])
    host = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    host.request("POST", "/mcp", json.dumps(init), {"content-type": "application/json",
                                                  "accept": "application/json, text/event-stream"})
    answer = host.getresponse()
    sid = answer.getheader("mcp-session-id")
    assert answer.status == 200 and sid and b'"result"' in answer.read()
    return listening, port, sid


def test_listen_stops_on_sigterm_ending_a_hosts_open_get_stream_cleanly(tmp_path: Path) -> None:
    # A host keeps its GET stream open for as long as it runs: stopping aegis ends the session and that
    # stream (its last chunk sent), at once, rather than waiting on the host or cutting the stream.
    import http.client
    import signal

    listening, port, sid = raw_listen_session(tmp_path)
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    stream.request("GET", "/mcp", headers={"accept": "text/event-stream", "mcp-session-id": sid})
    opened = stream.getresponse()
    assert opened.status == 200 and opened.getheader("content-type") == "text/event-stream"
    listening.proc.send_signal(signal.SIGTERM)
    assert listening.proc.wait(timeout=20) == 0  # (on uvicorn it waited for the host to hang up)
    assert opened.read() == b""  # ended with its last chunk: http.client raises IncompleteRead on a cut one


def test_listen_refuses_a_post_the_relay_cannot_read_at_once(tmp_path: Path, listen_stop: list[Listening]) -> None:
    # A key twice ("params" here) is no message the relay will read, nor pass on: the POST is refused
    # as a parse error, and answered (it was left waiting for an answer that never came), the tool not run.
    import http.client

    listening, port, sid = raw_listen_session(tmp_path)
    listen_stop.append(listening)
    host = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = ('{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "increment", "arguments": {}},'
            ' "params": {"name": "increment", "arguments": {"by": 5}}}')
    host.request("POST", "/mcp", body, {"content-type": "application/json", "mcp-session-id": sid,
                                        "accept": "application/json, text/event-stream"})
    answer = host.getresponse()
    assert answer.status == 400 and b"Parse error" in answer.read()
    assert not (tmp_path / "counter").exists() or (tmp_path / "counter").read_text().strip() in ("", "0")


@pytest.mark.parametrize("backend", ["url", "command"])
def test_listen_relays_and_decides(tmp_path: Path, http_server: Server, listen_stop: list[Listening],
                                   backend: str, audit_target: str) -> None:
    counter = tmp_path / "stdio-counter"
    server_args = (["--url", http_server.url] if backend == "url" else
                   ["--", sys.executable, str(SERVER), "--transport", "stdio", "--counter", str(counter)])
    counter_of = http_server.counter if backend == "url" else counter
    listening = start_listen(tmp_path, *server_args, policy=APPROVE_POLICY + """\
  - name: no-questions-cut
    match: {type: close_stream}
    approval: block
""", extra=("--approvals", "deny"), db=audit_target)
    listen_stop.append(listening)
    answers = [True, False]
    asked: list[str] = []
    progress: list[float] = []

    async def on_elicit(context: Any, params: Any) -> mt.ElicitResult:
        asked.append(params.message)
        if "name" in params.message:
            return mt.ElicitResult(action="accept", content={"name": "Grace"})
        return mt.ElicitResult(action="accept", content={"approve": answers.pop(0)})

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def session() -> list[mt.CallToolResult]:
        async with Client(listening.url, mode="legacy", elicitation_callback=on_elicit) as client:
            before = int(counter_of.read_text())
            results = [await client.call_tool("increment", {"by": 1}), await client.call_tool("increment", {"by": 1}),
                       await client.call_tool("close_stream", {}),
                       await client.call_tool("progress", {"steps": 2}, progress_callback=on_progress),
                       await client.call_tool("ask_name", {})]
            assert int(counter_of.read_text()) == before + 1  # approved once, denied once, blocked never ran
            return results

    yes, no, blocked, steps, named = anyio.run(session)
    assert not yes.is_error
    assert no.is_error and "not approved" in text_of(no)
    assert blocked.is_error and "no-questions-cut" in text_of(blocked)
    assert text_of(steps) == "2 steps done" and progress == [1.0, 2.0]
    assert text_of(named) == "hello Grace"
    assert sum("count-needs-a-human" in a for a in asked) == 2 and "What is your name?" in asked
    decisions = [r for r in audit_rows(listening.db) if r["kind"] == "decision"]
    assert {d["action"]["target"] for d in decisions} == {"counter-server"}
    assert [d["decision"]["approval"] for d in decisions] == ["approve", "approve", "block", "auto", "auto"]


def test_listen_hang_up_during_a_held_approval_withdraws_it(tmp_path: Path, http_server: Server,
                                                           listen_stop: list[Listening], audit_target: str) -> None:
    import httpx

    listening = start_listen(tmp_path, "--url", http_server.url, policy=APPROVE_POLICY, extra=("--approvals", "deny"),
                             db=audit_target)
    listen_stop.append(listening)
    before = http_server.count()
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with httpx.Client(timeout=10) as client:
        init = client.post(listening.url, headers=headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"form": {}}},
                "clientInfo": {"name": "raw", "version": "1"}}})
        sid = init.headers["mcp-session-id"]
        assert "counter-server" in init.text
        headers["mcp-session-id"] = sid
        assert client.post(listening.url, headers=headers, json={
            "jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
        with client.stream("POST", listening.url, headers=headers, json={
                "jsonrpc": "2.0", "id": 5, "method": "tools/call",
                "params": {"name": "increment", "arguments": {"by": 1}}}) as held:
            assert held.headers["content-type"].startswith("text/event-stream")
            first = next(line for line in held.iter_lines() if line.startswith("data:"))
            assert json.loads(first[5:])["method"] == "elicitation/create"
        # the host hung up while the person was being asked
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            statuses = [r["data"]["status"] for r in audit_rows(listening.db) if r["kind"] == "approval"]
            if statuses:
                break
            time.sleep(0.1)
        assert statuses == ["cancelled"]
        assert http_server.count() == before
        # a tool call with no session, a page on another origin, a rebinding Host: refused
        no_session = {k: v for k, v in headers.items() if k != "mcp-session-id"}
        assert client.post(listening.url, headers=no_session, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "increment"}}).status_code == 400
        assert client.post(listening.url, headers={**headers, "origin": "https://evil.example"}, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/list"}).status_code == 403
        assert client.post(listening.url, headers={**headers, "host": "evil.example"}, json={
            "jsonrpc": "2.0", "id": 3, "method": "tools/list"}).status_code == 403
        assert client.delete(listening.url, headers=headers).status_code == 200
        assert client.post(listening.url, headers=headers, json={
            "jsonrpc": "2.0", "id": 4, "method": "tools/list"}).status_code == 404
    assert http_server.count() == before


def approve_first_pending(db: str) -> None:
    """A person, in another shell: `aegis approvals approve ID` for the request waiting in the queue."""
    from aegis_cli.audit.approvals import ApprovalQueue

    deadline = time.monotonic() + 30  # the call may be held (and kept alive) a moment before it is queued
    while True:
        with ApprovalQueue(db) as queue:
            pending = queue.list("pending")
        if pending or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pending, "no approval is pending"
    subprocess.run([sys.executable, "-m", "aegis_cli", "approvals", "approve", str(pending[0].id), "--audit-db", db],
                   check=True, capture_output=True)


def test_listen_refuses_a_second_request_with_the_id_of_one_in_flight(tmp_path: Path, http_server: Server,
                                                                     listen_stop: list[Listening]) -> None:
    """A host that reuses the id of a call still held: the second POST is refused at once, nothing
    forwarded, and the first still gets its own answer (here the queue's timeout: a refusal)."""
    import httpx

    listening = start_listen(tmp_path, "--url", http_server.url, policy=APPROVE_POLICY,
                             extra=("--no-elicitation", "--approval-timeout", "3"), keepalive=0.2)
    listen_stop.append(listening)
    before = http_server.count()
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "increment", "arguments": {"by": 1}}}
    with httpx.Client(timeout=20) as client, httpx.Client(timeout=20) as other:
        init = client.post(listening.url, headers=headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        headers["mcp-session-id"] = init.headers["mcp-session-id"]
        client.post(listening.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        answer: dict[str, Any] = {}
        with client.stream("POST", listening.url, headers=headers, json=call) as held:
            lines = held.iter_lines()
            assert next(lines) == ": keepalive"  # held for a person
            again = other.post(listening.url, headers=headers, json=call)
            assert again.status_code == 400 and "already in progress" in again.json()["error"]["message"]
            for line in lines:
                if line.startswith("data:"):
                    answer = json.loads(line[5:])
                    break
    assert answer["id"] == 7 and answer["result"]["isError"] is True  # the timeout's refusal, to the first
    assert http_server.count() == before


def test_listen_keeps_a_held_call_alive_until_it_is_answered(tmp_path: Path, http_server: Server,
                                                             listen_stop: list[Listening]) -> None:
    """While a call waits in the queue for a person, its POST answers as an SSE stream that carries
    comments and progress for the call's progressToken; the call runs only once approved."""
    import httpx

    listening = start_listen(tmp_path, "--url", http_server.url, policy=APPROVE_POLICY,
                             extra=("--no-elicitation",), keepalive=0.2)
    listen_stop.append(listening)
    before = http_server.count()
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with httpx.Client(timeout=20) as client:
        init = client.post(listening.url, headers=headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        headers["mcp-session-id"] = init.headers["mcp-session-id"]
        client.post(listening.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        seen: list[Any] = []
        answer: dict[str, Any] = {}
        with client.stream("POST", listening.url, headers=headers, json={
                "jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
                    "name": "increment", "arguments": {"by": 1}, "_meta": {"progressToken": "p5"}}}) as held:
            assert held.headers["content-type"].startswith("text/event-stream")
            for line in held.iter_lines():
                if line.startswith(":"):
                    seen.append(line)
                elif line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("method") != "notifications/progress":
                        answer = msg
                        break
                    assert msg["params"]["progressToken"] == "p5"
                    seen.append(msg["params"]["progress"])
                    if msg["params"]["progress"] == 2:
                        assert http_server.count() == before  # held, not forwarded
                        approve_first_pending(listening.db)
    assert seen[0] == ": keepalive" and seen.count(": keepalive") >= 3
    beats = [x for x in seen if not isinstance(x, str)]
    assert beats[:2] == [1, 2] and beats == sorted(beats)
    assert answer["id"] == 5 and answer["result"]["isError"] is False
    assert http_server.count() == before + 1

    # The official client sees the same progress, through its progress callback.
    progress: list[tuple[float, str | None]] = []
    results: list[mt.CallToolResult] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async def session() -> None:
        async with Client(listening.url, mode="legacy") as client:
            async def call() -> None:
                results.append(await client.call_tool("increment", {"by": 1}, progress_callback=on_progress))

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(call)
                    while len(progress) < 2:
                        await anyio.sleep(0.05)
                    assert not results and http_server.count() == before + 1
                    await anyio.to_thread.run_sync(approve_first_pending, listening.db)

    anyio.run(session)
    waiting = "aegis: 'increment' is waiting for approval"
    assert progress[:2] == [(1.0, waiting), (2.0, waiting)]
    assert not results[0].is_error and http_server.count() == before + 2


def test_listen_with_host_oauth_passes_the_hosts_authorization_and_oauth_discovery_through(
        tmp_path: Path, listen_stop: list[Listening]) -> None:
    import httpx

    upstream = start_server(tmp_path, "--oauth")
    try:
        # a browser aegis could open, which it must not: the hosts authorize, not aegis
        listening = start_listen(tmp_path, "--url", upstream.url, "--host-oauth", env=browser(tmp_path))
        started = time.monotonic()
        listen_stop.append(listening)
        origin = listening.url.removesuffix("/mcp")
        with httpx.Client(timeout=10) as client:
            direct = client.get(upstream.url.removesuffix("/mcp") + "/.well-known/oauth-protected-resource/mcp")
            relayed = client.get(origin + "/.well-known/oauth-protected-resource/mcp")
            assert direct.status_code == relayed.status_code == 200 and relayed.content == direct.content
            meta = client.get(origin + "/.well-known/oauth-authorization-server")
            assert meta.status_code == 200 and "authorization_endpoint" in meta.json()
            body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
            headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
            refused = client.post(listening.url, headers=headers, json=body)
            assert refused.status_code == 401 and "resource_metadata" in refused.headers["www-authenticate"]
            wrong = client.post(listening.url, headers={**headers, "authorization": "Bearer not-a-token"}, json=body)
            assert wrong.status_code == 401
        # aegis authorized nothing at start (without --host-oauth it registers within a second or two)
        time.sleep(max(0.0, started + 3 - time.monotonic()))
        listening.proc.terminate()
        assert listening.proc.stderr is not None and "authoriz" not in listening.proc.stderr.read().decode()
        assert not upstream.log.exists() and not (tmp_path / "browser-opened").exists()
        assert not (tmp_path / "config").exists()
    finally:
        stop(upstream)

    from typer.testing import CliRunner

    from aegis_cli.cli import app

    alone = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--url", upstream.url,
                                     "--host-oauth"])
    assert alone.exit_code == 2 and "--host-oauth only applies with --listen and --url" in alone.output


BROWSER = """\
import sys, time, httpx
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
here = Path(sys.argv[0]).parent
with (here / "browser-opened").open("a") as f:
    f.write("x")
plan = here / "browser-plan"
steps = plan.read_text().split() if plan.exists() else []
if steps:
    plan.write_text(" ".join(steps[1:]))
step = steps[0] if steps else "follow"
if step == "wait":  # the person takes a while: until the test says "go"
    deadline = time.monotonic() + 60
    while not (here / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
if step == "deny":  # the person refuses: the authorization server sends the error to the callback
    httpx.get(parse_qs(urlsplit(sys.argv[1]).query)["redirect_uri"][0] + "?error=access_denied", timeout=10)
else:
    httpx.get(sys.argv[1], follow_redirects=True, timeout=10)
"""


def browser(tmp: Path, *plan: str) -> dict[str, str]:
    """The environment of an aegis whose "browser" is a small HTTP client that follows the
    authorization URL to aegis's callback (the test authorization server approves at once), and whose
    tokens are kept under tmp/config. ``plan``: what each opening does in turn ("follow", "wait" for
    the file tmp/go first, or "deny"), then "follow"; each opening adds a character to
    tmp/browser-opened."""
    follow = tmp / "follow.py"
    follow.write_text(BROWSER)
    if plan:
        (tmp / "browser-plan").write_text(" ".join(plan))
    return {"BROWSER": f"{sys.executable} {follow} %s", "AEGIS_CONFIG_DIR": str(tmp / "config")}


async def own_token(server_url: str) -> tuple[str, str]:
    """A host doing its own OAuth with the server, through the official SDK's client: its access
    token and client id."""
    import httpx2
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    class Memory:
        tokens: Any = None
        client: Any = None

        async def get_tokens(self) -> Any:
            return self.tokens

        async def set_tokens(self, tokens: Any) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> Any:
            return self.client

        async def set_client_info(self, info: Any) -> None:
            self.client = info

    redirect: list[str] = []

    async def open_url(url: str) -> None:  # the person approves; the server redirects with a code
        async with httpx2.AsyncClient() as http:
            redirect.append((await http.get(url)).headers["location"])

    async def callback() -> AuthorizationCodeResult:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(redirect[-1]).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0])

    storage = Memory()
    provider = OAuthClientProvider(server_url, OAuthClientMetadata(
        client_name="some-host", redirect_uris=["http://127.0.0.1:1/callback"],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"], response_types=["code"],
        token_endpoint_auth_method="none"), storage, redirect_handler=open_url, callback_handler=callback)
    async with httpx2.AsyncClient(auth=provider) as http, \
            Client(streamable_http_client(server_url, http_client=http), mode="legacy") as client:
        who = text_of(await client.call_tool("whoami", {}))
    assert storage.tokens is not None and who == storage.client.client_id
    return storage.tokens.access_token, who


def test_listen_authorizes_for_hosts_that_bring_no_token(tmp_path: Path, listen_stop: list[Listening]) -> None:
    """A host connects to --listen by URL with no OAuth of its own: aegis authorizes with the
    server (the stdio --url flow), the host never sees a 401, and its calls are decided and run. A
    host that brings its own token still has it passed through."""
    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    upstream = start_server(tmp_path, "--oauth", "--token-ttl", "8")
    try:
        listening = start_listen(tmp_path, "--url", upstream.url, env=browser(tmp_path))
        listen_stop.append(listening)
        origin = listening.url.removesuffix("/mcp")
        with httpx.Client(timeout=10) as raw:
            # aegis holds the token: nothing for the host to discover, so it connects without OAuth
            for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server"):
                assert raw.get(origin + path).status_code == 404

        async def no_token() -> list[mt.CallToolResult]:
            async with Client(listening.url, mode="legacy") as client:
                first = await client.call_tool("increment", {"by": 1})
                await anyio.sleep(4)  # within 5 s of expiry: aegis refreshes the token before the next call
                second = await client.call_tool("increment", {"by": 1})
                blocked = await client.call_tool("increment", {"by": 99})
                return [first, second, blocked, await client.call_tool("whoami", {})]

        first, second, blocked, who = anyio.run(no_token)
        assert not first.is_error and not second.is_error and upstream.count() == 2
        assert blocked.is_error and "no-big-jumps" in text_of(blocked)
        grants = upstream.log.read_text().split()
        assert grants[:2] == ["register", "code"] and "refresh" in grants[2:]
        stored = list((tmp_path / "config" / "mcp-oauth").glob("*.json"))
        assert len(stored) == 1 and stored[0].stat().st_mode & 0o777 == 0o600
        saved = json.loads(stored[0].read_text())
        assert text_of(who) == saved["client"]["client_id"]  # the call went with aegis's token
        assert saved["tokens"]["access_token"] not in stored_text(listening.db)

        # A host with a token of its own: it goes to the server untouched, in place of aegis's.
        token, host_client = anyio.run(own_token, upstream.url)
        assert host_client != saved["client"]["client_id"]

        async def with_token() -> list[mt.CallToolResult]:
            async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}) as http, \
                    Client(streamable_http_client(listening.url, http_client=http), mode="legacy") as client:
                return [await client.call_tool("whoami", {}), await client.call_tool("increment", {"by": 50})]

        who, blocked = anyio.run(with_token)
        assert text_of(who) == host_client
        assert blocked.is_error and "no-big-jumps" in text_of(blocked) and upstream.count() == 2
        with httpx.Client(timeout=10) as raw:
            # and a token the server refuses is refused to that host, as the server said it
            hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
            wrong = raw.post(listening.url, headers={
                "accept": "application/json, text/event-stream", "authorization": "Bearer not-a-token"}, json={
                "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello})
            assert wrong.status_code == 401 and "resource_metadata" in wrong.headers["www-authenticate"]
        decisions = [r["decision"]["approval"] for r in audit_rows(listening.db) if r["kind"] == "decision"]
        assert decisions == ["auto", "auto", "block", "auto", "auto", "block"]
    finally:
        stop(upstream)


def stderr_lines(listening: Listening) -> queue.Queue[str]:
    """aegis's further stderr lines as they come (read by a thread, so a test waits with a timeout)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert listening.proc.stderr is not None
        for raw in listening.proc.stderr:
            lines.put(raw.decode().rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], timeout: float = 30) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"aegis said nothing more on stderr within {timeout:.0f} s") from None


def stored_token(tmp: Path) -> dict[str, Any]:
    stored = list((tmp / "config" / "mcp-oauth").glob("*.json"))
    assert len(stored) == 1 and stored[0].stat().st_mode & 0o777 == 0o600
    return json.loads(stored[0].read_text())


def test_listen_oauth_authorizes_at_start_so_the_first_host_is_served_at_once(
        tmp_path: Path, listen_stop: list[Listening]) -> None:
    """The person who starts --listen authorizes right then, before any host connects; the first
    host's initialize and calls then go with that token, with no second authorization (a second
    browser step would be refused at once here, and the calls would fail)."""
    upstream = start_server(tmp_path, "--oauth")
    server = upstream.url.split("/")[2]
    try:
        listening = start_listen(tmp_path, "--url", upstream.url, env=browser(tmp_path, "follow", "deny"))
        listen_stop.append(listening)
        lines = stderr_lines(listening)
        asked = next_line(lines)
        assert asked.startswith(f"aegis: authorize access to the MCP server at {server} in your browser: http://")
        assert next_line(lines) == f"aegis: authorized with the MCP server at {server}"
        # all before any host connected: one registration, one authorization, the token stored 0600
        assert upstream.log.read_text().split() == ["register", "code"]
        saved = stored_token(tmp_path)

        async def host() -> tuple[Any, list[mt.CallToolResult]]:
            async with Client(listening.url, mode="legacy") as client:  # its initialize answered
                info = client.server_info
                return info, [await client.call_tool("increment", {"by": 1}), await client.call_tool("whoami", {})]

        info, (counted, who) = anyio.run(host)
        assert info is not None and info.name == "counter-server"
        assert not counted.is_error and upstream.count() == 1
        assert text_of(who) == saved["client"]["client_id"]  # the calls went with the token got at start
        assert upstream.log.read_text().split() == ["register", "code"]
        assert (tmp_path / "browser-opened").read_text() == "x"
    finally:
        stop(upstream)


def test_listen_oauth_a_host_connecting_during_the_start_up_authorization_waits_for_it(
        tmp_path: Path, listen_stop: list[Listening]) -> None:
    upstream = start_server(tmp_path, "--oauth")
    try:
        listening = start_listen(tmp_path, "--url", upstream.url, env=browser(tmp_path, "wait", "deny"))
        listen_stop.append(listening)
        lines = stderr_lines(listening)
        assert "in your browser" in next_line(lines)  # the person is at the browser now

        async def host() -> tuple[bool, mt.CallToolResult]:
            got: list[mt.CallToolResult] = []

            async def connect() -> None:
                async with Client(listening.url, mode="legacy") as client:
                    got.append(await client.call_tool("increment", {"by": 1}))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(connect)
                await anyio.sleep(1)  # the host's initialize is at aegis, waiting for the person
                early = bool(got)
                (tmp_path / "go").touch()
            return early, got[0]

        early, counted = anyio.run(host)
        assert not early and not counted.is_error and upstream.count() == 1
        assert next_line(lines) == f"aegis: authorized with the MCP server at {upstream.url.split('/')[2]}"
        assert upstream.log.read_text().split() == ["register", "code"]  # the host's wait started no other
        assert (tmp_path / "browser-opened").read_text() == "x"
        stored_token(tmp_path)
    finally:
        stop(upstream)


def test_listen_oauth_refused_at_start_says_so_and_the_next_host_tries_again(
        tmp_path: Path, listen_stop: list[Listening]) -> None:
    upstream = start_server(tmp_path, "--oauth")
    server = upstream.url.split("/")[2]
    try:
        listening = start_listen(tmp_path, "--url", upstream.url, env=browser(tmp_path, "deny", "follow"))
        listen_stop.append(listening)
        lines = stderr_lines(listening)
        assert "in your browser" in next_line(lines)
        assert next_line(lines) == (f"aegis: authorizing with the MCP server at {server} failed (authorization "
                                    "failed: access_denied); the next host to connect tries again")
        assert listening.proc.poll() is None and "code" not in upstream.log.read_text().split()

        async def host() -> mt.CallToolResult:
            async with Client(listening.url, mode="legacy") as client:
                return await client.call_tool("increment", {"by": 1})

        assert not anyio.run(host).is_error and upstream.count() == 1
        assert "in your browser" in next_line(lines)  # the host's connection asked again
        assert upstream.log.read_text().split() == ["register", "code"]
        stored_token(tmp_path)
    finally:
        stop(upstream)


# -- OAuth: aegis authorizes itself ------------------------------------------------------------------


def test_oauth_protected_server_is_authorized_and_its_token_refreshed(tmp_path: Path, audit_target: str) -> None:
    upstream = start_server(tmp_path, "--oauth", "--token-ttl", "8")
    config = tmp_path / "config"
    try:
        params = aegis_params(tmp_path, upstream.url, env=browser(tmp_path), db=audit_target)

        async def session() -> list[mt.CallToolResult]:
            async with Client(params, mode="legacy") as client:
                first = await client.call_tool("increment", {"by": 1})
                await anyio.sleep(4)  # within 5 s of expiry: aegis refreshes the token before the next call
                second = await client.call_tool("increment", {"by": 1})
                blocked = await client.call_tool("increment", {"by": 99})
                return [first, second, blocked]

        first, second, blocked = anyio.run(session)
        assert not first.is_error and not second.is_error and upstream.count() == 2
        assert blocked.is_error and "no-big-jumps" in text_of(blocked)
        grants = upstream.log.read_text().split()
        assert grants[:2] == ["register", "code"] and "refresh" in grants[2:]
        stored = list((config / "mcp-oauth").glob("*.json"))
        assert len(stored) == 1 and stored[0].stat().st_mode & 0o777 == 0o600
        saved = json.loads(stored[0].read_text())
        assert saved["server"] == upstream.url and saved["tokens"]["access_token"]
        # tokens never reach the audit trail
        assert audit_rows(audit_target) and saved["tokens"]["access_token"] not in stored_text(audit_target)
    finally:
        stop(upstream)


# -- a server whose replies cannot be used: each call is answered by aegis, with the reason -----------


def hostile_server() -> tuple[Any, str]:
    """A stand-in for a broken remote MCP server (no real server sends these on purpose)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes, kind: str = "application/json", close: bool = False) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("mcp-session-id", "s1")
            if close:
                self.send_header("connection", "close")
            else:
                self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if close:
                self.close_connection = True

        def do_GET(self) -> None:
            self.reply(405, b"")

        def do_DELETE(self) -> None:
            self.reply(200, b"")

        def do_POST(self) -> None:
            msg = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if "id" not in msg:
                self.reply(202, b"")
            elif msg["method"] == "initialize":
                self.reply(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "broken-server", "version": "1"}}}).encode())
            elif msg["method"] == "tools/list":  # the client asks, to check a result that is not an error
                self.reply(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": []}}).encode())
            elif msg["params"]["name"] == "garbage":
                self.reply(200, b'{"jsonrpc": "2.0", "id": ')
            elif msg["params"]["name"] in ("sse-extra", "sse-padded"):  # an event's data: JSON, then more
                answer = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "content": [{"type": "text", "text": "ran"}], "isError": False}})
                data = answer + (' {"isError": true}' if msg["params"]["name"] == "sse-extra" else " \t")
                self.reply(200, f"event: message\ndata: {data}\n\n".encode(), "text/event-stream")
            elif msg["params"]["name"] == "cut":
                self.reply(200, b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress",'
                                b'"params":{"progressToken":1,"progress":1}}\n\n', "text/event-stream", close=True)
            else:
                self.reply(500, b"oops", "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/mcp"


def test_unusable_replies_are_refused_with_the_reason(tmp_path: Path) -> None:
    server, url = hostile_server()
    params = aegis_params(tmp_path, url)
    try:
        async def session() -> list[mt.CallToolResult]:
            async with Client(params, mode="legacy") as client:
                return [await client.call_tool(name, {}) for name in ("garbage", "cut", "fails", "sse-extra",
                                                                     "sse-padded")]

        garbage, cut, fails, extra, padded = anyio.run(session)
    finally:
        server.shutdown()
    # an event whose data is JSON followed by more is not read as the JSON alone; JSON's own
    # whitespace around it is fine
    assert extra.is_error and "could not be parsed" in text_of(extra)
    assert not padded.is_error and text_of(padded) == "ran"
    assert garbage.is_error and "could not be parsed" in text_of(garbage)
    assert cut.is_error and "stream ended before it answered" in text_of(cut)
    assert fails.is_error and "HTTP 500" in text_of(fails)
    assert all("got no answer from the server" in text_of(r) for r in (garbage, cut, fails))


# -- answers in every shape the wire may give them, on kept-alive connections -------------------------


def scripted_server(tls: tuple[Path, Path] | None = None, notify: bool = False
                    ) -> tuple[Any, str, dict[str, int], threading.Event]:
    """A stand-in MCP server whose answers to ``tools/call`` come in the shapes a server or the network
    may give them: in 7-byte pieces, gzip-compressed, after ``100 Continue``, never ended, cut, not
    HTTP, or not at all on a kept-alive connection it then closes (``flaky``, the first time). With
    ``tls`` (certificate, key) it speaks HTTPS; with ``notify`` its first GET stream carries a
    notification of its own. ``seen`` counts each tool's calls, GETs and DELETEs."""
    import gzip
    from http.server import BaseHTTPRequestHandler

    seen: dict[str, int] = {}
    ended = threading.Event()

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def send(self, data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()

        def json(self, body: bytes, extra: bytes = b"") -> None:
            self.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: s1\r\n" + extra
                      + b"content-length: %d\r\n\r\n%s" % (len(body), body))

        def do_GET(self) -> None:
            seen["GET"] = seen.get("GET", 0) + 1
            if notify and seen["GET"] == 1 and self.headers.get("mcp-session-id") == "s1":
                note = b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'
                self.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                          b"event: message\r\ndata: " + note + b"\r\n\r\n")
                time.sleep(0.5)
                self.close_connection = True
                return
            self.send(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")

        def do_DELETE(self) -> None:
            seen["DELETE"] = seen.get("DELETE", 0) + 1
            self.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

        def do_POST(self) -> None:
            msg = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if "id" not in msg:
                self.send(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                return
            if msg["method"] == "initialize":
                self.json(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "scripted-server", "version": "1"}}}).encode())
                return
            if msg["method"] != "tools/call":  # tools/list, which the client asks first
                tools = [{"name": n, "inputSchema": {"type": "object"}} for n in
                         ("pieces", "gzip", "continue", "endless", "flaky", "cut", "nonsense", "plain")]
                self.json(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": tools}}).encode())
                return
            name = msg["params"]["name"]
            seen[name] = seen.get(name, 0) + 1
            body = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                "content": [{"type": "text", "text": f"{name} ok"}], "isError": False}}).encode()
            event = b"id: 7\r\nevent: message\r\ndata: " + body + b"\r\n\r\n"
            sse_head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nmcp-session-id: s1\r\n"
                        b"transfer-encoding: chunked\r\n\r\n")
            if name == "pieces":
                priming = b": a comment\r\n\r\nid: 6\r\ndata: \r\nretry: 100\r\n\r\n"
                whole = sse_head + chunk(priming) + chunk(event) + b"0\r\n\r\n"
                for i in range(0, len(whole), 7):
                    self.send(whole[i:i + 7])
                    time.sleep(0.001)
            elif name == "gzip":
                self.json(gzip.compress(body), b"content-encoding: gzip\r\n")
            elif name == "continue":
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                time.sleep(0.01)
                self.json(body)
            elif name == "endless":  # answered, then the stream stays open a long while
                self.send(sse_head + chunk(event))
                time.sleep(5)
                ended.set()
                self.close_connection = True
            elif name == "flaky" and seen[name] == 1:
                self.close_connection = True  # as a server whose keep-alive ran out just then
            elif name == "cut":
                self.send(sse_head + b"80\r\nevent: message\r\ndata: {\"jsonrpc\"")
                self.close_connection = True
            elif name == "nonsense":
                self.send(b"NOT HTTP AT ALL\r\n\r\n")
                self.close_connection = True
            else:
                self.json(body)

    server = serve_threaded(Handler, tls)
    scheme = "https" if tls is not None else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}/mcp", seen, ended


def serve_threaded(handler: Any, tls: tuple[Path, Path] | None = None) -> Any:
    """A ``ThreadingHTTPServer`` for ``handler`` on a free loopback port, serving from a thread; with
    ``tls`` (certificate, key) it speaks HTTPS."""
    import ssl
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (cryptography comes with the mcp SDK, through pyjwt[crypto])."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aegis test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_answers_in_pieces_compressed_interim_endless_or_cut_on_kept_alive_connections(tmp_path: Path) -> None:
    server, url, seen, ended = scripted_server()
    params = aegis_params(tmp_path, url)
    names = ["pieces", "gzip", "continue", "flaky", "nonsense", "plain", "cut", "plain", "endless", "pieces"]
    try:
        async def session() -> list[tuple[mt.CallToolResult, bool]]:
            async with Client(params, mode="legacy") as client:
                return [(await client.call_tool(name, {}), ended.is_set()) for name in names]

        results = anyio.run(session)
    finally:
        server.shutdown()
    by_name = list(zip(names, results, strict=True))
    for name, (result, _) in by_name:
        if name in ("nonsense", "cut", "flaky"):
            assert result.is_error and "got no answer from the server" in text_of(result)
        else:
            assert not result.is_error and text_of(result) == f"{name} ok", (name, text_of(result))
    assert "could not be reached" in text_of(results[4][0]) and "not HTTP" in text_of(results[4][0])
    assert "stream ended before it answered" in text_of(results[6][0])
    # the endless stream's answer reached the host while the stream was still open, and the call after it
    # went out on another connection
    assert results[8][1] is False
    # a tool call the server took on a kept-alive connection and closed it on, unanswered, is not sent again:
    # it may have run (tests/test_wrap_mcp_http_faults.py: what is sent again)
    assert "not sent again, as it may have run" in text_of(results[3][0])
    assert seen["flaky"] == 1 and seen["pieces"] == 2 and seen["endless"] == 1
    decisions = [r for r in audit_rows(tmp_path / "audit.db") if r["kind"] == "decision"]
    assert [d["decision"]["approval"] for d in decisions] == ["auto"] * len(names)


def test_sse_events_are_cut_alike_whatever_the_line_endings_and_wherever_a_read_ends() -> None:
    from aegis_cli.wrap.mcp_http import SSESplitter

    def events(*pieces: bytes) -> list[tuple[str | None, str, str, float | None]]:
        splitter = SSESplitter()
        out = [e for piece in pieces for e in splitter.feed(piece)] + splitter.end()
        return [(e.id, e.event, e.data, e.retry) for e in out]

    expected = [("1", "message", "a\nb", None), (None, "endpoint", "/x", 0.1), (None, "message", "é", None)]
    for eol in (b"\n", b"\r\n", b"\r"):
        stream = eol.join([b"id: 1", b"data: a", b"data:b", b": comment", b"", b"event: endpoint", b"data: /x",
                           b"retry: 100", b"", b"", b"data: \xc3\xa9", b""])
        assert events(stream) == expected, eol
        for cut in range(1, len(stream)):  # every place a read can end, a CRLF's two halves included
            assert events(stream[:cut], stream[cut:]) == expected, (eol, cut)
    # a CR LF split between reads is one line ending, not a blank line that would end the event early
    assert events(b"data: a\r", b"\ndata: b\r\n\r\n") == [(None, "message", "a\nb", None)]
    assert events(b"data: a\r\n", b"\r\n") == [(None, "message", "a", None)]


def test_https_server_trusted_through_ssl_cert_file_for_every_request(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server, url, seen, _ended = scripted_server((cert, key))
    names = ["plain", "pieces", "plain", "pieces"]
    try:
        async def session(env: dict[str, str]) -> list[mt.CallToolResult]:
            async with Client(aegis_params(tmp_path, url, env=env), mode="legacy") as client:
                return [await client.call_tool(name, {}) for name in names]

        # the test CA is trusted as the user says ($SSL_CERT_FILE), by the POSTs (aegis's HTTP/1.1
        # client) and by the GET stream and the closing DELETE (httpx) alike
        results = anyio.run(session, {"SSL_CERT_FILE": str(cert)})
        assert [text_of(r) for r in results] == [f"{name} ok" for name in names]
        assert seen["DELETE"] == 1 and seen["GET"] >= 1
        # and without it, a certificate nobody vouched for is refused
        with pytest.raises(BaseException) as refused:
            anyio.run(session, {})

        def leaves(exc: BaseException) -> list[str]:
            return [m for e in exc.exceptions for m in leaves(e)] if isinstance(exc, BaseExceptionGroup) else [str(exc)]

        assert any("CERTIFICATE_VERIFY_FAILED" in m and "could not be reached" in m for m in leaves(refused.value))
    finally:
        server.shutdown()
    assert seen["plain"] == 2 and seen["pieces"] == 2


def test_the_servers_own_notifications_come_on_the_get_stream_once_initialized(tmp_path: Path) -> None:
    # A server answers notifications/initialized with 202 Accepted, as the spec says; the GET stream
    # for what it sends unprompted is opened then.
    server, url, seen, _ended = scripted_server(notify=True)
    params = aegis_params(tmp_path, url)
    proc = subprocess.Popen([params.command, *params.args], env=params.env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}).encode()
                         + b"\n" + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        proc.stdin.flush()
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in iter(proc.stdout.readline, b"")], daemon=True).start()
        first, second = json.loads(lines.get(timeout=30)), json.loads(lines.get(timeout=30))
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        server.shutdown()
    assert first["id"] == 0 and first["result"]["serverInfo"]["name"] == "scripted-server"
    assert second == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    assert seen["GET"] >= 1
