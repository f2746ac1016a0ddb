"""adapters.openai_agents: the real OpenAI Agents SDK ``Runner`` against a local stand-in Chat Completions server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

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
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, handoff, set_tracing_disabled
from openai import AsyncOpenAI

from aegis_cli.adapters.openai_agents import govern

set_tracing_disabled(True)


class Tools:
    """Three tools, sync and async, that count their calls: the proof a refused call never ran."""

    def __init__(self) -> None:
        self.hits: dict[str, list[dict[str, Any]]] = {"get_weather": [], "delete_file": [], "send_email": []}
        hits = self.hits

        @function_tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            hits["get_weather"].append({"city": city})
            return f"sunny in {city}"

        @function_tool
        async def delete_file(path: str) -> str:
            """Delete a file."""
            hits["delete_file"].append({"path": path})
            return f"deleted {path}"

        @function_tool(strict_mode=False)
        async def send_email(to: str, body: str = "") -> str:
            """Send an email."""
            hits["send_email"].append({"to": to, "body": body})
            return f"sent to {to}"

        self.all = [get_weather, delete_file, send_email]


def agent_on(model: ScriptedModel, tools: list[Any], name: str = "helper", **kw: Any) -> Agent:
    client = AsyncOpenAI(base_url=model.url + "/v1", api_key="x")
    return Agent(name=name, instructions="Help.", tools=tools,
                 model=OpenAIChatCompletionsModel(model="gpt-standin", openai_client=client), **kw)


def decisions(db: Path) -> list[dict[str, Any]]:
    """Each decision record with the events that follow it."""
    rows = audit_trail(db)
    out = [{**r, "events": []} for r in rows if r["kind"] == "decision"]
    by_id = {r["id"]: r for r in out}
    for r in rows:
        if r["kind"] != "decision" and r["decision_id"] in by_id:
            by_id[r["decision_id"]]["events"].append((r["kind"], r["data"]))
    return out


def test_allowed_runs_blocked_never_reaches_the_tool(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    calls = [("get_weather", {"city": "Paris"}), ("delete_file", {"path": "/etc/passwd"})]
    with ScriptedModel(first_turn_calls(calls)) as model:
        agent = agent_on(model, tools.all)
        governed = govern(agent, make_runtime(db))

        async def both() -> Any:
            result = await Runner.run(governed, "weather, then clean up")
            await Runner.run(agent, "weather only")  # the same agent, ungoverned: what the model saw before
            return result

        result = asyncio.run(both())
        offered_governed, offered_bare = model.requests[0][1]["tools"], model.requests[2][1]["tools"]

    assert result.final_output == DONE
    assert tools.hits["get_weather"] == [{"city": "Paris"}, {"city": "Paris"}]  # governed run + bare run
    assert tools.hits["delete_file"] == [{"path": "/etc/passwd"}]  # only the bare run reached it
    assert offered_governed == offered_bare  # name, description, schema, strictness unchanged
    # the original agent is untouched: its tools are the user's own objects
    assert agent.tools == tools.all and governed.tools[0] is not tools.all[0]
    assert [t.name for t in governed.tools] == ["get_weather", "delete_file", "send_email"]

    recs = decisions(db)
    assert [(r["action"]["type"], r["decision"]["approval"]) for r in recs] == [
        ("get_weather", "auto"), ("delete_file", "block")]
    assert recs[0]["origin"] == {"via": "openai-agents", "tool": "get_weather", "agent": "helper", "call_id": "call_00"}
    assert recs[0]["action"] == {"type": "get_weather", "target": "get_weather", "params": {"city": "Paris"},
                                 "agent": "helper", "session": ""}
    assert [k for k, _ in recs[0]["events"]] == ["execution"] and recs[0]["events"][0][1]["status"] == "ok"
    assert recs[1]["events"] == []  # blocked: decided, nothing after
    verify_audit(db)


def test_refusal_is_the_tools_error_output_naming_rule_and_reason(tmp_path: Path) -> None:
    tools = Tools()
    with ScriptedModel(first_turn_calls([("delete_file", {"path": "a.txt"})])) as model:
        asyncio.run(Runner.run(govern(agent_on(model, tools.all), make_runtime(tmp_path / "a.db")), "go"))
        (result,) = tool_results("chat", model.requests[-1][1])
    assert result["tool_call_id"] == "call_00"
    assert result["content"] == ("aegis refused delete_file on delete_file: blocked by rule 'no-deletes': "
                                 "deleting files is not allowed")
    assert tools.hits["delete_file"] == []


def test_approve_waits_for_the_handler(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    gate = Gate(answer=True, delay=0.3)
    with ScriptedModel(first_turn_calls([("send_email", {"to": "a@example.com", "body": "hi"})])) as model:
        result = asyncio.run(Runner.run(govern(agent_on(model, tools.all), make_runtime(db, gate)), "mail"))
        (sent,) = tool_results("chat", model.requests[-1][1])
    assert result.final_output == DONE
    assert len(gate.asked) == 1 and gate.asked[0].params == {"to": "a@example.com", "body": "hi"}
    assert tools.hits["send_email"] == [{"to": "a@example.com", "body": "hi"}]
    assert sent["content"] == "sent to a@example.com"
    (rec,) = decisions(db)
    assert rec["decision"]["rule"] == "ask-email"
    assert [(k, d["status"]) for k, d in rec["events"]] == [("approval", "approved"), ("execution", "ok")]
    verify_audit(db)


def test_approval_timeout_denies(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    gate = Gate(answer=True, delay=10, timeout=0.3)
    with ScriptedModel(first_turn_calls([("send_email", {"to": "a@example.com"})])) as model:
        asyncio.run(Runner.run(govern(agent_on(model, tools.all), make_runtime(db, gate)), "mail"))
        (refused,) = tool_results("chat", model.requests[-1][1])
    assert len(gate.asked) == 1
    assert tools.hits["send_email"] == []
    assert "rule 'ask-email'" in refused["content"] and "no answer in time" in refused["content"]
    (rec,) = decisions(db)
    assert [(k, d["status"]) for k, d in rec["events"]] == [("approval", "timed_out")]
    verify_audit(db)


def test_handoffs_pass_through_and_the_next_agents_tools_are_governed(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"

    def script(api: str, body: dict[str, Any]) -> Any:
        offered = {t["function"]["name"] for t in body.get("tools") or []}
        answered = {m["tool_call_id"] for m in tool_results(api, body)}
        if "delete_file" in offered and "call_01" not in answered:
            return [("delete_file", {"path": "ledger.csv"})]
        if "transfer_to_billing" in offered and not answered:
            return [("transfer_to_billing", {})]
        return DONE

    with ScriptedModel(script) as model:
        billing = agent_on(model, [tools.all[1]], name="billing")
        triage = agent_on(model, [tools.all[0]], name="triage", handoffs=[handoff(billing)])
        result = asyncio.run(Runner.run(govern(triage, make_runtime(db)), "refund me"))
        last = tool_results("chat", model.requests[-1][1])
    assert result.last_agent.name == "billing" and result.final_output == DONE
    assert tools.hits["delete_file"] == []
    assert "blocked by rule 'no-deletes'" in last[-1]["content"]
    (rec,) = decisions(db)  # the handoff itself is not decided; the tool of the agent it led to is
    assert rec["origin"]["agent"] == "billing" and rec["decision"]["approval"] == "block"
    verify_audit(db)


def test_handoff_cycles_and_agents_in_handoffs(tmp_path: Path) -> None:
    tools = Tools()
    with ScriptedModel(first_turn_calls([])) as model:
        a = agent_on(model, [tools.all[0]], name="a")
        b = agent_on(model, [tools.all[1]], name="b", handoffs=[a])
        a.handoffs.append(b)
        ga = govern(a, make_runtime(tmp_path / "a.db"))
    gb = ga.handoffs[0]
    assert gb.name == "b" and gb is not b and gb.handoffs[0] is ga  # one clone per agent, cycle kept
    assert gb.tools[0] is not tools.all[1] and gb.tools[0].name == "delete_file"


def test_a_failing_tool_fails_as_the_sdk_says(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        raise RuntimeError("weather service down")

    with ScriptedModel(first_turn_calls([("get_weather", {"city": "Oslo"})])) as model:
        agent = agent_on(model, [get_weather])

        async def both() -> None:
            await Runner.run(govern(agent, make_runtime(db)), "weather")
            await Runner.run(agent, "weather")

        asyncio.run(both())
        (governed,), (bare,) = (tool_results("chat", model.requests[i][1]) for i in (1, 3))
    # the SDK's failure_error_function answers, exactly as without aegis
    assert governed["content"] == bare["content"] and "error" in governed["content"]
    verify_audit(db)


def test_not_an_agent_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"agents\.Agent"):
        govern([json], make_runtime(tmp_path / "a.db"))


# -- streaming: Runner.run_streamed against the stand-in's streamed Chat Completions chunks -----------

async def run_streamed(agent: Agent, prompt: str) -> tuple[Any, list[Any]]:
    result = Runner.run_streamed(agent, prompt)
    return result, [event async for event in result.stream_events()]


def items(events: list[Any], name: str) -> list[Any]:
    return [e.item for e in events if e.type == "run_item_stream_event" and e.name == name]


def test_streamed_run_allowed_runs_blocked_never_reaches_the_tool(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    calls = [("get_weather", {"city": "Paris"}), ("delete_file", {"path": "/etc/passwd"})]
    with ScriptedModel(first_turn_calls(calls)) as model:
        result, events = asyncio.run(run_streamed(govern(agent_on(model, tools.all), make_runtime(db)), "go"))
        asked_to_stream = [body.get("stream") for _, body in model.requests]
    assert asked_to_stream == [True, True] and any(e.type == "raw_response_event" for e in events)
    assert result.final_output == DONE
    assert [i.raw_item.name for i in items(events, "tool_called")] == ["get_weather", "delete_file"]
    assert [(i.raw_item["call_id"], i.output) for i in items(events, "tool_output")] == [
        ("call_00", "sunny in Paris"),
        ("call_01", "aegis refused delete_file on delete_file: blocked by rule 'no-deletes': "
                    "deleting files is not allowed")]
    assert tools.hits["get_weather"] == [{"city": "Paris"}] and tools.hits["delete_file"] == []
    recs = decisions(db)
    assert [(r["action"]["type"], r["decision"]["approval"], [k for k, _ in r["events"]]) for r in recs] == [
        ("get_weather", "auto", ["execution"]), ("delete_file", "block", [])]
    assert recs[1]["origin"]["call_id"] == "call_01"
    verify_audit(db)


def test_streamed_run_approval_waits_and_a_timeout_denies(tmp_path: Path) -> None:
    tools = Tools()
    calls = [("send_email", {"to": "a@example.com", "body": "hi"})]
    outputs = {}
    for name, gate in (("yes", Gate(answer=True, delay=0.3)), ("late", Gate(answer=True, delay=10, timeout=0.3))):
        with ScriptedModel(first_turn_calls(calls)) as model:
            agent = govern(agent_on(model, tools.all), make_runtime(tmp_path / f"{name}.db", gate))
            _, events = asyncio.run(run_streamed(agent, "mail"))
        (outputs[name],) = [i.output for i in items(events, "tool_output")]
        assert len(gate.asked) == 1
    assert outputs["yes"] == "sent to a@example.com"
    assert "rule 'ask-email'" in outputs["late"] and "no answer in time" in outputs["late"]
    assert tools.hits["send_email"] == [{"to": "a@example.com", "body": "hi"}]  # once: the approved call
    for name, statuses in (("yes", [("approval", "approved"), ("execution", "ok")]),
                           ("late", [("approval", "timed_out")])):
        (rec,) = decisions(tmp_path / f"{name}.db")
        assert [(k, d["status"]) for k, d in rec["events"]] == statuses
        verify_audit(tmp_path / f"{name}.db")


AS_TOOL_POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - {name: no-research, match: {type: ask_researcher}, approval: block, risk_level: high,
     reason: research is paused}
"""


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "blocked"])
def test_an_agent_tool_streams_its_run_only_when_allowed(tmp_path: Path, allowed: bool) -> None:
    # agent.as_tool(on_stream=...) runs the inner agent streamed and hands its events to on_stream:
    # the agent tool is decided as one call, so a refused one never starts the inner run. The inner
    # agent's own tools are governed when the tool is made from the governed agent.
    from aegis_cli import Policy, Runtime, SQLiteAuditLogger

    tools = Tools()
    db = tmp_path / "audit.db"
    policy = AS_TOOL_POLICY if not allowed else AS_TOOL_POLICY.replace("approval: block", "approval: auto")
    rt = Runtime(policy=Policy.from_string(policy), audit=SQLiteAuditLogger(db))

    def script(api: str, body: dict[str, Any]) -> Any:
        offered = {t["function"]["name"] for t in body.get("tools") or []}
        if tool_results(api, body):
            return DONE
        return [("ask_researcher", {"input": "weather?"})] if "ask_researcher" in offered \
            else [("get_weather", {"city": "Rome"})]

    streamed: list[Any] = []
    with ScriptedModel(script) as model:
        researcher = agent_on(model, [tools.all[0]], name="researcher")
        ask = (govern(researcher, rt) if allowed else researcher).as_tool(
            "ask_researcher", "Ask the researcher.", on_stream=streamed.append)
        result, events = asyncio.run(run_streamed(govern(agent_on(model, [ask], name="boss"), rt), "go"))
        asked = len(model.requests)
    (output,) = [i.output for i in items(events, "tool_output")]
    assert result.final_output == DONE
    if allowed:
        assert asked == 4 and output == DONE and tools.hits["get_weather"] == [{"city": "Rome"}]
        assert any(e["event"].type == "raw_response_event" for e in streamed)
        assert {e["agent"].name for e in streamed} == {"researcher"}
    else:
        assert asked == 2 and streamed == [] and tools.hits["get_weather"] == []  # the inner agent never ran
        assert output == "aegis refused ask_researcher on ask_researcher: blocked by rule 'no-research': " \
                         "research is paused"
    made = [(r["action"]["type"], r["origin"]["agent"], [k for k, _ in r["events"]]) for r in decisions(db)]
    if allowed:  # the agent tool, then the governed inner agent's tool call inside it
        assert made == [("ask_researcher", "boss", ["execution"]), ("get_weather", "researcher", ["execution"])]
    else:
        assert made == [("ask_researcher", "boss", [])]
    verify_audit(db)


def test_a_streamed_run_cancelled_during_the_approval_wait_never_runs_the_tool(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    gate = Gate(answer=True, delay=10)  # would say yes, too late

    async def main(agent: Agent) -> None:
        result = Runner.run_streamed(agent, "mail")
        async for event in result.stream_events():
            if event.type == "run_item_stream_event" and event.name == "tool_called":
                while not gate.asked:
                    await asyncio.sleep(0.01)
                result.cancel()  # the application stops the run while the person is asked

    with ScriptedModel(first_turn_calls([("send_email", {"to": "a@example.com"})])) as model:
        asyncio.run(main(govern(agent_on(model, tools.all), make_runtime(db, gate))))
        asked = len(model.requests)
    assert asked == 1 and tools.hits["send_email"] == []
    (rec,) = decisions(db)
    assert [(k, d["status"]) for k, d in rec["events"]] == [("approval", "cancelled")]
    verify_audit(db)
