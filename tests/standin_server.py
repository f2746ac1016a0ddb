"""The HTTP server under the model-API stand-ins: threaded HTTP/1.1 on 127.0.0.1, every request recorded.

A stand-in subclasses ``RecordingServer`` and answers in ``post`` (and ``get``) with a status, a
content type and the bytes of the body; the server keeps what it was sent in ``requests``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Reply = tuple[int, str, bytes]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


class RecordingServer:
    """``url`` is the origin (``http://127.0.0.1:PORT``); use it as a context manager to serve."""

    not_found = b'{"error": {"message": "not found"}}'

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.record(Seen("GET", self.path, self._headers()))
                self._send(*owner.get(self.path))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                owner.record(Seen("POST", self.path, self._headers(), body))
                self._send(*owner.post(self.path, body))

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

    def record(self, seen: Seen) -> None:
        self.requests.append(seen)

    def get(self, path: str) -> Reply:
        return 404, "application/json", self.not_found

    def post(self, path: str, body: Any) -> Reply:
        return 404, "application/json", self.not_found

    def posts(self, suffix: str = "") -> list[Seen]:
        """The POSTs, or those whose path (without the query) ends with ``suffix``."""
        return [r for r in self.requests if r.method == "POST" and r.path.partition("?")[0].endswith(suffix)]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
