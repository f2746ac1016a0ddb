"""Bugs found while integrating, each pinned by a test."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis_cli import Action, InputError, Policy, PolicyError
from aegis_cli.cli import app

runner = CliRunner()


def test_json_style_surrogate_pair_escapes_load_as_one_character() -> None:
    policy = Policy.from_string('rules:\n  - name: "rocket \\ud83d\\ude80"\n    approval: auto\n')
    assert policy.rules[0].name == "rocket 🚀"
    assert policy.hash.startswith("sha256:")


def test_unpaired_surrogate_escape_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('rules:\n  - name: "bad \\ud83d"\n')
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:11: error: unpaired UTF-16 surrogate" in result.stderr


def test_bad_redaction_glob_is_refused_at_load() -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_string('audit: {redact: [password, "a[b"]}\n', "p.yaml")
    assert str(err.value).startswith("p.yaml:1:28: error: audit.redact: bad glob 'a[b'")


@pytest.mark.parametrize("value", [0, [], {}, False])
def test_action_agent_and_session_must_be_strings_even_when_falsy(value: object) -> None:
    with pytest.raises(InputError):
        Action.from_dict({"type": "a", "target": "b", "agent": value})
    with pytest.raises(InputError):
        Action.from_dict({"type": "a", "target": "b", "session": value})
    assert Action.from_dict({"type": "a", "target": "b", "agent_id": "x"}).agent == "x"


def test_huge_duration_is_bad_input_not_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    policy = str(Path(__file__).parent.parent / "examples" / "policy.yaml")
    runner.invoke(app, ["evaluate", "-p", policy, "-t", "read", "--target", "x", "--record", "--audit-db", str(db)])
    result = runner.invoke(app, ["tail-audit", "--audit-db", str(db), "--since", "891145w"])
    assert result.exit_code == 2
    assert "duration too long" in result.stderr


def test_unnamed_rules_from_merged_files_keep_distinct_names(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("rules:\n  - {match: {type: read}, approval: auto}\n")
    team = tmp_path / "team.yaml"
    team.write_text("rules:\n  - {match: {type: delete}, approval: block}\n")
    policy = Policy.from_yaml_files(base, team)
    assert [r.name for r in policy.rules] == ["rule_0", "base.yaml:rule_0"]
    assert policy.evaluate(Action("read", "x")).rule == "base.yaml:rule_0"
    assert policy.evaluate(Action("delete", "x")).rule == "rule_0"


def test_wrap_mcp_queue_redacts_the_stored_request(tmp_path: Path) -> None:
    """The approval queue of `aegis wrap --mcp` stores the action as the audit trail does: redacted."""
    pytest.importorskip("mcp_server_time")
    policy, db = tmp_path / "policy.yaml", tmp_path / "audit.db"
    policy.write_text('audit: {redact: [timezone]}\n'
                      'rules:\n  - {name: ask, match: {type: get_current_time}, approval: approve}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    argv = [sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(policy), "--audit-db", str(db),
            "--approvals", "queue", "--approval-timeout", "0.5", "--", sys.executable, "-m", "mcp_server_time"]
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None

    def send(msg: dict[str, object]) -> None:
        stdin.write(json.dumps(msg).encode() + b"\n")
        stdin.flush()

    send(init)
    assert json.loads(stdout.readline())["id"] == 0
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
          "params": {"name": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}})
    reply = json.loads(stdout.readline())
    stdin.close()
    assert proc.wait(timeout=30) == 0
    assert reply["id"] == 1 and reply["result"]["isError"] is True  # unanswered: denied
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT action FROM approvals").fetchone()
    assert json.loads(stored)["params"] == {"timezone": "[REDACTED]"}


def test_wrap_without_mcp_refuses_mcp_only_options() -> None:
    policy = str(Path(__file__).parent.parent / "examples" / "policy.yaml")
    result = runner.invoke(app, ["wrap", "-p", policy, "--hide-blocked", "--target", "x", "--", "true"])
    assert result.exit_code == 2
    assert "--target, --hide-blocked only apply with --mcp" in result.stderr


class _Sink:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def is_closing(self) -> bool:
        return False


def test_mcp_call_before_the_server_names_itself_is_refused_not_guessed() -> None:
    """A rule on the server's name must not be bypassed by calling before initialize is answered."""
    import asyncio
    import json

    from aegis_cli.wrap.mcp import McpWrapOptions, McpWrapper

    policy = Policy.from_string("rules:\n  - {match: {target: mcp-time}, approval: block}\n"
                                "defaults: {approval: auto}\n")
    wrapper = McpWrapper(McpWrapOptions(policy, ["python", "-m", "mcp_server_time"]))
    server, host = _Sink(), _Sink()
    wrapper._child_in = server  # type: ignore[assignment]
    wrapper._out = host  # type: ignore[assignment]
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_current_time",
                                                                          "arguments": {}}}

    async def go() -> None:
        wrapper._on_host_line(json.dumps(call).encode() + b"\n")

    asyncio.run(go())
    assert server.data == []
    answer = json.loads(host.data[0])
    assert answer["id"] == 1 and answer["result"]["isError"] is True
    assert "has not said its name" in json.dumps(answer)


def test_model_proxy_queue_stores_requests_redacted(tmp_path: Path) -> None:
    from aegis_cli.audit.approvals import ApprovalQueue
    from aegis_cli.engine.models import Approval, Decision, RiskLevel
    from aegis_cli.wrap.model_proxy import approval_handler

    db = tmp_path / "audit.db"
    handler, _ = approval_handler("queue", db, 5.0, ["password"])
    decision = Decision(Approval.APPROVE, RiskLevel.HIGH, "r", "why")
    req = handler.queue.submit(Action("login", "crm", {"user": "ana", "password": "hunter2"}), decision)
    stored = ApprovalQueue(db).get(req.id)
    assert stored is not None and stored.action.params == {"user": "ana", "password": "[REDACTED]"}


def test_per_type_and_per_key_caches_never_change_a_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    import aegis_cli.engine.policy as policy_module

    monkeypatch.setattr(policy_module, "_CACHE_LIMIT", 8)  # force both caches to fill and clear often
    policy = Policy.from_string(
        "rules:\n"
        "  - {name: big, match: {type: 'del*', target: 'prod*'}, conditions: {param_gt: {n: 5}}, approval: block}\n"
        "  - {name: prod, match: {target: 'prod*'}, approval: approve}\n"
        "  - {name: dels, match: {type: 'del*'}, approval: auto}\n"
    )
    oracle = Policy.from_dict(policy.to_dict())  # explain=True walks every rule, using no cache
    for i in range(300):
        for type_ in (f"delete_{i % 13}", "DELETE", f"read_{i % 7}"):
            for target in (f"prod-{i}", "staging", f"production/{i % 3}"):
                action = Action(type_, target, {"n": i % 11})
                assert policy.evaluate(action).rule == oracle.evaluate(action, explain=True).rule
