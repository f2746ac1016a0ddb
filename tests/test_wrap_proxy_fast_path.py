"""The stream rewriters' fast path: events known by their exact text to carry no tool call (a text
delta, a ping) pass without being parsed. These tests show that it is taken, and that no tool call
gets past it undecided: not one disguised as a text delta (a repeated key, which JSON readers
resolve to the last), not one under a harmless ``event:`` name, not text at a held call's index,
and not when the event is split across reads. Each disguise is also run against a naive recogniser
(by prefix, by event name, without the held check), which lets the call through: the tests can fail."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from stream_gate import Recorder, chunked

from aegis_cli.engine.policy import Policy
from aegis_cli.wrap import anthropic_messages, openai_chat, openai_responses, sse

NO_DELETES = Policy.from_string("""\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
""")
SIZES = [1, 7, 64, 100_000]  # every byte its own read, odd cuts, a few events a read, all at once


def run(module: Any, data: bytes, size: int) -> tuple[bytes, Recorder]:
    rec = Recorder(NO_DELETES)

    async def go() -> bytes:
        return b"".join([out async for out in module.rewrite_stream(chunked(data, size), rec.decide)])

    return asyncio.run(go()), rec


def sse_stream(*events: tuple[str | None, str]) -> bytes:
    return b"".join((f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode()
                    for name, data in events)


def datas(out: bytes) -> list[Any]:
    """Each event's data as a JSON reader sees it (a repeated key: the last one counts)."""
    found = []
    for block in out.decode().split("\n\n"):
        lines = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if lines and lines[0] != "[DONE]":
            found.append(json.loads("\n".join(lines)))
    return found


def _walk(value: Any) -> Any:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def delete_calls(out: bytes) -> list[Any]:
    """Every delete_file call the agent would read in ``out``, in any provider's shape."""
    found = []
    for data in datas(out):
        for node in _walk(data):
            if isinstance(node, dict) and (node.get("name") == "delete_file"
                                           or (node.get("function") or {}).get("name") == "delete_file"):
                found.append(node)
    return found


# -- Anthropic Messages ------------------------------------------------------------------------------

_START = '{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"x","content":[]}}'
_DELETE = '{"type":"tool_use","id":"toolu_d","name":"delete_file","input":{}}'
_TEXT = '{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":"%s"}}'
_STOP = '{"type":"content_block_stop","index":%d}'
_END = [("message_delta", '{"type":"message_delta","delta":{"stop_reason":"tool_use"}}'),
        ("message_stop", '{"type":"message_stop"}')]

ANTHROPIC_DISGUISES = {
    # a text delta's keys first, then a second "type" and a tool_use block: read as a content_block_start
    "repeated type": [("content_block_delta", '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta",'
                       '"text":"hi"},"type":"content_block_start","content_block":' + _DELETE + '}'),
                      ("content_block_delta", '{"type":"content_block_delta","index":1,"delta":{"type":'
                       '"input_json_delta","partial_json":"{\\"path\\": \\"/srv/db\\"}"}}'),
                      ("content_block_stop", _STOP % 1)],
    # a harmless event name: the SDKs read the data's type
    "event name": [("ping", '{"type":"content_block_start","index":1,"content_block":' + _DELETE + '}'),
                   ("ping", _STOP % 1)],
    # text at the index of a held tool_use block belongs to that block: held with it, never ahead of it
    "text at a held index": [("content_block_start", '{"type":"content_block_start","index":1,"content_block":'
                              + _DELETE + '}'),
                             ("content_block_delta", _TEXT % (1, "SECRET")),
                             ("content_block_stop", _STOP % 1)],
}


def _anthropic(disguise: str) -> bytes:
    return sse_stream(("message_start", _START), ("content_block_start", '{"type":"content_block_start","index":0,'
                                                  '"content_block":{"type":"text","text":""}}'),
                      ("content_block_delta", _TEXT % (0, "Hello")), ("content_block_stop", _STOP % 0),
                      *ANTHROPIC_DISGUISES[disguise], *_END)


def test_anthropic_fast_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text deltas, ping and a text block's start and stop are passed unparsed; the rest is parsed."""
    parsed: list[str] = []
    original = sse.SSEEvent.json

    def json_spy(self: sse.SSEEvent) -> Any:
        parsed.append(self.data)
        return original(self)

    monkeypatch.setattr(sse.SSEEvent, "json", json_spy)
    data = sse_stream(("message_start", _START), ("ping", '{"type":"ping"}'),
                      ("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":'
                       '"text","text":""}}'), ("content_block_delta", _TEXT % (0, 'say \\"hi\\"')),
                      ("content_block_stop", _STOP % 0), *_END)
    out, rec = run(anthropic_messages, data, 64)
    assert out == data and rec.calls == []
    assert not any('"text_delta"' in text or '"ping"' in text or "content_block" in text for text in parsed)
    assert len(parsed) == 2  # message_start, message_delta
    assert any('"message_start"' in text for text in parsed)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("disguise", sorted(ANTHROPIC_DISGUISES))
def test_anthropic_disguised_call_is_decided(disguise: str, size: int) -> None:
    out, rec = run(anthropic_messages, _anthropic(disguise), size)
    assert [c.name for c in rec.calls] == ["delete_file"]
    assert delete_calls(out) == []
    assert b"SECRET" not in out
    assert any(isinstance(d, dict) and "[aegis]" in json.dumps(d) for d in datas(out))  # the note stands in its place


class Match:
    """What a stand-in recogniser hands the fast path: ``m[1]``, ``m[2]`` as a regex match would."""

    def __init__(self, *groups: bytes | None) -> None:
        self.groups = (None, *groups)

    def __getitem__(self, i: int) -> bytes | None:
        return self.groups[i]


_real_passing = anthropic_messages._passing
NAIVE_ANTHROPIC: dict[str, Callable[[bytes], Any]] = {
    # by the start of the data, index not checked
    "repeated type": lambda raw: Match(None) if b'data: {"type":"content_block_delta"' in raw else None,
    # by the event name
    "event name": lambda raw: Match(None) if raw.startswith((b"event: ping\n", b"event: content_block_delta\n"))
    else None,
    # the exact recogniser, without the held check
    "text at a held index": lambda raw: Match(None) if _real_passing(raw) else None,
}


@pytest.mark.parametrize("disguise", sorted(ANTHROPIC_DISGUISES))
def test_anthropic_a_naive_fast_path_would_let_the_call_through(disguise: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anthropic_messages, "_passing", NAIVE_ANTHROPIC[disguise])
    out, _rec = run(anthropic_messages, _anthropic(disguise), 64)
    assert delete_calls(out) or b"SECRET" in out


# -- OpenAI Responses ----------------------------------------------------------------------------------

_R_DELTA = ('{"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_1","output_index":%d,'
            '"content_index":0,"delta":"%s","logprobs":[]}')
_R_CALL = '{"type":"function_call","id":"fc_1","call_id":"call_1","name":"delete_file","arguments":"{}"}'
RESPONSES_DISGUISES = {
    "repeated type": [("response.output_text.delta", (_R_DELTA % (1, 0, "hi"))[:-1]
                       + ',"type":"response.output_item.done","output_index":1,"item":' + _R_CALL + '}')],
    "text at a held index": [("response.output_item.added", '{"type":"response.output_item.added","sequence_number":1,'
                              '"output_index":1,"item":' + _R_CALL.replace('"{}"', '""') + '}'),
                             ("response.output_text.delta", _R_DELTA % (2, 1, "SECRET")),
                             ("response.output_item.done", '{"type":"response.output_item.done","sequence_number":3,'
                              '"output_index":1,"item":' + _R_CALL + '}')],
}


def _responses(disguise: str) -> bytes:
    return sse_stream(("response.output_text.delta", _R_DELTA % (0, 0, "Hello")), *RESPONSES_DISGUISES[disguise])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("disguise", sorted(RESPONSES_DISGUISES))
def test_responses_disguised_call_is_decided(disguise: str, size: int) -> None:
    out, rec = run(openai_responses, _responses(disguise), size)
    assert [c.name for c in rec.calls] == ["delete_file"]
    assert delete_calls(out) == [] and b"SECRET" not in out
    numbers = [d["sequence_number"] for d in datas(out)]
    assert numbers == list(range(len(numbers)))  # renumbered after the replacement, fast-path events included


_real_text_delta = openai_responses._text_delta
_prefix_delta = re.compile(rb'.*\ndata: \{"type":"response\.output_text\.delta","sequence_number":(\d+),'
                           rb'"item_id":"[^"]*","output_index":(\d+)').match
NAIVE_RESPONSES: dict[str, Callable[[bytes], Any]] = {
    "repeated type": _prefix_delta,  # by the start of the data
    # the exact recogniser, without the held check (its index taken for one that holds nothing)
    "text at a held index": lambda raw: Match(m[1], b"99") if (m := _real_text_delta(raw)) else None,
}


@pytest.mark.parametrize("disguise", sorted(RESPONSES_DISGUISES))
def test_responses_a_naive_fast_path_would_let_the_call_through(disguise: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_responses, "_text_delta", NAIVE_RESPONSES[disguise])
    out, _rec = run(openai_responses, _responses(disguise), 64)
    assert delete_calls(out) or b"SECRET" in out


# -- OpenAI Chat Completions ---------------------------------------------------------------------------

_C_HEAD = '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt","system_fingerprint":null,'
_C_TEXT = _C_HEAD + '"choices":[{"index":0,"delta":{"content":"%s"},"logprobs":null,"finish_reason":null}]}'
_C_CALL = ('"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":'
           '{"name":"delete_file","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}]')


def _chat() -> bytes:
    # a text chunk's keys, then a second "choices" holding a finished tool call: the last one counts
    return sse_stream((None, _C_TEXT % "Hello"), (None, (_C_TEXT % "hi")[:-1] + "," + _C_CALL + "}"),
                      (None, "[DONE]"))


@pytest.mark.parametrize("size", SIZES)
def test_chat_disguised_call_is_decided(size: int) -> None:
    out, rec = run(openai_chat, _chat(), size)
    assert [c.name for c in rec.calls] == ["delete_file"]
    assert delete_calls(out) == []
    assert out.startswith(sse_stream((None, _C_TEXT % "Hello")))  # the plain text chunk passed as it came


def test_chat_a_naive_fast_path_would_let_the_call_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_chat, "_text_chunk", re.compile(rb'.*"choices":\[\{"index":(\d+),"delta":\{"content":'
                                                               rb'("[^"]*")').match)
    out, _rec = run(openai_chat, _chat(), 64)
    assert delete_calls(out)


# -- A held call's own pieces (Anthropic input_json_delta, Responses function_call_arguments.delta) --------
# These join the call they belong to without being parsed, only at an index that is held, and only when
# matched whole: a piece that is something more (a repeated "type" making it another call's start or end)
# is parsed, and that call decided; a recogniser by prefix would hand it on inside the allowed call.

_WEATHER = '{"type":"tool_use","id":"toolu_w","name":"get_weather","input":{}}'
_INPUT = '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"%s"}}'
ANTHROPIC_PIECES = [("content_block_start",
                     '{"type":"content_block_start","index":1,"content_block":' + _WEATHER + '}'),
                    ("content_block_delta", _INPUT % '{\\"city\\": \\"Par'),
                    ("content_block_delta", _INPUT % 'is \\\\u00e9\\"}')]
# the keys of a piece of block 1's input, then those of a delete_file block's start at index 2
ANTHROPIC_PIECE_DISGUISE = [("content_block_delta", (_INPUT % "")[:-1] + ',"type":"content_block_start","index":2,'
                             '"content_block":' + _DELETE + '}'), ("content_block_stop", _STOP % 2)]


def _anthropic_pieces(*extra: tuple[str, str]) -> bytes:
    return sse_stream(("message_start", _START), *ANTHROPIC_PIECES, *extra, ("content_block_stop", _STOP % 1), *_END)


def test_anthropic_held_input_is_not_parsed_and_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _anthropic_pieces()
    out, rec, slow_out, slow = taken_and_not(monkeypatch, anthropic_messages, "_input_delta", data, "input_json_delta")
    assert [(c.name, c.arguments) for c in rec.calls] == [(c.name, c.arguments) for c in slow.calls]
    assert rec.calls[0].arguments == {"city": "Paris \u00e9"}  # the string's escapes read as a parse reads them
    assert out == slow_out == data  # allowed: passed on as it came


@pytest.mark.parametrize("size", SIZES)
def test_anthropic_disguised_piece_is_decided(size: int) -> None:
    out, rec = run(anthropic_messages, _anthropic_pieces(*ANTHROPIC_PIECE_DISGUISE), size)
    assert "delete_file" in [c.name for c in rec.calls]
    assert delete_calls(out) == []


def test_anthropic_a_naive_piece_recogniser_would_let_the_call_through(monkeypatch: pytest.MonkeyPatch) -> None:
    naive = re.compile(rb'.*\ndata: \{"type":"content_block_delta","index":(\d+),"delta":\{"type":"input_json_delta",'
                       rb'"partial_json":("[^"]*")', re.S).match
    out, _rec = run_with(monkeypatch, anthropic_messages, "_input_delta", naive,
                         _anthropic_pieces(*ANTHROPIC_PIECE_DISGUISE))
    assert delete_calls(out)


_R_WEATHER = '{"type":"function_call","id":"fc_w","call_id":"call_w","name":"get_weather","arguments":"%s"}'
_R_ARGS = ('{"type":"response.function_call_arguments.delta","sequence_number":%d,"item_id":"fc_w","output_index":1,'
           '"delta":"%s"}')


def _responses_pieces(disguise: bool = False) -> bytes:
    events = [("response.output_item.added", '{"type":"response.output_item.added","sequence_number":0,'
               '"output_index":1,"item":' + _R_WEATHER % "" + '}'),
              ("response.function_call_arguments.delta", _R_ARGS % (1, '{\\"city\\":')),
              ("response.function_call_arguments.delta", _R_ARGS % (2, '\\"Paris\\"}'))]
    if disguise:
        events.append(("response.function_call_arguments.delta", (_R_ARGS % (3, ""))[:-1]
                       + ',"type":"response.output_item.done","item":' + _R_CALL + '}'))
    final = _R_WEATHER % '{\\"city\\":\\"Paris\\"}'
    events.append(("response.output_item.done", f'{{"type":"response.output_item.done","sequence_number":{len(events)},'
                   f'"output_index":1,"item":{final}}}'))
    return sse_stream(*events)


def test_responses_held_arguments_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _responses_pieces()
    out, rec, slow_out, slow = taken_and_not(monkeypatch, openai_responses, "_arguments_delta", data,
                                             "function_call_arguments.delta")
    assert [(c.name, c.arguments) for c in rec.calls] == [(c.name, c.arguments) for c in slow.calls] \
        == [("get_weather", {"city": "Paris"})]
    assert out == slow_out == data


@pytest.mark.parametrize("size", SIZES)
def test_responses_disguised_piece_is_decided(size: int) -> None:
    out, rec = run(openai_responses, _responses_pieces(disguise=True), size)
    assert "delete_file" in [c.name for c in rec.calls]
    assert delete_calls(out) == []
    numbers = [d["sequence_number"] for d in datas(out)]
    assert numbers == list(range(len(numbers)))


def test_responses_a_naive_piece_recogniser_would_let_the_call_through(monkeypatch: pytest.MonkeyPatch) -> None:
    naive = re.compile(rb'.*\ndata: \{"type":"response\.function_call_arguments\.delta","sequence_number":(\d+),'
                       rb'"item_id":"[^"]*","output_index":(\d+)', re.S).match
    out, _rec = run_with(monkeypatch, openai_responses, "_arguments_delta", naive, _responses_pieces(disguise=True))
    assert delete_calls(out)


def taken_and_not(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, data: bytes,
                  marker: str) -> tuple[bytes, Recorder, bytes, Recorder]:
    """``data`` through the module's fast path (which must parse no event holding ``marker``) and
    with its recogniser ``name`` turned off (every event parsed): (out, calls) of each, to compare."""
    slow_out, slow = run_with(monkeypatch, module, name, lambda raw: None, data)
    parsed: list[str] = []
    original = sse.SSEEvent.json
    monkeypatch.setattr(sse.SSEEvent, "json", lambda self: (parsed.append(self.data), original(self))[1])
    out, rec = run(module, data, 64)
    assert not any(marker in text for text in parsed)  # taken
    return out, rec, slow_out, slow


def run_with(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, recogniser: Callable[[bytes], Any],
             data: bytes) -> tuple[bytes, Recorder]:
    """``run`` with the module's recogniser ``name`` replaced (then restored)."""
    with monkeypatch.context() as patch:
        patch.setattr(module, name, recogniser)
        return run(module, data, 64)


_C_START = _C_HEAD + ('"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_w","type":"function",'
                      '"function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}')
_C_ARGS = _C_HEAD + ('"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"%s"}}]},'
                     '"logprobs":null,"finish_reason":null}]}')
_C_FINISH = _C_HEAD + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}'
# an arguments piece's keys, then a second "choices" (the last one counts) holding a delete_file call
_C_DISGUISE = (_C_ARGS % "")[:-1] + ',"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_d",' \
    '"type":"function","function":{"name":"delete_file","arguments":"{}"}}]},"logprobs":null,"finish_reason":null}]}'


def _chat_pieces(disguise: bool = False) -> bytes:
    events = [(None, _C_START), (None, _C_ARGS % '{\\"city\\": \\"Par'), (None, _C_ARGS % 'is \\\\u00e9\\"}')]
    return sse_stream(*events, *([(None, _C_DISGUISE)] if disguise else []), (None, _C_FINISH), (None, "[DONE]"))


def test_chat_held_arguments_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _chat_pieces()
    out, rec, slow_out, slow = taken_and_not(monkeypatch, openai_chat, "_arguments_chunk", data, '{"arguments":')
    assert [(c.name, c.arguments) for c in rec.calls] == [(c.name, c.arguments) for c in slow.calls] \
        == [("get_weather", {"city": "Paris \u00e9"})]
    assert out == slow_out


@pytest.mark.parametrize("size", SIZES)
def test_chat_disguised_piece_is_decided(size: int) -> None:
    out, rec = run(openai_chat, _chat_pieces(disguise=True), size)
    assert sorted(c.name for c in rec.calls) == ["delete_file", "get_weather"]
    assert delete_calls(out) == []


def test_chat_a_naive_piece_recogniser_would_leave_the_call_undecided(monkeypatch: pytest.MonkeyPatch) -> None:
    naive = re.compile(rb'.*"choices":\[\{"index":(\d+),"delta":\{"tool_calls":\[\{"index":(\d+),"function":'
                       rb'\{"arguments":("[^"]*")', re.S).match
    _out, rec = run_with(monkeypatch, openai_chat, "_arguments_chunk", naive, _chat_pieces(disguise=True))
    assert "delete_file" not in [c.name for c in rec.calls]
