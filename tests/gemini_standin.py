"""A stand-in Gemini API on 127.0.0.1 for driving Gemini clients (the real ``gemini`` CLI) offline.

It answers ``POST .../models/{model}:generateContent`` (JSON) and ``:streamGenerateContent`` (server-sent
events with ``alt=sse``, else one JSON array), whatever prefix the path has. On a turn that offers tools
and does not yet hold a function response, it asks for the calls ``ask(body)`` returns, after a line of
text, the first call carrying a thought signature as Gemini 3 does; otherwise, or when ``ask`` returns
None, it answers with plain text. Every request is recorded.

    with GeminiStandIn(shell_calls("rm -rf build")) as api:
        run(["gemini", ...], env={"GOOGLE_GEMINI_BASE_URL": api.url, "GEMINI_API_KEY": "dummy"})
        assert api.posts()[0].path.startswith("/v1beta/models/")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Calls = list[tuple[str, dict[str, Any]]]
Ask = Callable[[dict[str, Any]], "Calls | None"]
INTRO_TEXT = "I'll run that for you."
DONE_TEXT = "Finished."
SIGNATURE = "c3RhbmRpbi10aG91Z2h0LXNpZ25hdHVyZQ=="


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


def shell_calls(*commands: str) -> Ask:
    """Ask for each command through Gemini CLI's shell tool, when it is offered."""

    def ask(body: dict[str, Any]) -> Calls | None:
        if "run_shell_command" not in tool_names(body):
            return None
        return [("run_shell_command", {"command": cmd, "description": f"Run {cmd}"}) for cmd in commands]

    return ask


def tool_names(body: dict[str, Any]) -> set[str]:
    return {str(d.get("name")) for tool in body.get("tools") or [] if isinstance(tool, dict)
            for d in tool.get("functionDeclarations") or [] if isinstance(d, dict)}


def has_function_response(body: dict[str, Any]) -> bool:
    contents = body.get("contents") or []
    last = contents[-1] if contents and isinstance(contents[-1], dict) else {}
    return any(isinstance(p, dict) and "functionResponse" in p for p in last.get("parts") or [])


def reply_chunks(model: str, calls: Calls | None) -> list[dict[str, Any]]:
    """The reply as the chunks of a stream; merged, the same reply as one JSON body."""
    meta = {"modelVersion": model, "responseId": "standin-response"}
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    if not calls:
        return [{"candidates": [{"content": {"role": "model", "parts": [{"text": DONE_TEXT}]},
                                 "finishReason": "STOP", "index": 0}], "usageMetadata": usage, **meta}]
    parts = [{"functionCall": {"name": name, "args": args}} for name, args in calls]
    parts[0]["thoughtSignature"] = SIGNATURE
    return [{"candidates": [{"content": {"role": "model", "parts": [{"text": INTRO_TEXT}]}, "index": 0}], **meta},
            {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
             "usageMetadata": usage, **meta}]


def merged(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    last = chunks[-1]
    return {**last, "candidates": [{**last["candidates"][0], "content": {"role": "model", "parts": parts}}]}


class GeminiStandIn:
    """The server; ``url`` is its origin (``http://127.0.0.1:PORT``), the base URL a client is given."""

    def __init__(self, ask: Ask) -> None:
        self.ask = ask
        self.requests: list[Seen] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append(Seen("GET", self.path, self._headers()))
                self._send(404, "application/json", b'{"error": {"code": 404, "status": "NOT_FOUND"}}')

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                owner.requests.append(Seen("POST", self.path, self._headers(), body))
                path, _, query = self.path.partition("?")
                model, _, method = path.rpartition("/")[2].partition(":")
                if method not in ("generateContent", "streamGenerateContent") or not isinstance(body, dict):
                    self._send(404, "application/json", b'{"error": {"code": 404, "status": "NOT_FOUND"}}')
                    return
                wants = tool_names(body) and not has_function_response(body)
                chunks = reply_chunks(model, owner.ask(body) if wants else None)
                if method == "generateContent":
                    self._send(200, "application/json", json.dumps(merged(chunks)).encode())
                elif "alt=sse" in query.split("&"):
                    self._send(200, "text/event-stream",
                               b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks))
                else:
                    self._send(200, "application/json",
                               ("[" + "\r\n,".join(json.dumps(c, indent=2) for c in chunks) + "]").encode())

            def _headers(self) -> dict[str, str]:
                return {k.lower(): v for k, v in self.headers.items()}

            def _send(self, status: int, ctype: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def posts(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST"]

    def __enter__(self) -> GeminiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
