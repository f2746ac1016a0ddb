"""adapters.openai: run_tool_calls on the real openai SDK's objects, returned by a local stand-in server speaking
Chat Completions and Responses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

from adapter_standins import (
    DONE,
    Gate,
    ScriptedModel,
    audit_trail,
    first_turn_calls,
    make_runtime,
    tool_results,
    verify_audit,
)
from openai import AsyncOpenAI, OpenAI

from aegis_cli.adapters.openai import arun_tool_calls, run_tool_calls

REFUSED_DELETE = "aegis refused delete_file on delete_file: blocked by rule 'no-deletes': deleting files is not allowed"
CALLS = [("get_weather", {"city": "Paris"}), ("delete_file", {"path": "/etc/passwd"}),
         ("send_email", {"to": "a@example.com", "source": "newsletter"}), ("launch_rockets", {})]
CHAT_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
              for n in ("get_weather", "delete_file", "send_email")]
RESPONSES_TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object"}, "strict": False}
                   for n in ("get_weather", "delete_file", "send_email")]


class Functions:
    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, Any]]] = []

    def get_weather(self, city: str) -> dict[str, Any]:
        self.hits.append(("get_weather", {"city": city}))
        return {"city": city, "sky": "sunny"}

    def delete_file(self, path: str) -> str:
        self.hits.append(("delete_file", {"path": path}))
        return "deleted"

    async def send_email(self, to: str, source: str = "") -> str:  # async, and an argument named "source"
        self.hits.append(("send_email", {"to": to, "source": source}))
        return f"sent to {to}"

    def all(self) -> list[Any]:
        return [self.get_weather, self.delete_file, self.send_email]


def decisions(db: Path) -> list[dict[str, Any]]:
    rows = audit_trail(db)
    out = [{**r, "events": []} for r in rows if r["kind"] == "decision"]
    by_id = {r["id"]: r for r in out}
    for r in rows:
        if r["kind"] != "decision" and r["decision_id"] in by_id:
            by_id[r["decision_id"]]["events"].append((r["kind"], r["data"]["status"]))
    return out


def check_trail(db: Path, api: str) -> None:
    recs = decisions(db)
    assert [(r["action"]["type"], r["decision"]["approval"], r["events"]) for r in recs] == [
        ("get_weather", "auto", [("execution", "ok")]),
        ("delete_file", "block", []),
        ("send_email", "approve", [("approval", "approved"), ("execution", "ok")]),
        ("launch_rockets", "auto", [("execution", "error")])]  # unknown: decided and audited, then an error
    assert recs[0]["origin"] == {"via": "openai", "tool": "get_weather", "api": api, "call_id": "call_00"}
    assert recs[2]["action"]["params"] == {"to": "a@example.com", "source": "newsletter"}
    verify_audit(db)


def check_answers(texts: list[str], fns: Functions, gate: Gate) -> None:
    assert texts[0] == '{"city": "Paris", "sky": "sunny"}'
    assert texts[1] == REFUSED_DELETE
    assert texts[2] == "sent to a@example.com"
    assert texts[3] == "error: LookupError: no function named 'launch_rockets'"
    assert fns.hits == [("get_weather", {"city": "Paris"}), ("send_email", {"to": "a@example.com",
                                                                             "source": "newsletter"})]
    assert len(gate.asked) == 1 and gate.asked[0].type == "send_email"


def test_chat_completions_tool_calls(tmp_path: Path) -> None:
    fns, gate, db = Functions(), Gate(delay=0.2), tmp_path / "audit.db"
    with ScriptedModel(first_turn_calls(CALLS)) as model:
        client = OpenAI(base_url=model.url + "/v1", api_key="x")
        messages: list[Any] = [{"role": "user", "content": "go"}]
        reply = client.chat.completions.create(model="gpt-standin", messages=messages, tools=CHAT_TOOLS)
        answers = run_tool_calls(reply, fns.all(), make_runtime(db, gate))
        messages += [reply.choices[0].message, *answers]
        final = client.chat.completions.create(model="gpt-standin", messages=messages, tools=CHAT_TOOLS)
        sent_back = tool_results("chat", model.requests[-1][1])
    assert final.choices[0].message.content == DONE
    assert [a["tool_call_id"] for a in answers] == ["call_00", "call_01", "call_02", "call_03"]
    assert all(a["role"] == "tool" for a in answers) and sent_back == answers
    check_answers([a["content"] for a in answers], fns, gate)
    check_trail(db, "chat")


def test_responses_function_calls(tmp_path: Path) -> None:
    fns, gate, db = Functions(), Gate(delay=0.2), tmp_path / "audit.db"
    with ScriptedModel(first_turn_calls(CALLS)) as model:
        client = OpenAI(base_url=model.url + "/v1", api_key="x")
        response = client.responses.create(model="gpt-standin", input="go", tools=RESPONSES_TOOLS)
        answers = run_tool_calls(response, fns.all(), make_runtime(db, gate))
        final = client.responses.create(model="gpt-standin", input=[*response.output, *answers],
                                        tools=RESPONSES_TOOLS)
        sent_back = tool_results("responses", model.requests[-1][1])
    assert final.output_text == DONE
    assert [a["call_id"] for a in answers] == ["call_00", "call_01", "call_02", "call_03"]
    assert all(a["type"] == "function_call_output" for a in answers) and sent_back == answers
    check_answers([a["output"] for a in answers], fns, gate)
    check_trail(db, "responses")


def test_async_with_a_timeout_and_the_message_or_items_alone(tmp_path: Path) -> None:
    fns, db = Functions(), tmp_path / "audit.db"
    rt = make_runtime(db, Gate(delay=10, timeout=0.3))
    with ScriptedModel(first_turn_calls(CALLS[:3])) as model:
        async def main() -> tuple[Any, Any]:
            client = AsyncOpenAI(base_url=model.url + "/v1", api_key="x")
            reply = await client.chat.completions.create(model="g", messages=[{"role": "user", "content": "go"}],
                                                         tools=CHAT_TOOLS)
            response = await client.responses.create(model="g", input="go", tools=RESPONSES_TOOLS)
            return (await arun_tool_calls(reply.choices[0].message, fns.all(), rt),
                    await arun_tool_calls(response.output, {"send_email": fns.send_email}, rt))

        chat, items = asyncio.run(main())
    assert [a["content"][:30] for a in chat] == ['{"city": "Paris", "sky": "sunn', REFUSED_DELETE[:30],
                                                 "aegis refused send_email on se"]
    assert "rule 'ask-email'" in chat[2]["content"] and "no answer in time" in chat[2]["content"]
    assert items[0]["output"] == "error: LookupError: no function named 'get_weather'"
    assert fns.hits == [("get_weather", {"city": "Paris"})]  # the email never went, twice
    assert [r["events"] for r in decisions(db)][-1] == [("approval", "timed_out")]
    verify_audit(db)


def test_failing_function_bad_arguments_and_no_calls(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    rt = make_runtime(db)

    def get_weather(city: str) -> str:
        raise RuntimeError("weather service down")

    message = {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]}
    out = run_tool_calls(message, [get_weather], rt)
    assert out == [{"role": "tool", "tool_call_id": "c1", "content": "error: RuntimeError: weather service down"},
                   {"role": "tool", "tool_call_id": "c2",
                    "content": "error: ValueError: the arguments are not a JSON object"}]
    assert run_tool_calls({"role": "assistant", "content": "hi", "tool_calls": None}, [get_weather], rt) == []
    assert run_tool_calls({"choices": []}, [get_weather], rt) == []
    with pytest.raises(TypeError, match="ChatCompletion"):
        run_tool_calls("hello", [get_weather], rt)
    verify_audit(db)
