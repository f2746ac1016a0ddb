"""Pydantic AI adapter against the real pydantic-ai package, in its own agent loop driven by ``TestModel``
(which calls the tools it is told to, with arguments it makes up from their schemas, then answers)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent, CustomEvent, ModelRetry, RunContext, Tool
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import FunctionToolResultEvent, ToolReturnPart
from pydantic_ai.models.test import TestModel
from pydantic_ai.toolsets import FunctionToolset

from aegis_cli.adapters.pydantic_ai import AegisCapability, govern
from tests.adapter_kit import Approver, decisions, outcome, runtime, verify

pytestmark = pytest.mark.timeout(60)
CALLS: list[tuple[str, Any]] = []


def read_file(path: str) -> str:
    """Read a text file."""
    CALLS.append(("read_file", path))
    return f"contents of {path}"


def delete_file(path: str) -> str:
    """Delete a file."""
    CALLS.append(("delete_file", path))
    return f"deleted {path}"


async def send_email(to: str, body: str) -> str:
    """Send an email."""
    CALLS.append(("send_email", to))
    return f"sent to {to}"


TOOLS = [read_file, delete_file, send_email]


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


def returns(result: Any) -> dict[str, ToolReturnPart]:
    """The tool results the model saw, by tool name."""
    return {p.tool_name: p for m in result.all_messages() for p in m.parts if isinstance(p, ToolReturnPart)}


def test_governed_agent_runs_allowed_and_refuses_blocked(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    agent = Agent(TestModel(call_tools=["read_file", "delete_file"]), tools=TOOLS)
    governed = govern(agent, rt)
    assert isinstance(governed, AbstractAgent) and governed.wrapped is agent

    seen = returns(governed.run_sync("tidy up"))
    assert seen["read_file"].outcome == "success" and seen["read_file"].content == "contents of a"
    refused = seen["delete_file"]
    assert refused.outcome == "failed"  # Pydantic AI's failed tool result: the model sees it, no retry spent
    assert "rule 'no-deletes'" in refused.content and "deleting files is never automated" in refused.content
    assert CALLS == [("read_file", "a")]  # the delete never reached the tool

    made = decisions(db)
    assert sorted((d["action"]["type"], outcome(db, d)) for d in made) == [
        ("delete_file", "blocked"), ("read_file", "ok")]
    assert {d["origin"]["via"] for d in made} == {"pydantic_ai"}
    assert next(d for d in made if d["action"]["type"] == "read_file")["action"]["params"] == {"path": "a"}
    verify(db)

    # The agent itself is untouched: run without aegis, the delete goes through.
    assert "deleted a" in returns(agent.run_sync("tidy up"))["delete_file"].content
    assert len(decisions(db)) == 2


def test_async_run_and_stream(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    governed = govern(Agent(TestModel(call_tools=["delete_file"]), tools=TOOLS), rt)
    assert returns(asyncio.run(governed.run("go")))["delete_file"].outcome == "failed"

    async def streamed() -> str:
        async with governed.run_stream("go") as stream:
            return await stream.get_output()

    assert "aegis refused delete_file" in asyncio.run(streamed())
    assert CALLS == []
    assert [outcome(db, d) for d in decisions(db)] == ["blocked", "blocked"]
    verify(db)


def test_governed_toolset_and_capability(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    toolset = govern(FunctionToolset([read_file, delete_file]), rt)
    seen = returns(Agent(TestModel(), toolsets=[toolset]).run_sync("go"))
    assert seen["read_file"].outcome == "success" and seen["delete_file"].outcome == "failed"

    agent = Agent(TestModel(call_tools=["delete_file"]), tools=TOOLS, capabilities=[AegisCapability(rt)])
    assert "rule 'no-deletes'" in returns(agent.run_sync("go"))["delete_file"].content
    assert CALLS == [("read_file", "a")]
    made = decisions(db)
    assert sorted((d["origin"]["hook"], d["action"]["type"], outcome(db, d)) for d in made) == [
        ("capability", "delete_file", "blocked"), ("toolset", "delete_file", "blocked"), ("toolset", "read_file", "ok")]
    verify(db)


def test_tool_errors_and_retries_stay_the_tools_own(tmp_path: Path) -> None:
    attempts: list[str] = []

    def flaky(path: str) -> str:
        """Fails the first time."""
        attempts.append(path)
        if len(attempts) == 1:
            raise ModelRetry("try again")
        return "fine"

    rt, db = runtime(tmp_path)
    seen = returns(govern(Agent(TestModel(), tools=[flaky]), rt).run_sync("go"))
    assert seen["flaky"].content == "fine" and len(attempts) == 2
    assert [outcome(db, d) for d in decisions(db)] == ["error", "ok"]
    verify(db)


def test_approval_waits_for_the_person_and_timeout_denies(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    agent = Agent(TestModel(call_tools=["send_email"]), tools=TOOLS)
    with Approver(db, approve=True, delay=0.3) as person:
        seen = returns(govern(agent, rt).run_sync("mail bob"))
    assert person.answered and seen["send_email"].outcome == "success"
    assert CALLS == [("send_email", "a")]
    (d,) = decisions(db)
    assert (d["action"]["type"], d["action"]["target"], outcome(db, d)) == ("send", "email", "ok")
    verify(db)

    (tmp_path / "late").mkdir()
    rt, db = runtime(tmp_path / "late", timeout=0.3)  # nobody answers
    late = returns(govern(agent, rt).run_sync("mail bob"))["send_email"]
    assert late.outcome == "failed" and "email-needs-a-human" in late.content and "no answer" in late.content
    assert CALLS == [("send_email", "a")]
    assert [outcome(db, d) for d in decisions(db)] == ["timed_out"]
    verify(db)


def test_wrong_objects_and_missing_framework(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    with pytest.raises(TypeError, match="Agent or toolset"):
        govern([read_file], rt)
    monkeypatch.setitem(sys.modules, "pydantic_ai", None)
    with pytest.raises(ImportError, match=r"aegis-cli\[pydantic-ai\]"):
        govern(object(), rt)


# -- streaming: run_stream_events, iter, run_stream, run_stream_sync -----------------------------------
#
# A tool streams its progress with ``await ctx.emit(CustomEvent)``; the events reach every streaming
# entry point. A refused call emits nothing: its FunctionToolResultEvent carries the failed result.

@dataclass(kw_only=True)
class Progress(CustomEvent):
    step: str


async def stream_read(ctx: RunContext[Any], path: str) -> str:
    """Read a text file."""
    await ctx.emit(Progress(step=f"reading {path}"))
    CALLS.append(("read_file", path))
    return f"contents of {path}"


async def stream_delete(ctx: RunContext[Any], path: str) -> str:
    """Delete a file."""
    await ctx.emit(Progress(step=f"deleting {path}"))
    CALLS.append(("delete_file", path))
    return f"deleted {path}"


async def stream_send(ctx: RunContext[Any], to: str, body: str) -> str:
    """Send an email."""
    await ctx.emit(Progress(step=f"sending to {to}"))
    CALLS.append(("send_email", to))
    return f"sent to {to}"


STREAMING = [Tool(stream_read, name="read_file"), Tool(stream_delete, name="delete_file"),
             Tool(stream_send, name="send_email")]


def streamed(agent: Any, how: str) -> tuple[list[Any], Any]:
    """Run ``agent`` through one streaming entry point; the events it streamed and its output."""
    events: list[Any] = []

    async def handler(ctx: Any, stream: Any) -> None:
        events.extend([e async for e in stream])

    async def main() -> Any:
        if how == "run_stream_events":
            async with agent.run_stream_events("go") as stream:
                events.extend([e async for e in stream])
            return events[-1].result.output
        if how == "iter":
            async with agent.iter("go") as run:
                async for node in run:
                    if Agent.is_call_tools_node(node):
                        async with node.stream(run.ctx) as stream:
                            events.extend([e async for e in stream])
            return run.result.output
        async with agent.run_stream("go", event_stream_handler=handler) as result:
            return await result.get_output()

    if how == "run_stream_sync":
        with agent.run_stream_sync("go", event_stream_handler=handler) as result:
            return events, result.get_output()
    return events, asyncio.run(main())


def tool_events(events: list[Any]) -> list[tuple[str, ...]]:
    """Progress and tool results, in stream order."""
    out: list[tuple[str, ...]] = []
    for e in events:
        if isinstance(e, Progress):
            out.append(("progress", e.tool_name or "", e.step))
        elif isinstance(e, FunctionToolResultEvent):
            out.append(("result", e.part.tool_name, e.part.outcome, str(e.part.content)))
    return out


REFUSED = "aegis refused delete_file on delete_file: blocked by rule 'no-deletes': deleting files is never automated"


@pytest.mark.parametrize("how", ["run_stream_events", "iter", "run_stream", "run_stream_sync"])
def test_streamed_runs_allowed_stream_progress_blocked_never_reach_the_tool(tmp_path: Path, how: str) -> None:
    rt, db = runtime(tmp_path)
    agent = govern(Agent(TestModel(call_tools=["read_file", "delete_file"]), tools=STREAMING), rt)
    events, output = streamed(agent, how)
    assert sorted(tool_events(events)) == [
        ("progress", "read_file", "reading a"),
        ("result", "delete_file", "failed", REFUSED),
        ("result", "read_file", "success", "contents of a")]
    assert "contents of a" in output and REFUSED in output  # TestModel's answer repeats the tool results
    assert CALLS == [("read_file", "a")]
    made = decisions(db)
    assert sorted((d["action"]["type"], outcome(db, d)) for d in made) == [
        ("delete_file", "blocked"), ("read_file", "ok")]
    assert {d["origin"]["hook"] for d in made} == {"capability"}
    verify(db)


def test_streamed_toolset_approval_waits_and_a_timeout_denies(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    toolset = govern(FunctionToolset(STREAMING), rt)
    agent = Agent(TestModel(call_tools=["send_email"]), toolsets=[toolset])
    with Approver(db, approve=True, delay=0.3) as person:
        events, _ = streamed(agent, "run_stream_events")
    assert person.answered
    assert tool_events(events) == [("progress", "send_email", "sending to a"),
                                   ("result", "send_email", "success", "sent to a")]
    (d,) = decisions(db)
    assert (d["origin"]["hook"], d["action"]["type"], outcome(db, d)) == ("toolset", "send", "ok")
    verify(db)

    (tmp_path / "late").mkdir()
    rt, db = runtime(tmp_path / "late", timeout=0.3)  # nobody answers
    agent = Agent(TestModel(call_tools=["send_email"]), toolsets=[govern(FunctionToolset(STREAMING), rt)])
    events, _ = streamed(agent, "iter")
    ((kind, name, status, text),) = tool_events(events)  # no progress: the tool never started
    assert (kind, name, status) == ("result", "send_email", "failed") and "no answer" in text
    assert CALLS == [("send_email", "a")]
    assert [outcome(db, d) for d in decisions(db)] == ["timed_out"]
    verify(db)
