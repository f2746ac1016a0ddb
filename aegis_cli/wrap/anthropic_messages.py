"""Anthropic Messages replies (``POST /v1/messages``): decide every ``tool_use`` block, JSON or stream.

A blocked ``tool_use`` block becomes a text block holding the note, at the same index, so the
content list keeps its shape and the stream's block indexes stay consistent. When no call is left,
``stop_reason`` ``tool_use`` becomes ``end_turn``: the SDK sees an ordinary finished turn.

Server tools (``server_tool_use``, ``mcp_tool_use``) ran at Anthropic before the reply was sent,
so there is nothing left to stop; they pass through.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from aegis_cli.wrap.sse import Held, HoldQueue, SSEEvent, encode, json_string, read_batches
from aegis_cli.wrap.tool_gate import Decide, DecidedAhead, ToolCall, Verdict, decide_each

PROVIDER, API = "anthropic", "messages"

#: Events that cannot carry a tool call, known by their exact bytes as Anthropic sends them (an event
#: line, one data line): a text or thinking delta, a text block's start, a block's stop, ping,
#: message_stop. These pass without being read or parsed, unless their index is a held ``tool_use``
#: block's. Matched whole: another key, a repeated "type", other spacing or escapes in a key, another
#: line, and the event is parsed and decided like any other.
_STRING = rb'"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"'
_passing = re.compile(
    rb'(?:event:[^\n]*\n)?data: ?(?:\{"type":"(?:ping|message_stop)"\}'
    rb'|\{"type":"content_block_(?:delta|start|stop)","index":(\d{1,9})'
    rb'(?:,"delta":\{"type":"(?:text_delta","text|thinking_delta","thinking)":' + _STRING + rb'\}'
    rb'|,"content_block":\{"type":"text","text":""\})?\})\n\n').fullmatch

#: A piece of a held ``tool_use`` block's input, known by its exact bytes as Anthropic sends it: read by
#: a match and one string scan rather than parsed. Only for an index that is held; matched whole.
_input_delta = re.compile(
    rb'(?:event:[^\n]*\n)?data: ?\{"type":"content_block_delta","index":(0|[1-9][0-9]{0,8}),'  # JSON's numbers
    rb'"delta":\{"type":"input_json_delta","partial_json":(' + _STRING + rb')\}\}\n\n').fullmatch


def _call(block: dict[str, Any], model: str, partial_json: str | None = None,
          incomplete: bool = False) -> ToolCall:
    name = block.get("name")
    call_id = str(block.get("id", ""))
    if not isinstance(name, str) or not name:
        return ToolCall(PROVIDER, API, call_id, str(name or "?"), None, "the tool call has no name", model)
    if incomplete:
        return ToolCall(PROVIDER, API, call_id, name, None, "the stream did not complete the call", model)
    arguments = block.get("input")
    if partial_json:  # streamed input replaces the (empty) input of content_block_start
        try:
            arguments = json.loads(partial_json)
        except ValueError:
            return ToolCall(PROVIDER, API, call_id, name, partial_json, "the call's input is not valid JSON", model)
    return ToolCall(PROVIDER, API, call_id, name, arguments, None, model)


def _verdicts_summary(kept: int, removed: int, stop_reason: Any) -> Any:
    return "end_turn" if stop_reason == "tool_use" and removed and not kept else stop_reason


async def _decide_content(content: list[Any], model: str, decide: Decide) -> tuple[list[Any], int, int]:
    """Every ``tool_use`` block decided: (content with refusals as text blocks, kept, removed)."""
    kept = removed = 0
    calls = [i for i, block in enumerate(content) if isinstance(block, dict) and block.get("type") == "tool_use"]
    verdicts = dict(zip(calls, await decide_each(decide, [_call(content[i], model) for i in calls]), strict=True))
    out: list[Any] = []
    for i, block in enumerate(content):
        verdict = verdicts.get(i)
        if verdict is None:
            out.append(block)
        elif verdict.allowed:
            kept += 1
            out.append(block)
        else:
            removed += 1
            out.append({"type": "text", "text": verdict.note})
    return out, kept, removed


async def rewrite_json(body: dict[str, Any], decide: Decide) -> dict[str, Any]:
    """Decide the tool calls in a non-streaming reply; returns the reply the agent gets."""
    content = body.get("content")
    # Not gated on "type": "message": the SDKs read the content of whatever this endpoint returns.
    if not isinstance(content, list):
        return body
    out, kept, removed = await _decide_content(content, str(body.get("model", "")), decide)
    if not removed:
        return body
    return {**body, "content": out, "stop_reason": _verdicts_summary(kept, removed, body.get("stop_reason"))}


def _replacement(index: int, note: str) -> bytes:
    return b"".join((
        encode({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
               "content_block_start"),
        encode({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": note}},
               "content_block_delta"),
        encode({"type": "content_block_stop", "index": index}, "content_block_stop"),
    ))


async def rewrite_stream(chunks: AsyncIterator[bytes], decide: Decide) -> AsyncIterator[bytes]:
    """Pass a Messages event stream through, holding each ``tool_use`` block until it is decided."""
    state = {"kept": 0, "removed": 0, "model": ""}
    decide = DecidedAhead(decide)  # the blocks complete in one read are decided together

    def block_call(held: Held) -> ToolCall:
        # Made once (decided ahead, then released): its input parsed once, the same call both times.
        incomplete = held.info.get("incomplete", False)
        made = held.info.get("call")
        if made is None or made[0] != incomplete:
            made = held.info["call"] = (incomplete, _call(held.info["block"], state["model"],
                                                          "".join(held.info["parts"]), incomplete))
        return made[1]

    def calls(held: Held) -> list[ToolCall]:
        if "message" in held.info:
            content = held.info["message"]["content"]
            return [_call(b, state["model"]) for b in content if isinstance(b, dict) and b.get("type") == "tool_use"]
        return [block_call(held)]

    async def release(held: Held) -> bytes:
        if "message" in held.info:  # message_start carrying content: the SDKs keep it in the final message
            ev, message = held.events[0], held.info["message"]
            content, kept, removed = await _decide_content(message["content"], state["model"], decide)
            state["kept"] += kept
            state["removed"] += removed
            if not removed:
                return ev.raw
            return encode({**(ev.json() or {}), "message": {**message, "content": content}}, ev.event)
        verdict: Verdict = await decide(block_call(held))
        if verdict.allowed and not held.info.get("incomplete"):
            state["kept"] += 1
            return b"".join(ev.raw for ev in held.events)
        state["removed"] += 1
        return _replacement(held.key, verdict.note)

    def finish(ev: SSEEvent) -> bytes:
        if not state["removed"]:  # no call removed so far: no stop reason to change
            return ev.raw
        data = ev.json()
        if ev.event == "message_delta" and isinstance(data, dict):
            delta = data.get("delta")
            if isinstance(delta, dict) and "stop_reason" in delta:
                new = _verdicts_summary(state["kept"], state["removed"], delta["stop_reason"])
                if new != delta["stop_reason"]:
                    return encode({**data, "delta": {**delta, "stop_reason": new}}, ev.event)
        return ev.raw

    queue = HoldQueue(release, finish, calls=calls, decide_ahead=decide.ahead)
    outs: list[bytes] = []  # passed while nothing waits: ahead of all the queue holds
    async for batch in read_batches(chunks):  # the events one read completed
        for ev in batch:
            if (m := _passing(ev.raw)) is not None and (m[1] is None or queue.held(int(m[1])) is None):
                # No tool call in it, none held at its index: not parsed; out as it came if nothing
                # waits ahead of it (``finish`` changes only a message_delta), else in its turn.
                if queue.idle:
                    outs.append(ev.raw)
                else:
                    queue.push(ev)
                continue
            if (m := _input_delta(ev.raw)) is not None and (held := queue.held(int(m[1]))) is not None \
                    and (part := json_string(m[2])) is not None:
                held.events.append(ev)  # as below: a held block's input, not parsed
                held.info["parts"].append(part)
                continue
            data = ev.json()
            kind = data.get("type") if isinstance(data, dict) else None
            index = data.get("index") if isinstance(data, dict) else None
            if kind == "message_start":
                message = data.get("message")
                if isinstance(message, dict):
                    state["model"] = str(message.get("model", ""))
                    if isinstance(message.get("content"), list) and any(
                            isinstance(b, dict) and b.get("type") == "tool_use" for b in message["content"]):
                        held = queue.hold(object(), ev, message=message)
                        queue.complete(held.key)
                        out, done = queue.drain_now(outs)
                        if out:
                            yield out
                        if not done:
                            async for out in queue.drain():
                                yield out
                        continue
            if kind == "content_block_start":
                block = data.get("content_block")
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    queue.hold(index, ev, block=block, parts=[])
                    continue
            held = queue.held(index) if kind in ("content_block_delta", "content_block_stop") else None
            if held is not None:
                held.events.append(ev)
                if kind == "content_block_delta":
                    delta = data.get("delta")
                    if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                        held.info["parts"].append(str(delta.get("partial_json", "")))
                else:
                    queue.complete(index)
            else:
                queue.push(ev)
        # The whole read first, so the calls it completes are decided together (one audit commit).
        if queue.deciding:  # decided at once, unless one has to wait: then drain() waits with keepalives
            out, done = queue.drain_now(outs)
            if out:
                yield out
            if not done:
                async for out in queue.drain():
                    yield out
        elif out := b"".join(outs) + queue.ready() if outs else queue.ready():  # no generator, no task
            outs.clear()
            yield out
    queue.end()
    out, done = queue.drain_now()
    if out:
        yield out
    if not done:
        async for out in queue.drain():
            yield out
