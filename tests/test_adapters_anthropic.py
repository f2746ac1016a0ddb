"""adapters.anthropic: the real SDK's tool runner (sync and async) and hand-written loops against a local stand-in
Anthropic Messages server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("anthropic")

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
from anthropic import Anthropic, AsyncAnthropic, beta_async_tool, beta_tool
from anthropic.lib.tools import BetaAsyncFunctionTool, BetaFunctionTool

from aegis_cli.adapters.anthropic import arun_tool_uses, govern, run_tool_uses

REFUSED_DELETE = "aegis refused delete_file on delete_file: blocked by rule 'no-deletes': deleting files is not allowed"


class Tools:
    """The same three tools, sync (``@beta_tool``) and async (``@beta_async_tool``), counting their calls."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, Any]]] = []
        hits = self.hits

        @beta_tool
        def get_weather(city: str) -> str:
            """The weather in a city.

            Args:
                city: Which city.
            """
            hits.append(("get_weather", {"city": city}))
            return f"sunny in {city}"

        @beta_tool
        def delete_file(path: str) -> str:
            """Delete a file."""
            hits.append(("delete_file", {"path": path}))
            return f"deleted {path}"

        @beta_tool
        def send_email(to: str, body: str = "") -> str:
            """Send an email."""
            hits.append(("send_email", {"to": to, "body": body}))
            return f"sent to {to}"

        @beta_async_tool
        async def aget_weather(city: str) -> str:
            """The weather in a city."""
            hits.append(("get_weather", {"city": city}))
            return f"sunny in {city}"

        @beta_async_tool
        async def adelete_file(path: str) -> str:
            """Delete a file."""
            hits.append(("delete_file", {"path": path}))
            return f"deleted {path}"

        @beta_async_tool
        async def asend_email(to: str, body: str = "") -> str:
            """Send an email."""
            hits.append(("send_email", {"to": to, "body": body}))
            return f"sent to {to}"

        for t in (aget_weather, adelete_file, asend_email):
            t.name = t.name[1:]  # the same tool names as the sync ones
        self.sync = [get_weather, delete_file, send_email]
        self.async_ = [aget_weather, adelete_file, asend_email]

    def names(self) -> list[str]:
        return [name for name, _ in self.hits]


def run_sync(model: ScriptedModel, tools: list[Any]) -> Any:
    client = Anthropic(base_url=model.url, api_key="x")
    runner = client.beta.messages.tool_runner(model="claude-standin", max_tokens=256, tools=tools,
                                              messages=[{"role": "user", "content": "go"}])
    return runner.until_done()


def run_async(model: ScriptedModel, tools: list[Any]) -> Any:
    async def main() -> Any:
        client = AsyncAnthropic(base_url=model.url, api_key="x")
        runner = client.beta.messages.tool_runner(model="claude-standin", max_tokens=256, tools=tools,
                                                  messages=[{"role": "user", "content": "go"}])
        return await runner.until_done()

    return asyncio.run(main())


def decisions(db: Path) -> list[dict[str, Any]]:
    rows = audit_trail(db)
    out = [{**r, "events": []} for r in rows if r["kind"] == "decision"]
    by_id = {r["id"]: r for r in out}
    for r in rows:
        if r["kind"] != "decision" and r["decision_id"] in by_id:
            by_id[r["decision_id"]]["events"].append((r["kind"], r["data"]["status"]))
    return out


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_tool_runner_allowed_runs_blocked_never_reaches_the_tool(tmp_path: Path, flavour: str) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    originals = tools.sync if flavour == "sync" else tools.async_
    governed = govern(originals, make_runtime(db))
    run = run_sync if flavour == "sync" else run_async
    calls = [("get_weather", {"city": "Paris"}), ("delete_file", {"path": "/etc/passwd"})]
    with ScriptedModel(first_turn_calls(calls)) as model:
        final = run(model, governed)
        offered = model.requests[0][1]["tools"]
        ok, refused = tool_results("messages", model.requests[-1][1])

    assert final.content[0].text == DONE
    assert tools.hits == [("get_weather", {"city": "Paris"})]
    assert offered == [t.to_dict() for t in originals]  # same names, descriptions and schemas
    assert all(type(g) is type(o) for g, o in zip(governed, originals, strict=True))  # still the SDK's tools
    assert isinstance(governed[0], BetaFunctionTool if flavour == "sync" else BetaAsyncFunctionTool)
    assert ok == {"type": "tool_result", "tool_use_id": "toolu_00", "content": "sunny in Paris"}
    assert refused == {"type": "tool_result", "tool_use_id": "toolu_01", "content": REFUSED_DELETE, "is_error": True}

    recs = decisions(db)
    assert [(r["action"]["type"], r["decision"]["approval"], r["events"]) for r in recs] == [
        ("get_weather", "auto", [("execution", "ok")]), ("delete_file", "block", [])]
    assert recs[0]["origin"] == {"via": "anthropic", "tool": "get_weather"}
    verify_audit(db)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_tool_runner_approval_waits_and_a_timeout_denies(tmp_path: Path, flavour: str) -> None:
    tools = Tools()
    run = run_sync if flavour == "sync" else run_async
    originals = tools.sync if flavour == "sync" else tools.async_
    calls = [("send_email", {"to": "a@example.com", "body": "hi"})]

    yes, db_yes = Gate(answer=True, delay=0.3), tmp_path / "yes.db"
    with ScriptedModel(first_turn_calls(calls)) as model:
        run(model, govern(originals, make_runtime(db_yes, yes)))
        (sent,) = tool_results("messages", model.requests[-1][1])
    assert len(yes.asked) == 1 and tools.names() == ["send_email"]
    assert sent["content"] == "sent to a@example.com" and "is_error" not in sent
    assert [r["events"] for r in decisions(db_yes)] == [[("approval", "approved"), ("execution", "ok")]]

    slow, db_slow = Gate(answer=True, delay=10, timeout=0.3), tmp_path / "slow.db"
    with ScriptedModel(first_turn_calls(calls)) as model:
        run(model, govern(originals, make_runtime(db_slow, slow)))
        (refused,) = tool_results("messages", model.requests[-1][1])
    assert len(slow.asked) == 1 and tools.names() == ["send_email"]  # not run a second time
    assert refused["is_error"] is True and "rule 'ask-email'" in refused["content"]
    assert "no answer in time" in refused["content"]
    assert [r["events"] for r in decisions(db_slow)] == [[("approval", "timed_out")]]
    verify_audit(db_yes)
    verify_audit(db_slow)


def test_a_failing_tool_is_reported_by_the_runner_as_without_aegis(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"

    @beta_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        raise RuntimeError("weather service down")

    with ScriptedModel(first_turn_calls([("get_weather", {"city": "Oslo"})])) as model:
        run_sync(model, govern([get_weather], make_runtime(db)))
        run_sync(model, [get_weather])
        governed, bare = (tool_results("messages", model.requests[i][1]) for i in (1, 3))
    assert governed == [{**bare[0], "tool_use_id": "toolu_00"}] and bare[0]["is_error"] is True
    assert [r["events"] for r in decisions(db)] == [[("execution", "error")]]
    verify_audit(db)


def test_raw_definitions_pass_through_toolsets_and_strangers_are_refused(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path / "a.db")
    raw = {"type": "web_search_20250305", "name": "web_search"}
    assert govern([raw], rt) == [raw]
    with pytest.raises(TypeError, match="not int"):
        govern([3], rt)


def test_run_tool_uses_in_a_hand_written_loop(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    gate = Gate(answer=True, delay=0.2)
    rt = make_runtime(db, gate)

    def plain_weather(city: str) -> str:  # a plain function works too, by its name
        tools.hits.append(("get_weather", {"city": city}))
        return f"cloudy in {city}"

    calls = [("get_weather", {"city": "Rome"}), ("delete_file", {"path": "x"}), ("send_email", {"to": "b@x.org"}),
             ("launch_rockets", {})]
    with ScriptedModel(first_turn_calls(calls)) as model:
        client = Anthropic(base_url=model.url, api_key="x")
        messages: list[Any] = [{"role": "user", "content": "go"}]
        offered = [t.to_dict() for t in tools.sync]
        reply = client.messages.create(model="claude-standin", max_tokens=256, messages=messages, tools=offered)
        results = run_tool_uses(reply, {"get_weather": plain_weather, "delete_file": tools.sync[1],
                                        "send_email": tools.sync[2]}, rt)
        messages += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": results}]
        final = client.messages.create(model="claude-standin", max_tokens=256, messages=messages, tools=offered)
    assert final.content[0].text == DONE
    assert [r["tool_use_id"] for r in results] == ["toolu_00", "toolu_01", "toolu_02", "toolu_03"]
    assert results[0] == {"type": "tool_result", "tool_use_id": "toolu_00", "content": "cloudy in Rome"}
    assert results[1]["is_error"] is True and results[1]["content"] == REFUSED_DELETE
    assert results[2] == {"type": "tool_result", "tool_use_id": "toolu_02", "content": "sent to b@x.org"}
    assert results[3]["is_error"] is True and "launch_rockets" in results[3]["content"]
    assert tools.names() == ["get_weather", "send_email"] and len(gate.asked) == 1

    recs = decisions(db)
    assert [(r["action"]["type"], r["events"]) for r in recs] == [
        ("get_weather", [("execution", "ok")]), ("delete_file", []),
        ("send_email", [("approval", "approved"), ("execution", "ok")]),
        ("launch_rockets", [("execution", "error")])]  # unknown tools are decided and audited too
    assert recs[2]["origin"] == {"via": "anthropic", "tool": "send_email", "call_id": "toolu_02"}
    verify_audit(db)


def test_arun_tool_uses_with_async_tools_and_a_timeout(tmp_path: Path) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    rt = make_runtime(db, Gate(answer=True, delay=10, timeout=0.3))
    message = {"role": "assistant", "content": [
        {"type": "text", "text": "on it"},
        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Lima"}},
        {"type": "tool_use", "id": "t2", "name": "send_email", "input": {"to": "c@x.org"}}]}
    results = asyncio.run(arun_tool_uses(message, tools.async_, rt))
    assert results[0] == {"type": "tool_result", "tool_use_id": "t1", "content": "sunny in Lima"}
    assert results[1]["is_error"] is True and "no answer in time" in results[1]["content"]
    assert tools.names() == ["get_weather"]
    assert [r["events"] for r in decisions(db)] == [[("execution", "ok")], [("approval", "timed_out")]]
    verify_audit(db)


# -- streaming: tool_runner(..., stream=True), with and without run_tools_eagerly ----------------------

def run_streamed(model: ScriptedModel, tools: list[Any], flavour: str, *, eager: bool,
                 ran: Callable[[], int]) -> list[tuple[str, int]]:
    """Read every event of every streamed reply, as an application does; notes how many tools had run by each."""
    kw = {"model": "claude-standin", "max_tokens": 256, "tools": tools, "stream": True,
          "run_tools_eagerly": eager, "messages": [{"role": "user", "content": "go"}]}
    seen: list[tuple[str, int]] = []
    if flavour == "sync":
        for stream in Anthropic(base_url=model.url, api_key="x").beta.messages.tool_runner(**kw):
            seen += [(event.type, ran()) for event in stream]
        return seen

    async def main() -> None:
        async for stream in AsyncAnthropic(base_url=model.url, api_key="x").beta.messages.tool_runner(**kw):
            seen.extend([(event.type, ran()) async for event in stream])

    asyncio.run(main())
    return seen


@pytest.mark.parametrize("eager", [False, True], ids=["after-the-reply", "eagerly"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_streamed_tool_runner_allowed_runs_blocked_never_reaches_the_tool(tmp_path: Path, flavour: str,
                                                                          eager: bool) -> None:
    tools = Tools()
    db = tmp_path / "audit.db"
    originals = tools.sync if flavour == "sync" else tools.async_
    # The sync runs have the person say yes; in the async ones nobody answers in time.
    gate = Gate(answer=True, delay=0.2) if flavour == "sync" else Gate(answer=True, delay=10, timeout=0.3)
    calls = [("get_weather", {"city": "Paris"}), ("delete_file", {"path": "/etc/passwd"}),
             ("send_email", {"to": "a@example.com"})]
    with ScriptedModel(first_turn_calls(calls)) as model:
        seen = run_streamed(model, govern(originals, make_runtime(db, gate)), flavour, eager=eager,
                            ran=lambda: len(tools.hits))
        bodies = [body for _, body in model.requests]
    ok, refused, mail = tool_results("messages", bodies[-1])

    assert [b["stream"] for b in bodies] == [True, True] and bodies[0]["tools"] == [t.to_dict() for t in originals]
    # Eagerly, get_weather ran while the first reply was still streaming; otherwise only after it.
    ran_by_first_stop = next(n for kind, n in seen if kind == "message_stop")
    assert (ran_by_first_stop > 0) is eager
    assert ok == {"type": "tool_result", "tool_use_id": "toolu_00", "content": "sunny in Paris"}
    assert refused == {"type": "tool_result", "tool_use_id": "toolu_01", "content": REFUSED_DELETE, "is_error": True}
    if flavour == "sync":
        assert mail == {"type": "tool_result", "tool_use_id": "toolu_02", "content": "sent to a@example.com"}
        assert tools.names() == ["get_weather", "send_email"]
    else:
        assert mail["is_error"] is True and "rule 'ask-email'" in mail["content"]
        assert "no answer in time" in mail["content"] and tools.names() == ["get_weather"]
    assert len(gate.asked) == 1
    approval = ("approval", "approved") if flavour == "sync" else ("approval", "timed_out")
    assert [(r["action"]["type"], r["events"]) for r in decisions(db)] == [
        ("get_weather", [("execution", "ok")]), ("delete_file", []),
        ("send_email", [approval, ("execution", "ok")] if flavour == "sync" else [approval])]
    verify_audit(db)
