"""Regression tests from a security review: shapes of input that used to get a tool call past aegis
undecided (fail open), or crash it, or let a caller see more than its role allows."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aegis_cli.engine.policy import Policy
from aegis_cli.wrap import anthropic_messages, openai_chat, openai_responses
from aegis_cli.wrap.tool_gate import ToolCall, ToolGate, Verdict

REPLAYS = Path(__file__).parent / "data" / "provider_replays"
NO_DELETES = Policy.from_string("""\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
    reason: deleting files is not allowed
""")


class Recorder:
    def __init__(self, policy: Policy = NO_DELETES) -> None:
        self.gate = ToolGate(policy, audit_factory=None, approvals=None)
        self.calls: list[ToolCall] = []

    async def decide(self, call: ToolCall) -> Verdict:
        self.calls.append(call)
        return await self.gate.decide(call)


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def rewrite(module: Any, data: bytes) -> tuple[bytes, Recorder]:
    rec = Recorder()

    async def go() -> bytes:
        return b"".join([out async for out in module.rewrite_stream(_chunks(data), rec.decide)])

    return asyncio.run(go()), rec


def sse_payloads(data: bytes) -> list[Any]:
    """What an SDK reads from an event stream: lines split on CR/LF only (as the SDKs do, on bytes)."""
    out = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [ln[5:].lstrip(b" ").decode() for ln in block.splitlines() if ln.startswith(b"data:")]
        if lines and lines[0] != "[DONE]":
            out.append(json.loads("\n".join(lines)))
    return out


def ev(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n\n").encode()


# -- model proxy: SSE line splitting ----------------------------------------------------------------


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_chat_stream_fragment_with_unicode_line_separator_is_decided(sep: str) -> None:
    # Raw U+2028 / U+2029 / NEL are legal inside a JSON string. SSE splits lines on CR and LF only;
    # str.splitlines also splits on these, so aegis could not read the chunk and passed it on raw.
    args = json.dumps({"path": "/srv/db" + sep}, ensure_ascii=False)
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt"}
    stream = b"".join([
        ev({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "delete_file", "arguments": args}}]}, "finish_reason": None}]}),
        ev({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        b"data: [DONE]\n\n",
    ])
    out, rec = rewrite(openai_chat, stream)
    assert [c.name for c in rec.calls] == ["delete_file"]
    assert rec.calls[0].arguments == {"path": "/srv/db" + sep}
    for payload in sse_payloads(out):
        for choice in payload.get("choices", []):
            assert not choice.get("delta", {}).get("tool_calls"), payload


# -- model proxy: calls in unexpected positions -----------------------------------------------------


def test_responses_call_only_in_output_item_done_is_decided() -> None:
    item = {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
            "name": "delete_file", "arguments": '{"path":"/srv/db"}'}
    stream = b"".join([
        ev({"type": "response.created", "sequence_number": 0,
            "response": {"object": "response", "model": "gpt", "output": []}}, "response.created"),
        ev({"type": "response.output_item.done", "sequence_number": 1, "output_index": 0, "item": item},
           "response.output_item.done"),
    ])
    out, rec = rewrite(openai_responses, stream)
    assert [c.name for c in rec.calls] == ["delete_file"]
    for payload in sse_payloads(out):
        assert not (isinstance(payload.get("item"), dict) and payload["item"].get("type") == "function_call"), payload


def test_responses_call_with_unusual_output_index_is_decided() -> None:
    item = {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
            "name": "delete_file", "arguments": '{"path":"/srv/db"}'}
    stream = b"".join([
        ev({"type": "response.output_item.added", "sequence_number": 0, "output_index": "0", "item": item},
           "response.output_item.added"),
        ev({"type": "response.output_item.done", "sequence_number": 1, "output_index": "0", "item": item},
           "response.output_item.done"),
    ])
    out, rec = rewrite(openai_responses, stream)
    assert rec.calls and all(c.name == "delete_file" for c in rec.calls)
    for payload in sse_payloads(out):
        assert not (isinstance(payload.get("item"), dict) and payload["item"].get("type") == "function_call"), payload


def test_anthropic_tool_use_inside_message_start_is_decided() -> None:
    block = {"type": "tool_use", "id": "toolu_1", "name": "delete_file", "input": {"path": "/srv/db"}}
    stream = b"".join([
        ev({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                 "model": "claude", "content": [block], "stop_reason": None}},
           "message_start"),
        ev({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}, "message_delta"),
        ev({"type": "message_stop"}, "message_stop"),
    ])
    out, rec = rewrite(anthropic_messages, stream)
    assert [c.name for c in rec.calls] == ["delete_file"]
    start = sse_payloads(out)[0]
    assert start["type"] == "message_start"
    assert all(b.get("type") != "tool_use" for b in start["message"]["content"])


def test_anthropic_json_reply_without_type_is_decided() -> None:
    body = json.loads((REPLAYS / "anthropic_messages.json").read_text())
    del body["type"]
    rec = Recorder()
    out = asyncio.run(anthropic_messages.rewrite_json(body, rec.decide))
    assert "delete_file" in [c.name for c in rec.calls]
    assert [b["name"] for b in out["content"] if b.get("type") == "tool_use"] == ["get_weather"]


def test_responses_json_reply_without_object_is_decided() -> None:
    body = json.loads((REPLAYS / "openai_responses.json").read_text())
    del body["object"]
    rec = Recorder()
    out = asyncio.run(openai_responses.rewrite_json(body, rec.decide))
    assert "delete_file" in [c.name for c in rec.calls]
    assert all(i.get("name") != "delete_file" for i in out["output"] if isinstance(i, dict))


# -- model proxy: replies the rewriters never see ------------------------------------------------------


class _OddUpstream(BaseHTTPRequestHandler):
    ctype = "text/plain"
    status = 200

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        data = (REPLAYS / "anthropic_messages.json").read_bytes()
        self.send_response(self.status)
        if self.ctype:
            self.send_header("content-type", self.ctype)
        if self.status in (301, 302, 307, 308):
            self.send_header("location", "http://127.0.0.1:9/v1/messages")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize(("ctype", "status"), [("text/plain", 200), ("", 200), ("application/x-json", 200),
                                               ("application/json", 307)])
def test_tool_endpoint_reply_with_unexpected_content_type_or_redirect_is_not_passed_unread(
        ctype: str, status: int) -> None:
    import httpx

    from aegis_cli.wrap.model_proxy import ModelProxy, Upstreams

    handler = type("H", (_OddUpstream,), {"ctype": ctype, "status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    gate = ToolGate(NO_DELETES, audit_factory=None, approvals=None)
    try:
        with ModelProxy(gate.decide, Upstreams(url, url + "/v1")) as proxy:
            r = httpx.post(proxy.url + "/anthropic/v1/messages", json={"model": "m"})
    finally:
        gate.close()
        server.shutdown()
        server.server_close()
    # The SDKs parse a JSON body whatever its content type, and follow redirects themselves.
    assert '"name": "delete_file"' not in r.text and '"name":"delete_file"' not in r.text
    assert "location" not in r.headers


# -- MCP relay: host messages aegis must not misread ------------------------------------------------

MCP_POLICY = Policy.from_string("""\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-conversions
    match: {type: convert_time}
    approval: block
    risk_level: high
""")


class _Pipe:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def is_closing(self) -> bool:
        return False


def relay(*lines: bytes) -> tuple[list[bytes], list[Any]]:
    """Feed host lines to an in-process relay: (bytes forwarded to the server, messages sent to the host)."""
    from aegis_cli.wrap.mcp import McpWrapOptions, McpWrapper

    class Server(_Pipe):  # the relay's link to the server (StdioServer / HttpServer): what it sends
        name_hint = "srv"

        def send(self, line: bytes) -> None:
            self.data.append(line)

    server, host = Server(), _Pipe()
    wrapper = McpWrapper(McpWrapOptions(MCP_POLICY, ["srv"], target="time"), server=server)
    wrapper._out = host  # type: ignore[assignment]

    async def go() -> None:
        for line in lines:
            wrapper._on_host_line(line)

    asyncio.run(go())
    return server.data, [json.loads(x) for x in host.data]


def _first_wins(raw: bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            out.setdefault(k, v)
        return out
    return json.loads(raw, object_pairs_hook=pairs)


def test_mcp_deeply_nested_line_is_answered_not_crashing_the_relay() -> None:
    deep = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    ok = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}).encode() + b"\n"
    server, host = relay(deep, ok)
    assert server == [ok]
    assert host and host[0]["error"]["code"] == -32700


def test_mcp_nested_batch_is_not_forwarded_unread() -> None:
    inner = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
             "params": {"name": "convert_time", "arguments": {}}}
    server, host = relay(json.dumps([[inner]]).encode() + b"\n")
    assert not any(b"convert_time" in line for line in server), server
    assert host and host[0]["error"]["code"] == -32600


def test_mcp_duplicate_keys_cannot_split_what_aegis_decides_from_what_the_server_runs() -> None:
    line = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"convert_time",'
            b'"name":"get_current_time","arguments":{}}}\n')
    server, host = relay(line)
    for raw in server:  # whatever reaches the server reads the same to a first-wins parser
        assert _first_wins(raw)["params"]["name"] != "convert_time"
    assert server or host


def test_mcp_method_spelled_in_another_case_is_refused() -> None:
    # Go's encoding/json matches keys case-insensitively (last one wins): "Method" is the method there.
    line = (b'{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call",'
            b'"params":{"name":"convert_time","arguments":{}}}\n')
    server, host = relay(line)
    assert server == []
    assert host and host[0]["error"]["code"] == -32600


# -- serve: roles --------------------------------------------------------------------------------------

APPROVE_ALL = Policy.from_string("""\
version: "1"
defaults: {approval: approve, risk_level: high, reason: someone must agree}
""")
_TOKENS = {"a": "agent-a-token-0123456789abcdef", "b": "agent-b-token-0123456789abcdef",
           "approver": "approver-token-0123456789abcd"}


@pytest.fixture
def serve_client(tmp_path: Path) -> Any:
    from starlette.testclient import TestClient

    from aegis_cli.serve.app import create_app
    from aegis_cli.serve.server import ServeOptions, build_state

    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n"
                      f"  - {{name: agent-a, role: evaluate, token: \"{_TOKENS['a']}\"}}\n"
                      f"  - {{name: agent-b, role: evaluate, token: \"{_TOKENS['b']}\"}}\n"
                      f"  - {{name: approver, role: approve, token: \"{_TOKENS['approver']}\"}}\n")
    state = build_state(ServeOptions(["policy.yaml"], audit_db=str(tmp_path / "audit.db"),
                                     tokens_file=str(tokens), watch=False), APPROVE_ALL)
    try:
        with TestClient(create_app(state)) as client:
            yield client
    finally:
        state.writer.close()


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {_TOKENS[who]}"}


def test_an_agent_cannot_read_another_agents_approval_request(serve_client: Any) -> None:
    action = {"type": "delete", "target": "prod", "params": {"secret_table": "payroll"}}
    r = serve_client.post("/api/v1/approvals", json=action, headers=_auth("a"))
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert serve_client.get(f"/api/v1/approvals/{rid}", headers=_auth("a")).status_code == 200
    assert serve_client.get(f"/api/v1/approvals/{rid}", headers=_auth("approver")).status_code == 200
    other = serve_client.get(f"/api/v1/approvals/{rid}", headers=_auth("b"))
    assert other.status_code == 404 and "payroll" not in other.text


# -- MCP relay: big lines ----------------------------------------------------------------------------


def test_line_splitter_is_linear_in_a_long_line() -> None:
    import time

    from aegis_cli.wrap.pipes import LineSplitter

    got: list[bytes] = []
    splitter = LineSplitter(got.append)
    chunk = b"x" * 65536
    started = time.monotonic()
    for _ in range(512):  # 32 MiB without a newline, as a pipe delivers it
        splitter.feed(chunk)
    splitter.feed(b"y\nz")
    splitter.feed(b"\n\n")
    assert time.monotonic() - started < 3.0  # was quadratic: every read copied the whole line so far
    assert [len(x) for x in got] == [512 * 65536 + 2, 2, 1]
    splitter.feed(b"tail")
    splitter.flush()
    assert got[-1] == b"tail\n"


def test_sse_reader_is_linear_in_a_long_event() -> None:
    import time

    from aegis_cli.wrap.sse import read_events

    async def chunks() -> AsyncIterator[bytes]:
        yield b"event: big\ndata: "
        for _ in range(2048):  # an 8 MiB event (a final Responses event repeats all output) in 4 KiB reads
            yield b"x" * 4096
        yield b"\r\n\r"
        yield b"\ndata: next\r\r: c\n\n"

    async def go() -> list[Any]:
        return [e async for e in read_events(chunks())]

    started = time.monotonic()
    got = asyncio.run(go())
    assert time.monotonic() - started < 3.0  # was quadratic: every read copied and rescanned the event
    assert [(e.event, len(e.data)) for e in got] == [("big", 8 * 2**20), (None, 4), (None, 0)]
    assert got[0].raw.endswith(b"x\r\n\r\n") and got[1].raw == b"data: next\r\r"


def test_long_polls_and_streams_are_bounded(serve_client: Any) -> None:
    from aegis_cli.serve import approvals_api, audit_api

    app = serve_client.app
    while not hasattr(app, "state"):  # under the ASGI guard middleware
        app = app.app
    state = app.state.aegis
    r = serve_client.post("/api/v1/approvals", json={"type": "x", "target": "y"}, headers=_auth("a"))
    assert r.status_code in (200, 201, 202), r.text
    rid = r.json()["id"]
    state.waiting = approvals_api.MAX_WAITING
    busy = serve_client.get(f"/api/v1/approvals/{rid}?wait=5", headers=_auth("a"))
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert serve_client.get(f"/api/v1/approvals/{rid}", headers=_auth("a")).status_code == 200  # no wait: fine
    state.waiting = 0
    assert serve_client.get(f"/api/v1/approvals/{rid}?wait=0.1", headers=_auth("a")).status_code == 200
    assert state.waiting == 0  # released after the poll
    state.streaming = audit_api.MAX_STREAMS
    assert serve_client.get("/api/v1/audit/stream", headers=_auth("approver")).status_code == 429
    state.streaming = 0


def test_forged_approval_state_with_non_ascii_signature_is_refused_not_raised() -> None:
    from aegis_cli.wrap.elicit import ApprovalTokens

    tokens = ApprovalTokens()
    assert tokens.redeem(ApprovalTokens.PREFIX + "abc.é", "digest") == "its approval state is not one aegis issued"
    token, _ = tokens.issue(1, "digest", approved=True)
    assert not isinstance(tokens.redeem(token, "digest"), str)
