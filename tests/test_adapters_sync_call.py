"""``runtime.call`` from sync code: ``adapters._sync_call.call_sync`` (what sync adapters use) and
``Runtime.call_sync``, both on ``aegis_cli.runtime.sync``: no suspension, an approval, an async tool."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from asyncio import events as asyncio_events
from pathlib import Path
from typing import Any

import pytest
from adapter_kit import POLICY, Approver, decisions, events, runtime, verify

from aegis_cli import Action, Policy, Runtime, SQLiteAuditLogger
from aegis_cli.adapters._sync_call import call_sync
from aegis_cli.approvals import ApprovalAnswer
from aegis_cli.runtime.core import Result, Status

pytestmark = pytest.mark.timeout(60)


def runtime_call_sync(rt: Runtime, action: Action, fn: Any, *args: Any, source: dict[str, Any]) -> Result:
    return rt.call_sync(action, fn, *args, source=source)


both_entry_points = pytest.mark.parametrize("call", [call_sync, runtime_call_sync], ids=["adapters", "runtime"])


async def _echo(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


def _sync_tool(seen: list[tuple[int, Any]]) -> Any:
    """A sync tool that notes its thread and running loop, and runs a loop of its own as tools may."""

    def tool(value: Any) -> Any:
        seen.append((threading.get_ident(), asyncio_events._get_running_loop()))
        return asyncio.run(_echo(value))

    return tool


@both_entry_points
def test_an_allowed_sync_tool_runs_in_this_thread_with_no_loop_running(call: Any, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    seen: list[tuple[int, Any]] = []
    results = [call(rt, Action("get_weather", "weather"), _sync_tool(seen), city, source={"via": "test"})
               for city in ("Paris", "Oslo")]
    assert [(r.status, r.value) for r in results] == [(Status.OK, "Paris"), (Status.OK, "Oslo")]
    # as without aegis: the caller's thread, and no event loop running there (asyncio.run works)
    assert seen == [(threading.get_ident(), None)] * 2
    assert asyncio_events._get_running_loop() is None
    assert [events(db, r.decision_id, "execution")[0]["status"] for r in results] == ["ok", "ok"]
    blocked = call(rt, Action("delete_file", "disk"), _sync_tool(seen), "x", source={"via": "test"})
    assert blocked.status is Status.BLOCKED and len(seen) == 2
    verify(db)


@both_entry_points
def test_an_approval_suspends_the_call_and_the_answer_decides(call: Any, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path, timeout=0.5)
    seen: list[tuple[int, Any]] = []
    send = Action("send", "email")
    with Approver(db, approve=True, delay=0.2) as person:
        approved = call(rt, send, _sync_tool(seen), "hello", source={"via": "test"})
    assert (approved.status, approved.value, person.answered != []) == (Status.OK, "hello", True)
    assert seen == [(threading.get_ident(), None)]  # after the wait too: this thread, no loop running
    with Approver(db, approve=False, delay=0.1):
        denied = call(rt, send, _sync_tool(seen), "no", source={"via": "test"})
    timed_out = call(rt, send, _sync_tool(seen), "late", source={"via": "test"})  # nobody answers
    assert (denied.status, timed_out.status, len(seen)) == (Status.DENIED, Status.DENIED, 1)
    statuses = [events(db, d["decision_id"], "approval")[-1]["status"] for d in decisions(db)]
    assert statuses == ["approved", "denied", "timed_out"]
    verify(db)


@both_entry_points
def test_an_async_callable_runs_as_a_task(call: Any, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)

    async def tool(value: int) -> int:
        async with asyncio.timeout(5):  # needs a current task
            await asyncio.sleep(0)
        return value * 2

    assert call(rt, Action("double", "math"), tool, 21, source={"via": "test"}).value == 42
    with Approver(db, approve=True, delay=0.1):
        approved = call(rt, Action("send", "email"), tool, 2, source={"via": "test"})
    assert (approved.status, approved.value) == (Status.OK, 4)


def test_a_governed_langchain_tool_may_run_its_own_event_loop(tmp_path: Path) -> None:
    from langchain_core.tools import tool

    from aegis_cli.adapters.langchain import govern

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return asyncio.run(_echo(f"sunny in {city}"))

    rt, db = runtime(tmp_path)
    (governed,) = govern([get_weather], rt)
    assert governed.invoke({"city": "Paris"}) == get_weather.invoke({"city": "Paris"}) == "sunny in Paris"
    assert [events(db, d["decision_id"], "execution")[0]["status"] for d in decisions(db)] == ["ok"]


def test_runtime_call_sync_inside_a_running_loop_says_to_await(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    ran: list[int] = []

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"await runtime\.call"):
            rt.call_sync(Action("read", "crm"), ran.append, 1)

    asyncio.run(main())
    assert ran == [] and decisions(db) == []  # nothing decided, nothing ran


class Yes:
    """An approval handler that says yes after a moment, so the call suspends while it waits."""

    async def request(self, action: Action, decision: Any, **kwargs: Any) -> ApprovalAnswer:
        await asyncio.sleep(0.01)
        return ApprovalAnswer.approve("carol", "fine")


@both_entry_points
def test_a_governed_sync_tool_may_call_another_both_waiting_for_approval(call: Any, tmp_path: Path) -> None:
    rt = Runtime(policy=Policy.from_string(POLICY), approval_handler=Yes(), audit=SQLiteAuditLogger(tmp_path / "a.db"))
    send = Action("send", "email")

    def inner(text: str) -> str:
        return text.upper()

    def outer(text: str) -> str:
        nested = call(rt, send, inner, text, source={"via": "test", "tool": "inner"})
        return f"{nested.status}:{nested.value}"

    result = call(rt, send, outer, "hi", source={"via": "test", "tool": "outer"})
    assert (result.status, result.value) == (Status.OK, "ok:HI")
    assert [d["origin"]["tool"] for d in decisions(tmp_path / "a.db")] == ["outer", "inner"]
    verify(tmp_path / "a.db")


CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="unset")


@pytest.mark.parametrize("where", ["no-loop", "approval", "inside-a-loop"])
def test_the_callers_context_variables_reach_the_tool(where: str, tmp_path: Path) -> None:
    # What frameworks keep in context variables (LangGraph's config and stream writer) must reach a
    # governed tool wherever call_sync runs it: this thread, after a suspension, or a helper thread.
    rt, db = runtime(tmp_path)
    seen: list[str] = []
    action = Action("send", "email") if where == "approval" else Action("get_weather", "weather")

    def tool() -> str:
        seen.append(CURRENT.get())
        return "done"

    def governed() -> Result:
        token = CURRENT.set("the caller's")
        try:
            return call_sync(rt, action, tool, source={"via": "test"})
        finally:
            CURRENT.reset(token)

    async def from_a_coroutine() -> Result:
        return governed()  # sync code inside a running loop: the call moves to a helper thread

    if where == "inside-a-loop":
        result = asyncio.run(from_a_coroutine())
    elif where == "approval":
        with Approver(db, approve=True, delay=0.1):
            result = governed()
    else:
        result = governed()
    assert (result.status, seen) == (Status.OK, ["the caller's"])
    assert CURRENT.get() == "unset"
