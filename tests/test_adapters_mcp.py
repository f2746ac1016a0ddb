"""The MCP adapter on the official `mcp` client against real servers: `mcp-server-time` (PyPI) and
`@modelcontextprotocol/server-filesystem` (npm, installed by .ci/setup) over stdio, and
tests/mcp_progress_server.py (the SDK's own server, streaming progress) over stdio and streamable HTTP.

The file runs on whichever SDK is installed. The main environment has mcp 2.x; the CrewAI
virtualenv (``.ci/venvs/crewai``, made by ``.ci/setup``) pins mcp 1.x, and the last test runs this
file again with that venv's Python. mcp-server-time needs mcp 2.x, so under 1.x it is started with
the main environment's Python (``AEGIS_TEST_MAIN_PYTHON``, else the venv's base interpreter).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from importlib.metadata import version
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
MCP_MAJOR = int(version("mcp").split(".")[0])
VENV_PYTHON = ROOT / ".ci" / "venvs" / "crewai" / "bin" / "python"  # mcp 1.x
MAIN_PYTHON = sys.executable if MCP_MAJOR >= 2 else os.environ.get("AEGIS_TEST_MAIN_PYTHON", sys._base_executable)
FS_SERVER = ROOT / ".ci" / "node_modules" / ".bin" / "mcp-server-filesystem"
TIME_SERVER = [MAIN_PYTHON, "-m", "mcp_server_time", "--local-timezone", "UTC"]
PROGRESS_SERVER = ROOT / "tests" / "mcp_progress_server.py"

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
  - name: no-long-counts
    match: {type: count, target: progress-server}
    conditions:
      param_gt: {steps: 5}
    risk_level: medium
    approval: block
    reason: long counts are off
  - name: four-needs-a-human
    match: {type: count}
    conditions:
      param_eq: {steps: 4}
    risk_level: medium
    approval: approve
    reason: someone checks fours
"""


def text_of(result: Any) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mt.TextContent))


def failed(result: Any) -> bool:
    """``CallToolResult.is_error`` (2.x) or ``.isError`` (1.x)."""
    return result.is_error if MCP_MAJOR >= 2 else result.isError


def name_in(initialize_result: Any) -> str:
    return (initialize_result.server_info if MCP_MAJOR >= 2 else initialize_result.serverInfo).name


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
    assert type(conv) is mt.CallToolResult  # the installed SDK's own type, 1.x or 2.x
    assert not failed(now) and "Europe/Paris" in text_of(now)
    assert failed(conv) and "no-conversions" in text_of(conv) and "conversions are off" in text_of(conv)
    assert "was not run" in text_of(conv)
    assert not failed(tokyo) and "Asia/Tokyo" in text_of(tokyo) and len(approver.asked) == 1
    assert failed(denied) and "not today" in text_of(denied) and "tokyo-needs-a-human" in text_of(denied)
    assert failed(late) and "no answer in time" in text_of(late)
    assert failed(bad) and "Mars" in text_of(bad)  # the server's own error result, passed on

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
    assert failed(early) and "has not said its name" in text_of(early) and "target=" in text_of(early)
    assert not failed(later)
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
            return name_in(init), read, write, made, late

    name, read, write, made, late = run(main)
    assert not failed(read) and "hello from disk" in text_of(read)
    assert failed(write) and "no-writes" in text_of(write) and "read-only" in text_of(write)
    assert not (work / "evil.txt").exists()
    assert not failed(made) and (work / "reviewed").is_dir() and made_before_answer == [False]
    assert failed(late) and "no answer in time" in text_of(late) and not (work / "unreviewed").exists()
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
            executor = MCPExecutor(session)  # before initialize(): a 1.x session does not keep the name
            fs_name = name_in(await session.initialize())
            http = HttpxExecutor(scheme="http")
            runtime = Runtime(RoutingExecutor({fs_name: executor, "127.0.0.1*": http}),
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
            executor = MCPExecutor(session)
            await session.initialize()
            with pytest.raises(ValueError, match="not this MCP server"):
                await executor.execute(Action("get_current_time", "other-server", {"timezone": "UTC"}))
            return await executor.execute(Action("get_current_time", "mcp-time", {"timezone": "UTC"}))

    assert "UTC" in text_of(run(main))


@needs_fs
def test_executor_and_govern_after_initialize(tmp_path: Path) -> None:
    """2.x sessions keep the server's name; a 1.x session does not, so there an executor runs
    nothing until told which server it is, and a session governed late refuses every call."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("hello\n")
    runtime, db = make_runtime(tmp_path)

    async def main() -> tuple[Any, Any]:
        async with session_for([str(FS_SERVER), str(work)]) as session:
            name = name_in(await session.initialize())
            action = Action("read_text_file", name, {"path": str(work / "hello.txt")})
            if MCP_MAJOR >= 2:
                executed = await MCPExecutor(session).execute(action)
            else:
                with pytest.raises(LookupError, match="target="):
                    await MCPExecutor(session).execute(action)
                executed = await MCPExecutor(session, target=name).execute(action)
            govern(session, runtime)
            return executed, await session.call_tool("read_text_file", {"path": str(work / "hello.txt")})

    executed, called = run(main)
    assert text_of(executed) == "hello\n"
    if MCP_MAJOR >= 2:
        assert text_of(called) == "hello\n"
    else:
        assert failed(called) and "has not said its name" in text_of(called)
        assert "before initialize()" in text_of(called)
    assert len(decisions(db)) == 1


# -- progress: a tool that streams notifications/progress while it runs ----------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def progress_server_over_http(ran: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(PROGRESS_SERVER), "--ran", str(ran), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # importing the SDK's server takes seconds on a loaded machine
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the progress server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    if MCP_MAJOR >= 2:
        from mcp.client.streamable_http import streamable_http_client as connect
    else:
        from mcp.client.streamable_http import streamablehttp_client as connect  # the 1.x name
    # 2.x yields (read, write); 1.x adds a get_session_id callable
    async with connect(url) as streams, ClientSession(streams[0], streams[1]) as session:
        yield session


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
def test_progress_reaches_allowed_calls_and_refused_ones_never_run(tmp_path: Path, transport: str) -> None:
    ran = tmp_path / "ran"  # the server writes a line here when its tool runs
    ran_when_asked: list[str] = []
    runtime, db = make_runtime(tmp_path, Approver(True, on_ask=lambda a: ran_when_asked.append(ran.read_text())))
    progress: dict[str, list[tuple[float, float | None, str | None]]] = {}
    # read_timeout_seconds: a timedelta in 1.x, seconds as a float in 2.x
    timeout: Any = 30.0 if MCP_MAJOR >= 2 else timedelta(seconds=30)

    def listener(key: str) -> Callable[[float, float | None, str | None], Awaitable[None]]:
        progress[key] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress[key].append((done, total, message))

        return on_progress

    async def calls(session: ClientSession) -> dict[str, Any]:
        govern(session, runtime)
        await session.initialize()
        out = {"three": await session.call_tool("count", {"steps": 3}, progress_callback=listener("three"))}
        # positionally, as both SDKs declare them: name, arguments, read_timeout_seconds, progress_callback
        out["four"] = await session.call_tool("count", {"steps": 4}, timeout, listener("four"))
        out["nine"] = await session.call_tool("count", {"steps": 9}, progress_callback=listener("nine"))
        runtime.approval_handler = Approver(None, timeout=0.3)
        out["late"] = await session.call_tool("count", {"steps": 4}, timeout, listener("late"))
        return out

    async def main() -> dict[str, Any]:
        if transport == "stdio":
            async with session_for([sys.executable, str(PROGRESS_SERVER), "--ran", str(ran)]) as session:
                return await calls(session)
        with progress_server_over_http(ran) as url:
            async with http_session(url) as session:
                return await calls(session)

    out = run(main)
    assert not failed(out["three"]) and text_of(out["three"]) == "counted 3"
    assert progress["three"] == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert not failed(out["four"]) and text_of(out["four"]) == "counted 4"
    assert progress["four"] == [(i, 4, f"step {i}") for i in (1, 2, 3, 4)]
    assert ran_when_asked == ["count 3\n"]  # the approved call waited for the answer
    nine = text_of(out["nine"])
    assert failed(out["nine"]) and "no-long-counts" in nine and "long counts are off" in nine
    assert failed(out["late"]) and "no answer in time" in text_of(out["late"])
    assert progress["nine"] == progress["late"] == []
    assert ran.read_text().splitlines() == ["count 3", "count 4"]  # the refused calls never reached the server

    rows = decisions(db)
    assert [(r["action"]["target"], r["action"]["params"]["steps"]) for r in rows] == [
        ("progress-server", 3), ("progress-server", 4), ("progress-server", 9), ("progress-server", 4)]
    assert rows[0]["origin"] == {"via": "mcp", "tool": "count", "server": "progress-server"}
    assert [[e["data"]["status"] for e in events_for(db, r["id"], "execution")] for r in rows] == [
        ["ok"], ["ok"], [], []]
    assert verify_cli(db).returncode == 0


# -- the same file on mcp 1.x ----------------------------------------------------------------------

@pytest.mark.skipif(MCP_MAJOR < 2 or not VENV_PYTHON.exists(),
                    reason="this is the mcp 1.x run, or there is no .ci/venvs/crewai (made by .ci/setup)")
@pytest.mark.timeout(300)
def test_this_file_on_mcp_1x() -> None:
    sdk = subprocess.run([str(VENV_PYTHON), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
                         capture_output=True, text=True, timeout=60)
    assert sdk.stdout.startswith("1."), f"the venv's mcp is {sdk.stdout.strip()!r}, not 1.x {sdk.stderr[-500:]}"
    env = {**os.environ, "AEGIS_TEST_MAIN_PYTHON": sys.executable}  # for mcp-server-time, which needs 2.x
    out = subprocess.run([str(VENV_PYTHON), "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                          "-p", "no:warnings", str(Path(__file__).relative_to(ROOT))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, tail
    # everything ran there but this test and the 2.x Client's (and the filesystem server's, if missing)
    skipped = 2 if FS_SERVER.exists() else 5
    assert re.search(rf"^\d+ passed, {skipped} skipped in ", out.stdout.splitlines()[-1]), tail
