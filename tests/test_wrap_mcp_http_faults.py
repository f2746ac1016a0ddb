"""`aegis wrap --mcp --url` / `--listen` against a remote server that misbehaves as servers and networks do:
every request the host sends is answered once, with its own answer, and a tool call runs at most once.

The server is a stand-in (the SDK's own server does none of this); the host is a raw JSON-RPC client
on aegis's stdin and stdout, so a second answer to one request is seen (an SDK client drops it).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from test_wrap_mcp_http import approve_first_pending, serve_threaded, start_listen

pytest.importorskip("httpx")

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: ask-first
    match: {type: held}
    risk_level: high
    approval: approve
  - name: never
    match: {type: blocked}
    risk_level: high
    approval: block
"""


class Remote:
    """The stand-in server. Its tools answer by name: ``ok`` at once; ``slow`` after 1.5 s;
    ``late_close`` closes the connection after 1.5 s with no answer; ``stray`` answers, then sends an
    empty line on the idle connection; ``steal`` answers under the id before its own; ``accepted`` takes
    the call with a 202 and answers on the GET stream; ``elsewhere`` answers on the GET stream and ends
    its own stream without it; ``refused`` is a 401 (a token gone stale). ``seen`` counts each."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.pushed: queue.Queue[bytes] = queue.Queue()  # for the GET stream
        self.lock = threading.Lock()
        self.server = serve_threaded(self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"

    def count(self, key: str) -> None:
        with self.lock:
            self.seen[key] = self.seen.get(key, 0) + 1

    def _handler(self) -> Any:
        remote = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: str, body: bytes = b"", extra: str = "") -> None:
                head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nmcp-session-id: s1\r\n{extra}"
                self.wfile.write(head.encode() + b"content-length: %d\r\n\r\n%s" % (len(body), body))
                self.wfile.flush()

            def sse(self, *events: bytes) -> None:
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nmcp-session-id: s1\r\n"
                                 b"connection: close\r\n\r\n" + b"".join(b"event: message\r\ndata: %s\r\n\r\n" % e
                                                                       for e in events))
                self.wfile.flush()
                self.close_connection = True

            def do_DELETE(self) -> None:
                self.send("200 OK")

            def do_GET(self) -> None:  # the server's own stream: what a test pushes, for a few seconds
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
                self.wfile.flush()
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    try:
                        event = remote.pushed.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    self.wfile.write(b"event: message\r\ndata: %s\r\n\r\n" % event)
                    self.wfile.flush()
                self.close_connection = True

            def do_POST(self) -> None:
                msg = json.loads(self.rfile.read(int(self.headers["content-length"])))
                method = msg.get("method")
                if "id" not in msg:
                    self.send("202 Accepted")
                    return
                if method == "initialize":
                    result: Any = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                   "serverInfo": {"name": "remote", "version": "1"}}
                elif method == "tools/list":
                    remote.count("tools/list")
                    names = ("ok", "slow", "late_close", "stray", "steal", "accepted", "elsewhere", "refused",
                             "held", "blocked", "nullsse")
                    result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]}
                else:
                    name = msg["params"]["name"]
                    remote.count(name)
                    result = {"content": [{"type": "text", "text": f"{name} ran"}], "isError": False}
                answer = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()
                name = msg.get("params", {}).get("name") if method == "tools/call" else None
                if name in ("slow", "late_close"):
                    time.sleep(1.5)
                if name == "late_close":
                    self.close_connection = True  # taken, maybe run, and no answer
                elif name == "stray":
                    self.send("200 OK", answer)
                    time.sleep(0.1)
                    self.wfile.write(b"\r\n")  # an empty line on the idle connection
                    self.wfile.flush()
                elif name == "steal":
                    self.send("200 OK", json.dumps({**json.loads(answer), "id": msg["id"] - 1}).encode())
                elif name == "accepted":
                    self.send("202 Accepted")
                    remote.pushed.put(answer)
                elif name == "elsewhere":
                    remote.pushed.put(answer)
                    time.sleep(0.3)
                    self.sse(b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info",'
                             b'"data":"working"}}')
                elif name == "nullsse":  # refused with "id": null in an event, the stream kept open
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                     b"connection: close\r\n\r\nevent: message\r\ndata: "
                                     b'{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"no such thing"}}'
                                     b"\r\n\r\n")
                    self.wfile.flush()
                    time.sleep(4)
                    self.close_connection = True
                elif name in ("refused", "held"):
                    self.send("401 Unauthorized", b'{"error":"invalid_token"}',
                              'www-authenticate: Bearer error="invalid_token"\r\n')
                else:
                    self.send("200 OK", answer)

        return Handler

    def close(self) -> None:
        self.server.shutdown()


class Host:
    """A host speaking raw JSON-RPC to ``aegis wrap --mcp --url``: every line aegis writes is kept."""

    def __init__(self, tmp: Path, url: str) -> None:
        (tmp / "policy.yaml").write_text(POLICY)
        argv = [sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(tmp / "policy.yaml"),
                "--audit-db", str(tmp / "audit.db"), "--url", url]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        assert self.wait_for(0) is not None
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, msg_id: int, name: str) -> None:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": {"name": name, "arguments": {}}})

    def answers(self, msg_id: int) -> list[dict[str, Any]]:
        return [m for m in list(self.lines) if m.get("id") == msg_id and "method" not in m]

    def wait_for(self, msg_id: int, seconds: float = 30) -> dict[str, Any] | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.answers(msg_id)
            if found:
                return found[0]
            time.sleep(0.02)
        return None

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        self.stderr = self.proc.stderr.read()
        self.proc.wait(timeout=30)


def text(answer: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in answer.get("result", {}).get("content", []))


@pytest.fixture
def remote() -> Iterator[Remote]:
    server = Remote()
    yield server
    server.close()


def test_a_tool_call_the_server_may_have_taken_is_never_sent_twice(tmp_path: Path, remote: Remote) -> None:
    # The call goes on a kept-alive connection; the server takes it, works, and closes the connection with
    # no answer (a crash, a proxy's timeout). A connection closed so is also what a server whose keep-alive
    # ran out as the request went looks like, but a tool call is not sent again to find out: it may have run.
    host = Host(tmp_path, remote.url)
    try:
        host.call(1, "ok")
        assert host.wait_for(1) is not None  # leaves a kept-alive connection in the pool
        host.call(2, "late_close")
        cut = host.wait_for(2)
        host.send({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        host.call(4, "ok")
        after = host.wait_for(4)
        listed = host.wait_for(3)
    finally:
        host.close()
    assert cut is not None and cut["result"]["isError"] and "not sent again, as it may have run" in text(cut)
    assert remote.seen["late_close"] == 1
    assert len(host.answers(2)) == 1
    assert after is not None and text(after) == "ok ran" and listed is not None and "result" in listed


def test_an_empty_line_on_an_idle_connection_is_not_the_next_answer(tmp_path: Path, remote: Remote) -> None:
    host = Host(tmp_path, remote.url)
    try:
        host.call(1, "stray")
        assert host.wait_for(1) is not None
        time.sleep(0.4)  # the empty line has come by now, on the connection back in the pool
        host.call(2, "ok")
        answer = host.wait_for(2)
    finally:
        host.close()
    assert answer is not None and text(answer) == "ok ran", answer
    assert remote.seen["ok"] == 1


def test_each_request_is_answered_once_and_only_from_its_own_stream(tmp_path: Path, remote: Remote) -> None:
    # The spec: a request's answer comes on the stream of the POST that carried it. One that comes on the
    # GET stream, or under another request's id, answers nothing: the host would otherwise get two
    # answers for one request, or one request's result for another.
    host = Host(tmp_path, remote.url)
    try:
        time.sleep(0.5)  # the GET stream is open
        host.call(1, "accepted")
        host.call(2, "elsewhere")
        host.call(10, "slow")
        time.sleep(0.2)
        host.call(11, "steal")  # answered under id 10, while 10 is still running
        for msg_id in (1, 2, 10, 11):
            assert host.wait_for(msg_id) is not None, msg_id
        time.sleep(1.0)  # anything more that was coming has come
    finally:
        host.close()
    answers = {msg_id: host.answers(msg_id) for msg_id in (1, 2, 10, 11)}
    assert {msg_id: len(found) for msg_id, found in answers.items()} == {1: 1, 2: 1, 10: 1, 11: 1}, answers
    assert text(answers[10][0]) == "slow ran"
    assert answers[11][0]["result"]["isError"] and "did not answer" in text(answers[11][0])
    assert answers[1][0]["result"]["isError"] and answers[2][0]["result"]["isError"]
    assert b"dropped" in host.stderr


def test_a_refusal_without_an_id_in_a_stream_kept_open_answers_its_request_at_once(tmp_path: Path,
                                                                                   remote: Remote) -> None:
    host = Host(tmp_path, remote.url)
    try:
        started = time.monotonic()
        host.call(1, "nullsse")
        answer = host.wait_for(1, 10)
        took = time.monotonic() - started
    finally:
        host.close()
    assert answer is not None and answer["error"]["message"] == "no such thing", answer
    assert took < 3  # not once the stream ends (4 s)


def test_an_http_sse_stream_that_never_names_its_endpoint_fails_initialize(tmp_path: Path) -> None:
    # A server that refuses Streamable HTTP (405) and whose GET stream never names the endpoint to POST to
    # is no server aegis can reach: initialize is refused (here after 1 s), not left waiting.
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")

        def do_GET(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                             b": nothing to say\r\n\r\n")
            self.wfile.flush()
            time.sleep(5)
            self.close_connection = True

    server = serve_threaded(Handler)
    (tmp_path / "policy.yaml").write_text(POLICY)
    cli = ("import sys, aegis_cli.wrap.mcp_http as h; h.LEGACY_ENDPOINT_WAIT = 1.0; "
           "from aegis_cli.cli import main; main()")
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    try:
        proc = subprocess.run([sys.executable, "-c", cli, "wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"),
                               "--audit-db", str(tmp_path / "audit.db"), "--url",
                               f"http://127.0.0.1:{server.server_address[1]}/mcp"],
                              input=json.dumps(init).encode() + b"\n", capture_output=True, timeout=30)
    finally:
        server.shutdown()
    answer = json.loads(proc.stdout.splitlines()[0])
    assert answer["id"] == 0 and "offers no HTTP+SSE stream either" in answer["error"]["message"], answer


@pytest.mark.parametrize("case", ["held", "batch"])
def test_listen_a_401_after_the_answer_began_streaming_is_still_answered(tmp_path: Path, remote: Remote,
                                                                       case: str) -> None:
    # --listen passes a server's 401 to the host as it came, for the host to do its own OAuth; but a POST
    # already answering as a stream (a call held for a person, a batch with one answer out) cannot become
    # an HTTP 401 any more: the refused call is then answered in the stream, never left waiting.
    import httpx

    listening = start_listen(tmp_path, "--url", remote.url, policy=POLICY, extra=("--no-elicitation",),
                             keepalive=0.2 if case == "held" else None)
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "authorization": "Bearer the-hosts-token"}
    found: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=30) as client:
            init = client.post(listening.url, headers=headers, json={"jsonrpc": "2.0", "id": 0, "method": "initialize",
                               "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                          "clientInfo": {"name": "raw", "version": "1"}}})
            headers["mcp-session-id"] = init.headers["mcp-session-id"]
            client.post(listening.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            calls = [{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": n, "arguments": {}}}
                     for n in (["held"] if case == "held" else ["blocked", "refused"])]
            if case == "batch":
                calls[1]["id"] = 6
            with client.stream("POST", listening.url, headers=headers,
                               json=calls if case == "batch" else calls[0]) as post:
                assert post.headers["content-type"].startswith("text/event-stream")
                lines = post.iter_lines()
                if case == "held":
                    assert next(lines) == ": keepalive"
                    approve_first_pending(listening.db)
                for line in lines:
                    if line.startswith("data:"):
                        found.append(json.loads(line[5:]))
    finally:
        listening.proc.terminate()
        listening.proc.wait(timeout=20)
    refused = [m for m in found if m.get("id") == (5 if case == "held" else 6)]
    assert len(refused) == 1 and refused[0]["result"]["isError"], found
    assert "HTTP 401" in refused[0]["result"]["content"][0]["text"]
    assert remote.seen.get("held" if case == "held" else "refused") == 1
