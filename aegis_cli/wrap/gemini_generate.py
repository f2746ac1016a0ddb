"""Gemini API replies (``POST .../models/{model}:generateContent`` and ``:streamGenerateContent``): decide every
``functionCall`` part, in a JSON reply, an event stream (``alt=sse``) or a JSON-array stream (no ``alt``).

A blocked ``functionCall`` part becomes a text part holding the note, in its place among the
candidate's parts; allowed calls pass unchanged. ``finishReason`` stays as it is: Gemini ends a turn
that asks for calls with ``STOP`` too, so a turn with no call left is already an ordinary ending.

Gemini sends every function call whole inside one chunk, so a stream needs no hold-and-release:
each chunk is decided as it arrives and, when nothing in it is blocked, passes byte for byte. A
call streamed in pieces (Vertex AI's ``partialArgs`` / ``willContinue``) cannot be decided from one
piece, so it is blocked. Code execution (``executableCode``) already ran at Google and passes.

Thought signatures: with parallel calls only the first ``functionCall`` part carries the
``thoughtSignature``, and the API rejects a turn whose first call has none. When that call is
blocked, its signature moves to the next call of the candidate that is kept.

A chunk aegis cannot read is never handed on: the stream ends there with an error in Google's shape.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aegis_cli.wrap.sse import SSEEvent, await_with_keepalive, read_batches
from aegis_cli.wrap.tool_gate import Decide, ToolCall, decide_each

log = logging.getLogger("aegis.wrap")

PROVIDER, API = "gemini", "generateContent"
#: Sent while a decision (usually a person) is awaited. Not an SSE comment: the google-genai SDKs
#: read ``data:`` lines only and fail on a comment, while a blank line is skipped by every reader
#: (and is JSON whitespace between the elements of an array stream).
KEEPALIVE = b"\n"

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def streams_json(path: str) -> bool:
    """A stream path, whose reply without ``alt=sse`` is a JSON array sent element by element."""
    return path.rstrip("/").lower().endswith(":streamgeneratecontent")


def error_json(code: int, message: str) -> dict[str, Any]:
    """An error as Google's APIs write it."""
    return {"error": {"code": code, "message": message, "status": _STATUS.get(code, "INTERNAL")}}


def error_body(code: int, message: str) -> bytes:
    return json.dumps(error_json(code, message)).encode()


def _call(function_call: Any, model: str) -> ToolCall:
    if not isinstance(function_call, dict):
        return ToolCall(PROVIDER, API, "", "?", None, "the functionCall is not an object", model)
    name = function_call.get("name")
    call_id = str(function_call.get("id") or "")
    if not isinstance(name, str) or not name:
        return ToolCall(PROVIDER, API, call_id, str(name or "?"), None, "the tool call has no name", model)
    if "partialArgs" in function_call or function_call.get("willContinue"):
        return ToolCall(PROVIDER, API, call_id, name, None,
                        "the call's arguments were streamed in pieces (partialArgs), which aegis cannot decide", model)
    return ToolCall(PROVIDER, API, call_id, name, function_call.get("args"), None, model)


def _parts(candidate: Any) -> list[Any] | None:
    content = candidate.get("content") if isinstance(candidate, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    return parts if isinstance(parts, list) else None


def has_calls(body: Any) -> bool:
    """Whether a reply (or chunk) holds any ``functionCall`` part."""
    candidates = body.get("candidates") if isinstance(body, dict) else None
    if not isinstance(candidates, list):
        return False
    return any(isinstance(p, dict) and "functionCall" in p for c in candidates for p in _parts(c) or ())


async def _decide(body: dict[str, Any], decide: Decide, carry: dict[Any, Any]) -> dict[str, Any]:
    """The reply with every ``functionCall`` decided; ``body`` itself when nothing was blocked.

    ``carry``: candidate index -> the thought signature of a blocked call, for the next kept call.
    """
    if not has_calls(body):
        return body
    model = str(body.get("modelVersion") or "")
    found = [part for candidate in body["candidates"] for part in _parts(candidate) or ()
             if isinstance(part, dict) and "functionCall" in part]
    verdicts = iter(await decide_each(decide, [_call(part["functionCall"], model) for part in found]))
    candidates: list[Any] = []
    changed = False
    for position, candidate in enumerate(body["candidates"]):
        parts = _parts(candidate)
        if parts is None:
            candidates.append(candidate)
            continue
        key = candidate.get("index", position)
        out: list[Any] = []
        for part in parts:
            if not isinstance(part, dict) or "functionCall" not in part:
                out.append(part)
                continue
            verdict = next(verdicts)  # in the order they were found, decided together
            if verdict.allowed:
                signature = carry.pop(key, None)
                if signature is not None and "thoughtSignature" not in part:
                    part = {**part, "thoughtSignature": signature}
                    changed = True
                out.append(part)
            else:
                if "thoughtSignature" in part:
                    carry.setdefault(key, part["thoughtSignature"])
                out.append({"text": verdict.note})
                changed = True
        candidates.append({**candidate, "content": {**candidate["content"], "parts": out}})
    return {**body, "candidates": candidates} if changed else body


async def rewrite_json(body: dict[str, Any], decide: Decide) -> dict[str, Any]:
    """Decide the calls in a ``generateContent`` reply; returns the reply the agent gets."""
    return await _decide(body, decide, {})


async def _decided(body: dict[str, Any], decide: Decide,
                   carry: dict[Any, Any]) -> AsyncIterator[bytes | dict[str, Any]]:
    """Keepalives while ``body`` is decided, then the decided body."""
    async for out in await_with_keepalive(_decide(body, decide, carry), KEEPALIVE):
        yield out if isinstance(out, bytes) else out.value


def _terminator(ev: SSEEvent) -> bytes:
    body = ev.raw.rstrip(b"\r\n")
    return ev.raw[len(body):] or b"\r\n\r\n"


def _sse(data: Any, like: SSEEvent | None = None) -> bytes:
    """One event with compact JSON data (the google-genai SDKs read one ``data:`` line per event)."""
    end = _terminator(like) if like is not None else b"\r\n\r\n"
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + end


async def rewrite_stream(chunks: AsyncIterator[bytes], decide: Decide) -> AsyncIterator[bytes]:
    """Pass a ``streamGenerateContent?alt=sse`` stream through, deciding the calls in each chunk."""
    carry: dict[Any, Any] = {}
    async for batch in read_batches(chunks):  # the events one read completed
        for ev in batch:
            if not ev.data.strip():  # a comment or an empty event: nothing a client reads as a reply
                yield ev.raw
                continue
            data = ev.json()
            if not isinstance(data, dict):
                log.error("aegis: unreadable Gemini stream chunk; stream ended (fail closed)")
                yield _sse(error_json(502, "aegis: the upstream sent a stream chunk that is not a JSON object; "
                                           "the rest of the reply is withheld (fail closed)"), ev)
                return
            if not has_calls(data):
                yield ev.raw
                continue
            async for out in _decided(data, decide, carry):
                if isinstance(out, bytes):
                    yield out
                else:
                    yield ev.raw if out is data else _sse(out, ev)


_WS = " \t\r\n"
_TOKEN = re.compile(r'["\\{}]')


class _ObjectEnd:
    """Finds where a JSON object ends, looking at each piece of text once (strings and escapes respected)."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.skip = -1  # the index (in the current piece) of a character escaped by a backslash

    def feed(self, text: str, start: int) -> int:
        """The index just past the object's closing brace in ``text``, or -1 if it goes on."""
        for m in _TOKEN.finditer(text, start):
            i, c = m.start(), m.group()
            if i == self.skip:
                continue
            if self.in_string:
                if c == "\\":
                    self.skip = i + 1
                elif c == '"':
                    self.in_string = False
            elif c == '"':
                self.in_string = True
            elif c == "{":
                self.depth += 1
            elif c == "}":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        # a backslash that ends the piece escapes the first character of the next one
        self.skip = 0 if self.skip == len(text) else -1
        return -1


async def rewrite_json_stream(chunks: AsyncIterator[bytes], decide: Decide) -> AsyncIterator[bytes]:
    """Pass a ``streamGenerateContent`` JSON-array stream through, element by element, deciding each.

    Whitespace, brackets and commas are re-emitted as received, and an element with no blocked call
    as its own bytes, so a stream with nothing blocked reaches the agent unchanged.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry: dict[Any, Any] = {}
    state = "open"  # open: before '['; value: before an element or ']'; comma: after one; element; closed
    scanner = _ObjectEnd()
    pieces: list[str] = []

    def fail(why: str) -> bytes:
        log.error("aegis: unreadable Gemini array stream (%s); the rest is withheld (fail closed)", why)
        body = error_body(502, f"aegis: the upstream stream is not readable ({why}); "
                               "the rest of the reply is withheld (fail closed)")
        return body if state == "open" else (b"," if state == "comma" else b"") + body + b"]"

    async def texts() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)

    try:
        async for text in texts():
            i = 0
            while i < len(text):
                if state == "element":
                    end = scanner.feed(text, i)
                    if end == -1:
                        pieces.append(text[i:])
                        break
                    pieces.append(text[i:end])
                    raw, i, state = "".join(pieces), end, "comma"
                    pieces.clear()
                    try:
                        element = json.loads(raw)
                    except ValueError:
                        state = "value"
                        yield fail("an element is not valid JSON")
                        return
                    async for out in _decided(element, decide, carry):
                        if isinstance(out, bytes):
                            yield out
                        else:
                            yield raw.encode() if out is element else json.dumps(out, ensure_ascii=False).encode()
                    continue
                j = i
                while j < len(text) and text[j] in _WS:
                    j += 1
                if j > i:
                    yield text[i:j].encode()
                    i = j
                    continue
                c = text[i]
                if state == "closed":
                    log.error("aegis: data after the end of a Gemini array stream; dropped")
                    return
                if state == "open":
                    if c != "[":
                        yield fail("not a JSON array")
                        return
                    state = "value"
                elif c == "]":
                    state = "closed"
                elif state == "comma":
                    if c != ",":
                        yield fail("no ',' between elements")
                        return
                    state = "value"
                elif c == "{":
                    state, scanner = "element", _ObjectEnd()
                    continue  # the element, its '{' included, is scanned from here
                else:
                    yield fail("an element is not a JSON object")
                    return
                yield c.encode()
                i += 1
    except UnicodeDecodeError:
        yield fail("not UTF-8")
        return
    if state != "closed":
        if state == "element":
            state = "value"
        yield fail("the stream ended before the array did")
