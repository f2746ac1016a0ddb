"""OpenAI Responses replies (``POST /responses``): decide every call the client would execute.

That is ``function_call`` and ``custom_tool_call`` items, plus the built-in tools the *client* runs
(``local_shell_call``, ``shell_call``, ``apply_patch_call``, ``computer_call``). Hosted tools
(web search, file search, code interpreter, remote MCP) ran at OpenAI already and pass through.

A blocked item becomes an assistant ``message`` item holding the note, at the same output index,
in the stream (``output_item.added`` ... ``output_item.done``) and in the final ``response.output``.
Events after a replacement are renumbered so ``sequence_number`` stays consecutive.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

from aegis_cli.wrap.sse import Held, HoldQueue, SSEEvent, encode, read_batches
from aegis_cli.wrap.tool_gate import Decide, DecidedAhead, ToolCall, Verdict, decide_each

PROVIDER, API = "openai", "responses"

#: item type -> (tool name or None to read item["name"], the field holding the arguments)
CALL_ITEMS: dict[str, tuple[str | None, str]] = {
    "function_call": (None, "arguments"),
    "custom_tool_call": (None, "input"),
    "local_shell_call": ("local_shell", "action"),
    "shell_call": ("shell", "action"),
    "apply_patch_call": ("apply_patch", "operation"),
    "computer_call": ("computer", "action"),
}
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
#: A text delta, known by its exact bytes as OpenAI sends it (an event line, one data line): it cannot
#: carry a call, so it passes without being read or parsed (its sequence number and output index read
#: from the match), unless its output index is a held call's. Matched whole: anything else and the
#: event is parsed as any other.
_STRING = rb'"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"'
_text_delta = re.compile(
    rb'(?:event:[^\n]*\n)?data: ?\{"type":"response\.output_text\.delta","sequence_number":(\d{1,9}),'
    rb'"item_id":' + _STRING + rb',"output_index":(\d{1,9}),"content_index":\d{1,9},"delta":' + _STRING
    + rb',"logprobs":\[\](?:,"obfuscation":' + _STRING + rb')?\}\n\n').fullmatch

#: A piece of a held call's arguments, known by its exact bytes: it joins the held events without being
#: parsed (the call is decided from its ``output_item.done``). Only for an index that is held; matched whole.
_NUMBER = rb'(0|[1-9][0-9]{0,8})'  # as JSON writes one: no leading zero
_arguments_delta = re.compile(
    rb'(?:event:[^\n]*\n)?data: ?\{"type":"response\.function_call_arguments\.delta","sequence_number":' + _NUMBER
    + rb',"item_id":' + _STRING + rb',"output_index":' + _NUMBER + rb',"delta":' + _STRING
    + rb'(?:,"obfuscation":' + _STRING + rb')?\}\n\n').fullmatch


def is_call(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") in CALL_ITEMS


def _call(item: dict[str, Any], model: str, incomplete: bool = False) -> ToolCall:
    fixed_name, field = CALL_ITEMS[item["type"]]
    name = fixed_name or item.get("name")
    call_id = str(item.get("call_id") or item.get("id") or "")
    if not isinstance(name, str) or not name:
        return ToolCall(PROVIDER, API, call_id, str(name or "?"), None, "the tool call has no name", model)
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace.startswith("mcp__"):
        # A tool in a namespace (Codex puts each MCP server's tools in one, "mcp__<server>") is called
        # by its own name with the namespace beside it: the full name is what Codex's hook reports.
        name = f"{namespace.removesuffix('__')}__{name}"
    if incomplete:
        return ToolCall(PROVIDER, API, call_id, name, None, "the stream did not complete the call", model)
    value = item.get(field)
    if item["type"] == "custom_tool_call":
        return ToolCall(PROVIDER, API, call_id, name, {"input": value}, None, model)
    if field == "arguments" and isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except ValueError:
            return ToolCall(PROVIDER, API, call_id, name, value, "the call's arguments are not valid JSON", model)
    return ToolCall(PROVIDER, API, call_id, name, value, None, model)


def note_item(note: str) -> dict[str, Any]:
    """The assistant message that stands where a blocked call was."""
    return {"id": f"msg_aegis_{secrets.token_hex(12)}", "type": "message", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": note, "annotations": []}]}


async def _rewrite_output(response: dict[str, Any], decide: Decide,
                          decided: dict[int, tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """Replace blocked calls in ``response.output``. ``decided``: output index -> (call id, replacement or None)
    for calls already decided in the stream; any other call is decided now."""
    output = response.get("output")
    if not isinstance(output, list):
        return response
    model = str(response.get("model", ""))
    new_output: list[Any] = []
    changed = False
    fresh: list[int] = []  # the calls not decided in the stream already: decided now, together
    for i, item in enumerate(output):
        if is_call(item):
            known = decided.get(i)
            if known is None or known[0] != str(item.get("call_id") or item.get("id") or ""):
                fresh.append(i)
    verdicts = dict(zip(fresh, await decide_each(decide, [_call(output[i], model) for i in fresh]), strict=True))
    for i, item in enumerate(output):
        if not is_call(item):
            new_output.append(item)
            continue
        verdict = verdicts.get(i)
        if verdict is None:  # decided in the stream: its replacement stands
            replacement: dict[str, Any] | None = decided[i][1]
        elif verdict.allowed:
            replacement = None
        else:
            replacement = note_item(verdict.note)
        if replacement is not None:
            changed = True
            new_output.append(replacement)
        else:
            new_output.append(item)
    return {**response, "output": new_output} if changed else response


async def rewrite_json(body: dict[str, Any], decide: Decide) -> dict[str, Any]:
    """Decide the calls in a non-streaming response; returns the response the agent gets."""
    # Not gated on "object": "response": the SDKs read the output of whatever this endpoint returns.
    return await _rewrite_output(body, decide, {})


def _replacement_events(index: int, item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    note = item["content"][0]["text"]
    part = {"type": "output_text", "text": "", "annotations": []}
    ids = {"item_id": item["id"], "output_index": index}
    return [
        ("response.output_item.added", {"output_index": index,
                                        "item": {**item, "status": "in_progress", "content": []}}),
        ("response.content_part.added", {**ids, "content_index": 0, "part": part}),
        ("response.output_text.delta", {**ids, "content_index": 0, "delta": note, "logprobs": []}),
        ("response.output_text.done", {**ids, "content_index": 0, "text": note, "logprobs": []}),
        ("response.content_part.done", {**ids, "content_index": 0, "part": {**part, "text": note}}),
        ("response.output_item.done", {"output_index": index, "item": item}),
    ]


async def rewrite_stream(chunks: AsyncIterator[bytes], decide: Decide) -> AsyncIterator[bytes]:
    """Pass a Responses event stream through, holding each call item until it is done and decided."""
    seq: dict[str, int | None] = {"next": None}
    decided: dict[int, tuple[str, dict[str, Any] | None]] = {}
    model = {"name": ""}
    decide = DecidedAhead(decide)  # the call items complete in one read are decided together

    def numbered(ev: SSEEvent) -> bytes:
        """The event as emitted: re-serialized only when its sequence number must change."""
        number = ev.seen  # read from a text delta's exact text, else parsed
        if number is None:
            data = ev.json()
            if not isinstance(data, dict) or not isinstance(data.get("sequence_number"), int):
                return ev.raw
            number = data["sequence_number"]
        expected = seq["next"]
        seq["next"] = (number if expected is None else expected) + 1
        if expected is None or number == expected:
            return ev.raw
        return encode({**ev.json(), "sequence_number": expected}, ev.event)

    def fresh(kind: str, data: dict[str, Any]) -> bytes:
        number = seq["next"] if seq["next"] is not None else 0
        seq["next"] = number + 1
        return encode({"type": kind, **data, "sequence_number": number}, kind)

    def call_of(held: Held) -> ToolCall:
        # Made once (decided ahead, then released): its arguments parsed once, the same call both times.
        item = held.info.get("final") or held.info["item"]
        incomplete = bool(held.info.get("incomplete")) or "final" not in held.info
        made = held.info.get("call")
        if made is None or made[0] != incomplete or made[1] is not item:
            made = held.info["call"] = (incomplete, item, _call(item, model["name"], incomplete))
        return made[2]

    def calls(held: Held) -> list[ToolCall]:
        # A terminal event's calls are the ones not decided before it: only known once those are.
        return [] if held.key == "final" else [call_of(held)]

    async def release(held: Held) -> bytes:
        if held.key == "final":  # a terminal event: make its output agree with what was streamed
            ev = held.events[0]
            data = ev.json()
            response = await _rewrite_output(data["response"], decide, decided)
            if response is data["response"]:
                return numbered(ev)
            return fresh(data["type"], {**data, "response": response})
        item = held.info.get("final") or held.info["item"]
        incomplete = bool(held.info.get("incomplete")) or "final" not in held.info
        verdict: Verdict = await decide(call_of(held))
        call_id = str(item.get("call_id") or item.get("id") or "")
        if verdict.allowed and not incomplete:
            decided[held.key] = (call_id, None)
            return b"".join(numbered(ev) for ev in held.events)
        replacement = note_item(verdict.note)
        decided[held.key] = (call_id, replacement)
        index = held.info.get("index", held.key)
        return b"".join(fresh(kind, data) for kind, data in _replacement_events(index, replacement))

    queue = HoldQueue(release, numbered, calls=calls, decide_ahead=decide.ahead)
    outs: list[bytes] = []  # passed while nothing waits: ahead of all the queue holds
    async for batch in read_batches(chunks):  # the events one read completed
        for ev in batch:
            if (m := _text_delta(ev.raw)) is not None and queue.held(int(m[2])) is None:
                # Text, at no held call's index: not parsed; out now if nothing waits ahead of it.
                ev.seen = int(m[1])
                if queue.idle:
                    outs.append(numbered(ev))
                else:
                    queue.push(ev)
                continue
            if (m := _arguments_delta(ev.raw)) is not None and (held := queue.held(int(m[2]))) is not None:
                ev.seen = int(m[1])  # as below: a held call's event, not parsed
                held.events.append(ev)
                continue
            data = ev.json()
            kind = data.get("type") if isinstance(data, dict) else None
            index = data.get("output_index") if isinstance(data, dict) else None
            if kind == "response.created" and isinstance(data.get("response"), dict):
                model["name"] = str(data["response"].get("model", ""))
            if not isinstance(index, int) and (kind or "").startswith("response.output_item.") \
                    and is_call(data.get("item")):
                # A call item aegis cannot place (no integer output_index): decide it on its own, now.
                held = queue.hold(object(), ev, item=data["item"], final=data["item"], index=index)
                queue.complete(held.key)
            elif kind == "response.output_item.added" and is_call(data.get("item")) and isinstance(index, int):
                queue.hold(index, ev, item=data["item"])
            elif kind in _FINAL_EVENTS and isinstance(data.get("response"), dict):
                queue.hold("final", ev)
                queue.complete("final")
            elif isinstance(index, int) and (held := queue.held(index)) is not None:
                held.events.append(ev)
                if kind == "response.output_item.done" and isinstance(data.get("item"), dict):
                    held.info["final"] = data["item"]
                    queue.complete(index)
            elif kind == "response.output_item.done" and is_call(data.get("item")):
                # A finished call that was never announced by output_item.added: decide it all the same.
                queue.hold(index, ev, item=data["item"], final=data["item"])
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
