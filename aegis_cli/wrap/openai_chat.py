"""OpenAI Chat Completions replies (``POST /chat/completions``): decide every tool call, JSON or stream.

Kept calls stay (renumbered from 0 in a stream, as the SDK indexes them by position); blocked
calls are removed and their notes added to the message's text. When a choice has no call left,
``finish_reason`` ``tool_calls`` (or the legacy ``function_call``) becomes ``stop``.

In a stream the provider never says when one call is complete, only when the choice finishes, so
tool-call fragments are collected per choice and decided at its ``finish_reason`` (or at the end
of the stream); text passes through as it arrives.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from aegis_cli.wrap import eager
from aegis_cli.wrap.sse import SSEEvent, await_with_keepalive, encode, json_string, read_batches
from aegis_cli.wrap.tool_gate import Decide, ToolCall, Verdict, decide_each

PROVIDER, API = "openai", "chat.completions"
_CALL_FINISHES = ("tool_calls", "function_call")
_STR = rb'"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"'
#: A chunk of text, known by its exact bytes as OpenAI sends it (one data line): one choice whose
#: delta holds only ``content``. It cannot carry a call, so it passes without being read or parsed.
#: Matched whole: any other key (a tool call, a finish reason, a second choice) and the chunk is
#: parsed as any other.
_text_chunk = re.compile(
    rb'(?:event:[^\n]*\n)?data: ?\{"id":' + _STR + rb',"object":"chat\.completion\.chunk","created":\d{1,12},'
    rb'"model":' + _STR + rb',(?:"service_tier":' + _STR + rb',)?(?:"system_fingerprint":(?:' + _STR + rb'|null),)?'
    rb'"choices":\[\{"index":(\d{1,9}),"delta":\{"content":(' + _STR + rb')\},"logprobs":null,'
    rb'"finish_reason":null\}\](?:,"obfuscation":' + _STR + rb')?\}\n\n').fullmatch

#: A piece of one held call's arguments (one choice, one tool call, only ``function.arguments``), known by
#: its exact bytes: added to that call without the chunk being parsed, when the call is already held
#: with string arguments; anything else (a new call, a name, a finish) is parsed. Matched whole.
_NUMBER = rb'(0|[1-9][0-9]{0,8})'  # as JSON writes one: no leading zero
_arguments_chunk = re.compile(
    rb'(?:event:[^\n]*\n)?data: ?\{"id":' + _STR + rb',"object":"chat\.completion\.chunk","created":\d{1,12},'
    rb'"model":' + _STR + rb',(?:"service_tier":' + _STR + rb',)?(?:"system_fingerprint":(?:' + _STR + rb'|null),)?'
    rb'"choices":\[\{"index":' + _NUMBER + rb',"delta":\{"tool_calls":\[\{"index":' + _NUMBER
    + rb',"function":\{"arguments":(' + _STR + rb')\}\}\]\},"logprobs":null,"finish_reason":null\}\]'
    rb'(?:,"obfuscation":' + _STR + rb')?\}\n\n').fullmatch


def _call(tc: dict[str, Any], model: str) -> ToolCall:
    """A ``tool_calls[]`` entry (function or custom) or a legacy ``function_call`` (``type`` absent)."""
    call_id = str(tc.get("id", ""))
    if tc.get("type") == "custom":
        custom = tc.get("custom") if isinstance(tc.get("custom"), dict) else {}
        name = custom.get("name")
        arguments: Any = {"input": custom.get("input", "")}
        raw = None
    else:
        fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
        name = fn.get("name")
        raw = fn.get("arguments")
        arguments = raw
    if not isinstance(name, str) or not name:
        return ToolCall(PROVIDER, API, call_id, str(name or "?"), None, "the tool call has no name", model)
    if isinstance(raw, str) and raw.strip():
        try:
            arguments = json.loads(raw)
        except ValueError:
            return ToolCall(PROVIDER, API, call_id, name, raw, "the call's arguments are not valid JSON", model)
    return ToolCall(PROVIDER, API, call_id, name, arguments, None, model)


def _join_notes(content: Any, notes: list[str]) -> str:
    text = "\n\n".join(notes)
    return f"{content}\n\n{text}" if isinstance(content, str) and content else text


async def _decide_all(calls: list[dict[str, Any]], model: str, decide: Decide) -> list[Verdict]:
    return await decide_each(decide, [_call(tc, model) for tc in calls])


async def rewrite_json(body: dict[str, Any], decide: Decide) -> dict[str, Any]:
    """Decide the tool calls in a non-streaming completion; returns the completion the agent gets."""
    choices = body.get("choices")
    if not isinstance(choices, list):
        return body
    model = str(body.get("model", ""))
    changed = False
    out_choices = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            out_choices.append(choice)
            continue
        calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
        legacy = message.get("function_call") if isinstance(message.get("function_call"), dict) else None
        verdicts = await _decide_all([*calls, *([legacy] if legacy is not None else [])], model, decide)
        legacy_verdict = verdicts.pop() if legacy is not None else None
        notes = [v.note for v in [*verdicts, legacy_verdict] if v is not None and not v.allowed]
        if not notes:
            out_choices.append(choice)
            continue
        changed = True
        message = dict(message)
        kept = [tc for tc, v in zip(calls, verdicts, strict=True) if v.allowed]
        if calls:
            if kept:
                message["tool_calls"] = kept
            else:
                message.pop("tool_calls", None)
        if legacy_verdict is not None and not legacy_verdict.allowed:
            message.pop("function_call", None)
        message["content"] = _join_notes(message.get("content"), notes)
        choice = {**choice, "message": message}
        if choice.get("finish_reason") in _CALL_FINISHES and not kept and "function_call" not in message:
            choice["finish_reason"] = "stop"
        out_choices.append(choice)
    return {**body, "choices": out_choices} if changed else body


class _Choice:
    """Tool-call fragments of one streamed choice, merged by index."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}
        self.legacy: dict[str, Any] | None = None

    def add(self, fragment: dict[str, Any]) -> None:
        idx = fragment.get("index", 0)
        call = self.calls.setdefault(idx if isinstance(idx, int) else 0, {})
        _merge(call, {k: v for k, v in fragment.items() if k != "index"})

    def add_legacy(self, fragment: dict[str, Any]) -> None:
        if self.legacy is None:
            self.legacy = {}
        _merge(self.legacy, fragment)

    def __bool__(self) -> bool:
        return bool(self.calls) or self.legacy is not None


def _merge(into: dict[str, Any], fragment: dict[str, Any]) -> None:
    """Streamed fields arrive in pieces: strings concatenate, objects merge, the rest is replaced."""
    for key, value in fragment.items():
        old = into.get(key)
        if isinstance(value, str) and isinstance(old, str) and key in ("arguments", "input", "name"):
            into[key] = old + value
        elif isinstance(value, dict) and isinstance(old, dict):
            _merge(old, value)
        elif value is not None or key not in into:
            into[key] = _copied(value)


def _copied(value: Any) -> Any:
    """A copy of parsed JSON (``copy.deepcopy`` for what ``json`` makes, at a fraction of its cost)."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value  # str, int, float, bool, None: immutable


async def rewrite_stream(chunks: AsyncIterator[bytes], decide: Decide) -> AsyncIterator[bytes]:
    """Pass a chat completion chunk stream through, holding tool calls until their choice finishes."""
    pending: dict[int, _Choice] = {}
    text_seen: set[int] = set()
    last: list[SSEEvent] = []  # the latest chunk (its id, model ...: the template of chunks aegis writes)

    def template() -> dict[str, Any]:
        data = last[0].json() if last else None
        return data if isinstance(data, dict) else {}

    def chunk(index: int, delta: dict[str, Any]) -> bytes:
        body = {k: v for k, v in template().items() if k not in ("choices", "usage")}
        return encode({**body, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})

    async def release(index: int, finish: dict[str, Any] | None) -> AsyncIterator[bytes]:
        """Decide one choice's held calls; emit the kept ones, the notes, then the finishing chunk."""
        state = pending.pop(index, _Choice())
        ordered = [state.calls[i] for i in sorted(state.calls)]
        calls = ordered + ([state.legacy] if state.legacy is not None else [])
        # Run at once: a decision that needs no person never waits; one that does gets keepalives.
        finished, verdicts = eager.start(_decide_all(calls, str(template().get("model", "")), decide))
        if not finished:
            async for out in await_with_keepalive(verdicts):
                if isinstance(out, bytes):
                    yield out
                else:
                    verdicts = out.value
        kept = [tc for tc, v in zip(ordered, verdicts, strict=False) if v.allowed]
        legacy_kept = state.legacy is not None and verdicts[-1].allowed
        notes = [v.note for v in verdicts if not v.allowed]
        if notes:
            sep = "\n\n" if index in text_seen else ""
            yield chunk(index, {"content": sep + "\n\n".join(notes)})
        for i, tc in enumerate(kept):
            yield chunk(index, {"tool_calls": [{**tc, "index": i}]})
        if legacy_kept and state.legacy is not None:
            yield chunk(index, {"function_call": state.legacy})
        if finish is not None:
            choice = finish["choices"][0]
            if notes and not kept and not legacy_kept and choice.get("finish_reason") in _CALL_FINISHES:
                finish = {**finish, "choices": [{**choice, "finish_reason": "stop"}]}
            yield encode(finish)

    outs: list[bytes] = []  # what one read gives the agent, sent at once (or before a decision is awaited)
    async for batch in read_batches(chunks):  # the events one read completed
        for ev in batch:
            if b'"delta":{"content":' in ev.raw and (m := _text_chunk(ev.raw)) is not None:  # text only: not read
                if len(m[2]) > 2:
                    text_seen.add(int(m[1]))
                last[:] = [ev]
                outs.append(ev.raw)
                continue
            if b'"function":{"arguments":' in ev.raw and (m := _arguments_chunk(ev.raw)) is not None \
                    and (state := pending.get(int(m[1]))) is not None \
                    and isinstance(fn := state.calls.get(int(m[2]), {}).get("function"), dict) \
                    and isinstance(fn.get("arguments"), str) and (piece := json_string(m[3])) is not None:
                fn["arguments"] += piece  # as _merge would; the chunk itself carries nothing else
                last[:] = [ev]
                continue
            data = ev.json()
            choices = data.get("choices") if isinstance(data, dict) else None
            if not isinstance(choices, list):
                if ev.data.strip() == "[DONE]":  # a stream cut short of finish_reason: decide what is held
                    for index in list(pending):
                        if outs:
                            yield b"".join(outs)
                            outs.clear()
                        async for out in release(index, None):
                            yield out
                outs.append(ev.raw)
                continue
            last[:] = [ev]
            changed = False
            passing: list[Any] = []
            finishing: list[dict[str, Any]] = []
            for choice in choices:
                if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
                    passing.append(choice)
                    continue
                index = choice.get("index", 0)
                delta = dict(choice["delta"])
                if delta.get("content"):
                    text_seen.add(index)
                fragments = delta.pop("tool_calls", None)
                legacy = delta.pop("function_call", None)
                if fragments or legacy:
                    changed = True
                    state = pending.setdefault(index, _Choice())
                    for fragment in fragments if isinstance(fragments, list) else []:
                        if isinstance(fragment, dict):
                            state.add(fragment)
                    if isinstance(legacy, dict):
                        state.add_legacy(legacy)
                stripped = {**choice, "delta": delta}
                if choice.get("finish_reason") is not None and index in pending:
                    changed = True
                    finishing.append(stripped)
                elif not (fragments or legacy):
                    passing.append(choice)
                elif any(v is not None for v in delta.values()) or choice.get("logprobs"):
                    passing.append(stripped)  # the role, or text that came with the fragment
            if not changed:
                outs.append(ev.raw)
                continue
            rest = {k: v for k, v in data.items() if k != "usage"} if finishing else data
            if passing or (not finishing and data.get("usage")):
                outs.append(encode({**rest, "choices": passing}))
            for i, fin in enumerate(finishing):
                last_one = i == len(finishing) - 1
                if outs:
                    yield b"".join(outs)
                    outs.clear()
                async for out in release(fin.get("index", 0), {**(data if last_one else rest), "choices": [fin]}):
                    yield out
        if outs:
            yield b"".join(outs)
            outs.clear()
    for index in list(pending):  # neither [DONE] nor finish_reason: still decide, never pass unchecked
        async for out in release(index, None):
            yield out
