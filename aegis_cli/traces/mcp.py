"""MCP JSON-RPC traffic: ``tools/call`` requests, in message logs and recorder cassettes.

Accepted shapes (one record each; JSONL files hold one per line):

- a bare JSON-RPC message or batch: ``{"jsonrpc": "2.0", "id": 7, "method": "tools/call",
  "params": {"name": "add", "arguments": {...}}}``;
- an ``aegis wrap --record-trace`` line: ``{"ts": ISO-8601, "dir": "c2s"|"s2c", "server": NAME,
  "msg": <JSON-RPC message or batch>}``; only client-to-server requests are calls, and ``server``
  is the namespace (the action's target);
- a gh-aw MCP gateway log line: ``{"timestamp", "direction", "type": "REQUEST", "server_id",
  "payload": <JSON-RPC message>}``;
- an mcp-recorder cassette ``{"metadata": {"recorded_at", "server_info": {"name"}},
  "interactions": [{"request": ...}]}`` and an agent-vcr cassette ``{"metadata": {...},
  "session": {"interactions": [{"timestamp", "request": ...}]}}``; the server's reported name is
  the namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from aegis_cli.traces.base import (
    Item,
    Location,
    MalformedRecord,
    Problem,
    ToolCall,
    as_str,
    call_id,
    timestamp_or_none,
)


def _is_jsonrpc(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, dict) and v.get("jsonrpc") == "2.0" for v in value)
    return isinstance(value, dict) and value.get("jsonrpc") == "2.0"


def _interactions(record: dict[str, Any]) -> tuple[list[Any], tuple[Any, ...]] | None:
    if isinstance(record.get("interactions"), list):
        return record["interactions"], ("interactions",)
    session = record.get("session")
    if isinstance(session, dict) and isinstance(session.get("interactions"), list):
        return session["interactions"], ("session", "interactions")
    return None


def jsonrpc_calls(message: Any, where: Location, *, server: str | None, timestamp: Any) -> Iterator[Item]:
    """The ``tools/call`` requests in one JSON-RPC message or batch."""
    if isinstance(message, list):
        for i, m in enumerate(message):
            yield from jsonrpc_calls(m, where.at(i), server=server, timestamp=timestamp)
        return
    if not isinstance(message, dict):
        yield Problem(where, "a JSON-RPC message must be a JSON object")
        return
    if message.get("method") != "tools/call":
        return  # responses, notifications, other requests
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    if not isinstance(name, str) or not name:
        yield Problem(where, "tools/call request without params.name")
        return
    yield ToolCall(name, params.get("arguments"), where, namespace=server or None,
                   timestamp=timestamp_or_none(timestamp), call_id=call_id(message.get("id")))


class MCPReader:
    name: ClassVar[str] = "mcp"
    description: ClassVar[str] = ("MCP JSON-RPC logs (bare messages, aegis wrap --record-trace lines, "
                                  "gh-aw gateway logs) and mcp-recorder / agent-vcr cassettes")

    @staticmethod
    def detect(record: Any) -> bool:
        if _is_jsonrpc(record):
            return True
        if not isinstance(record, dict):
            return False
        if _is_jsonrpc(record.get("msg")) or (_is_jsonrpc(record.get("payload")) and "server_id" in record):
            return True
        found = _interactions(record)
        return found is not None and any(isinstance(i, dict) and _is_jsonrpc(i.get("request"))
                                         for i in found[0])

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        if _is_jsonrpc(record):
            yield from jsonrpc_calls(record, where, server=None, timestamp=None)
            return
        if not isinstance(record, dict):
            raise MalformedRecord("not a JSON-RPC message")
        if "msg" in record:  # aegis wrap --record-trace
            if record.get("dir", "c2s") != "c2s":
                return
            yield from jsonrpc_calls(record["msg"], where.at("msg"), server=as_str(record.get("server")),
                                     timestamp=record.get("ts"))
            return
        if "payload" in record:  # gh-aw gateway
            if str(record.get("type", "REQUEST")).upper() != "REQUEST":
                return
            yield from jsonrpc_calls(record["payload"], where.at("payload"), server=as_str(record.get("server_id")),
                                     timestamp=record.get("timestamp"))
            return
        found = _interactions(record)
        if found is None:
            raise MalformedRecord("not an MCP message, log line or cassette")
        meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
        info = meta.get("server_info")
        server = as_str(info.get("name")) if isinstance(info, dict) else ""
        interactions, pointer = found
        for k, inter in enumerate(interactions):
            at = where.at(*pointer, k)
            if not isinstance(inter, dict):
                yield Problem(at, "an interaction must be a JSON object")
                continue
            request = inter.get("request")
            if request is None:
                continue
            ts = inter.get("timestamp") or meta.get("recorded_at")
            yield from jsonrpc_calls(request, at.at("request"), server=server, timestamp=ts)
