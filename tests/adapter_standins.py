"""A scripted stand-in model API on 127.0.0.1 for the adapter tests (the providers are unreachable).

It answers Anthropic Messages (``/v1/messages``), OpenAI Chat Completions (``/v1/chat/completions``)
and OpenAI Responses (``/v1/responses``) in the providers' JSON shapes. ``script(api, body)`` says
what the model does this turn: a list of tool calls ``[(name, arguments), ...]`` (all in one reply,
as parallel calls) or a text. A request with ``"stream": true`` gets the same reply as the API
streams it (server-sent events, each tool call's arguments split across two deltas). Every request
body is kept, so a test can read what the model was shown (the tools offered, the tool results it got
back).

    with ScriptedModel(first_turn_calls([("get_weather", {"city": "Paris"})])) as model:
        client = OpenAI(base_url=model.url + "/v1", api_key="x")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from standin_server import RecordingServer, Reply, Seen

Calls = list[tuple[str, dict[str, Any]]]
Script = Callable[[str, dict[str, Any]], "Calls | str"]
DONE = "All done."


def first_turn_calls(calls: Calls, text: str = DONE) -> Script:
    """Ask for ``calls`` when the conversation holds no tool result yet; then answer ``text``."""

    def script(api: str, body: dict[str, Any]) -> Calls | str:
        return text if tool_results(api, body) else calls

    return script


def tool_results(api: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results the request carries back to the model, in the API's own shape."""
    if api == "messages":
        return [block for m in body.get("messages") or [] if isinstance(m.get("content"), list)
                for block in m["content"] if isinstance(block, dict) and block.get("type") == "tool_result"]
    if api == "chat":
        return [m for m in body.get("messages") or [] if m.get("role") == "tool"]
    items = body.get("input")
    return [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"] \
        if isinstance(items, list) else []


def _messages(body: dict[str, Any], reply: Calls | str, ids: list[int]) -> dict[str, Any]:
    if isinstance(reply, str):
        content: list[dict[str, Any]] = [{"type": "text", "text": reply}]
    else:
        content = [{"type": "tool_use", "id": f"toolu_{i:02d}", "name": n, "input": a}
                   for i, (n, a) in zip(ids, reply, strict=False)]
    return {"id": "msg_standin", "type": "message", "role": "assistant", "model": body.get("model", "claude"),
            "content": content, "stop_reason": "end_turn" if isinstance(reply, str) else "tool_use",
            "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}


def _chat(body: dict[str, Any], reply: Calls | str, ids: list[int]) -> dict[str, Any]:
    if isinstance(reply, str):
        message: dict[str, Any] = {"role": "assistant", "content": reply}
    else:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i:02d}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, (n, a) in zip(ids, reply, strict=False)]}
    return {"id": "chatcmpl-standin", "object": "chat.completion", "created": 1767225600,
            "model": body.get("model", "gpt"), "choices": [
                {"index": 0, "message": message, "finish_reason": "stop" if isinstance(reply, str) else "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def _responses(body: dict[str, Any], reply: Calls | str, ids: list[int]) -> dict[str, Any]:
    if isinstance(reply, str):
        output: list[dict[str, Any]] = [{"type": "message", "id": "msg_01", "role": "assistant", "status": "completed",
                                         "content": [{"type": "output_text", "text": reply, "annotations": []}]}]
    else:
        output = [{"type": "function_call", "id": f"fc_{i:02d}", "call_id": f"call_{i:02d}", "name": n,
                   "arguments": json.dumps(a), "status": "completed"} for i, (n, a) in zip(ids, reply, strict=False)]
    return {"id": "resp_standin", "object": "response", "created_at": 1767225600, "model": body.get("model", "gpt"),
            "status": "completed", "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                                   "input_tokens_details": {"cached_tokens": 0},
                                   "output_tokens_details": {"reasoning_tokens": 0}}}


_APIS = {"/messages": ("messages", _messages), "/chat/completions": ("chat", _chat),
         "/responses": ("responses", _responses)}


def _sse(event: str | None, data: Any) -> bytes:
    return (f"event: {event}\n" if event else "").encode() + f"data: {json.dumps(data)}\n\n".encode()


def _halves(text: str) -> list[str]:
    """A streamed text or argument string, in two pieces (a client must join them)."""
    cut = len(text) // 2
    return [text[:cut], text[cut:]] if cut else [text]


def _messages_stream(reply: dict[str, Any]) -> bytes:
    """An Anthropic Messages reply as the API streams it: one block after another."""
    out = [_sse("message_start", {"type": "message_start", "message": {
        **reply, "content": [], "stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 1}}})]
    for index, block in enumerate(reply["content"]):
        if block["type"] == "tool_use":
            start, deltas = {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": piece}
                                                     for piece in _halves(json.dumps(block["input"]))]
        else:
            start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": piece}
                                                           for piece in _halves(block["text"])]
        out.append(_sse("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": start}))
        out += [_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                for d in deltas]
        out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(_sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5},
                                      "delta": {"stop_reason": reply["stop_reason"], "stop_sequence": None}}))
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def _chat_stream(reply: dict[str, Any]) -> bytes:
    """A Chat Completions reply as the API streams it: ``chat.completion.chunk`` deltas, then ``[DONE]``."""
    head = {k: reply[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = reply["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(None, {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": ""})]
    for piece in _halves(message["content"]) if message.get("content") else []:
        out.append(chunk({"content": piece}))
    for index, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                          "function": {"name": fn["name"], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _halves(fn["arguments"])]
    out.append(chunk({}, choice["finish_reason"]))
    out.append(_sse(None, {**head, "choices": [], "usage": reply["usage"]}))
    return b"".join(out) + b"data: [DONE]\n\n"


_STREAMS = {"messages": _messages_stream, "chat": _chat_stream}


class ScriptedModel(RecordingServer):
    """The server; ``url`` is its origin, ``requests`` the (api, body) pairs it was sent."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script
        self.requests: list[tuple[str, dict[str, Any]]] = []  # type: ignore[assignment]
        self._next_id = 0
        self._lock = threading.Lock()

    def record(self, seen: Seen) -> None:
        pass  # ``post`` keeps (api, body) for the APIs it answers

    def post(self, path: str, body: Any) -> Reply:
        body = body if isinstance(body, dict) else {}
        bare = path.split("?")[0].rstrip("/")
        for suffix, (api, shape) in _APIS.items():
            if bare.endswith(suffix):
                self.requests.append((api, body))
                reply = self.script(api, body)
                with self._lock:  # call ids count up across the conversation, as the providers' are unique
                    first = self._next_id
                    self._next_id += 0 if isinstance(reply, str) else len(reply)
                answer = shape(body, reply, list(range(first, self._next_id)))
                if body.get("stream") and api in _STREAMS:
                    return 200, "text/event-stream", _STREAMS[api](answer)
                return 200, "application/json", json.dumps(answer).encode()
        return super().post(path, body)


# -- what the adapter tests govern with -------------------------------------------------------------

POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
    reason: deleting files is not allowed
  - name: ask-email
    match: {type: send_email}
    approval: approve
    risk_level: medium
    reason: a person checks outgoing mail
"""


class Gate:
    """An approval handler a test controls: answers ``answer`` after ``delay`` seconds; ``asked`` counts."""

    def __init__(self, answer: bool = True, delay: float = 0.0, timeout: float = 5.0) -> None:
        self.answer, self.delay, self.timeout = answer, delay, timeout
        self.asked: list[Any] = []

    async def request(self, action: Any, decision: Any, *, decision_id: int | None) -> Any:
        import asyncio

        from aegis_cli.approvals.base import ApprovalAnswer

        self.asked.append(action)
        await asyncio.sleep(self.delay)
        return ApprovalAnswer.approve("tester") if self.answer else ApprovalAnswer.deny("tester", "not today")


def make_runtime(db: Any, handler: Any = None) -> Any:
    from aegis_cli import Policy, Runtime, SQLiteAuditLogger

    return Runtime(policy=Policy.from_string(POLICY), approval_handler=handler, audit=SQLiteAuditLogger(db))


def audit_trail(db: Any) -> list[dict[str, Any]]:
    """The audit records (their hashed JSON bodies, plus ``id``), in order."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return [{"id": i, **json.loads(body)} for i, body in conn.execute("select id, body from audit order by id")]
    finally:
        conn.close()


def verify_audit(db: Any) -> None:
    """``aegis audit verify --audit-db FILE`` must pass, run as a user runs it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(db)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
