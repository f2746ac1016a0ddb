"""LangChain adapter against the real langchain-core / langchain / langchain-openai packages.

The agent loop is LangChain's own ``create_agent`` with ``ChatOpenAI`` pointed at a stand-in Chat
Completions server on 127.0.0.1 that asks for one tool call, then answers with text once it sees the
tool's result. The tools count their calls, so a refused call that reached a tool would show.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain.agents")
pytest.importorskip("langchain_openai")

from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, tool
from langchain_openai import ChatOpenAI

from aegis_cli.adapters import ActionRefused
from aegis_cli.adapters.langchain import AegisMiddleware, govern
from tests.adapter_kit import Approver, decisions, events, outcome, runtime, verify
from tests.model_standins import StandIn

pytestmark = pytest.mark.timeout(60)
CALLS: list[tuple[str, Any]] = []


@tool
def read_file(path: str) -> str:
    """Read a text file."""
    CALLS.append(("read_file", path))
    return f"contents of {path}"


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    CALLS.append(("delete_file", path))
    return f"deleted {path}"


@tool
async def send_email(to: str, body: str) -> str:
    """Send an email."""
    CALLS.append(("send_email", to))
    return f"sent to {to}"


class Shout(BaseTool):
    """A hand-written BaseTool subclass with a sync _run only (the default _arun runs it on a thread)."""

    name: str = "shout"
    description: str = "Upper-case a text."

    def _run(self, text: str, run_manager: Any = None) -> str:
        CALLS.append(("shout", text))
        return text.upper()


TOOLS = [read_file, delete_file, send_email, Shout()]


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


NEXT_CALL: list[tuple[str, dict[str, Any]]] = []  # what the stand-in model asks for next


@pytest.fixture(scope="module")
def api() -> Any:
    with StandIn(lambda api, body: NEXT_CALL[0]) as server:
        yield server


def run_agent(api: StandIn, tools: list[Any], call: tuple[str, dict[str, Any]], *,
              middleware: tuple[Any, ...] = (), use_async: bool = False) -> list[Any]:
    """One turn of LangChain's own agent loop; returns the ToolMessages it produced."""
    NEXT_CALL[:] = [call]
    before = len(api.posts())
    # A new base URL per run: langchain-openai caches one HTTP client per base URL, and an async
    # client's open connections belong to the event loop that made them (each asyncio.run is new).
    base_url = f"{api.url}/run{before}/v1"
    model = ChatOpenAI(model="gpt-standin", base_url=base_url, api_key="sk-test", max_retries=0)
    agent = create_agent(model, tools, middleware=list(middleware))
    inputs = {"messages": [{"role": "user", "content": "do it"}]}
    state = asyncio.run(agent.ainvoke(inputs)) if use_async else agent.invoke(inputs)
    assert len(api.posts()) - before == 2  # the tool call, then the answer after the tool result
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_governed_tools_look_the_same_to_the_model(tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    governed = govern(TOOLS, rt)
    for original, copy in zip(TOOLS, governed, strict=True):
        assert isinstance(copy, BaseTool) and isinstance(copy, type(original)) and copy is not original
        assert (copy.name, copy.description, copy.args) == (original.name, original.description, original.args)
        assert copy.tool_call_schema.model_json_schema() == original.tool_call_schema.model_json_schema()
        assert copy.args_schema is original.args_schema
    assert isinstance(governed[0], StructuredTool)
    with pytest.raises(ValueError, match="already governed"):
        govern(governed[:1], rt)
    with pytest.raises(TypeError, match="LangChain tools"):
        govern([lambda: 1], rt)


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_agent_loop_runs_allowed_and_refuses_blocked(api: StandIn, tmp_path: Path, use_async: bool) -> None:
    rt, db = runtime(tmp_path)
    tools = govern(TOOLS, rt)

    (ok,) = run_agent(api, tools, ("read_file", {"path": "notes.txt"}), use_async=use_async)
    assert ok.status == "success" and ok.content == "contents of notes.txt"
    (shout,) = run_agent(api, tools, ("shout", {"text": "hi"}), use_async=use_async)
    assert shout.content == "HI"

    (refused,) = run_agent(api, tools, ("delete_file", {"path": "/etc/passwd"}), use_async=use_async)
    assert refused.status == "error"
    assert "no-deletes" in refused.content and "deleting files is never automated" in refused.content
    assert CALLS == [("read_file", "notes.txt"), ("shout", "hi")]  # the delete never reached the tool

    made = decisions(db)
    assert [(d["action"]["type"], outcome(db, d)) for d in made] == [
        ("read_file", "ok"), ("shout", "ok"), ("delete_file", "blocked")]
    assert made[0]["action"]["params"] == {"path": "notes.txt"}  # the model's arguments, nothing injected
    assert all(d["origin"]["via"] == "langchain" for d in made)
    assert [d["origin"]["tool"] for d in made] == ["read_file", "shout", "delete_file"]
    verify(db)


def test_direct_invoke_sync_and_async(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    read, delete, _send, shout = govern(TOOLS, rt)
    assert read.invoke({"path": "a"}) == "contents of a"
    assert asyncio.run(read.ainvoke({"path": "b"})) == "contents of b"
    assert asyncio.run(shout.ainvoke({"text": "x"})) == "X"  # sync tool, default _arun: decided once

    # Outside an agent, a refusal is the tool-error text (handle_tool_error), or an error ToolMessage.
    text = delete.invoke({"path": "c"})
    assert text.startswith("aegis refused delete_file") and "rule 'no-deletes'" in text
    message = asyncio.run(delete.ainvoke({"type": "tool_call", "id": "call_1", "name": "delete_file",
                                          "args": {"path": "c"}}))
    assert isinstance(message, ToolMessage) and message.status == "error" and message.tool_call_id == "call_1"

    async def sync_call_inside_a_loop() -> str:
        return read.invoke({"path": "d"})

    assert asyncio.run(sync_call_inside_a_loop()) == "contents of d"
    assert CALLS == [("read_file", "a"), ("read_file", "b"), ("shout", "x"), ("read_file", "d")]
    assert len(decisions(db)) == 6
    verify(db)


def test_tool_errors_stay_the_tools_own(tmp_path: Path) -> None:
    from langchain_core.tools import ToolException

    def broken(path: str) -> str:
        """Always fails."""
        raise ToolException(f"cannot open {path}")

    raising = StructuredTool.from_function(broken, name="broken")  # handle_tool_error unset: raises
    handled = StructuredTool.from_function(broken, name="broken2", handle_tool_error=True)
    rt, db = runtime(tmp_path)
    g_raising, g_handled = govern([raising, handled], rt)
    with pytest.raises(ToolException, match="cannot open x") as info:
        g_raising.invoke({"path": "x"})
    assert not isinstance(info.value, ActionRefused)
    assert g_handled.invoke({"path": "y"}) == "cannot open y"
    assert [outcome(db, d) for d in decisions(db)] == ["error", "error"]
    verify(db)


def test_approval_waits_for_the_person(api: StandIn, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    tools = govern(TOOLS, rt)
    with Approver(db, approve=True, delay=0.3) as person:
        (sent,) = run_agent(api, tools, ("send_email", {"to": "bob@example.com", "body": "hi"}), use_async=True)
    assert person.answered and sent.status == "success" and sent.content == "sent to bob@example.com"
    assert CALLS == [("send_email", "bob@example.com")]
    (d,) = decisions(db)
    assert (d["action"]["type"], d["action"]["target"], d["decision"]["approval"]) == ("send", "email", "approve")
    assert events(db, d["decision_id"], "approval")[-1]["status"] == "approved"
    assert outcome(db, d) == "ok"
    verify(db)


def test_approval_timeout_denies(api: StandIn, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path, timeout=0.3)  # nobody answers the queue
    send = govern(TOOLS, rt)[2]
    (refused,) = run_agent(api, [send], ("send_email", {"to": "eve@example.com", "body": "x"}))
    assert refused.status == "error" and "email-needs-a-human" in refused.content
    assert "no answer" in refused.content
    assert CALLS == []
    (d,) = decisions(db)
    assert outcome(db, d) == "timed_out"
    verify(db)


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_middleware_governs_every_tool_of_the_agent(api: StandIn, tmp_path: Path, use_async: bool) -> None:
    rt, db = runtime(tmp_path)
    middleware = AegisMiddleware(rt)
    (ok,) = run_agent(api, TOOLS, ("read_file", {"path": "a.txt"}), middleware=(middleware,), use_async=use_async)
    assert ok.status == "success" and ok.content == "contents of a.txt"
    (refused,) = run_agent(api, TOOLS, ("delete_file", {"path": "a.txt"}), middleware=(middleware,),
                           use_async=use_async)
    assert refused.status == "error" and "rule 'no-deletes'" in refused.content
    assert CALLS == [("read_file", "a.txt")]
    made = decisions(db)
    assert [outcome(db, d) for d in made] == ["ok", "blocked"]
    assert made[0]["origin"] == {"via": "langchain", "tool": "read_file", "hook": "middleware"}
    verify(db)


def test_middleware_approval_and_timeout(api: StandIn, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    with Approver(db, approve=False, by="bob") as person:
        (denied,) = run_agent(api, TOOLS, ("send_email", {"to": "x@example.com", "body": "b"}),
                              middleware=(AegisMiddleware(rt),))
    assert person.answered and denied.status == "error" and "denied by bob" in denied.content
    (tmp_path / "t").mkdir()
    rt2, db2 = runtime(tmp_path / "t", timeout=0.3)
    (late,) = run_agent(api, TOOLS, ("send_email", {"to": "y@example.com", "body": "b"}),
                        middleware=(AegisMiddleware(rt2),), use_async=True)
    assert late.status == "error" and "no answer" in late.content
    assert CALLS == []
    assert [outcome(db, d) for d in decisions(db)] == ["denied"]
    assert [outcome(db2, d) for d in decisions(db2)] == ["timed_out"]
    verify(db)
    verify(db2)


def test_missing_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "langchain_core.tools", None)
    rt, _ = runtime(tmp_path)
    with pytest.raises(ImportError, match=r"aegis-cli\[langchain\]"):
        govern([], rt)


def test_injected_arguments_reach_the_tool_but_not_the_policy(api: StandIn, tmp_path: Path) -> None:
    @tool
    def whoami(greeting: str, runtime: ToolRuntime) -> str:
        """Say how long the conversation is."""
        CALLS.append(("whoami", runtime.tool_call_id))
        return f"{greeting} {len(runtime.state['messages'])}"

    rt, db = runtime(tmp_path)
    (said,) = run_agent(api, govern([whoami], rt), ("whoami", {"greeting": "hi"}))
    assert said.content == "hi 2" and CALLS == [("whoami", "call_standin_01")]
    assert api.posts()[-2].body["tools"][0]["function"]["parameters"]["properties"] == {"greeting": {"type": "string"}}
    (d,) = decisions(db)
    assert d["action"]["params"] == {"greeting": "hi"}
    verify(db)
