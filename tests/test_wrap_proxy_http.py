"""`aegis wrap` model-API proxy at the HTTP level: its own small server (wrap/http_serve.py) and upstream client
(wrap/http1.py) driven over real sockets, against a local upstream replaying a provider reply."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aegis_cli.audit import SQLiteAuditLogger
from aegis_cli.engine.policy import Policy
from aegis_cli.wrap.model_proxy import ModelProxy, Upstreams
from aegis_cli.wrap.tool_gate import ToolCall, ToolGate, decide_each

REPLY = (Path(__file__).parent / "data" / "provider_replays" / "anthropic_messages.json").read_bytes()
POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
"""
ASK_WEATHER = POLICY + """\
  - name: ask-weather
    match: {type: get_weather}
    approval: approve
    risk_level: medium
"""


class Upstream(BaseHTTPRequestHandler):
    """Answers every POST with the recorded Messages reply (two tool calls); records the bodies it got."""

    protocol_version = "HTTP/1.1"
    bodies: list[bytes]
    encoding = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if self.encoding:
            self.send_header("content-encoding", self.encoding)
        self.send_header("content-length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)

    def do_GET(self) -> None:
        body = b'{"data": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def upstream() -> Iterator[type[Upstream]]:
    handler = type("Recorded", (Upstream,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def connect(proxy: ModelProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    return sock


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response off the socket (length or chunked), leaving what follows in ``buf``."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "the proxy closed the connection"
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(buf) < size:
            buf += sock.recv(65536)
        body = bytes(buf[:size])
        del buf[:size]
        return status, headers, body
    assert headers.get("transfer-encoding") == "chunked"
    body = b""
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line, _, rest = bytes(buf).partition(b"\r\n")
        size = int(line, 16)
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        body += rest[:size]
        buf[:] = rest[size + 2:]
        if size == 0:
            return status, headers, body


def post_head(path: str, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{extra}\r\n".encode()


def test_chunked_request_after_100_continue_reaches_the_upstream_whole(upstream: Any) -> None:
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    with ModelProxy(gate.decide, Upstreams(upstream.url, upstream.url + "/v1")) as proxy, connect(proxy) as sock:
        sock.sendall(post_head("/anthropic/v1/messages", "transfer-encoding: chunked\r\nexpect: 100-continue\r\n"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        for i in range(0, len(payload), 700):  # odd pieces, a chunk extension on one of them
            piece = payload[i:i + 700]
            sock.sendall(f"{len(piece):x}{';ext=1' if i == 0 else ''}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status, _, body = read_response(sock, bytearray())
    gate.close()
    assert status == 200
    assert upstream.bodies == [payload]
    reply = json.loads(body)
    assert [b.get("name") for b in reply["content"] if b["type"] == "tool_use"] == ["get_weather"]
    assert any("`delete_file` was blocked" in b.get("text", "") for b in reply["content"])


def test_pipelined_requests_are_answered_in_order_on_one_connection(upstream: Any) -> None:
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    body = b'{"model": "m"}'
    with ModelProxy(gate.decide, Upstreams(upstream.url, upstream.url + "/v1")) as proxy, connect(proxy) as sock:
        sock.sendall(post_head("/anthropic/v1/messages", f"content-length: {len(body)}\r\n") + body
                     + b"GET /openai/v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
                     + post_head("/anthropic/v1/messages", f"content-length: {len(body)}\r\n") + body)
        buf = bytearray()
        answers = [read_response(sock, buf) for _ in range(3)]
    gate.close()
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert b"was blocked" in answers[0][2] and answers[1][2] == b'{"data": []}' and b"was blocked" in answers[2][2]


def test_a_request_that_is_not_http_is_refused_and_the_connection_closed(upstream: Any) -> None:
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    with ModelProxy(gate.decide, Upstreams(upstream.url, upstream.url + "/v1")) as proxy, connect(proxy) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        status, _, _ = read_response(sock, bytearray())
        assert status == 400
        assert sock.recv(100) == b""  # closed
        with connect(proxy) as other:  # both a length and chunked: ambiguous framing is refused too
            other.sendall(post_head("/anthropic/v1/messages", "content-length: 5\r\ntransfer-encoding: chunked\r\n"))
            assert read_response(other, bytearray())[0] == 400
    gate.close()
    assert upstream.bodies == []


def test_a_reply_in_an_encoding_the_proxy_cannot_read_is_withheld(upstream: Any) -> None:
    upstream.encoding = "made-up"
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    with ModelProxy(gate.decide, Upstreams(upstream.url, upstream.url + "/v1")) as proxy, connect(proxy) as sock:
        body = b'{"model": "m"}'
        sock.sendall(post_head("/anthropic/v1/messages", f"content-length: {len(body)}\r\n") + body)
        status, _, reply = read_response(sock, bytearray())
    gate.close()
    assert status == 502 and b"fail closed" in reply and b"get_weather" not in reply


class Waiting:
    """An approver who never answers; says when it is asked and when the asking is withdrawn."""

    timeout = 60.0

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.withdrawn = threading.Event()

    async def request(self, action: Any, decision: Any, *, decision_id: int | None = None) -> Any:
        self.asked.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.withdrawn.set()
            raise


def test_a_client_hanging_up_withdraws_the_held_approval(upstream: Any, tmp_path: Path) -> None:
    approver = Waiting()
    policy = Policy.from_string(ASK_WEATHER)
    gate = ToolGate(policy, audit_factory=lambda: SQLiteAuditLogger(tmp_path / "a.db"), approvals=approver)
    with ModelProxy(gate.decide, Upstreams(upstream.url, upstream.url + "/v1")) as proxy:
        sock = connect(proxy)
        body = b'{"model": "m"}'
        sock.sendall(post_head("/anthropic/v1/messages", f"content-length: {len(body)}\r\n") + body)
        assert approver.asked.wait(10)
        sock.close()
        assert approver.withdrawn.wait(10), "the approval was still held after the client left"
        time.sleep(0.2)
    gate.close()
    import sqlite3

    rows = sqlite3.connect(tmp_path / "a.db").execute("select kind, body from audit order by id").fetchall()
    kinds = [kind for kind, _ in rows]
    assert kinds.count("decision") == 2 and kinds[-1] == "approval"
    assert '"cancelled"' in rows[-1][1]


def test_the_calls_of_one_reply_are_audited_together_and_a_failed_write_blocks_them_all(tmp_path: Path) -> None:
    calls = [ToolCall("anthropic", "messages", "t1", "get_weather", {"location": "Paris"}),
             ToolCall("anthropic", "messages", "t2", "delete_file", {"path": "/x"})]
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=lambda: SQLiteAuditLogger(tmp_path / "a.db"),
                    approvals=None)
    verdicts = asyncio.run(decide_each(gate.decide, calls))
    gate.close()
    assert [v.allowed for v in verdicts] == [True, False]
    assert verdicts[1].decision_id == verdicts[0].decision_id + 1  # type: ignore[operator]

    class Broken:
        def record_decisions(self, items: Any) -> Any:
            raise OSError("disk full")

        record_decision = record_decisions

    gate = ToolGate(Policy.from_string(POLICY), audit_factory=Broken, approvals=None)
    verdicts = asyncio.run(decide_each(gate.decide, calls))
    gate.close()
    assert [v.allowed for v in verdicts] == [False, False]
    assert all("could not be audited" in v.note for v in verdicts)


def test_with_an_http_proxy_in_the_environment_requests_go_through_it(upstream: Any, monkeypatch: Any) -> None:
    # The proxy stand-in answers for the upstream itself, and records the absolute URL it was asked for.
    seen: list[str] = []

    class ForwardProxy(Upstream):
        def do_POST(self) -> None:
            seen.append(self.path)
            super().do_POST()

    ForwardProxy.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ForwardProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    try:
        with ModelProxy(gate.decide, Upstreams(upstream.url, upstream.url + "/v1")) as proxy, connect(proxy) as sock:
            body = b'{"model": "m"}'
            sock.sendall(post_head("/anthropic/v1/messages", f"content-length: {len(body)}\r\n") + body)
            status, _, reply = read_response(sock, bytearray())
    finally:
        gate.close()
        server.shutdown()
        server.server_close()
    assert status == 200 and b"`delete_file` was blocked" in reply
    assert seen == [upstream.url + "/v1/messages"] and upstream.bodies == []
