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
from langgraph.config import get_stream_writer

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


# -- streaming: agent.stream / agent.astream, and tools that stream their own progress ---------------
#
# A tool streams through LangGraph's custom stream writer (``get_stream_writer()``, or the
# ``ToolRuntime``'s ``stream_writer``) and, in the "tools" stream mode, ``ToolRuntime.emit_output_delta``.
# Both live in context variables that LangChain sets around the tool, so they must survive the
# governing wrapper on every path: sync, async, and after an approval wait.

def _progress(name: str, path: str, runtime: ToolRuntime) -> None:
    get_stream_writer()({"tool": name, "progress": path})
    runtime.emit_output_delta(f"{name} {path}")


@tool("read_file", response_format="content_and_artifact")
def streaming_read(path: str, runtime: ToolRuntime) -> tuple[str, dict[str, int]]:
    """Read a text file."""
    _progress("read_file", path, runtime)
    CALLS.append(("read_file", path))
    return f"contents of {path}", {"bytes": 11}


@tool("delete_file")
def streaming_delete(path: str, runtime: ToolRuntime) -> str:
    """Delete a file."""
    _progress("delete_file", path, runtime)
    CALLS.append(("delete_file", path))
    return f"deleted {path}"


@tool("send_email")
def streaming_send(to: str, body: str, runtime: ToolRuntime) -> str:
    """Send an email."""
    _progress("send_email", to, runtime)
    CALLS.append(("send_email", to))
    return f"sent to {to}"


@tool("read_file", response_format="content_and_artifact")
async def astreaming_read(path: str, runtime: ToolRuntime) -> tuple[str, dict[str, int]]:
    """Read a text file."""
    _progress("read_file", path, runtime)
    CALLS.append(("read_file", path))
    return f"contents of {path}", {"bytes": 11}


@tool("delete_file")
async def astreaming_delete(path: str, runtime: ToolRuntime) -> str:
    """Delete a file."""
    _progress("delete_file", path, runtime)
    CALLS.append(("delete_file", path))
    return f"deleted {path}"


@tool("send_email")
async def astreaming_send(to: str, body: str, runtime: ToolRuntime) -> str:
    """Send an email."""
    _progress("send_email", to, runtime)
    CALLS.append(("send_email", to))
    return f"sent to {to}"


SYNC_STREAMING = [streaming_read, streaming_delete, streaming_send]
ASYNC_STREAMING = [astreaming_read, astreaming_delete, astreaming_send]


def stream_agent(api: StandIn, tools: list[Any], call: tuple[str, dict[str, Any]], modes: str | list[str], *,
                 middleware: tuple[Any, ...] = (), use_async: bool = False) -> list[tuple[str, Any]]:
    """One turn of create_agent's loop run with ``stream``/``astream``; the (mode, chunk) pairs it yielded."""
    NEXT_CALL[:] = [call]
    before = len(api.posts())
    model = ChatOpenAI(model="gpt-standin", base_url=f"{api.url}/stream{before}/v1", api_key="sk-test", max_retries=0)
    agent = create_agent(model, tools, middleware=list(middleware))
    inputs = {"messages": [{"role": "user", "content": "do it"}]}
    if use_async:
        async def collect() -> list[Any]:
            return [chunk async for chunk in agent.astream(inputs, stream_mode=modes)]

        chunks = asyncio.run(collect())
    else:
        chunks = list(agent.stream(inputs, stream_mode=modes))
    assert len(api.posts()) - before == 2
    return chunks if isinstance(modes, list) else [(modes, chunk) for chunk in chunks]


def tool_messages(chunks: list[tuple[str, Any]]) -> list[ToolMessage]:
    """The ToolMessages an "updates" or "messages" stream carried."""
    out: list[ToolMessage] = []
    for mode, chunk in chunks:
        if mode == "updates":
            out += [m for m in (chunk.get("tools") or {}).get("messages", []) if isinstance(m, ToolMessage)]
        elif mode == "messages" and isinstance(chunk[0], ToolMessage):
            out.append(chunk[0])
    return out


def of(mode: str, chunks: list[tuple[str, Any]]) -> list[Any]:
    return [chunk for m, chunk in chunks if m == mode]


@pytest.mark.parametrize("flavour", ["stream", "astream", "astream-async-tools"])
def test_streamed_agent_tools_stream_their_progress_only_when_allowed(api: StandIn, tmp_path: Path,
                                                                      flavour: str) -> None:
    rt, db = runtime(tmp_path)
    tools = govern(ASYNC_STREAMING if flavour == "astream-async-tools" else SYNC_STREAMING, rt)
    use_async = flavour != "stream"
    for mode in ("updates", "messages", "custom", "tools"):  # one mode a run, as an application asks
        ok = stream_agent(api, tools, ("read_file", {"path": "a.txt"}), mode, use_async=use_async)
        refused = stream_agent(api, tools, ("delete_file", {"path": "b.txt"}), mode, use_async=use_async)
        if mode in ("updates", "messages"):
            (done,), (error,) = tool_messages(ok), tool_messages(refused)
            assert (done.status, done.content, done.artifact) == ("success", "contents of a.txt", {"bytes": 11})
            assert error.status == "error" and error.artifact is None and error.tool_call_id == "call_standin_01"
            assert error.content == ("aegis refused delete_file on delete_file: blocked by rule 'no-deletes': "
                                     "deleting files is never automated")
        if mode == "messages":  # the model's reply came as streamed chunks
            assert api.posts()[-2].body["stream"] is True
            assert any(getattr(c[0], "tool_call_chunks", None) for c in of("messages", refused))
        if mode == "custom":
            assert of("custom", ok) == [{"tool": "read_file", "progress": "a.txt"}]
            assert of("custom", refused) == []
        if mode == "tools":
            started, delta, finished = of("tools", ok)
            assert (started["event"], started["tool_name"], started["input"]) == (
                "tool-started", "read_file", {"path": "a.txt"})
            assert (delta["event"], delta["delta"]) == ("tool-output-delta", "read_file a.txt")
            assert (finished["event"], finished["output"].content) == ("tool-finished", "contents of a.txt")
            # A refusal is LangChain's handled tool error: the call starts and finishes, with no output of its own.
            started, finished = of("tools", refused)
            assert (started["event"], finished["event"]) == ("tool-started", "tool-finished")
            assert finished["output"].status == "error" and "rule 'no-deletes'" in finished["output"].content
    assert CALLS == [("read_file", "a.txt")] * 4  # the delete never ran
    made = decisions(db)
    assert [(d["action"]["type"], outcome(db, d)) for d in made] == [
        ("read_file", "ok"), ("delete_file", "blocked")] * 4
    assert made[0]["action"]["params"] == {"path": "a.txt"}  # the injected ToolRuntime is not an argument
    verify(db)


def test_streamed_approval_waits_for_the_person_and_a_timeout_denies(api: StandIn, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    call = ("send_email", {"to": "bob@example.com", "body": "hi"})
    with Approver(db, approve=True, delay=0.3) as person:  # sync stream: the tool runs after the wait
        chunks = stream_agent(api, govern(SYNC_STREAMING, rt), call, ["updates", "custom"])
    assert person.answered and of("custom", chunks) == [{"tool": "send_email", "progress": "bob@example.com"}]
    (sent,) = tool_messages(chunks)
    assert sent.status == "success" and sent.content == "sent to bob@example.com"
    (d,) = decisions(db)
    assert [e["status"] for e in events(db, d["decision_id"], "approval")] == ["approved"]
    assert outcome(db, d) == "ok"

    (tmp_path / "late").mkdir()
    rt2, db2 = runtime(tmp_path / "late", timeout=0.3)  # nobody answers
    chunks = stream_agent(api, govern(ASYNC_STREAMING, rt2), call, ["updates", "custom"], use_async=True)
    (late,) = tool_messages(chunks)
    assert of("custom", chunks) == [] and late.status == "error"
    assert "email-needs-a-human" in late.content and "no answer" in late.content
    assert CALLS == [("send_email", "bob@example.com")]
    assert [outcome(db2, d) for d in decisions(db2)] == ["timed_out"]
    verify(db)
    verify(db2)


@pytest.mark.parametrize("use_async", [False, True], ids=["stream", "astream"])
def test_middleware_under_streaming(api: StandIn, tmp_path: Path, use_async: bool) -> None:
    rt, db = runtime(tmp_path)
    middleware = (AegisMiddleware(rt),)
    tools = ASYNC_STREAMING if use_async else SYNC_STREAMING
    modes = ["updates", "custom", "tools"]
    ok = stream_agent(api, tools, ("read_file", {"path": "a.txt"}), modes, middleware=middleware,
                      use_async=use_async)
    refused = stream_agent(api, tools, ("delete_file", {"path": "b.txt"}), modes, middleware=middleware,
                           use_async=use_async)
    with Approver(db, approve=True, delay=0.2) as person:
        sent = stream_agent(api, tools, ("send_email", {"to": "x@example.com", "body": "b"}), modes,
                            middleware=middleware, use_async=use_async)
    assert of("custom", ok) == [{"tool": "read_file", "progress": "a.txt"}]
    assert [e["event"] for e in of("tools", ok)] == ["tool-started", "tool-output-delta", "tool-finished"]
    # The middleware refuses before the tool node calls the tool: no custom chunk, no tool event at all.
    assert of("custom", refused) == [] and of("tools", refused) == []
    (error,) = tool_messages(refused)
    assert error.status == "error" and "rule 'no-deletes'" in error.content
    assert person.answered and of("custom", sent) == [{"tool": "send_email", "progress": "x@example.com"}]
    assert CALLS == [("read_file", "a.txt"), ("send_email", "x@example.com")]
    made = decisions(db)
    assert [(d["action"]["type"], outcome(db, d)) for d in made] == [
        ("read_file", "ok"), ("delete_file", "blocked"), ("send", "ok")]
    assert {d["origin"]["hook"] for d in made} == {"middleware"}
    verify(db)


def test_stream_events_v3_tool_call_streams(api: StandIn, tmp_path: Path) -> None:
    import warnings

    rt, db = runtime(tmp_path)
    tools = govern(SYNC_STREAMING, rt)
    seen = []
    for name, path in (("read_file", "a.txt"), ("delete_file", "b.txt")):
        NEXT_CALL[:] = [(name, {"path": path})]
        model = ChatOpenAI(model="gpt-standin", base_url=f"{api.url}/v3{len(api.posts())}/v1", api_key="sk-test",
                           max_retries=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the v3 protocol is marked experimental
            run = create_agent(model, tools).stream_events({"messages": [{"role": "user", "content": "go"}]},
                                                           version="v3")
            seen += [(c.tool_name, list(c.output_deltas), c.output, c.error) for c in run.tool_calls]
    assert seen == [
        ("read_file", ["read_file a.txt"], "contents of a.txt", None),
        ("delete_file", [], "aegis refused delete_file on delete_file: blocked by rule 'no-deletes': "
                            "deleting files is never automated", None)]
    assert CALLS == [("read_file", "a.txt")]
    assert [outcome(db, d) for d in decisions(db)] == ["ok", "blocked"]


def test_a_sync_tool_invoked_from_an_async_node_keeps_the_stream_writer(tmp_path: Path) -> None:
    # Sync code inside a running loop: call_sync moves the call to a helper thread, which must carry
    # LangGraph's context along, as the bare tool's call would have it.
    from typing import TypedDict

    from langgraph.graph import START, StateGraph

    class State(TypedDict):
        out: str

    @tool
    def fetch(url: str) -> str:
        """Fetch a page."""
        get_stream_writer()({"fetching": url})
        CALLS.append(("fetch", url))
        return f"page {url}"

    rt, db = runtime(tmp_path)
    (governed,) = govern([fetch], rt)

    async def node(state: State) -> State:
        return {"out": governed.invoke({"url": "https://example.org"})}

    graph = StateGraph(State).add_node("fetch", node).add_edge(START, "fetch").compile()

    async def collect() -> list[Any]:
        return [c async for c in graph.astream({"out": ""}, stream_mode=["custom", "values"])]

    chunks = asyncio.run(collect())
    assert ("custom", {"fetching": "https://example.org"}) in chunks
    assert chunks[-1] == ("values", {"out": "page https://example.org"})
    assert CALLS == [("fetch", "https://example.org")]
    assert [outcome(db, d) for d in decisions(db)] == ["ok"]
