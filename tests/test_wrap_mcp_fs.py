"""`aegis wrap --mcp` in front of the real `@modelcontextprotocol/server-filesystem` (Node), driven by
the official `mcp` client; approvals answered from another shell through `aegis approvals`.

The server is installed by the CI set-up: `npm install --prefix .ci @modelcontextprotocol/server-filesystem`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mt
import pytest
from mcp.client import Client
from pg import trail_exists
from test_wrap_mcp import aegis_argv, audit_rows, params_for, text_of, verify

ROOT = Path(__file__).resolve().parent.parent
FS_SERVER = ROOT / ".ci" / "node_modules" / ".bin" / "mcp-server-filesystem"

pytestmark = pytest.mark.skipif(
    not FS_SERVER.exists(),
    reason=f"{FS_SERVER} is missing: run `npm install --prefix .ci @modelcontextprotocol/server-filesystem`")

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
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


def setup(tmp_path: Path, db: str, *extra: str) -> tuple[Path, str, list[str]]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("hello from disk\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return work, db, aegis_argv(policy, db, [str(FS_SERVER), str(work)], *extra)


def test_reads_pass_writes_are_blocked_and_roots_requests_pass_through(tmp_path: Path, audit_target: str) -> None:
    work, db, argv = setup(tmp_path, audit_target)
    roots_asked: list[bool] = []

    async def list_roots(context: Any) -> mt.ListRootsResult:
        # a server-to-client request: it must reach the host through aegis and its answer get back
        roots_asked.append(True)
        return mt.ListRootsResult(roots=[mt.Root(uri=work.as_uri(), name="work")])

    async def session() -> tuple[mt.CallToolResult, mt.CallToolResult, mt.CallToolResult]:
        async with Client(params_for(argv), mode="legacy", list_roots_callback=list_roots) as client:
            read = await client.call_tool("read_text_file", {"path": str(work / "hello.txt")})
            write = await client.call_tool("write_file", {"path": str(work / "evil.txt"), "content": "pwned"})
            listing = await client.call_tool("list_directory", {"path": str(work)})
            return read, write, listing

    read, write, listing = anyio.run(session)
    assert not read.is_error and "hello from disk" in text_of(read)
    assert write.is_error and "no-writes" in text_of(write) and "read-only" in text_of(write)
    assert not (work / "evil.txt").exists()
    assert "hello.txt" in text_of(listing) and "evil.txt" not in text_of(listing)
    assert roots_asked

    decisions = [r for r in audit_rows(db) if r["kind"] == "decision"]
    assert [(d["action"]["type"], d["decision"]["approval"]) for d in decisions] == [
        ("read_text_file", "auto"), ("write_file", "block"), ("list_directory", "auto")]
    server = decisions[0]["action"]["target"]
    assert server and server == decisions[0]["origin"]["server"]  # the server's own serverInfo.name
    assert verify(db).ok


def approvals_cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    return subprocess.run([sys.executable, "-m", "aegis_cli", "approvals", *args, "--audit-db", str(db)],
                          capture_output=True, text=True, env=env, timeout=30)


def wait_for_pending(db: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if trail_exists(db):
            out = approvals_cli(db, "list", "--format", "json")
            if out.returncode == 0 and out.stdout.strip():
                pending = json.loads(out.stdout)
                if pending:
                    return pending[0]
        time.sleep(0.2)
    raise AssertionError("no approval request appeared in the queue")


def test_approval_answered_from_another_shell_goes_through(tmp_path: Path, audit_target: str) -> None:
    work, db, argv = setup(tmp_path, audit_target, "--approvals", "queue", "--approval-timeout", "30")

    async def session() -> mt.CallToolResult:
        async with Client(params_for(argv), mode="legacy") as client:  # no elicitation: the queue asks
            async with anyio.create_task_group() as tg:
                result: list[mt.CallToolResult] = []

                async def do_call() -> None:
                    result.append(await client.call_tool("create_directory", {"path": str(work / "new")}))

                tg.start_soon(do_call)
                request = await anyio.to_thread.run_sync(wait_for_pending, db)
                assert not (work / "new").exists()  # held: the server has not seen it
                assert request["action"]["type"] == "create_directory"
                answer = await anyio.to_thread.run_sync(
                    lambda: approvals_cli(db, "approve", str(request["id"]), "--note", "fine"))
                assert answer.returncode == 0, answer.stderr
            return result[0]

    result = anyio.run(session)
    assert not result.is_error, text_of(result)
    assert (work / "new").is_dir()
    events = [r for r in audit_rows(db) if r["kind"] == "approval"]
    assert [e["data"]["status"] for e in events] == ["approved"]
    assert verify(db).ok


def test_unanswered_queued_approval_times_out_as_denied(tmp_path: Path, audit_target: str) -> None:
    work, db, argv = setup(tmp_path, audit_target, "--approvals", "queue", "--approval-timeout", "1")

    async def session() -> mt.CallToolResult:
        async with Client(params_for(argv), mode="legacy") as client:
            return await client.call_tool("create_directory", {"path": str(work / "never")})

    result = anyio.run(session)
    assert result.is_error and "not approved" in text_of(result)
    assert not (work / "never").exists()
    statuses = [e["data"]["status"] for e in audit_rows(db) if e["kind"] == "approval"]
    assert statuses == ["timed_out"]
    late = approvals_cli(db, "list", "--status", "all", "--format", "json")
    assert [r["status"] for r in json.loads(late.stdout)] == ["timed_out"]
    assert verify(db).ok
