"""The MCP adapter on the official `mcp` client against real servers over stdio: `mcp-server-time`
(PyPI) and `@modelcontextprotocol/server-filesystem` (npm, installed by .ci/setup)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp.types as mt
import pytest
from local_site import Approver, decisions, events_for, local_site, verify_cli
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from aegis_cli import Action, Policy, RoutingExecutor, Runtime, SQLiteAuditLogger
from aegis_cli.adapters.httpx import HttpxExecutor
from aegis_cli.adapters.mcp import MCPExecutor, MCPToolError, govern, server_name
from aegis_cli.wrap import messages

ROOT = Path(__file__).resolve().parent.parent
FS_SERVER = ROOT / ".ci" / "node_modules" / ".bin" / "mcp-server-filesystem"
TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: no-conversions
    match: {type: convert_time, target: mcp-time}
    risk_level: medium
    approval: block
    reason: conversions are off today
  - name: tokyo-needs-a-human
    match: {type: get_current_time}
    conditions:
      param_eq: {timezone: Asia/Tokyo}
    risk_level: medium
    approval: approve
    reason: someone checks Tokyo
  - name: no-writes
    match: {type: write_file}
    risk_level: high
    approval: block
    reason: this workspace is read-only
  - name: mkdir-needs-a-human
    match: {type: create_directory}
    risk_level: medium
    approval: approve
    reason: new directories are reviewed
"""


def text_of(result: Any) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mt.TextContent))


def make_runtime(tmp_path: Path, approver: Any = None) -> tuple[Runtime, Path]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    db = tmp_path / "audit.db"
    return Runtime(policy=Policy.from_yaml(tmp_path / "policy.yaml"), approval_handler=approver,
                   audit=SQLiteAuditLogger(db)), db


@asynccontextmanager
async def session_for(argv: list[str]) -> AsyncIterator[ClientSession]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        yield session


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


def test_time_server_allowed_blocked_and_approved(tmp_path: Path) -> None:
    approver = Approver(True)
    runtime, db = make_runtime(tmp_path, approver)

    async def main() -> tuple[Any, ...]:
        async with session_for(TIME_SERVER) as session:
            assert govern(session, runtime) is session
            await session.initialize()
            assert server_name(session) == "mcp-time"
            now = await session.call_tool("get_current_time", {"timezone": "Europe/Paris"})
            conv = await session.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                            "target_timezone": "Asia/Tokyo"})
            tokyo = await session.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
            runtime.approval_handler = Approver(False)
            denied = await session.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
            runtime.approval_handler = Approver(None, timeout=0.3)
            late = await session.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
            bad = await session.call_tool("get_current_time", {"timezone": "Mars/Olympus"})
            return now, conv, tokyo, denied, late, bad

    now, conv, tokyo, denied, late, bad = run(main)
    assert not now.is_error and "Europe/Paris" in text_of(now)
    assert conv.is_error and "no-conversions" in text_of(conv) and "conversions are off" in text_of(conv)
    assert "was not run" in text_of(conv)
    assert not tokyo.is_error and "Asia/Tokyo" in text_of(tokyo) and len(approver.asked) == 1
    assert denied.is_error and "not today" in text_of(denied) and "tokyo-needs-a-human" in text_of(denied)
    assert late.is_error and "no answer in time" in text_of(late)
    assert bad.is_error and "Mars" in text_of(bad)  # the server's own error result, passed on

    rows = decisions(db)
    assert [(r["action"]["type"], r["action"]["target"]) for r in rows][:2] == [
        ("get_current_time", "mcp-time"), ("convert_time", "mcp-time")]
    assert rows[0]["origin"] == {"via": "mcp", "tool": "get_current_time", "server": "mcp-time"}
    assert rows[0]["action"]["params"] == {"timezone": "Europe/Paris"}
    outcome = {r["id"]: [e["data"]["status"] for e in events_for(db, r["id"], "execution")] for r in rows}
    assert [outcome[r["id"]] for r in rows] == [["ok"], [], ["ok"], [], [], ["error"]]
    approvals = [events_for(db, r["id"], "approval")[0]["data"]["status"] for r in rows[2:5]]
    assert approvals == ["approved", "denied", "timed_out"]
    assert verify_cli(db).returncode == 0


def test_refusal_text_is_the_one_wrap_sends(tmp_path: Path) -> None:
    runtime, _ = make_runtime(tmp_path)

    async def main() -> Any:
        async with session_for(TIME_SERVER) as session:
            govern(session, runtime)
            await session.initialize()
            return await session.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                            "target_timezone": "UTC"})

    result = run(main)
    action = messages.tool_call_action(runtime.policy, "convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                                        "target_timezone": "UTC"}, "mcp-time")
    assert text_of(result) == messages.refusal_text(action, runtime.decide(action), "convert_time")


def test_a_call_before_the_server_named_itself_is_refused(tmp_path: Path) -> None:
    runtime, db = make_runtime(tmp_path)

    async def main() -> tuple[Any, Any]:
        async with session_for(TIME_SERVER) as session:
            govern(session, runtime)
            early = await session.call_tool("get_current_time", {"timezone": "UTC"})
            await session.initialize()
            return early, await session.call_tool("get_current_time", {"timezone": "UTC"})

    early, later = run(main)
    assert early.is_error and "has not said its name" in text_of(early) and "target=" in text_of(early)
    assert not later.is_error
    first = decisions(db)[0]
    assert first["decision"]["approval"] == "block" and events_for(db, first["id"], "execution") == []
    assert verify_cli(db).returncode == 0


def test_the_2x_client_is_governed_through_its_session(tmp_path: Path) -> None:
    client_type = pytest.importorskip("mcp.client").__dict__.get("Client")
    if client_type is None:
        pytest.skip("mcp 1.x has no mcp.client.Client")
    runtime, db = make_runtime(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    params = StdioServerParameters(command=TIME_SERVER[0], args=TIME_SERVER[1:], env=env)

    async def main() -> Any:
        async with client_type(params, mode="legacy") as client:
            govern(client, runtime)
            return await client.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                           "target_timezone": "UTC"})

    assert "no-conversions" in text_of(run(main))
    assert decisions(db)[0]["action"]["target"] == "mcp-time"


needs_fs = pytest.mark.skipif(not FS_SERVER.exists(), reason=f"{FS_SERVER} missing: run .ci/setup")


@needs_fs
def test_filesystem_server_blocked_write_is_not_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("hello from disk\n")
    made_before_answer: list[bool] = []
    approver = Approver(True, on_ask=lambda a: made_before_answer.append((work / "reviewed").exists()))
    runtime, db = make_runtime(tmp_path, approver)

    async def main() -> tuple[Any, ...]:
        async with session_for([str(FS_SERVER), str(work)]) as session:
            govern(session, runtime)
            init = await session.initialize()
            read = await session.call_tool("read_text_file", {"path": str(work / "hello.txt")})
            write = await session.call_tool("write_file", {"path": str(work / "evil.txt"), "content": "pwned"})
            made = await session.call_tool("create_directory", {"path": str(work / "reviewed")})
            runtime.approval_handler = Approver(None, timeout=0.3)
            late = await session.call_tool("create_directory", {"path": str(work / "unreviewed")})
            return init.server_info.name, read, write, made, late

    name, read, write, made, late = run(main)
    assert not read.is_error and "hello from disk" in text_of(read)
    assert write.is_error and "no-writes" in text_of(write) and "read-only" in text_of(write)
    assert not (work / "evil.txt").exists()
    assert not made.is_error and (work / "reviewed").is_dir() and made_before_answer == [False]
    assert late.is_error and "no answer in time" in text_of(late) and not (work / "unreviewed").exists()
    assert {r["action"]["target"] for r in decisions(db)} == {name}
    assert verify_cli(db).returncode == 0


@needs_fs
def test_executors_route_by_target_mcp_and_http(tmp_path: Path) -> None:
    """MCPExecutor and HttpxExecutor side by side in one RoutingExecutor."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "policy.yaml").write_text(POLICY)
    db = tmp_path / "audit.db"

    async def main(site_host: str) -> tuple[list[Any], str]:
        async with session_for([str(FS_SERVER), str(work)]) as session:
            fs_name = (await session.initialize()).server_info.name
            http = HttpxExecutor(scheme="http")
            runtime = Runtime(RoutingExecutor({fs_name: MCPExecutor(session), "127.0.0.1*": http}),
                              policy=Policy.from_yaml(tmp_path / "policy.yaml"), approval_handler=Approver(True),
                              audit=SQLiteAuditLogger(db))
            try:
                return await runtime.execute([
                    Action("create_directory", fs_name, {"path": str(work / "made")}),
                    Action("post", site_host, {"path": "/done", "json": {"dir": "made"}}),
                    Action("read_text_file", fs_name, {"path": str(work / "missing.txt")}),
                ], fail_fast=False) + [await runtime.run_one(
                    Action("write_file", fs_name, {"path": str(work / "evil.txt"), "content": "x"}))], fs_name
            finally:
                await http.aclose()

    with local_site() as site:
        results, fs_name = run(lambda: main(site.url.removeprefix("http://")))
        assert {r["action"]["target"] for r in decisions(db)} == {fs_name, site.url.removeprefix("http://")}
        assert site.paths("POST") == ["/done"]
    made, post, missing, write = results
    assert made.ok and (work / "made").is_dir() and post.ok
    assert missing.status.value == "failed" and isinstance(missing.exception, MCPToolError)
    assert write.status.value == "blocked" and not (work / "evil.txt").exists()
    assert verify_cli(db).returncode == 0


def test_executor_refuses_an_action_for_another_server(tmp_path: Path) -> None:
    async def main() -> Any:
        async with session_for(TIME_SERVER) as session:
            await session.initialize()
            executor = MCPExecutor(session)
            with pytest.raises(ValueError, match="not this MCP server"):
                await executor.execute(Action("get_current_time", "other-server", {"timezone": "UTC"}))
            return await executor.execute(Action("get_current_time", "mcp-time", {"timezone": "UTC"}))

    assert "UTC" in text_of(run(main))
