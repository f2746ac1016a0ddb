"""Adapters: govern the agent frameworks people build with, in their own idiom.

One module per framework, each importing its framework only when used. Every module exposes
``govern(obj, runtime)``: it takes the framework's own object (tools, an agent, a client, a session,
a page) and returns the same kind of object whose every tool call goes through
``runtime.call(action, fn, ...)``: decided, audited, approved when the rule says so, run only when
allowed, its outcome audited. A refused call never reaches the tool; the agent gets the framework's
own tool-error channel with the rule and reason, or ``ActionRefused`` where there is none.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from aegis_cli.engine.errors import AegisError

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.engine.models import Action
    from aegis_cli.runtime.core import Result, Runtime


class ActionRefused(AegisError):
    """A governed call that did not run (blocked, denied, timed out, not audited); ``.result`` says why."""

    def __init__(self, result: Result) -> None:
        self.result = result
        super().__init__(refusal_text(result))


@dataclass(frozen=True, slots=True)
class Governor:
    """What an adapter's governed tools share: the runtime, and how a call becomes an action."""

    runtime: Runtime
    namespace: str | None = None  # the target when the policy's tools: section names none
    agent: str = ""
    session: str = ""

    def action(self, name: str, arguments: Any) -> Action:
        from aegis_cli.engine.toolcalls import tool_call_to_action

        return tool_call_to_action(name, arguments, namespace=self.namespace, tools=self.runtime.policy.tools,
                                   agent=self.agent, session=self.session)


def refusal_text(result: Result) -> str:
    """What the model is told about a refused call: the action, the rule and the reason."""
    action = result.action
    return f"aegis refused {action.type} on {action.target}: {result.why}"


def require(module: str, extra: str) -> ModuleType:
    """Import a framework, or fail with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"aegis adapter needs {module}: pip install 'aegis-cli[{extra}]' ({exc})") from None


def source(via: str, tool: str, **extra: Any) -> dict[str, Any]:
    """The audit record's source for a call made through an adapter."""
    return {"via": via, "tool": tool, **{k: v for k, v in extra.items() if v is not None}}


def query_dict(pairs: Any) -> dict[str, Any]:
    """An HTTP query's (key, value) pairs as action params: a repeated key becomes a list, in order."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a duplicate key: servers disagree on which one wins, and aegis
    must decide on what runs."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return obj


__all__ = ["ActionRefused", "Governor", "query_dict", "refusal_text", "require", "source", "unique_pairs"]
