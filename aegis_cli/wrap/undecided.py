"""Replies on paths aegis does not decide: passed on only when they carry no tool call it knows.

A model reply reached through a path the router did not recognise (a new endpoint, a spelling no
rule foresaw) must not hand an agent a call nobody decided. Such replies are read (JSON, JSON
Lines, or server-sent events) and refused when they hold an Anthropic ``tool_use`` block, an
OpenAI ``tool_calls`` / ``function_call`` entry, a Responses call item or a Gemini ``functionCall`` part.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aegis_cli.wrap.sse import encode, read_events

#: Responses item types the client executes, and Anthropic's client-run block.
CALL_TYPES = frozenset({"tool_use", "function_call", "custom_tool_call", "local_shell_call", "shell_call",
                        "apply_patch_call", "computer_call"})
_MAX_DEPTH = 64


def tool_call_in(value: Any, depth: int = 0) -> str | None:
    """A short name of the first tool call found anywhere in a JSON value, or None."""
    if depth > _MAX_DEPTH:  # nothing this deep is a provider reply; refuse rather than recurse on
        return "a reply nested too deeply to check"
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str) and kind in CALL_TYPES:
            return kind
        calls = value.get("tool_calls")
        if isinstance(calls, list) and calls:
            return "tool_calls"
        if isinstance(value.get("function_call"), dict):
            return "function_call"
        if "functionCall" in value:  # a Gemini part
            return "functionCall"
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        found = tool_call_in(item, depth + 1)
        if found:
            return found
    return None


def tool_call_in_body(raw: bytes) -> str | None:
    """A tool call in a whole reply body: one JSON value, or JSON Lines, or SSE ``data:`` lines."""
    text = raw.decode("utf-8", "replace")
    try:
        return tool_call_in(json.loads(text))
    except ValueError:
        pass
    except RecursionError:
        return "a reply nested too deeply to check"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("data:"):
            line = line[5:].strip()
        if not line or line[0] not in "[{":
            continue
        try:
            found = tool_call_in(json.loads(line))
        except (ValueError, RecursionError):
            continue
        if found:
            return found
    return None


def refusal(found: str, path: str) -> str:
    return (f"the reply to {path}, a path aegis does not decide, carries a tool call ({found}); "
            "withheld (fail closed)")


async def checked_stream(chunks: AsyncIterator[bytes], path: str, provider: str) -> AsyncIterator[bytes]:
    """Pass an event stream on, event by event, until one carries a tool call: then an error event, and the end."""
    async for ev in read_events(chunks):
        data = ev.json()
        found = tool_call_in(data) if data is not None else None
        if found:
            yield error_event(provider, "aegis: " + refusal(found, path))
            return
        yield ev.raw


def error_event(provider: str, message: str) -> bytes:
    """An error event the provider's SDK raises on (both SDKs raise on an ``error`` event)."""
    if provider in ("gemini", "code_assist", "vertex"):  # Google's shape; its clients read data lines only
        from aegis_cli.wrap.gemini_generate import error_json

        return encode(error_json(502, message))
    error: dict[str, Any] = {"type": "api_error", "message": message}
    if provider != "anthropic":
        error["code"] = None
    return encode({"type": "error", "error": error}, "error")
