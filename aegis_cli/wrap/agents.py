"""Which coding agent is behind the proxy, so its tool calls get the target its hook gives them.

One policy must mean the same under ``aegis hook <agent>`` and ``aegis wrap -- <agent>``: a
built-in tool of Claude Code (``Bash``, ``Write``, ...) is an action on target ``claude-code``
whichever way it is governed; Codex's on ``codex``, Gemini CLI's on ``gemini-cli``. MCP tools
keep their server as target everywhere (``mcp__server__tool``; Gemini CLI's ``mcp_server_tool``).

An agent is recognised per request from what the real CLIs send (checked against them):

    Claude Code   User-Agent claude-cli/2.1.197 (external, sdk-cli)   (also under the Agent SDK)
    Codex         User-Agent codex_exec/0.171.0 (...); originator codex_exec (codex_cli_rs interactive)
    Gemini CLI    User-Agent GeminiCLI-tui/0.61.0/gemini-2.5-flash (linux; x64; terminal)

and, failing that, from the wrapped command's name (``claude``, ``codex``, ``gemini``), for a
build that sends something else. A client recognised as neither keeps the plain mapping: target =
the tool name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Launchers whose first argument names the program that really runs.
_LAUNCHERS = frozenset({"env", "npx", "pnpx", "bunx", "node", "bun", "deno", "exec", "nohup", "time", "sudo"})


@dataclass(frozen=True, slots=True)
class CodingAgent:
    name: str
    target: str  # the target of its built-in tools: the same as `aegis hook <agent>` uses
    commands: frozenset[str]  # executable and npm package names
    user_agents: tuple[str, ...]  # lower-cased User-Agent prefixes
    gemini_mcp_names: bool = False  # MCP tools are named mcp_<server>_<tool>


CLAUDE_CODE = CodingAgent("claude-code", "claude-code", frozenset({"claude", "claude-code"}),
                          ("claude-cli/", "claude-code/"))
CODEX = CodingAgent("codex", "codex", frozenset({"codex"}), ("codex_exec/", "codex_cli_rs/", "codex_"))
GEMINI_CLI = CodingAgent("gemini-cli", "gemini-cli", frozenset({"gemini", "gemini-cli"}), ("geminicli",),
                         gemini_mcp_names=True)
AGENTS = (CLAUDE_CODE, CODEX, GEMINI_CLI)


def from_headers(headers: Mapping[str, str]) -> CodingAgent | None:
    """The agent a request comes from, by its User-Agent (or Codex's ``originator``); None if unknown."""
    lowered = {k.lower(): v for k, v in headers.items()}
    user_agent = lowered.get("user-agent", "").strip().lower()
    for agent in AGENTS:
        if user_agent.startswith(agent.user_agents):
            return agent
    if lowered.get("originator", "").lower().startswith("codex"):
        return CODEX
    return None


def from_command(command: Sequence[str]) -> CodingAgent | None:
    """The agent the wrapped command runs, by its executable's name (through ``npx``, ``env`` ...)."""
    for arg in command:
        name = os.path.basename(arg)
        if not name or "=" in arg or name.startswith("-"):
            continue  # env's VAR=value and launcher options
        if name in _LAUNCHERS:
            continue
        if name.startswith("@"):  # npx @anthropic-ai/claude-code, npx @openai/codex
            name = arg.rsplit("/", 1)[-1].split("@")[0]
        name = name.split("@")[0]  # npx codex@0.171.0
        for agent in AGENTS:
            if name in agent.commands:
                return agent
        return None
    return None
