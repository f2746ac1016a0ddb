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
from collections.abc import Callable
from typing import Any

from standin_server import RecordingServer, Reply

Calls = list[tuple[str, dict[str, Any]]]
Ask = Callable[[dict[str, Any]], "Calls | None"]
INTRO_TEXT = "I'll run that for you."
DONE_TEXT = "Finished."
SIGNATURE = "c3RhbmRpbi10aG91Z2h0LXNpZ25hdHVyZQ=="


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


class GeminiStandIn(RecordingServer):
    """The server; ``url`` is its origin (``http://127.0.0.1:PORT``), the base URL a client is given."""

    not_found = b'{"error": {"code": 404, "status": "NOT_FOUND"}}'

    def __init__(self, ask: Ask) -> None:
        super().__init__()
        self.ask = ask

    def post(self, path: str, body: Any) -> Reply:
        path, _, query = path.partition("?")
        model, _, method = path.rpartition("/")[2].partition(":")
        if method not in ("generateContent", "streamGenerateContent") or not isinstance(body, dict):
            return 404, "application/json", self.not_found
        wants = tool_names(body) and not has_function_response(body)
        chunks = reply_chunks(model, self.ask(body) if wants else None)
        if method == "generateContent":
            return 200, "application/json", json.dumps(merged(chunks)).encode()
        if "alt=sse" in query.split("&"):
            return 200, "text/event-stream", b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
        return 200, "application/json", ("[" + "\r\n,".join(json.dumps(c, indent=2) for c in chunks) + "]").encode()
