"""Trace readers: every format, the real recorded traces in ../shared/traces, and malformed input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from aegis_cli.engine.errors import InputError
from aegis_cli.engine.models import Action
from aegis_cli.engine.toolcalls import tool_call_to_action
from aegis_cli.traces import FORMATS, Problem, ReadStats, ToolCall, read_traces
from tests.conftest import ROOT, SHARED

TRACES = SHARED / "traces"
REPLAYS = ROOT / "tests" / "data" / "provider_replays"
needs_shared = pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces is not beside the checkout")


def calls(*paths: str | Path, format: str | None = None, stats: ReadStats | None = None) -> list[ToolCall]:
    items = list(read_traces([str(p) for p in paths], format=format, stats=stats))
    problems = [i for i in items if isinstance(i, Problem)]
    assert not problems, problems
    return [i for i in items if isinstance(i, ToolCall)]


def items(*paths: str | Path, format: str | None = None) -> list[ToolCall | Problem]:
    return list(read_traces([str(p) for p in paths], format=format))


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- the real traces --------------------------------------------------------------------------

# Tool calls per folder, as counted independently in ../shared/traces/README.md. SWE-agent reads one
# fewer than its 232 actions: in one function-calling run a trajectory step has no history tool call,
# and history tool calls are what is read when a file has them. Invariant's 52 include 29 calls inside
# playground-examples.json, which embeds traces as strings (not a trace file; skipped).
REAL = {"agentdojo": ("agentdojo", 2460), "tau-bench": ("tau-bench", 1164), "bfcl": ("bfcl", 1142),
        "claude-code-entire": ("claude-code", 466), "swe-agent": ("swe-agent", 231),
        "harbor-atif": ("atif", 19), "openagents-atif": ("atif", 5), "invariant-explorer": ("openai", 23),
        "mcp-jsonrpc": ("mcp", 12)}


@needs_shared
@pytest.mark.parametrize("folder", sorted(REAL))
def test_real_trace_folders_read_every_call(folder: str) -> None:
    fmt, expected = REAL[folder]
    stats = ReadStats()
    found = calls(TRACES / folder, stats=stats)
    assert len(found) == expected
    assert {c.format for c in found} == {fmt}
    assert all(c.name for c in found)
    # Nothing vanishes: every file is either read or listed as skipped, with its reason.
    assert all(f.format or f.skipped for f in stats.files)
    assert stats.calls == expected


@needs_shared
def test_claude_code_transcripts_map_like_the_hook() -> None:
    found = calls(TRACES / "claude-code-entire" / "sessions")
    bash = next(c for c in found if c.name == "Bash")
    assert bash.namespace == "claude-code" and bash.timestamp is not None and bash.session
    assert bash.call_id.startswith("toolu_") and bash.where.line is not None
    action = bash.to_action()
    assert (action.type, action.target) == ("Bash", "claude-code")
    assert action == tool_call_to_action("Bash", bash.arguments, namespace="claude-code", session=bash.session,
                                         timestamp=bash.timestamp)
    assert "command" in action.params
    mcp = [c for c in found if c.name.startswith("mcp__")]
    assert len(mcp) == 14  # FORMATS.md: 14 MCP calls in claude-code-entire
    server, tool = mcp[0].name[5:].split("__", 1)
    assert (mcp[0].to_action().type, mcp[0].to_action().target) == (tool, server)


@needs_shared
def test_tau_bench_string_arguments_become_params() -> None:
    found = calls(TRACES / "tau-bench")
    first = found[0]
    assert isinstance(first.arguments, str)
    params = first.to_action().params
    assert params == json.loads(first.arguments)
    assert first.where.pointer.startswith("/0/traj/") and first.index == 0
    assert found[-1].index == len(found) - 1


@needs_shared
def test_agentdojo_calls_and_parallel_calls() -> None:
    found = calls(TRACES / "agentdojo" / "runs" / "gpt-4o-2024-05-13" / "banking")
    send = [c for c in found if c.name == "send_money"]
    assert send and all(isinstance(c.arguments, dict) and "recipient" in c.arguments for c in send)
    assert send[0].agent and send[0].session.startswith("banking/")


@needs_shared
def test_openagents_atif_variant_has_claude_code_calls_with_times() -> None:
    found = calls(TRACES / "openagents-atif")
    assert [c.name for c in found] == ["Write", "Bash", "Bash", "Bash", "Write"]
    assert all(c.namespace == "claude-code" and c.timestamp is not None for c in found)
    assert found[0].call_id == "toolu_01TQktt5rHsfYcF1BCvJDFTj"
    assert found[0].where.pointer == "/steps/6/tool_calls/0"


@needs_shared
def test_mcp_cassettes_take_the_server_as_target() -> None:
    found = calls(TRACES / "mcp-jsonrpc")
    targets = Counter(c.to_action().target for c in found)
    assert targets == {"calculator-server": 8, "Test Calculator": 4}
    vcr = [c for c in found if c.where.file.endswith(".vcr")]
    assert all(c.timestamp is not None for c in vcr)
    assert vcr[0].to_action().params == vcr[0].arguments


@needs_shared
def test_bfcl_python_calls_are_parsed_not_evaluated() -> None:
    found = calls(TRACES / "bfcl" / "possible_answer_BFCL_v4_multi_turn_base.json")
    first = found[0]
    assert (first.name, first.arguments) == ("cd", {"folder": "document"})
    positional = next(c for c in found if c.name == "sort")
    assert positional.arguments == {"args": ["final_report.pdf"]}


# -- provider payloads recorded by the wrap tests ---------------------------------------------


def test_openai_chat_completion_and_responses_and_anthropic_message() -> None:
    chat = calls(REPLAYS / "openai_chat.json")
    assert [c.name for c in chat] == ["get_weather", "delete_file"] and chat[0].format == "openai"
    responses = calls(REPLAYS / "openai_responses.json")
    assert responses and responses[0].format == "openai-responses" and responses[0].call_id
    anthropic = calls(REPLAYS / "anthropic_messages.json")
    assert [c.name for c in anthropic] == ["get_weather", "delete_file"]
    assert anthropic[1].to_action().params == {"path": "/srv/app/data.db"}


# -- synthetic samples of each shape ----------------------------------------------------------


def test_openai_arguments_as_string_or_object_and_legacy_function_call(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"y": 2}}}]},
        {"role": "assistant", "function_call": {"name": "h", "arguments": "not json"}},
        {"role": "tool", "tool_call_id": "a", "content": "ok"},
    ]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"model": "gpt", "messages": messages}))
    found = calls(path)
    assert [(c.name, c.to_action().params) for c in found] == [
        ("f", {"x": 1}), ("g", {"y": 2}), ("h", {"arguments": "not json"})]
    assert [c.call_id for c in found] == ["a", "b", None]


def test_invariant_jsonl_with_header_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "inv.jsonl", [
        {"metadata": {"description": "demo"}},
        [{"role": "user", "content": "x"},
         {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "ls", "arguments": {}}}]}],
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "2", "function": {"name": "rm",
                                                                                      "arguments": {"p": "/"}}}]}]},
    ])
    found = calls(path)
    assert [(c.name, c.where.line) for c in found] == [("ls", 2), ("rm", 3)]


def test_responses_items_jsonl_with_mcp_call(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [
        {"type": "message", "role": "assistant", "content": []},
        {"type": "function_call", "name": "send_email", "arguments": '{"to": "x@y.z"}', "call_id": "c1"},
        {"type": "mcp_call", "server_label": "github", "name": "create_issue", "arguments": "{}", "id": "m1"},
    ])
    found = calls(path)
    assert [(c.to_action().type, c.to_action().target) for c in found] == [
        ("send_email", "send_email"), ("create_issue", "github")]


def test_anthropic_message_list_with_mcp_tool_use(tmp_path: Path) -> None:
    path = tmp_path / "msgs.json"
    path.write_text(json.dumps([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "t1", "name": "read_file", "input": {"path": "a"}},
            {"type": "mcp_tool_use", "id": "t2", "name": "query", "server_name": "db", "input": {"sql": "x"}}]},
    ]))
    found = calls(path)
    assert found[0].format == "anthropic"
    assert [(c.to_action().type, c.to_action().target) for c in found] == [("read_file", "read_file"),
                                                                           ("query", "db")]


def test_claude_code_split_lines_and_hook_payloads(tmp_path: Path) -> None:
    block = {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {"file_path": "/x/.env"}}
    line = {"type": "assistant", "sessionId": "s1", "timestamp": "2026-01-01T23:30:00Z",
            "message": {"id": "msg_1", "role": "assistant", "content": [block]}}
    path = write_jsonl(tmp_path / "session.jsonl", [
        {"type": "summary", "summary": "x"}, line, line,  # repeated block: counted once
        {"type": "user", "sessionId": "s1", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}},
    ])
    found = calls(path)
    assert len(found) == 1 and found[0].where.line == 2 and found[0].timestamp.hour == 23
    hooks = write_jsonl(tmp_path / "hooks.jsonl", [
        {"session_id": "s", "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}},
        {"session_id": "s", "hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}},
    ])
    found = calls(hooks)
    assert len(found) == 1 and found[0].format == "claude-code"
    assert (found[0].to_action().type, found[0].to_action().target) == ("Bash", "claude-code")


def test_mcp_wrap_record_trace_format(tmp_path: Path) -> None:
    """The trace `aegis wrap --record-trace` writes: JSON-RPC messages, bare or in {ts, dir, server, msg}."""
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "delete_repo",
                                                                          "arguments": {"repo": "a/b"}}}
    path = write_jsonl(tmp_path / "wrap.jsonl", [
        {"ts": "2026-02-01T10:00:00Z", "dir": "c2s", "server": "github",
         "msg": {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}},
        {"ts": "2026-02-01T10:00:01Z", "dir": "c2s", "server": "github", "msg": call},
        {"ts": "2026-02-01T10:00:02Z", "dir": "s2c", "server": "github",
         "msg": {"jsonrpc": "2.0", "id": 7, "result": {"content": []}}},
        {"ts": "2026-02-01T10:00:03Z", "dir": "c2s", "server": "github", "msg": [call, {**call, "id": 8}]},
    ])
    found = calls(path)
    assert [(c.call_id, c.where.line, c.where.pointer) for c in found] == [
        ("7", 2, "/msg"), ("7", 4, "/msg/0"), ("8", 4, "/msg/1")]
    action = found[0].to_action()
    assert (action.type, action.target, action.params) == ("delete_repo", "github", {"repo": "a/b"})
    assert found[0].timestamp.isoformat() == "2026-02-01T10:00:01+00:00"
    bare = write_jsonl(tmp_path / "bare.jsonl", [call, {"jsonrpc": "2.0", "id": 7, "result": {}}])
    assert [c.to_action().target for c in calls(bare)] == ["delete_repo"]


def test_aegis_actions_and_audit_export(tmp_path: Path) -> None:
    from aegis_cli.audit import SQLiteAuditLogger
    from aegis_cli.audit.export import write_jsonl as export_jsonl
    from aegis_cli.audit.query import rows
    from aegis_cli.engine.policy import Policy

    policy = Policy.from_yaml(ROOT / "examples" / "policy.yaml")
    actions = [Action("delete", "production", {"count": 500}, "bot", "s1"), Action("read_file", "fs", {"p": "x"})]
    db = tmp_path / "audit.db"
    log = SQLiteAuditLogger(db)
    ids = log.record_decisions([(a, policy.evaluate(a), {"via": "test"}) for a in actions])
    log.record_event("approval", ids[0], {"status": "denied", "by": "alice"})
    log.close()
    export = tmp_path / "export.jsonl"
    with sqlite3.connect(db) as conn, export.open("w") as out:
        export_jsonl(rows(conn), out)
    assert len(export.read_text().splitlines()) == 3
    found = calls(export)
    assert [c.format for c in found] == ["aegis-audit"] * 2
    assert [c.to_action().type for c in found] == ["delete", "read_file"]
    assert found[0].to_action().params == {"count": 500} and found[0].agent == "bot"
    assert found[0].timestamp is not None  # the record's time, for time conditions
    assert found[0].call_id == str(ids[0])

    plain = write_jsonl(tmp_path / "actions.jsonl", [a.to_dict() for a in actions])
    found = calls(plain)
    assert [c.format for c in found] == ["aegis", "aegis"]
    assert [c.to_action() for c in found] == actions


def test_decision_jsonl_from_evaluate_reads_back(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "decisions.jsonl", [
        {"action": {"type": "deploy", "target": "web", "timestamp": "2026-01-01T03:00:00+00:00"},
         "approval": "block", "risk_level": "high", "rule": "x", "reason": "", "policy_hash": "h"}])
    found = calls(path)
    assert found[0].format == "aegis-audit" and found[0].timestamp.hour == 3


# -- detection, forcing, stdin, directories ---------------------------------------------------


def test_formats_registry_matches_cli_list() -> None:
    from aegis_cli.cli.simulate_cmds import TRACE_FORMATS

    assert tuple(FORMATS) == TRACE_FORMATS


def test_forced_format_and_unknown_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                              "params": {"name": "a"}}])
    assert calls(path, format="mcp")[0].format == "mcp"
    forced_wrong = items(path, format="bfcl")
    assert isinstance(forced_wrong[0], Problem) and "ground_truth" in forced_wrong[0].message
    with pytest.raises(InputError, match="unknown trace format 'nope'"):
        items(path, format="nope")


def test_named_file_without_a_trace_is_an_error_but_skipped_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# not json\n")
    (tmp_path / "config.json").write_text('{"setting": true}\n')
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / ".hidden.jsonl").write_text("garbage\n")
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "a.jsonl", [{"type": "read", "target": "fs"}])
    with pytest.raises(InputError, match=r"notes\.md: not JSON or JSON Lines"):
        items(tmp_path / "notes.md")
    with pytest.raises(InputError, match="no known trace format"):
        items(tmp_path / "config.json")
    with pytest.raises(InputError, match="empty file"):
        items(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="cannot read"):
        items(tmp_path / "missing.jsonl")
    stats = ReadStats()
    found = calls(tmp_path, stats=stats)
    assert len(found) == 1
    skipped = {Path(f.file).name: f.skipped for f in stats.skipped}
    assert set(skipped) == {"notes.md", "config.json", "empty.jsonl"}  # hidden files are not looked at


def test_malformed_records_are_located_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    path.write_text('{"type": "read", "target": "fs"}\n'
                    '{"type": "read", "target": \n'
                    '{"type": "read"}\n'
                    '\n'
                    '{"type": "delete", "target": "prod", "params": [1]}\n'
                    '{"type": "write", "target": "fs"}\n')
    got = items(path)
    problems = [i for i in got if isinstance(i, Problem)]
    assert [str(p.where) for p in problems] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert "invalid JSON" in problems[0].message
    assert "params" in problems[2].message
    assert [i.name for i in got if isinstance(i, ToolCall)] == ["read", "write"]


def test_malformed_call_inside_a_document_is_located_by_pointer(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"suite_name": "s", "messages": [
        {"role": "assistant", "tool_calls": [{"function": "ok", "args": {}}, {"args": {}}]}]}))
    got = items(path)
    assert isinstance(got[1], Problem) and got[1].where.pointer == "/messages/0/tool_calls/1"
    assert "no function name" in got[1].message


def test_pretty_printed_json_and_broken_first_jsonl_line(tmp_path: Path) -> None:
    pretty = tmp_path / "p.json"
    pretty.write_text(json.dumps([{"type": "a", "target": "b"}, {"type": "c", "target": "d"}], indent=2))
    assert [c.where.pointer for c in calls(pretty)] == ["/0", "/1"]
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"type": "a", "tar\n{"type": "c", "target": "d"}\n')
    got = items(broken)
    assert isinstance(got[0], Problem) and got[0].where.line == 1
    assert isinstance(got[1], ToolCall) and got[1].where.line == 2


def test_stdin_is_read_as_a_stream() -> None:
    lines = "".join(json.dumps({"type": "read", "target": f"f{i}"}) + "\n" for i in range(3))
    code = ("import sys, json\nfrom aegis_cli.traces import read_traces\n"
            "print(json.dumps([c.source() for c in read_traces(['-'])]))")
    out = subprocess.run([sys.executable, "-c", code], input=lines, capture_output=True, text=True, check=True,
                         cwd=ROOT)
    sources = json.loads(out.stdout)
    assert [s["line"] for s in sources] == [1, 2, 3]
    assert sources[0] == {"file": "<stdin>", "line": 1, "call_id": None, "format": "aegis"}


def test_jsonl_lines_with_blanks_and_trailing_junk(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"type": "a", "target": "b"}\n'
                    '   {"type": "c", "target": "d"}  \n'
                    '{"type": "e", "target": "f"} trailing\n'
                    '\t\n'
                    '{"type": "g", "target": "ü"}\r\n')
    got = items(path)
    assert [(i.name, i.where.line) for i in got if isinstance(i, ToolCall)] == [("a", 1), ("c", 2), ("g", 5)]
    problems = [i for i in got if isinstance(i, Problem)]
    assert [p.where.line for p in problems] == [3] and "Extra data" in problems[0].message
