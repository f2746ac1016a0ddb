"""`aegis wrap --mcp` against real MCP parts: the official `mcp` client, `mcp-server-time`, raw JSON-RPC.

Each test starts aegis as a real subprocess (`python -m aegis_cli wrap --mcp ...`) wrapping a real
server, and checks what the host sees, what the server saw and what the audit trail holds.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mt
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from pg import bodies, verifies

TIME_SERVER = [sys.executable, "-m", "mcp_server_time"]

POLICY = """\
version: "1"
defaults: {risk_level: medium, approval: approve, reason: "not covered by a rule"}
rules:
  - name: read-time
    match: {type: get_current_time}
    risk_level: low
    approval: auto
  - name: no-conversions
    match: {type: convert_time}
    risk_level: high
    approval: block
    reason: conversions are off limits
"""

# get_current_time needs approval here: the path every approval test takes.
APPROVE_POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: ask-for-time
    match: {type: get_current_time, target: mcp-time}
    risk_level: high
    approval: approve
    reason: someone must agree
"""


def write_policy(tmp_path: Path, text: str = POLICY) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def aegis_argv(policy: Path, db: Path | str, server: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(policy), "--audit-db", str(db),
            *extra, "--", *server]


def params_for(argv: list[str], cwd: Path | None = None) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    return StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(cwd) if cwd else None)


def audit_rows(db: Path | str) -> list[dict[str, Any]]:
    """The trail's records in order, read through aegis's reader (an SQLite file or a PostgreSQL URL)."""
    return bodies(db)


def verify(db: Path | str) -> Any:
    return verifies(db)


def text_of(result: mt.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mt.TextContent))


# -- through the official client ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_allowed_and_blocked_calls_through_the_official_client(tmp_path: Path, mode: str, audit_target: str) -> None:
    policy, db, trace = write_policy(tmp_path), audit_target, tmp_path / "trace.jsonl"
    argv = aegis_argv(policy, db, TIME_SERVER, "--hide-blocked", "--record-trace", str(trace))

    async def session() -> tuple[list[str], mt.CallToolResult, mt.CallToolResult]:
        async with Client(params_for(argv), mode=mode) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            ok = await client.call_tool("get_current_time", {"timezone": "Europe/Paris"})
            blocked = await client.call_tool("convert_time", {"source_timezone": "UTC", "time": "10:00",
                                                              "target_timezone": "Asia/Tokyo"})
            return tools, ok, blocked

    tools, ok, blocked = anyio.run(session)
    assert tools == ["get_current_time"]  # convert_time is blocked whatever its arguments: hidden
    assert not ok.is_error and ok.structured_content["timezone"] == "Europe/Paris"
    assert blocked.is_error
    assert "no-conversions" in text_of(blocked) and "conversions are off limits" in text_of(blocked)

    rows = audit_rows(db)
    decisions = [r for r in rows if r["kind"] == "decision"]
    assert [(d["action"]["type"], d["action"]["target"], d["decision"]["approval"]) for d in decisions] == [
        ("get_current_time", "mcp-time", "auto"), ("convert_time", "mcp-time", "block")]
    assert decisions[0]["action"]["params"] == {"timezone": "Europe/Paris"}
    assert all(d["origin"]["server"] == "mcp-time" and isinstance(d["origin"]["jsonrpc_id"], int)
               for d in decisions)
    assert verify(db).ok

    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    assert {x["dir"] for x in lines} == {"c2s", "s2c"} and {x["server"] for x in lines} == {"mcp-time"}
    calls = [x["msg"] for x in lines if x["msg"].get("method") == "tools/call"]
    assert [c["params"]["name"] for c in calls] == ["get_current_time", "convert_time"]
    # the trace shows the host's view: the refusal aegis wrote is there, answering the blocked call
    answer = next(x["msg"] for x in lines if x["dir"] == "s2c" and x["msg"].get("id") == calls[1]["id"])
    assert answer["result"]["isError"] is True
    # and `aegis simulate` replays it: the same two calls, the same decisions
    from typer.testing import CliRunner

    from aegis_cli.cli import app

    replay = CliRunner().invoke(app, ["simulate", "-p", str(policy), str(trace), "--format", "json"])
    assert "no-conversions" in replay.stdout and "read-time" in replay.stdout


def test_target_option_and_tools_mapping(tmp_path: Path, audit_target: str) -> None:
    policy = write_policy(tmp_path, """\
version: "1"
defaults: {risk_level: low, approval: auto}
tools:
  get_current_time: {type: read_clock}
rules:
  - name: no-clock-on-prod
    match: {type: read_clock, target: prod-clock}
    risk_level: high
    approval: block
""")
    db = audit_target

    async def call() -> mt.CallToolResult:
        async with Client(params_for(aegis_argv(policy, db, TIME_SERVER, "--target", "prod-clock"))) as client:
            return await client.call_tool("get_current_time", {"timezone": "UTC"})

    result = anyio.run(call)
    assert result.is_error is True and "no-clock-on-prod" in text_of(result)
    decisions = [r for r in audit_rows(db) if r["kind"] == "decision"]
    assert [(d["action"]["type"], d["action"]["target"], d["origin"]["server"]) for d in decisions] == [
        ("read_clock", "prod-clock", "prod-clock")]


# -- elicitation: the person answers in their own app ---------------------------------------


def elicitation_answer(answers: list[bool | None], seen: list[Any]) -> Any:
    """A host whose user answers yes/no in turn (None: never answers)."""
    async def callback(context: Any, params: Any) -> mt.ElicitResult:
        seen.append(params)
        approve = answers.pop(0)
        if approve is None:
            await anyio.sleep(30)
        return mt.ElicitResult(action="accept", content={"approve": approve})
    return callback


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_elicitation_approves_and_denies(tmp_path: Path, mode: str, audit_target: str) -> None:
    policy, db = write_policy(tmp_path, APPROVE_POLICY), audit_target
    argv = aegis_argv(policy, db, TIME_SERVER, "--approvals", "deny")
    seen: list[Any] = []

    async def session() -> list[mt.CallToolResult]:
        async with Client(params_for(argv), mode=mode,
                          elicitation_callback=elicitation_answer([True, False], seen)) as client:
            return [await client.call_tool("get_current_time", {"timezone": "UTC"}) for _ in range(2)]

    yes, no = anyio.run(session)
    assert not yes.is_error and yes.structured_content["timezone"] == "UTC"
    assert no.is_error and "not approved" in text_of(no)
    assert len(seen) == 2 and "get_current_time" in seen[0].message and "ask-for-time" in seen[0].message
    events = [r for r in audit_rows(db) if r["kind"] == "approval"]
    assert [e["data"]["status"] for e in events] == ["approved", "denied"]
    assert events[0]["data"]["by"].startswith("mcp-host:")
    assert verify(db).ok


#: aegis's CLI with the held-call keepalive interval (aegis_cli.wrap.mcp.KEEPALIVE_INTERVAL) shortened
#: to the first argument, so a test sees several beats within a second.
KEEPALIVE_CLI = ("import sys, aegis_cli.wrap.mcp as w; w.KEEPALIVE_INTERVAL = float(sys.argv.pop(1)); "
                 "from aegis_cli.cli import main; main()")


def test_a_held_call_reports_progress_while_the_person_decides(tmp_path: Path) -> None:
    """The host's request timeout can be reset by progress: while its user takes their time over
    the question, aegis sends progress for the held call's progressToken, and forwards nothing."""
    policy, db = write_policy(tmp_path, APPROVE_POLICY), tmp_path / "audit.db"
    argv = aegis_argv(policy, db, TIME_SERVER, "--approvals", "deny")
    argv[1:3] = ["-c", KEEPALIVE_CLI, "0.2"]
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async def slow_yes(context: Any, params: Any) -> mt.ElicitResult:
        with anyio.fail_after(20):
            while len(progress) < 2:
                await anyio.sleep(0.05)
        return mt.ElicitResult(action="accept", content={"approve": True})

    async def session() -> mt.CallToolResult:
        async with Client(params_for(argv), mode="legacy", elicitation_callback=slow_yes) as client:
            return await client.call_tool("get_current_time", {"timezone": "UTC"}, progress_callback=on_progress)

    result = anyio.run(session)
    assert not result.is_error and result.structured_content["timezone"] == "UTC"
    waiting = "aegis: 'get_current_time' is waiting for approval"
    assert progress[:2] == [(1.0, waiting), (2.0, waiting)]
    assert [r["data"]["status"] for r in audit_rows(db) if r["kind"] == "approval"] == ["approved"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_unanswered_elicitation_times_out_as_denied(tmp_path: Path, mode: str, audit_target: str) -> None:
    policy, db = write_policy(tmp_path, APPROVE_POLICY), audit_target
    argv = aegis_argv(policy, db, TIME_SERVER, "--approval-timeout", "1", "--approvals", "deny")

    async def session() -> mt.CallToolResult | None:
        async with Client(params_for(argv), mode=mode, elicitation_callback=elicitation_answer([None], [])) as c:
            if mode == "legacy":
                return await c.call_tool("get_current_time", {"timezone": "UTC"})
            # Per-request era: the host holds the question; a retry after the timeout is refused.
            first = await c.session.call_tool("get_current_time", {"timezone": "UTC"}, allow_input_required=True)
            assert isinstance(first, mt.InputRequiredResult)
            await anyio.sleep(1.5)
            return await c.session.call_tool(
                "get_current_time", {"timezone": "UTC"}, allow_input_required=True,
                input_responses={"dev.aegis/approval": mt.ElicitResult(action="accept", content={"approve": True})},
                request_state=first.request_state)

    result = anyio.run(session)
    assert isinstance(result, mt.CallToolResult) and result.is_error
    assert "not approved" in text_of(result)
    statuses = [r["data"]["status"] for r in audit_rows(db) if r["kind"] == "approval"]
    assert statuses[0] == "timed_out"


def test_per_request_era_approval_state_cannot_be_forged_or_replayed(tmp_path: Path) -> None:
    policy, db = write_policy(tmp_path, APPROVE_POLICY), tmp_path / "audit.db"
    argv = aegis_argv(policy, db, TIME_SERVER, "--approvals", "deny")
    yes = {"dev.aegis/approval": mt.ElicitResult(action="accept", content={"approve": True})}

    async def session() -> list[mt.CallToolResult]:
        async with Client(params_for(argv), elicitation_callback=elicitation_answer([True], [])) as c:
            first = await c.session.call_tool("get_current_time", {"timezone": "UTC"}, allow_input_required=True)
            assert isinstance(first, mt.InputRequiredResult)
            state = first.request_state
            other = await c.session.call_tool("get_current_time", {"timezone": "Asia/Tokyo"},
                                              input_responses=yes, request_state=state)
            forged = await c.session.call_tool("get_current_time", {"timezone": "UTC"},
                                               input_responses=yes, request_state=state[:-4] + "AAAA")
            good = await c.session.call_tool("get_current_time", {"timezone": "UTC"},
                                             input_responses=yes, request_state=state)
            replay = await c.session.call_tool("get_current_time", {"timezone": "UTC"},
                                               input_responses=yes, request_state=state)
            return [other, forged, good, replay]

    other, forged, good, replay = anyio.run(session)
    assert other.is_error and forged.is_error and replay.is_error  # another call, a bad signature, used twice
    assert not good.is_error and good.structured_content["timezone"] == "UTC"


# -- raw JSON-RPC: what the SDK never sends ---------------------------------------------------


class Raw:
    """aegis as a subprocess, spoken to line by line."""

    def __init__(self, argv: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(b"")

    def send(self, msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((msg if isinstance(msg, bytes) else json.dumps(msg).encode()) + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 15) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        assert line, "aegis closed its stdout"
        return json.loads(line)

    def nothing_for(self, seconds: float) -> bool:
        try:
            self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def initialize(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": capabilities or {},
            "clientInfo": {"name": "raw-test", "version": "1"}}})
        reply = self.recv(timeout=60)  # the server's start-up (an interpreter importing the SDK), slow under load
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=15)


def call(i: Any, name: str = "get_current_time", **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": name, "arguments": arguments or {"timezone": "UTC"}}}


def test_cancelling_a_held_call_cancels_its_approval(tmp_path: Path, audit_target: str) -> None:
    policy, db = write_policy(tmp_path, APPROVE_POLICY), audit_target
    raw = Raw(aegis_argv(policy, db, TIME_SERVER, "--approvals", "deny"))
    assert raw.initialize({"elicitation": {"form": {}}})["result"]["serverInfo"]["name"] == "mcp-time"
    raw.send(call(7))
    ask = raw.recv()
    assert ask["method"] == "elicitation/create" and str(ask["id"]).startswith("aegis-elicit-")
    assert ask["params"]["mode"] == "form" and ask["params"]["requestedSchema"]["required"] == ["approve"]
    raw.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}})
    withdrawn = raw.recv()
    assert withdrawn["method"] == "notifications/cancelled" and withdrawn["params"]["requestId"] == ask["id"]
    # a late "yes" to the withdrawn question runs nothing, and the cancelled call gets no answer
    raw.send({"jsonrpc": "2.0", "id": ask["id"], "result": {"action": "accept", "content": {"approve": True}}})
    assert raw.nothing_for(0.5)
    # the session goes on: an id can be reused once its call is over
    raw.send(call(7, timezone="Asia/Tokyo"))
    ask2 = raw.recv()
    raw.send({"jsonrpc": "2.0", "id": ask2["id"], "result": {"action": "decline"}})
    refused = raw.recv()
    assert refused["id"] == 7 and refused["result"]["isError"] is True
    assert raw.close() == 0
    statuses = [r["data"]["status"] for r in audit_rows(db) if r["kind"] == "approval"]
    assert statuses == ["cancelled", "denied"]


def test_relay_is_transparent_and_fails_closed(tmp_path: Path, audit_target: str) -> None:
    policy, db = write_policy(tmp_path), audit_target
    raw = Raw(aegis_argv(policy, db, TIME_SERVER))
    raw.initialize()
    # unrelated requests pass through untouched: the server answers them
    raw.send({"jsonrpc": "2.0", "id": "p", "method": "prompts/list"})
    assert raw.recv() == {"jsonrpc": "2.0", "id": "p", "result": {"prompts": []}}
    # what aegis cannot parse never reaches the server, and a tool call sent as a notification is dropped
    raw.send(b'{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "get_current_time"')
    assert raw.recv()["error"]["code"] == -32700
    raw.send({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "get_current_time",
                                                                   "arguments": {"timezone": "UTC"}}})
    # a call without a name cannot be decided: refused
    raw.send({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {}})
    nameless = raw.recv()
    assert nameless["id"] == 6 and nameless["result"]["isError"] is True
    # escaped spelling is still a tools/call, and still blocked
    raw.send(b'{"jsonrpc":"2.0","id":8,"method":"tools\\/call","params":{"name":"convert_\\u0074ime",'
             b'"arguments":{"source_timezone":"UTC","time":"10:00","target_timezone":"UTC"}}}')
    escaped = raw.recv()
    assert escaped["id"] == 8 and escaped["result"]["isError"] is True
    # many calls in a row: each gets its own answer
    for i in range(100, 130):
        raw.send(call(i))
    assert sorted(raw.recv()["id"] for _ in range(30)) == list(range(100, 130))
    assert raw.close() == 0
    decisions = [r for r in audit_rows(db) if r["kind"] == "decision"]
    assert [d["decision"]["approval"] for d in decisions] == ["block", "block"] + ["auto"] * 30
    assert verify(db).ok


def test_exit_status_and_signals_propagate(tmp_path: Path) -> None:
    policy, db = write_policy(tmp_path), tmp_path / "audit.db"
    server = tmp_path / "server.py"
    server.write_text(
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "for line in sys.stdin:\n"
        "    if 'quit' in line: sys.exit(3)\n"
        "    sys.stdout.write(line); sys.stdout.flush()\n"
        "sys.exit(5)\n")
    server_cmd = [sys.executable, str(server)]
    # the server's own exit status
    raw = Raw(aegis_argv(policy, db, server_cmd))
    raw.send({"jsonrpc": "2.0", "method": "notifications/echo", "params": {"quit": 1}})
    assert raw.proc.wait(timeout=15) == 3
    # EOF on the host side reaches the server
    raw = Raw(aegis_argv(policy, db, server_cmd))
    raw.send({"jsonrpc": "2.0", "method": "notifications/echo"})
    assert raw.recv() == {"jsonrpc": "2.0", "method": "notifications/echo"}
    assert raw.close() == 5
    # SIGTERM to aegis reaches the server
    raw = Raw(aegis_argv(policy, db, server_cmd))
    raw.send({"jsonrpc": "2.0", "method": "notifications/echo"})
    raw.recv()  # the server is up
    raw.proc.send_signal(signal.SIGTERM)
    assert raw.proc.wait(timeout=15) == 42


def test_a_server_that_cannot_start_is_reported(tmp_path: Path) -> None:
    policy, db = write_policy(tmp_path), tmp_path / "audit.db"
    proc = subprocess.run(aegis_argv(policy, db, ["/nonexistent/mcp-server"]), capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 127
    assert proc.stderr.decode().startswith("aegis: cannot start /nonexistent/mcp-server")


def test_unwritable_audit_trail_refuses_to_start(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aegis_cli.cli import app

    policy = write_policy(tmp_path)
    (tmp_path / "dir.db").mkdir()
    result = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(policy), "--audit-db", str(tmp_path / "dir.db"),
                                      "--", *TIME_SERVER])
    assert result.exit_code == 2 and "cannot open the audit trail" in result.output


def test_cli_usage_errors() -> None:
    from typer.testing import CliRunner

    from aegis_cli.cli import app

    runner = CliRunner()
    missing_policy = runner.invoke(app, ["wrap", "--mcp", "--", "mcp-server-time"])
    assert missing_policy.exit_code == 2
    no_command = runner.invoke(app, ["wrap", "--mcp", "-p", "x.yaml"])
    assert no_command.exit_code == 2


def test_blocked_whatever_arguments() -> None:
    from aegis_cli.engine.models import Action
    from aegis_cli.engine.policy import Policy
    from aegis_cli.wrap.messages import always_blocked

    policy = Policy.from_string("""\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - {name: rm-tmp-ok, match: {type: delete}, conditions: {param_matches: {path: "^/tmp/"}}, approval: auto}
  - {name: no-delete, match: {type: delete}, approval: block}
  - {name: shred-any, match: {type: shred}, conditions: {param_matches: {path: "x"}}, approval: block}
  - {name: no-shred, match: {type: shred}, approval: block}
  - {name: no-prod, match: {type: "*", target: prod}, approval: block}
""")
    assert not always_blocked(policy, Action("delete", "fs"))  # some arguments get through
    assert always_blocked(policy, Action("shred", "fs"))  # every path ends in a block
    assert always_blocked(policy, Action("read", "prod"))
    assert not always_blocked(policy, Action("read", "fs"))


# A stdio server that writes down every line it is given and answers each request: what reached it is
# exactly what aegis forwarded.
RECORDING_SERVER = """\
import json, sys
log = open(sys.argv[1], "a")
for line in sys.stdin:
    log.write(line); log.flush()
    msg = json.loads(line)
    for m in msg if isinstance(msg, list) else [msg]:
        if isinstance(m, dict) and "id" in m and "method" in m:
            if m["method"] == "initialize":
                result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                          "serverInfo": {"name": "rec", "version": "1"}}
            else:
                name = (m.get("params") or {}).get("name")
                result = {"content": [{"type": "text", "text": f"ran {name}"}], "isError": False}
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": result}) + "\\n")
            sys.stdout.flush()
"""


def test_disguised_tool_calls_are_decided_or_refused_never_forwarded(tmp_path: Path) -> None:
    """The host's line is read with the C scanner directly and envelope keys checked against a set of
    known names first: odd spacing, escapes, duplicated or case-folded keys and batches still reach a
    decision (blocked here) or a refusal, and the server never sees the blocked tool."""
    policy, db = write_policy(tmp_path), tmp_path / "audit.db"
    seen = tmp_path / "seen.jsonl"
    server = tmp_path / "server.py"
    server.write_text(RECORDING_SERVER)
    raw = Raw(aegis_argv(policy, db, [sys.executable, str(server), str(seen)]))
    raw.initialize()
    args = b'{"source_timezone":"UTC","time":"10:00","target_timezone":"UTC"}'
    blocked = [  # each a convert_time call, which the policy blocks
        b' \t{ "jsonrpc" : "2.0" ,\t"id" :1 , "method"\r: "tools/call" , "params" : { "name" :"convert_time",'
        b' "arguments": ' + args + b' } }  \r',
        b'{"jsonrpc":"2.0","id":2,"\\u006dethod":"tools\\/call","params":{"\\u006eame":"convert_\\u0074ime",'
        b'"arguments":' + args + b'}}',
        b'[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"convert_time","arguments":' + args + b'}}]',
    ]
    for line in blocked:
        raw.send(line)
        reply = raw.recv()
        assert reply["id"] in (1, 2, 3) and reply["result"]["isError"] is True
        assert reply["result"]["content"][0]["text"].startswith("aegis blocked tool 'convert_time'")
    refused = {  # not readable as one request aegis can govern: answered with an error, not forwarded
        b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"get_current_time",'
        b'"name":"convert_time","arguments":' + args + b'}}': -32700,  # duplicated key
        b'{"jsonrpc":"2.0","id":5,"method":"ping","method":"tools/call","params":{"name":"convert_time"}}': -32700,
        b'\xef\xbb\xbf{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"convert_time"}}': -32700,  # BOM
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_current_time"}} '
        b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"convert_time"}}': -32700,  # two values
        b'{"jsonrpc":"2.0","id":9,"method":"ping","Method":"tools/call","params":{"name":"convert_time"}}': -32600,
        b'{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"get_current_time"},'
        b'"param\\u017f":{"name":"convert_time"}}': -32600,  # folds to "params" (Go's encoding/json)
        b'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"get_current_time","Name":"convert_time"}}':
            -32600,
        b'[[{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"convert_time"}}]]': -32600,
    }
    for line, code in refused.items():
        raw.send(line)
        assert raw.recv()["error"]["code"] == code, line
    # an allowed call in the same odd spelling goes through, once, as sent
    raw.send(b' {"params": {"arguments": {"timezone": "UTC"}, "name": "get_current_time"}, "id": 13, '
             b'"method": "tools\\u002fcall", "jsonrpc": "2.0"}')
    assert raw.recv() == {"jsonrpc": "2.0", "id": 13, "result": {"content": [
        {"type": "text", "text": "ran get_current_time"}], "isError": False}}
    assert raw.close() == 0
    forwarded = [json.loads(line) for line in seen.read_text().splitlines()]
    assert [f.get("method") for f in forwarded] == ["initialize", "notifications/initialized", "tools/call"]
    assert forwarded[-1]["id"] == 13
    decisions = [r for r in audit_rows(db) if r["kind"] == "decision"]
    assert [(d["action"]["type"], d["decision"]["approval"]) for d in decisions] == [
        ("convert_time", "block")] * 3 + [("get_current_time", "auto")]


def test_request_ids_keep_their_type_while_a_call_is_held(tmp_path: Path) -> None:
    """A held call's id is looked up only while something is held: then another 7 is refused as in
    progress, and "7" (a different request) is held in its own right."""
    policy, db = write_policy(tmp_path, APPROVE_POLICY.replace("mcp-time", "rec")), tmp_path / "audit.db"
    server = tmp_path / "server.py"
    server.write_text(RECORDING_SERVER)
    raw = Raw(aegis_argv(policy, db, [sys.executable, str(server), str(tmp_path / "seen.jsonl")],
                         "--approvals", "deny"))
    raw.initialize({"elicitation": {"form": {}}})
    raw.send(call(7))
    first = raw.recv()
    assert first["method"] == "elicitation/create"
    raw.send(call(7))
    again = raw.recv()
    assert again["id"] == 7 and "already in progress" in again["error"]["message"]
    raw.send(call("7"))
    second = raw.recv()
    assert second["method"] == "elicitation/create" and second["id"] != first["id"]
    raw.send({"jsonrpc": "2.0", "id": second["id"], "result": {"action": "accept", "content": {"approve": True}}})
    assert raw.recv() == {"jsonrpc": "2.0", "id": "7", "result": {"content": [
        {"type": "text", "text": "ran get_current_time"}], "isError": False}}
    raw.send({"jsonrpc": "2.0", "id": first["id"], "result": {"action": "decline"}})
    denied = raw.recv()
    assert denied["id"] == 7 and denied["result"]["isError"] is True
    assert raw.close() == 0


def test_a_server_that_writes_and_exits_is_heard_to_the_end(tmp_path: Path) -> None:
    """aegis reads the server's stdout on a pipe of its own: it relays every line written to it, to the
    pipe's end (here a child of the server writes the last line, without a newline, a moment after the
    server exited), before exiting with the server's status."""
    policy, db = write_policy(tmp_path), tmp_path / "audit.db"
    (tmp_path / "late.py").write_text(
        "import sys, time\n"
        "time.sleep(1)\n"
        "sys.stdout.write('{\"jsonrpc\": \"2.0\", \"method\": \"notifications/last\"}')\n")
    server = tmp_path / "server.py"
    server.write_text(
        "import subprocess, sys\n"
        "for i in range(200):\n"
        "    sys.stdout.write('{\"jsonrpc\": \"2.0\", \"method\": \"notifications/n\", '\n"
        "                     '\"params\": {\"i\": %d}}\\n' % i)\n"
        "sys.stdout.flush()\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'late.py')!r}], stdin=subprocess.DEVNULL)\n"
        "sys.exit(4)\n")
    raw = Raw(aegis_argv(policy, db, [sys.executable, str(server)]))
    assert [raw.recv()["params"]["i"] for _ in range(200)] == list(range(200))
    assert raw.recv() == {"jsonrpc": "2.0", "method": "notifications/last"}
    assert raw.proc.wait(timeout=15) == 4


def test_the_server_runs_in_a_process_group_of_its_own(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to aegis, which passes it on, not straight to the server: the server is
    put in a process group of its own (a new session on uvloop's loop, which aegis uses when installed)."""
    policy, db = write_policy(tmp_path), tmp_path / "audit.db"
    server = tmp_path / "server.py"
    server.write_text("import json, os, sys\n"
                      "print(json.dumps({'jsonrpc': '2.0', 'method': 'notifications/pg', 'params': {\n"
                      "    'own': os.getpgrp(), 'parent': os.getpgid(os.getppid())}}), flush=True)\n"
                      "sys.stdin.read()\n")
    raw = Raw(aegis_argv(policy, db, [sys.executable, str(server)]))
    groups = raw.recv()["params"]
    assert groups["own"] != groups["parent"] and groups["parent"] == os.getpgid(raw.proc.pid)
    assert raw.close() == 0
