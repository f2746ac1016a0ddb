"""The model-API proxy speaking the Gemini API: ``generateContent`` and ``streamGenerateContent`` (``alt=sse``
and the JSON-array stream), through the real proxy app over a local stand-in upstream replaying Gemini replies,
and the rewriter driven directly for chunking, fidelity and unreadable replies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg import bodies, stored_text
from stream_gate import Recorder, chunked

from aegis_cli import Policy
from aegis_cli.audit import open_audit
from aegis_cli.wrap import gemini_generate
from aegis_cli.wrap.model_proxy import ModelProxy, Upstreams
from aegis_cli.wrap.tool_gate import ToolCall, ToolGate, Verdict

REPLAYS = Path(__file__).parent / "data" / "provider_replays"
JSON_REPLY = (REPLAYS / "gemini_generate.json").read_bytes()
SSE_REPLY = (REPLAYS / "gemini_generate.sse").read_bytes()
SIGNATURE = json.loads(JSON_REPLY)["candidates"][0]["content"]["parts"][1]["thoughtSignature"]
KEY = "AIzaSy-secret-0123456789abcdef"

NO_DELETES = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
    reason: deleting files is not allowed
"""
ALLOW_ALL = 'version: "1"\ndefaults: {approval: auto, risk_level: low}\n'
BLOCK_ALL = 'version: "1"\ndefaults: {approval: block, risk_level: high, reason: nothing runs here}\n'


def array_stream(sse: bytes) -> bytes:
    """The same chunks as Google sends them without ``alt=sse``: one JSON array, elements pretty-printed."""
    elements = [json.loads(line[6:]) for line in sse.decode().split("\r\n\r\n") if line.startswith("data: ")]
    return ("[" + "\n,\r\n".join(json.dumps(e, indent=2) for e in elements) + "]").encode()


ARRAY_REPLY = array_stream(SSE_REPLY)


def run(kind: str, data: bytes, policy: str = NO_DELETES, size: int = 64) -> tuple[bytes, Recorder]:
    rec = Recorder(policy)
    rewrite = {"sse": gemini_generate.rewrite_stream, "array": gemini_generate.rewrite_json_stream}[kind]

    async def go() -> bytes:
        return b"".join([out async for out in rewrite(chunked(data, size), rec.decide)])

    return asyncio.run(go()), rec


def sse_chunks(data: bytes) -> list[dict[str, Any]]:
    blocks = [b.lstrip(b"\r\n") for b in data.split(b"\r\n\r\n")]
    return [json.loads(b[6:]) for b in blocks if b.startswith(b"data: ")]


def parts_of(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for r in replies for c in r.get("candidates", []) for p in c["content"]["parts"]]


def check_decided(parts: list[dict[str, Any]]) -> None:
    """delete_file replaced by the note, get_weather kept with the moved signature, text untouched."""
    text = "".join(p.get("text", "") for p in parts)
    assert text.startswith("I'll clean up the old database and then check the weather.")
    assert "[aegis] Tool call `delete_file` was blocked and not executed" in text
    assert "rule 'no-deletes'" in text and "deleting files is not allowed" in text
    calls = [p for p in parts if "functionCall" in p]
    assert calls == [{"functionCall": {"name": "get_weather", "args": {"location": "Paris, France",
                                                                       "unit": "celsius"}},
                      "thoughtSignature": SIGNATURE}]
    assert not any("thoughtSignature" in p for p in parts if "text" in p)


# -- the rewriter, directly -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,data", [("sse", SSE_REPLY), ("array", ARRAY_REPLY)])
@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_allowed_stream_is_byte_identical_whatever_the_chunking(kind: str, data: bytes, size: int) -> None:
    out, rec = run(kind, data, ALLOW_ALL, size)
    assert out == data
    assert [(c.provider, c.name, c.arguments) for c in rec.calls] == [
        ("gemini", "delete_file", {"path": "/srv/app/data.db"}),
        ("gemini", "get_weather", {"location": "Paris, France", "unit": "celsius"})]
    assert {c.model for c in rec.calls} == {"gemini-2.5-flash"}


@pytest.mark.parametrize("size", [1, 13, 100_000])
def test_blocked_call_becomes_a_note_in_sse_and_array_streams(size: int) -> None:
    out, _ = run("sse", SSE_REPLY, size=size)
    chunks = sse_chunks(out)
    assert len(chunks) == 3
    assert out.startswith(SSE_REPLY[:SSE_REPLY.index(b"\r\n\r\n") * 2])  # text chunks pass as received
    check_decided(parts_of(chunks))
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and chunks[-1]["usageMetadata"]
    out, _ = run("array", ARRAY_REPLY, size=size)
    elements = json.loads(out)
    assert len(elements) == 3
    check_decided(parts_of(elements))


def test_json_reply_every_call_blocked() -> None:
    rec = Recorder(BLOCK_ALL)
    body = json.loads(JSON_REPLY)
    out = asyncio.run(gemini_generate.rewrite_json(body, rec.decide))
    parts = out["candidates"][0]["content"]["parts"]
    assert [list(p) for p in parts] == [["text"], ["text"], ["text"]]
    assert "`delete_file` was blocked" in parts[1]["text"] and "`get_weather` was blocked" in parts[2]["text"]
    assert "the policy defaults" in parts[2]["text"] and "nothing runs here" in parts[2]["text"]
    assert out["candidates"][0]["finishReason"] == "STOP" and out["usageMetadata"] == body["usageMetadata"]
    assert asyncio.run(gemini_generate.rewrite_json(body, Recorder(ALLOW_ALL).decide)) is body


def test_text_streams_before_a_call_is_decided() -> None:
    """The text chunks reach the agent while the call chunk is still being decided."""
    seen: list[bytes] = []
    release = asyncio.Event()

    async def slow(call: ToolCall) -> Verdict:
        assert b"check the weather" in b"".join(seen)
        await release.wait()
        return await Recorder(ALLOW_ALL).gate.decide(call)

    async def go() -> None:
        async def consume() -> None:
            async for out in gemini_generate.rewrite_stream(chunked(SSE_REPLY, 50), slow):
                seen.append(out)

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        assert len(sse_chunks(b"".join(seen))) == 2
        release.set()
        await task

    asyncio.run(go())
    assert b"".join(seen) == SSE_REPLY


def test_keepalive_is_a_blank_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an SSE comment: the google-genai SDKs read data lines only and choke on ': ...'."""
    from aegis_cli.wrap import sse

    monkeypatch.setattr(sse, "KEEPALIVE_INTERVAL", 0.02)

    async def slow(call: ToolCall) -> Verdict:
        await asyncio.sleep(0.1)
        return await Recorder(ALLOW_ALL).gate.decide(call)

    async def go(rewrite: Any, data: bytes) -> bytes:
        return b"".join([out async for out in rewrite(chunked(data, 64), slow)])

    out = asyncio.run(go(gemini_generate.rewrite_stream, SSE_REPLY))
    assert b"\r\n\r\n\n" in out and b": aegis" not in out
    assert sse_chunks(out) == sse_chunks(SSE_REPLY)
    out = asyncio.run(go(gemini_generate.rewrite_json_stream, ARRAY_REPLY))
    assert out != ARRAY_REPLY and json.loads(out) == json.loads(ARRAY_REPLY)


def test_partial_args_and_unnamed_calls_are_blocked() -> None:
    body = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "partialArgs": [{"jsonPath": "$.location"}], "willContinue": True}},
        {"functionCall": {"args": {"x": 1}}},
        {"functionCall": "run_shell_command"},
        {"executableCode": {"language": "PYTHON", "code": "print(1)"}}]}, "index": 0}]}
    rec = Recorder(ALLOW_ALL)
    out = asyncio.run(gemini_generate.rewrite_json(body, rec.decide))
    parts = out["candidates"][0]["content"]["parts"]
    assert [list(p) for p in parts] == [["text"], ["text"], ["text"], ["executableCode"]]
    assert "partialArgs" in parts[0]["text"] and "fail closed" in parts[0]["text"]
    assert "has no name" in parts[1]["text"] and "not an object" in parts[2]["text"]


def test_every_candidate_is_decided() -> None:
    body = json.loads(JSON_REPLY)
    second = json.loads(JSON_REPLY)["candidates"][0]
    body["candidates"].append({**second, "index": 1})
    rec = Recorder(NO_DELETES)
    out = asyncio.run(gemini_generate.rewrite_json(body, rec.decide))
    assert len(rec.calls) == 4
    for candidate in out["candidates"]:
        check_decided(candidate["content"]["parts"])


@pytest.mark.parametrize("data,why", [
    (b"data: {\"candidates\": [\r\n\r\n", "not a JSON object"),
    (b"data: [1, 2]\r\n\r\n", "not a JSON object"),
])
def test_unreadable_sse_chunk_ends_the_stream_with_an_error(data: bytes, why: str) -> None:
    tail = b"data: " + json.dumps(json.loads(JSON_REPLY), separators=(",", ":")).encode() + b"\r\n\r\n"
    out, rec = run("sse", SSE_REPLY[:SSE_REPLY.index(b"\r\n\r\n") + 4] + data + tail, ALLOW_ALL)
    chunks = sse_chunks(out)
    assert len(chunks) == 2 and rec.calls == []  # what followed was never decided, so never sent
    error = chunks[-1]["error"]
    assert error["code"] == 502 and error["status"] == "UNAVAILABLE" and why in error["message"]
    assert b"delete_file" not in out


@pytest.mark.parametrize("data,decided", [
    (ARRAY_REPLY[:-30], 0),  # cut inside the last element: its calls are never sent
    (ARRAY_REPLY[:-1], 2),  # every element complete (so decided and sent), no closing bracket
    (ARRAY_REPLY.replace(b"\n,\r\n", b"\n;\r\n", 1), 0),
    (ARRAY_REPLY[:ARRAY_REPLY.rindex(b",") + 1] + b'"text"]', 0),
    (ARRAY_REPLY[:ARRAY_REPLY.rindex(b",") + 1] + b'{"candidates": [}]', 0),
    (b'{"candidates": []}', 0),
    (b"", 0),
    (b"[\xff]", 0),
])
def test_unreadable_array_stream_ends_with_an_error_element(data: bytes, decided: int) -> None:
    out, rec = run("array", data, ALLOW_ALL, size=5)
    parsed = json.loads(out)  # still valid JSON for the client to read
    error = (parsed[-1] if isinstance(parsed, list) else parsed)["error"]
    assert error["code"] == 502 and "withheld (fail closed)" in error["message"]
    assert len(rec.calls) == decided
    assert (b"get_weather" in out) == bool(decided)


def test_escaped_braces_and_quotes_in_strings_do_not_end_an_element() -> None:
    tricky = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": 'a } b \\" } { "} \\\\'},
        {"functionCall": {"name": "delete_file", "args": {"path": "}\\\"{"}}}]}, "index": 0}]}
    data = b"[" + json.dumps(tricky).encode() + b"]"
    for size in (1, 2, 3, 1000):
        out, rec = run("array", data, size=size)
        (element,) = json.loads(out)
        assert element["candidates"][0]["content"]["parts"][0] == tricky["candidates"][0]["content"]["parts"][0]
        assert "`delete_file` was blocked" in element["candidates"][0]["content"]["parts"][1]["text"]
        assert rec.calls[0].arguments == {"path": '}\\"{'}


# -- through the real proxy app, over a stand-in upstream ---------------------------------------------------


class Replay(BaseHTTPRequestHandler):
    """Answers like the Gemini API, from tests/data/provider_replays; records every request."""

    seen: list[dict[str, Any]]
    chunk = 37  # odd-sized writes, so chunks arrive split across reads

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({"method": "GET", "path": self.path, "headers": self._headers()})
        if "/cachedContents/" in self.path:  # a stored conversation: its history holds function calls
            self._send("application/json", json.dumps({"name": "cachedContents/c1", "contents": [
                {"role": "model", "parts": [{"functionCall": {"name": "delete_file", "args": {}}}]}]}).encode())
        else:
            self._send("application/json", b'{"error": {"code": 404, "status": "NOT_FOUND"}}', 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append({"method": "POST", "path": self.path, "headers": self._headers(), "body": body})
        path, _, query = self.path.partition("?")
        if path.endswith(":countTokens"):
            self._send("application/json", b'{"totalTokens": 31}')
        elif "/models/broken:" in path:
            self._send("application/json", b'{"candidates": [')
        elif path.lower().endswith(":generatecontent"):  # some servers read the method case-blind
            self._send("application/json", JSON_REPLY)
        elif path.endswith(":streamGenerateContent") and "alt=sse" in query:
            self._send("text/event-stream", SSE_REPLY, stream=True)
        elif path.endswith(":streamGenerateContent"):
            self._send("application/json", ARRAY_REPLY, stream=True)
        else:
            self._send("application/json", b'{"error": {"code": 404, "status": "NOT_FOUND"}}', 404)

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _send(self, ctype: str, data: bytes, status: int = 200, stream: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        if stream:
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
def upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    handler = type("GeminiReplay", (Replay,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def proxy_over(base: str, policy: str = NO_DELETES, db: str | None = None) -> Iterator[ModelProxy]:
    pol = Policy.from_string(policy)
    gate = ToolGate(pol, audit_factory=(lambda: open_audit(db)) if db else None, approvals=None,
                    session="s1")
    try:
        with ModelProxy(gate.decide, Upstreams(gemini=base)) as proxy:
            yield proxy
    finally:
        gate.close()


def post(url: str, raw_path: str, body: Any = None, **headers: str) -> httpx.Response:
    """POST to a path exactly as written (httpx would otherwise tidy some spellings)."""
    with httpx.Client(timeout=30) as client:
        request = client.build_request("POST", url, json=body if body is not None else REQUEST,
                                       headers={"x-goog-api-key": KEY, **headers})
        request.url = request.url.copy_with(raw_path=raw_path.encode())
        return client.send(request)


REQUEST = {"contents": [{"role": "user", "parts": [{"text": "Tidy up, then the weather in Paris?"}]}],
           "tools": [{"functionDeclarations": [{"name": "delete_file"}, {"name": "get_weather"}]}]}
MODEL = "/v1beta/models/gemini-2.5-flash"


def test_child_env_and_upstream_from_environment(upstream: tuple[str, list[dict[str, Any]]]) -> None:
    assert Upstreams.from_env({}).gemini == "https://generativelanguage.googleapis.com"
    assert Upstreams.from_env({"GOOGLE_GEMINI_BASE_URL": "https://gw.example/g"}).gemini == "https://gw.example/g"
    with proxy_over(upstream[0]) as proxy:
        env = proxy.child_env()
    assert env["GOOGLE_GEMINI_BASE_URL"] == proxy.url + "/gemini"


def test_every_kind_of_reply_is_decided_and_audited(upstream: tuple[str, list[dict[str, Any]]],
                                                    audit_target: str) -> None:
    base, seen = upstream
    db = audit_target
    with proxy_over(base, db=db) as proxy:
        json_reply = post(proxy.url, f"/gemini{MODEL}:generateContent")
        sse_reply = post(proxy.url, f"/gemini{MODEL}:streamGenerateContent?alt=sse")
        array_reply = post(proxy.url, f"/gemini{MODEL}:streamGenerateContent?key={KEY}")
    assert json_reply.status_code == sse_reply.status_code == array_reply.status_code == 200
    assert sse_reply.headers["content-type"] == "text/event-stream"
    check_decided(json_reply.json()["candidates"][0]["content"]["parts"])
    check_decided(parts_of(sse_chunks(sse_reply.content)))
    check_decided(parts_of(array_reply.json()))
    # forwarded as sent: path, query (the key in it too), headers and body
    assert [s["path"] for s in seen] == [f"{MODEL}:generateContent", f"{MODEL}:streamGenerateContent?alt=sse",
                                         f"{MODEL}:streamGenerateContent?key={KEY}"]
    assert all(s["headers"]["x-goog-api-key"] == KEY and s["body"] == REQUEST for s in seen)
    rows = bodies(db, "decision")
    assert [(r["action"]["type"], r["decision"]["approval"], r["decision"]["rule"]) for r in rows] == [
        ("delete_file", "block", "no-deletes"), ("get_weather", "auto", None)] * 3
    assert {(r["origin"]["provider"], r["origin"]["api"], r["data"]["model"]) for r in rows} == {
        ("gemini", "generateContent", "gemini-2.5-flash")}
    assert KEY not in stored_text(db)


@pytest.mark.parametrize("spelling", [
    "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
    "/gemini//v1beta/models/gemini-2.5-flash:generateContent/",
    "/gemini/v1beta/./models/gemini-2.5-flash%3AgenerateContent",
    "/gemini/v1beta/models/gemini-2.5-flash:GENERATECONTENT",
    "/gemini/v1/tunedModels/my-model:generateContent",
    "/gemini/v1beta1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
])
def test_every_spelling_of_generate_content_is_decided(upstream: tuple[str, list[dict[str, Any]]],
                                                       spelling: str) -> None:
    base, seen = upstream
    with proxy_over(base) as proxy:
        reply = post(proxy.url, spelling)
    assert reply.status_code == 200
    check_decided(reply.json()["candidates"][0]["content"]["parts"])
    assert seen[-1]["path"].startswith("/v1") and "//" not in seen[-1]["path"]  # forwarded normalised


def test_unreadable_or_unreachable_upstream_is_an_error_in_googles_shape(
        upstream: tuple[str, list[dict[str, Any]]]) -> None:
    with proxy_over(upstream[0]) as proxy:
        reply = post(proxy.url, "/gemini/v1beta/models/broken:generateContent")
        assert reply.status_code == 502
        error = reply.json()["error"]
        assert error["code"] == 502 and error["status"] == "UNAVAILABLE"
        assert "not valid JSON; withheld (fail closed)" in error["message"]
        reply = post(proxy.url, "/gemini/v1beta/models/broken:streamGenerateContent")
        assert reply.status_code == 200  # a stream's status is sent before its body is read
        assert "not a JSON array" in reply.json()["error"]["message"]  # nothing else was sent
    import socket

    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        with proxy_over(f"http://127.0.0.1:{dead.getsockname()[1]}") as proxy:
            reply = post(proxy.url, f"/gemini{MODEL}:streamGenerateContent?alt=sse")
    assert reply.status_code == 502 and "unreachable" in reply.json()["error"]["message"]
    assert reply.json()["error"]["status"] == "UNAVAILABLE"


def test_other_endpoints_pass_unless_they_carry_a_call(upstream: tuple[str, list[dict[str, Any]]]) -> None:
    with proxy_over(upstream[0]) as proxy:
        reply = post(proxy.url, f"/gemini{MODEL}:countTokens")
        assert reply.status_code == 200 and reply.json() == {"totalTokens": 31}
        reply = httpx.get(proxy.url + "/gemini/v1beta/cachedContents/c1")
        assert reply.status_code == 502 and reply.json()["error"]["status"] == "UNAVAILABLE"
        assert "functionCall" in reply.json()["error"]["message"]
        reply = httpx.get(proxy.url + "/gemini/v1beta/models")
        assert reply.status_code == 404 and reply.json()["error"]["status"] == "NOT_FOUND"  # the upstream's own
