"""Coding agents as MCP hosts of a remote server behind aegis: the real Claude Code, Codex and Gemini CLI
(.ci/node_modules), each with the server configured as the README shows (a command, `aegis wrap --mcp --url
URL`, or an http server at `aegis wrap --mcp --listen`), the official SDK's Streamable HTTP server behind
aegis, and a local stand-in for the agent's model API that asks for one call of the server's tool.

A small step runs: the server's counter moves, and its answer reaches the model. A big one is blocked by
the policy: the counter does not move, and the model is told the rule. Every decision is in the trail, which
verifies. For Claude Code the servers are added with `claude mcp add`, as the README writes it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gemini_standin import GeminiStandIn
from gemini_standin import tool_names as gemini_tool_names
from model_standins import StandIn, _tool_name, offered_tools
from pg import bodies
from test_coding_agents import CODEX_CONFIG, GEMINI_SETTINGS, base_env, cli, project, told
from test_wrap_claude_code import aegis, claude, run, setup
from test_wrap_mcp_http import (
    POLICY,
    Listening,
    Server,
    http_server,  # noqa: F401  (a fixture)
    listen_stop,  # noqa: F401  (a fixture)
    start_listen,
)


def increment(by: int) -> Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]] | None]:
    """The model's turn (Anthropic or Responses): one call of the counter's tool, under the host's name for it."""

    def ask(api: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        found = [n for n in map(_tool_name, offered_tools(body)) if n.endswith("increment")]
        return (found[0], {"by": by}) if found else None

    return ask


def aegis_command(policy: Path, db: str, url: str) -> list[str]:
    return aegis("wrap", "--mcp", "--policy", str(policy), "--audit-db", db, "--url", url)


def backend(tmp: Path, server: Server, stop: list[Listening], how: str) -> tuple[str, int, list[str] | str]:
    """The trail, the server's counter now, and what the host is given: aegis's command (``how`` "command"),
    or the URL of an `aegis wrap --mcp --listen` started here ("listen")."""
    db, policy = str(tmp / "audit.db"), tmp / "policy.yaml"
    policy.write_text(POLICY)
    before = server.count()
    if how == "command":
        return db, before, aegis_command(policy, db, server.url)
    started = start_listen(tmp, "--url", server.url, policy=POLICY, db=db)
    stop.append(started)
    return db, before, started.url


def check(db: str, server: Server, before: int, by: int, what_the_model_was_told: str) -> None:
    decisions = [r for r in bodies(db, "decision") if r["action"]["type"] == "increment"]
    assert [(r["action"]["params"], r["decision"]["approval"]) for r in decisions] == \
        [({"by": by}, "auto" if by == 1 else "block")]
    if by == 1:
        assert server.count() == before + 1
        # the server's answer, in the host's wrapping ({"result":N}, "Output: ...", <untrusted_context>N</...>)
        assert re.search(rf"(?<![0-9]){before + 1}(?![0-9])", what_the_model_was_told), what_the_model_was_told
        assert "no-big-jumps" not in what_the_model_was_told
    else:
        assert server.count() == before  # blocked: never reached the server
        assert "no-big-jumps" in what_the_model_was_told and "big jumps are off limits" in what_the_model_was_told
    verify = subprocess.run(aegis("audit", "verify", "--audit-db", db), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("by", [1, 50])
@pytest.mark.parametrize("how", ["command", "listen"])
def test_claude_code(tmp_path: Path, http_server: Server, listen_stop: list[Listening],  # noqa: F811
                     how: str, by: int) -> None:
    with StandIn(increment(by)) as api:
        work, _, env = setup(tmp_path, api)
        # Claude Code 2.1 connects MCP servers in the background even with -p, so a first turn taken before
        # the server is up (aegis starting on a loaded machine) goes without its tools: wait for it, as a
        # script would; and give it a minute to start, as for Codex below
        env["MCP_CONNECTION_NONBLOCKING"] = "false"
        env["MCP_TIMEOUT"] = "60000"
        db, before, given = backend(tmp_path, http_server, listen_stop, how)
        if isinstance(given, list):  # claude mcp add counter -- aegis wrap --mcp --policy POLICY --url URL
            add = [claude(), "mcp", "add", "counter", "--", *given]
        else:  # aegis wrap --mcp ... --listen 127.0.0.1:PORT --url URL; claude mcp add --transport http ...
            add = [claude(), "mcp", "add", "--transport", "http", "counter", given]
        added = run(add, work, env)
        assert added.returncode == 0, added.stdout + added.stderr
        proc = run([claude(), "-p", "Count.", "--allowedTools", "mcp__counter__increment"], work, env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "mcp__counter__increment" in map(_tool_name, offered_tools(api.posts()[0].body)), [
        (p.path, [t for t in map(_tool_name, offered_tools(p.body)) if "mcp" in t]) for p in api.posts()]
    check(db, http_server, before, by, told(api))


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


# Codex by URL only: with the server as a command, on a loaded machine, its first request has gone out
# before the server had started (startup_timeout_sec or not), without its tools, so nothing to decide; when
# the server is ready in time it runs as the others do.
@pytest.mark.parametrize("by", [1, 50])
def test_codex(tmp_path: Path, http_server: Server, listen_stop: list[Listening],  # noqa: F811
               by: int) -> None:
    db, before, url = backend(tmp_path, http_server, listen_stop, "listen")
    server = f"url = {json.dumps(url)}"
    with StandIn(increment(by)) as api:
        work, home, env = project(tmp_path), tmp_path / "codex-home", base_env(tmp_path / "home")
        home.mkdir()
        # gpt-4.1: a model Codex gives the MCP tools to up front (for gpt-5.5 it defers them behind its
        # tool_search, which the stand-in does not play)
        config = CODEX_CONFIG.format(url=api.url).replace('model = "gpt-5.5"', 'model = "gpt-4.1"')
        (home / "config.toml").write_text(f"{config}\n[mcp_servers.counter]\n{server}\nstartup_timeout_sec = 60\n")
        env.update(CODEX_HOME=str(home), OPENAI_API_KEY="sk-standin")
        proc = run([cli("codex"), "exec", "--skip-git-repo-check", "-C", work, "Count."], work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    called = [i for s in api.posts() for i in s.body.get("input") or [] if i.get("type") == "function_call"]
    offered = [_tool_name(t) for t in offered_tools(api.posts()[0].body)] if api.posts() else []
    assert called and (called[0]["namespace"], called[0]["name"]) == ("mcp__counter", "increment"), \
        ("increment" in offered, len(api.posts()), proc.stderr[-600:])
    check(db, http_server, before, by, told(api))


@pytest.mark.parametrize(("how", "by"), [("command", 50), ("listen", 1)])
def test_gemini_cli(tmp_path: Path, http_server: Server, listen_stop: list[Listening],  # noqa: F811
                    how: str, by: int) -> None:
    db, before, given = backend(tmp_path, http_server, listen_stop, how)
    server = {"command": given[0], "args": given[1:]} if isinstance(given, list) else {"httpUrl": given}

    def ask(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | None:
        found = [n for n in gemini_tool_names(body) if n.endswith("increment")]
        return [(found[0], {"by": by})] if found else None

    with GeminiStandIn(ask) as api:
        work, env = project(tmp_path), base_env(tmp_path / "home")
        (tmp_path / "home" / ".gemini").mkdir()
        (tmp_path / "home" / ".gemini" / "settings.json").write_text(
            json.dumps({**GEMINI_SETTINGS, "mcpServers": {"counter": server}}))
        env.update(GEMINI_API_KEY="AIzaSy-dummy-key-for-the-stand-in-0123", GEMINI_CLI_TRUST_WORKSPACE="true",
                   GOOGLE_GEMINI_BASE_URL=api.url)
        proc = run([cli("gemini"), "-m", "gemini-2.5-flash", "-p", "Count.", "--yolo"], work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mcp_counter_increment" in gemini_tool_names(api.posts()[0].body)
    check(db, http_server, before, by, told(api))
