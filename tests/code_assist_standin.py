"""A stand-in Code Assist API (``cloudcode-pa.googleapis.com``) on 127.0.0.1, for Gemini CLI signed in with Google.

What Gemini CLI 0.61 asks of it (its ``code_assist/setup.ts`` and ``server.ts``): ``loadCodeAssist``
answered with a current tier and a project (so no ``onboardUser``), then ``retrieveUserQuota``,
``listExperiments``, ``recordCodeAssistMetrics`` (empty objects do), and the model turns on
``v1internal:streamGenerateContent?alt=sse`` / ``:generateContent``, whose body wraps the Gemini
request as ``{"model", "project", "request": {...}}``. Replies are the Gemini stand-in's, wrapped
as ``{"response": {...}, "traceId"}`` per chunk. Every request is recorded.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gemini_standin import Ask, Seen, has_function_response, merged, reply_chunks, tool_names

PROJECT = "standin-project"
LOAD_CODE_ASSIST = {"currentTier": {"id": "standard-tier", "name": "Gemini Code Assist"},
                    "cloudaicompanionProject": PROJECT}


def wrapped(chunk: dict[str, Any]) -> dict[str, Any]:
    return {"response": chunk, "traceId": "standin-trace"}


class CodeAssistStandIn:
    """The server; ``url`` (``http://127.0.0.1:PORT``) is what ``CODE_ASSIST_ENDPOINT`` is set to."""

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
                method = self.path.partition("?")[0].rpartition(":")[2]
                if method == "loadCodeAssist":
                    self._send(200, "application/json", json.dumps(LOAD_CODE_ASSIST).encode())
                    return
                if method not in ("generateContent", "streamGenerateContent"):
                    self._send(200, "application/json", b"{}")
                    return
                request = body.get("request") if isinstance(body, dict) else None
                if not isinstance(request, dict):
                    self._send(400, "application/json", b'{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}')
                    return
                wants = tool_names(request) and not has_function_response(request)
                chunks = reply_chunks(str(body.get("model")), owner.ask(request) if wants else None)
                if method == "generateContent":
                    self._send(200, "application/json", json.dumps(wrapped(merged(chunks))).encode())
                else:  # Code Assist streams as server-sent events (the CLI always asks alt=sse)
                    self._send(200, "text/event-stream",
                               b"".join(b"data: " + json.dumps(wrapped(c)).encode() + b"\r\n\r\n" for c in chunks))

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

    def posts(self, method: str = "") -> list[Seen]:
        return [r for r in self.requests if r.method == "POST" and r.path.partition("?")[0].endswith(method)]

    def __enter__(self) -> CodeAssistStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
