"""A stand-in model API on 127.0.0.1 for driving real agent CLIs offline (the providers are unreachable).

It speaks Anthropic Messages (``.../messages``), OpenAI Chat Completions (``.../chat/completions``)
and OpenAI Responses (``.../responses``), JSON or streamed as the request asks, whatever prefix
the path has. On the first turn of a conversation that offers tools it asks for one tool call,
chosen by ``ask(api, body)``; once the conversation holds a tool result, or when ``ask`` returns
None, it answers with plain text. Every request is recorded.

    with StandIn(shell_call("rm -rf build")) as api:
        run(agent, env={"ANTHROPIC_BASE_URL": api.url + "/v1"})
        assert api.requests[0].path == "/v1/messages"
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from standin_server import RecordingServer, Reply

Ask = Callable[[str, dict[str, Any]], "tuple[str, dict[str, Any]] | None"]
DONE_TEXT = "Finished."


def shell_call(cmd: str) -> Ask:
    """Ask for ``cmd`` through whichever shell tool the agent offers (opencode: bash, Codex: exec_command/shell)."""

    def ask(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        names = {_tool_name(t) for t in body.get("tools") or []}
        if "exec_command" in names:
            return "exec_command", {"cmd": cmd}
        if "shell_command" in names:
            return "shell_command", {"command": cmd}
        if "shell" in names:
            return "shell", {"command": ["bash", "-lc", cmd]}
        if "bash" in names:
            return "bash", {"command": cmd, "description": "Run the command"}
        return None

    return ask


def _tool_name(tool: Any) -> str:
    if not isinstance(tool, dict):
        return ""
    fn = tool.get("function")
    return str((fn.get("name") if isinstance(fn, dict) else None) or tool.get("name") or "")


def offered_tools(body: dict[str, Any]) -> list[Any]:
    """The tools a request offers: ``tools``, and for Codex in code mode the ``additional_tools`` input
    item (tools in namespaces, listed flat)."""
    found = list(body.get("tools") or [])
    for item in body.get("input") or [] if isinstance(body.get("input"), list) else []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            found += item.get("tools") or []
    flat = []
    while found:
        tool = found.pop(0)
        if isinstance(tool, dict) and tool.get("type") == "namespace":
            found += tool.get("tools") or []
        else:
            flat.append(tool)
    return flat


def _has_result(api: str, body: dict[str, Any]) -> bool:
    if api == "responses" and isinstance(body.get("input"), list):  # by item type: tool texts name the types too
        return any(isinstance(i, dict) and str(i.get("type", "")).endswith("_call_output") for i in body["input"])
    history = json.dumps(body.get("input") if api == "responses" else body.get("messages"))
    markers = ('"tool_result"', '"function_call_output"', '"custom_tool_call_output"', '"role": "tool"')
    return any(marker in history for marker in markers)


def _sse(event: str | None, data: Any) -> bytes:
    return (f"event: {event}\n" if event else "").encode() + f"data: {json.dumps(data)}\n\n".encode()


def anthropic_reply(body: dict[str, Any], call: tuple[str, dict[str, Any]] | None) -> tuple[str, bytes]:
    model = body.get("model", "claude-standin")
    block = ({"type": "tool_use", "id": "toolu_standin_01", "name": call[0], "input": call[1]} if call
             else {"type": "text", "text": DONE_TEXT})
    stop = "tool_use" if call else "end_turn"
    usage = {"input_tokens": 10, "output_tokens": 5}
    if not body.get("stream"):
        return "application/json", json.dumps({"id": "msg_standin", "type": "message", "role": "assistant",
                                               "model": model, "content": [block], "stop_reason": stop,
                                               "stop_sequence": None, "usage": usage}).encode()
    start = {**block, "input": {}} if call else {"type": "text", "text": ""}
    delta = ({"type": "input_json_delta", "partial_json": json.dumps(call[1])} if call
             else {"type": "text_delta", "text": DONE_TEXT})
    out = [_sse("message_start", {"type": "message_start", "message": {
               "id": "msg_standin", "type": "message", "role": "assistant", "model": model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": usage}}),
           _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
           _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
           _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
           _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                  "usage": {"output_tokens": 5}}),
           _sse("message_stop", {"type": "message_stop"})]
    return "text/event-stream", b"".join(out)


def _namespace_of(body: dict[str, Any], name: str) -> str | None:
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "namespace" and \
                any(isinstance(t, dict) and t.get("name") == name for t in tool.get("tools") or []):
            return str(tool.get("name"))
    return None


def responses_reply(body: dict[str, Any], call: tuple[str, dict[str, Any]] | None) -> tuple[str, bytes]:
    model = body.get("model", "gpt-standin")
    item = ({"type": "function_call", "id": "fc_standin_01", "call_id": "call_standin_01", "name": call[0],
             "arguments": json.dumps(call[1]), "status": "completed"} if call
            else {"type": "message", "id": "msg_standin_01", "role": "assistant", "status": "completed",
                  "content": [{"type": "output_text", "text": DONE_TEXT, "annotations": []}]})
    namespace = _namespace_of(body, call[0]) if call else None
    if namespace:  # a tool in a namespace (Codex: each MCP server's, "mcp__<server>") is called with it beside
        item["namespace"] = namespace
    if call and any(isinstance(t, dict) and t.get("type") == "custom" and t.get("name") == call[0]
                    for t in offered_tools(body)):
        # a freeform (custom) tool, e.g. Codex's apply_patch: its input is text, given as call[1]["input"]
        item = {"type": "custom_tool_call", "id": "ctc_standin_01", "call_id": "call_standin_01", "name": call[0],
                "input": str(call[1].get("input", "")), "status": "completed"}
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    response = {"id": "resp_standin", "object": "response", "created_at": 1767225600, "model": model,
                "status": "completed", "output": [item], "usage": usage}
    if not body.get("stream"):
        return "application/json", json.dumps(response).encode()
    begun = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [("response.created", {"response": begun}),
              ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress"}}),
              ("response.output_item.done", {"output_index": 0, "item": item}),
              ("response.completed", {"response": response})]
    return "text/event-stream", b"".join(_sse(kind, {"type": kind, "sequence_number": n, **data})
                                         for n, (kind, data) in enumerate(events))


def chat_reply(body: dict[str, Any], call: tuple[str, dict[str, Any]] | None) -> tuple[str, bytes]:
    model = body.get("model", "gpt-standin")
    calls = [{"id": "call_standin_01", "type": "function",
              "function": {"name": call[0], "arguments": json.dumps(call[1])}}] if call else None
    finish = "tool_calls" if call else "stop"
    head = {"id": "chatcmpl-standin", "created": 1767225600, "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": None if call else DONE_TEXT,
                   **({"tool_calls": calls} if calls else {})}
        return "application/json", json.dumps({**head, "object": "chat.completion", "choices": [
            {"index": 0, "message": message, "finish_reason": finish}]}).encode()
    delta = {"role": "assistant",
             **({"tool_calls": [{"index": 0, **calls[0]}]} if calls else {"content": DONE_TEXT})}
    chunk = {**head, "object": "chat.completion.chunk"}
    chunks = [{**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
              {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
    return "text/event-stream", b"".join(_sse(None, c) for c in chunks) + b"data: [DONE]\n\n"


_APIS = (("/messages", "messages", anthropic_reply), ("/chat/completions", "chat", chat_reply),
         ("/responses", "responses", responses_reply))


class StandIn(RecordingServer):
    """The server; ``url`` is its origin (``http://127.0.0.1:PORT``)."""

    def __init__(self, ask: Ask, fixed: dict[str, tuple[str, bytes]] | None = None) -> None:
        super().__init__()
        self.ask = ask
        self.fixed = fixed or {}  # path -> (content type, body), answered to any method before the APIs

    def get(self, path: str) -> Reply:
        if path in self.fixed:
            return 200, *self.fixed[path]
        return super().get(path)

    def post(self, path: str, body: Any) -> Reply:
        if path in self.fixed:
            return 200, *self.fixed[path]
        bare = path.split("?")[0].rstrip("/")
        for suffix, api, reply in _APIS:
            if bare.endswith(suffix) and isinstance(body, dict):
                wants = offered_tools(body) and not _has_result(api, body)
                return 200, *reply(body, self.ask(api, body) if wants else None)
        return super().post(path, body)
