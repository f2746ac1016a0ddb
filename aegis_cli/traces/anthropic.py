"""Anthropic Messages (``tool_use`` content blocks) and Claude Code session transcripts.

A call is a content block ``{"type": "tool_use", "id", "name", "input"}`` in an assistant
message. ``mcp_tool_use`` blocks (the MCP connector) name their server in ``server_name``, which
becomes the namespace. Messages come bare, in a list, as ``{"messages": [...]}`` or as a Message
response.

Claude Code writes one JSON object per line (``~/.claude/projects/*/*.jsonl``): assistant lines
hold ``message`` (an Anthropic message), ``timestamp`` and ``sessionId``. One response is often
split over several lines sharing ``message.id``; a block id seen before is not counted twice.
Claude Code's own tools (Bash, Write, Edit...) get the namespace ``claude-code``, as the Claude
Code hook does; ``mcp__<server>__<tool>`` names resolve to the MCP server through the mapping.
Hook payloads (``{"hook_event_name": "PreToolUse", "tool_name", "tool_input"}``), logged one per
line, read as calls as well.
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

_CALL_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")
CLAUDE_CODE = "claude-code"


def _has_tool_use(message: Any) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") in _CALL_BLOCKS
                                             for b in content)


def _messages(record: Any) -> tuple[list[Any], tuple[Any, ...]] | None:
    if isinstance(record, list) and record and all(isinstance(m, dict) and "content" in m for m in record):
        return record, ()
    if isinstance(record, dict):
        if isinstance(record.get("messages"), list):
            return record["messages"], ("messages",)
        if "content" in record and ("role" in record or record.get("type") == "message"):
            return [record], ()
    return None


def block_calls(message: dict[str, Any], where: Location, *, namespace: str | None = None, agent: str = "",
                session: str = "", timestamp: Any = None, seen: set[str] | None = None) -> Iterator[Item]:
    """The tool calls in one Anthropic message's content blocks."""
    content = message.get("content")
    if not isinstance(content, list):
        return
    ts = timestamp_or_none(timestamp)
    for k, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") not in _CALL_BLOCKS:
            continue
        at = where.at("content", k)
        name = block.get("name")
        if not isinstance(name, str) or not name:
            yield Problem(at, f"{block['type']} block has no 'name'")
            continue
        ident = call_id(block.get("id"))
        if seen is not None and ident is not None:
            if ident in seen:
                continue
            seen.add(ident)
        ns = as_str(block.get("server_name")) or namespace
        yield ToolCall(name, block.get("input"), at, namespace=ns, timestamp=ts, call_id=ident, agent=agent,
                       session=session)


class MessagesReader:
    name: ClassVar[str] = "anthropic"
    description: ClassVar[str] = "Anthropic Messages API (tool_use content blocks), bare, in a list or {messages}"

    @staticmethod
    def detect(record: Any) -> bool:
        found = _messages(record)
        return found is not None and any(_has_tool_use(m) for m in found[0])

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        found = _messages(record)
        if found is None:
            raise MalformedRecord("not an Anthropic message or message list")
        messages, pointer = found
        base = where.at(*pointer)
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                yield Problem(base.at(i), "a message must be a JSON object")
                continue
            at = base.at(i) if pointer or isinstance(record, list) else base
            yield from block_calls(message, at, timestamp=message.get("timestamp"))


class ClaudeCodeReader:
    name: ClassVar[str] = CLAUDE_CODE
    description: ClassVar[str] = "Claude Code session transcripts (JSONL with sessionId + message) and hook payloads"

    def __init__(self) -> None:
        self.seen: set[str] = set()

    @staticmethod
    def detect(record: Any) -> bool:
        return isinstance(record, dict) and (
            ("sessionId" in record and ("message" in record or "type" in record))
            or ("hook_event_name" in record and "tool_name" in record))

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        if not isinstance(record, dict):
            raise MalformedRecord("a Claude Code transcript line must be a JSON object")
        if "hook_event_name" in record:
            yield from self._hook(record, where)
            return
        message = record.get("message")
        if record.get("type") != "assistant" or not isinstance(message, dict):
            return  # user turns, tool results, progress, summaries: no calls
        yield from block_calls(message, where.at("message"), namespace=CLAUDE_CODE,
                               agent=as_str(record.get("agentId")), session=as_str(record.get("sessionId")),
                               timestamp=record.get("timestamp"), seen=self.seen)

    def _hook(self, record: dict[str, Any], where: Location) -> Iterator[Item]:
        if record.get("hook_event_name") != "PreToolUse":
            return  # PostToolUse and the rest repeat or follow the PreToolUse call
        name = record.get("tool_name")
        if not isinstance(name, str) or not name:
            raise MalformedRecord("hook payload has no 'tool_name'")
        yield ToolCall(name, record.get("tool_input"), where, namespace=CLAUDE_CODE,
                       timestamp=timestamp_or_none(record.get("timestamp")),
                       call_id=call_id(record.get("tool_use_id")), session=as_str(record.get("session_id")))
