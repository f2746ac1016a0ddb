"""The README's remote-server set-up for Claude Code, run: the real Claude Code CLI (.ci/node_modules), its MCP
servers added with `claude mcp add` as the README shows (a command, `aegis wrap --mcp --url`, and an http
server at `aegis wrap --mcp --listen`), the official SDK's Streamable HTTP server behind aegis, and a local
stand-in for the Anthropic API (tests/model_standins.py) that asks for one call of the server's tool.

A small step runs: the server's counter moves, and the result reaches the model. A big one is blocked by
the policy: the counter does not move, and the model is told the rule. Every decision is in the trail.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from model_standins import StandIn
from pg import bodies
from test_wrap_claude_code import aegis, claude, run, setup
from test_wrap_mcp_http import (
    POLICY,
    Listening,
    Server,
    http_server,  # noqa: F401  (a fixture)
    listen_stop,  # noqa: F401  (a fixture)
    start_listen,
)


def increment(by: int) -> Any:
    """The model's turn: one call of the counter's tool, under whatever name Claude Code gives it."""

    def ask(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        names = [t.get("name", "") for t in body.get("tools") or []]
        found = [n for n in names if n.startswith("mcp__") and n.endswith("__increment")]
        return (found[0], {"by": by}) if found else None

    return ask


def told(api: StandIn) -> list[tuple[bool, str]]:
    """The tool results Claude Code sent the model after the call ((is_error, text) each), as the model sees them."""
    found = []
    for seen in api.posts()[1:]:
        for message in seen.body.get("messages") or []:
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if block.get("type") == "tool_result":
                    content = block.get("content")
                    text = content if isinstance(content, str) else json.dumps(content)
                    found.append((bool(block.get("is_error")), text))
    return found


@pytest.mark.parametrize("by", [1, 50])
@pytest.mark.parametrize("how", ["command", "listen"])
def test_claude_code_reaches_a_remote_server_through_aegis_as_the_readme_sets_it_up(
        tmp_path: Path, http_server: Server, listen_stop: list[Listening], how: str, by: int) -> None:  # noqa: F811
    db = str(tmp_path / "audit.db")
    before = http_server.count()
    with StandIn(increment(by)) as api:
        work, policy, env = setup(tmp_path, api)
        policy.write_text(POLICY)
        if how == "command":  # claude mcp add counter -- aegis wrap --mcp --policy POLICY --url URL
            add = [claude(), "mcp", "add", "counter", "--",
                   *aegis("wrap", "--mcp", "--policy", str(policy), "--audit-db", db, "--url", http_server.url)]
        else:  # aegis wrap --mcp ... --listen 127.0.0.1:PORT --url URL; claude mcp add --transport http ...
            listening = start_listen(tmp_path, "--url", http_server.url, policy=POLICY, db=db)
            listen_stop.append(listening)
            add = [claude(), "mcp", "add", "--transport", "http", "counter", listening.url]
        added = run(add, work, env)
        assert added.returncode == 0, added.stdout + added.stderr
        proc = run([claude(), "-p", "Count.", "--allowedTools", "mcp__counter__increment"], work, env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [tool] = [n for n in (t.get("name") for t in api.posts()[0].body.get("tools") or []) if n.startswith("mcp__")
              and n.endswith("__increment")]
    assert tool == "mcp__counter__increment"  # the server's tools reached Claude Code through aegis
    decisions = [r for r in bodies(db, "decision") if r["action"]["type"] == "increment"]
    assert [(r["action"]["params"], r["decision"]["approval"]) for r in decisions] == \
        [({"by": by}, "auto" if by == 1 else "block")]
    [(is_error, result)] = told(api)
    if by == 1:
        assert http_server.count() == before + 1
        assert not is_error and json.loads(result) == {"result": before + 1}  # the server's answer, passed on
    else:
        assert http_server.count() == before  # blocked: never reached the server
        assert is_error and "no-big-jumps" in result and "big jumps are off limits" in result
    verify = subprocess.run(aegis("audit", "verify", "--audit-db", db), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_claude_mcp_add_takes_a_p_after_the_double_dash_as_its_own_so_the_readme_spells_out_policy(
        tmp_path: Path) -> None:
    # Why the README writes --policy: with -p, Claude Code 2.1 runs a prompt and adds nothing. If a
    # later Claude Code passes -p through, this fails and the README can say -p again.
    with StandIn(increment(1)) as api:
        work, policy, env = setup(tmp_path, api)
        added = run([claude(), "mcp", "add", "counter", "--", "aegis", "wrap", "--mcp", "-p", str(policy),
                     "--url", "http://127.0.0.1:9/mcp"], work, env)
        listed = run([claude(), "mcp", "list"], work, env)
    assert added.returncode == 0 and api.posts()  # it asked the model something
    assert "counter" not in listed.stdout
