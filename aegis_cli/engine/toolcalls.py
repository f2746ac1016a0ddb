"""How a tool call becomes an action. One mapping, used by simulate, test (tool_call cases), wrap and the hook.

- type = the tool name, target = the tool's namespace (MCP server name, ``claude-code``, ...) or,
  when there is none, the tool name again;
- Claude Code, Codex and other MCP hosts name MCP tools ``mcp__<server>__<tool>``: that is type
  ``<tool>`` on target ``<server>``;
- Gemini CLI names them ``mcp_<server>_<tool>`` and says which server in the hook's
  ``mcp_context``; a caller that knows the server and the tool's own name passes them as
  ``mcp=(server, tool)`` (``split_gemini_mcp_name`` reads the name the way Gemini CLI does when
  it does not);
- a policy's ``tools:`` section overrides both, keyed by tool name (globs allowed, first key that
  matches wins, an exact name before any glob)::

      tools:
        send_email: {type: send, target: email}
        "github_*": {target: github}

- params = the arguments object; arguments given as a JSON string are parsed; anything that is
  not an object is kept as ``{"arguments": value}`` so no argument is ever dropped.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping

from aegis_cli.engine.matching import compile_glob
from aegis_cli.engine.models import Action

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any


def split_mcp_name(name: str) -> tuple[str, str] | None:
    """``mcp__server__tool`` -> (server, tool); None for other names."""
    if name.startswith("mcp__"):
        server, sep, tool = name[5:].partition("__")
        if sep and server and tool:
            return server, tool
    return None


def split_gemini_mcp_name(name: str) -> tuple[str, str] | None:
    """Gemini CLI's ``mcp_server_tool`` -> (server, tool), split at the first ``_`` after the prefix
    as Gemini CLI itself does; None for other names."""
    if name.startswith("mcp_") and not name.startswith("mcp__"):
        server, sep, tool = name[4:].partition("_")
        if sep and server and tool:
            return server, tool
    return None


def arguments_to_params(arguments: Any) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return {"arguments": arguments}
        arguments = parsed
    if isinstance(arguments, dict):
        return arguments
    return {"arguments": arguments}


def _mapping_for(name: str, tools: Mapping[str, Mapping[str, str]] | None) -> Mapping[str, str] | None:
    if not tools:
        return None
    exact = tools.get(name)
    if exact is not None:
        return exact
    for key, value in tools.items():
        if any(c in key for c in "*?[") and compile_glob(key, fold=False).test(name):
            return value
    return None


def tool_call_to_action(
    name: str,
    arguments: Any = None,
    *,
    namespace: str | None = None,
    tools: Mapping[str, Mapping[str, str]] | None = None,
    agent: str = "",
    session: str = "",
    timestamp: _dt.datetime | None = None,
    mcp: tuple[str, str] | None = None,
) -> Action:
    """The action for one tool call; ``tools`` is ``policy.tools``; ``mcp`` = (server, tool) when the
    host said which MCP server the call goes to."""
    type_, target = name, namespace or name
    if mcp is None:
        mcp = split_mcp_name(name)
    if mcp is not None:
        target, type_ = mcp
    mapped = _mapping_for(name, tools)
    if mapped is not None:
        type_ = mapped.get("type", type_)
        target = mapped.get("target", target)
    return Action(type_, target, arguments_to_params(arguments), agent, session, timestamp)
