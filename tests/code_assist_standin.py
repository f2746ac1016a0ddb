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
from typing import Any

from gemini_standin import Ask, has_function_response, merged, reply_chunks, tool_names
from standin_server import RecordingServer, Reply

PROJECT = "standin-project"
LOAD_CODE_ASSIST = {"currentTier": {"id": "standard-tier", "name": "Gemini Code Assist"},
                    "cloudaicompanionProject": PROJECT}


def wrapped(chunk: dict[str, Any]) -> dict[str, Any]:
    return {"response": chunk, "traceId": "standin-trace"}


class CodeAssistStandIn(RecordingServer):
    """The server; ``url`` (``http://127.0.0.1:PORT``) is what ``CODE_ASSIST_ENDPOINT`` is set to."""

    not_found = b'{"error": {"code": 404, "status": "NOT_FOUND"}}'

    def __init__(self, ask: Ask) -> None:
        super().__init__()
        self.ask = ask

    def post(self, path: str, body: Any) -> Reply:
        method = path.partition("?")[0].rpartition(":")[2]
        if method == "loadCodeAssist":
            return 200, "application/json", json.dumps(LOAD_CODE_ASSIST).encode()
        if method not in ("generateContent", "streamGenerateContent"):
            return 200, "application/json", b"{}"
        request = body.get("request") if isinstance(body, dict) else None
        if not isinstance(request, dict):
            return 400, "application/json", b'{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}'
        wants = tool_names(request) and not has_function_response(request)
        chunks = reply_chunks(str(body.get("model")), self.ask(request) if wants else None)
        if method == "generateContent":
            return 200, "application/json", json.dumps(wrapped(merged(chunks))).encode()
        # Code Assist streams as server-sent events (the CLI always asks alt=sse)
        return 200, "text/event-stream", b"".join(b"data: " + json.dumps(wrapped(c)).encode() + b"\r\n\r\n"
                                                   for c in chunks)
