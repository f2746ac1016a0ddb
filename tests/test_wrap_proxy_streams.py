"""The reply rewriters of the model-API proxy, driven directly with recorded provider replies:
chunking, pass-through fidelity, truncated streams, unreadable calls, ordering, keepalives, fail-closed gate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from stream_gate import Recorder, chunked

from aegis_cli.audit import SQLiteAuditLogger
from aegis_cli.engine.models import Approval
from aegis_cli.engine.policy import Policy
from aegis_cli.wrap import anthropic_messages, openai_chat, openai_responses, sse
from aegis_cli.wrap.tool_gate import ToolCall, ToolGate, Verdict

REPLAYS = Path(__file__).parent / "data" / "provider_replays"
MODULES = {"anthropic_messages": anthropic_messages, "openai_chat": openai_chat,
           "openai_responses": openai_responses}

NO_DELETES = Policy.from_string("""\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
    reason: deleting files is not allowed
""")
ALLOW_ALL = Policy.from_string('version: "1"\ndefaults: {approval: auto, risk_level: low}\n')


def run_stream(name: str, policy: Policy, size: int = 64, data: bytes | None = None) -> tuple[bytes, Recorder]:
    rec = Recorder(policy)
    raw = data if data is not None else (REPLAYS / f"{name}.sse").read_bytes()

    async def go() -> bytes:
        return b"".join([out async for out in MODULES[name].rewrite_stream(chunked(raw, size), rec.decide)])

    return asyncio.run(go()), rec


def events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        lines = [ln[6:] for ln in block.splitlines() if ln.startswith("data: ")]
        if lines and lines[0] != "[DONE]":
            out.append(json.loads("\n".join(lines)))
    return out


# -- fidelity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anthropic_messages", "openai_responses"])
def test_allowed_stream_is_byte_identical(name: str) -> None:
    out, rec = run_stream(name, ALLOW_ALL)
    assert out == (REPLAYS / f"{name}.sse").read_bytes()
    assert [c.name for c in rec.calls] == ["get_weather", "delete_file"]


def test_allowed_chat_stream_carries_the_same_calls() -> None:
    out, _ = run_stream("openai_chat", ALLOW_ALL)
    calls: dict[int, dict[str, str]] = {}
    for ev in events(out):
        for choice in ev["choices"]:
            for tc in choice["delta"].get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
                slot["name"] += tc.get("function", {}).get("name") or ""
                slot["arguments"] += tc.get("function", {}).get("arguments") or ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"location": "Paris, France", "unit": "celsius"}),
        ("delete_file", {"path": "/srv/app/data.db"})]
    assert out.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("name", list(MODULES))
def test_chunking_does_not_matter(name: str) -> None:
    whole, _ = run_stream(name, NO_DELETES, size=1 << 20)
    for size in (1, 5, 333):
        out, _ = run_stream(name, NO_DELETES, size=size)
        # blocked-call notes carry a random id in Responses; compare everything else
        assert _scrub(out) == _scrub(whole), size


def _scrub(data: bytes) -> bytes:
    import re

    return re.sub(rb"msg_aegis_[0-9a-f]+", b"msg_aegis_X", data)


@pytest.mark.parametrize("name", list(MODULES))
def test_crlf_line_endings(name: str) -> None:
    raw = (REPLAYS / f"{name}.sse").read_bytes().replace(b"\n", b"\r\n")
    out, rec = run_stream(name, NO_DELETES, data=raw)
    assert [c.name for c in rec.calls] == ["get_weather", "delete_file"]
    assert b"was blocked and not executed" in out


# -- what the agent gets -------------------------------------------------------------------------------


def test_anthropic_indexes_and_stop_reason() -> None:
    out, _ = run_stream("anthropic_messages", Policy.from_string(
        'version: "1"\ndefaults: {approval: block, risk_level: high}\n'))
    evs = events(out)
    starts = [(e["index"], e["content_block"]["type"]) for e in evs if e["type"] == "content_block_start"]
    assert starts == [(0, "text"), (1, "text"), (2, "text")]
    stops = [e["index"] for e in evs if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert [e["delta"]["stop_reason"] for e in evs if e["type"] == "message_delta"] == ["end_turn"]
    assert not any(e.get("delta", {}).get("type") == "input_json_delta" for e in evs)


def test_responses_sequence_numbers_stay_consecutive_and_final_output_agrees() -> None:
    out, _ = run_stream("openai_responses", NO_DELETES)
    evs = events(out)
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    added = [(e["output_index"], e["item"]["type"]) for e in evs if e["type"] == "response.output_item.added"]
    assert added == [(0, "message"), (1, "function_call"), (2, "message")]
    note_id = next(e["item"]["id"] for e in evs if e["type"] == "response.output_item.done" and e["output_index"] == 2)
    final = evs[-1]["response"]["output"]
    assert [i["type"] for i in final] == ["message", "function_call", "message"]
    assert final[2]["id"] == note_id and "delete_file" in final[2]["content"][0]["text"]


def test_chat_finish_reason_becomes_stop_when_nothing_is_left() -> None:
    out, _ = run_stream("openai_chat", Policy.from_string('version: "1"\ndefaults: {approval: block}\n'))
    evs = events(out)
    finishes = [c["finish_reason"] for e in evs for c in e["choices"] if c.get("finish_reason")]
    assert finishes == ["stop"]
    assert not any(c["delta"].get("tool_calls") for e in evs for c in e["choices"])
    text = "".join(c["delta"].get("content") or "" for e in evs for c in e["choices"])
    assert text.startswith("Checking the weather and cleaning up.\n\n[aegis] Tool call `get_weather`")
    assert evs[-1]["usage"]["total_tokens"] == 240  # the usage chunk still arrives


def test_text_streams_before_the_call_is_decided() -> None:
    """Text must reach the agent while a later tool call is still being decided (a person is asked)."""
    raw = (REPLAYS / "anthropic_messages.sse").read_bytes()
    gate_open = asyncio.Event()
    seen_before_decision: list[bytes] = []

    async def decide(call: ToolCall) -> Verdict:
        await gate_open.wait()
        return await ToolGate(ALLOW_ALL, audit_factory=None, approvals=None).decide(call)

    async def go() -> None:
        stream = anthropic_messages.rewrite_stream(chunked(raw, 50), decide)
        async for out in stream:
            if not gate_open.is_set():
                seen_before_decision.append(out)
                if b"the old database." in out:
                    gate_open.set()

    asyncio.run(asyncio.wait_for(go(), 10))
    text = b"".join(seen_before_decision)
    assert b"the old database." in text and b"tool_use" not in text


def test_keepalive_while_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_INTERVAL", 0.02)
    raw = (REPLAYS / "openai_responses.sse").read_bytes()

    async def slow(call: ToolCall) -> Verdict:
        await asyncio.sleep(0.1)
        return await ToolGate(ALLOW_ALL, audit_factory=None, approvals=None).decide(call)

    async def go() -> list[bytes]:
        return [out async for out in openai_responses.rewrite_stream(chunked(raw, 4096), slow)]

    outs = asyncio.run(go())
    assert outs.count(sse.KEEPALIVE) >= 2
    assert b"".join(o for o in outs if o != sse.KEEPALIVE) == raw


# -- fail closed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,cut_after", [
    ("anthropic_messages", b'"partial_json":"{\\"path\\": \\"/srv/'),
    ("openai_chat", b'"arguments":"{\\"path\\":'),
    ("openai_responses", b'"delta":"srv/app/dat'),
])
def test_truncated_stream_drops_the_unfinished_call(name: str, cut_after: bytes) -> None:
    raw = (REPLAYS / f"{name}.sse").read_bytes()
    cut = raw.index(cut_after) + len(cut_after)
    cut = raw.index(b"\n\n", cut) + 2
    out, rec = run_stream(name, ALLOW_ALL, data=raw[:cut])
    assert b"get_weather" in out
    last = rec.calls[-1]
    assert last.name == "delete_file"
    if name != "openai_chat":  # chat fragments are decided as they stand: their JSON is cut
        assert last.error == "the stream did not complete the call"
    else:
        assert last.error == "the call's arguments are not valid JSON"
    assert b"/srv/" not in out.split(b"[aegis]")[0].split(b"get_weather")[-1]
    assert b"delete_file` was blocked" in out


def test_unreadable_arguments_are_blocked() -> None:
    body = json.loads((REPLAYS / "openai_chat.json").read_text())
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"location": "Par'
    rec = Recorder(ALLOW_ALL)
    out = asyncio.run(openai_chat.rewrite_json(body, rec.decide))
    message = out["choices"][0]["message"]
    assert [tc["function"]["name"] for tc in message["tool_calls"]] == ["delete_file"]
    assert "not valid JSON" in message["content"]


def test_legacy_function_call_is_decided() -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-3.5-turbo-0613", "choices": [{
        "index": 0, "finish_reason": "function_call",
        "message": {"role": "assistant", "content": None,
                    "function_call": {"name": "delete_file", "arguments": '{"path": "/etc/passwd"}'}}}]}
    out = asyncio.run(openai_chat.rewrite_json(body, Recorder(NO_DELETES).decide))
    choice = out["choices"][0]
    assert "function_call" not in choice["message"] and choice["finish_reason"] == "stop"


def test_audit_failure_blocks(tmp_path: Path) -> None:
    gate = ToolGate(ALLOW_ALL, audit_factory=lambda: SQLiteAuditLogger(tmp_path / "a.db"), approvals=None)
    call = ToolCall("anthropic", "messages", "toolu_1", "get_weather", {"location": "Paris"})
    assert asyncio.run(gate.decide(call)).allowed
    gate._audit.close()  # the database goes away under the proxy
    verdict = asyncio.run(gate.decide(call))
    assert not verdict.allowed and verdict.decision.approval is Approval.BLOCK
    assert "could not be audited" in verdict.note
    gate._pool.shutdown()


def test_approve_without_an_approver_is_denied() -> None:
    policy = Policy.from_string('version: "1"\ndefaults: {approval: approve, risk_level: medium}\n')
    verdict = asyncio.run(ToolGate(policy, audit_factory=None, approvals=None).decide(
        ToolCall("openai", "responses", "call_1", "get_weather", {})))
    assert not verdict.allowed and "not approved" in verdict.note
    assert verdict.approval is not None and verdict.approval["status"] == "denied"


def test_mcp_style_names_map_to_server_targets() -> None:
    policy = Policy.from_string("""\
version: "1"
defaults: {approval: auto}
rules:
  - match: {target: github, type: delete_*}
    approval: block
""")
    gate = ToolGate(policy, audit_factory=None, approvals=None)
    assert gate.action_for(ToolCall("anthropic", "messages", "t", "mcp__github__delete_repo", {})).target == "github"
    assert not asyncio.run(gate.decide(ToolCall("anthropic", "messages", "t", "mcp__github__delete_repo", {}))).allowed
    assert asyncio.run(gate.decide(ToolCall("anthropic", "messages", "t", "delete_repo", {}))).allowed


@pytest.mark.parametrize("name", ["anthropic_messages", "openai_responses"])
def test_calls_complete_in_one_read_are_decided_together_the_same_way(name: str) -> None:
    # Together: one audit transaction for the read's calls (ToolGate.decide_batch), the same reply as one by one.
    raw = (REPLAYS / f"{name}.sse").read_bytes()

    class Batches:
        """A decide with a ``batch``, as the proxy's is: remembers how the calls came to it."""

        def __init__(self) -> None:
            self.gate = ToolGate(NO_DELETES, audit_factory=None, approvals=None)
            self.decided: list[list[str]] = []

        async def __call__(self, call: ToolCall) -> Verdict:
            self.decided.append([call.name])
            return await self.gate.decide(call)

        async def batch(self, calls: list[ToolCall]) -> list[Verdict]:
            self.decided.append([call.name for call in calls])
            return await self.gate.decide_batch(calls)

    def run(size: int) -> tuple[bytes, list[list[str]]]:
        decide = Batches()

        async def go() -> bytes:
            return b"".join([out async for out in MODULES[name].rewrite_stream(chunked(raw, size), decide)])

        return asyncio.run(go()), decide.decided

    whole, together = run(len(raw))
    pieces, apart = run(7)
    assert together == [["get_weather", "delete_file"]]
    assert apart == [["get_weather"], ["delete_file"]]
    assert _without_ids(whole) == _without_ids(pieces)
    assert b"`delete_file` was blocked" in whole and b"get_weather" in whole


def _without_ids(data: bytes) -> bytes:
    import re

    return re.sub(rb"msg_aegis_[0-9a-f]+", b"msg_aegis_", data)


@pytest.mark.parametrize("name,start", [
    ("anthropic_messages", b'"content_block":{"type":"tool_use"'),
    ("openai_responses", b'"type":"response.output_item.added"'),
])
def test_a_second_call_started_at_an_open_calls_index_closes_it_and_the_stream_goes_on(name: str, start: bytes) -> None:
    # No provider sends this, but a stream must never stall on it: the first call, never completed,
    # is blocked; the one that took its place is decided as usual; everything after it comes through.
    blocks = (REPLAYS / f"{name}.sse").read_bytes().split(b"\n\n")
    last_start = max(i for i, b in enumerate(blocks) if start in b and b"delete_file" in b)
    blocks.insert(last_start + 2, blocks[last_start])  # again, after one argument delta: the first left open
    data = b"\n\n".join(blocks)
    for size in (1, 64, len(data)):
        out, rec = run_stream(name, ALLOW_ALL, size=size, data=data)
        assert [c.name for c in rec.calls] == ["get_weather", "delete_file", "delete_file"]
        assert rec.calls[1].error == "the stream did not complete the call" and rec.calls[2].error is None
        starts = [e for e in events(out) if e.get("type") in ("content_block_start", "response.output_item.added")
                  and (e.get("content_block") or e.get("item") or {}).get("name") == "delete_file"]
        assert len(starts) == 1 and b"delete_file` was blocked" in out  # the second start passed, the first replaced
        end = b"event: message_stop" if name == "anthropic_messages" else b"event: response.completed"
        assert end in out, "the stream was cut after the second start"
