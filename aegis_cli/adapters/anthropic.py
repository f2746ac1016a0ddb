"""Anthropic SDK: governed ``@beta_tool`` functions for the tool runner, and ``run_tool_uses`` for hand-written loops.

    from aegis_cli.adapters.anthropic import govern
    runner = client.beta.messages.tool_runner(model=..., max_tokens=..., messages=[...],
                                              tools=govern([get_weather, send_email], runtime))

``govern`` returns copies of the tools, still the SDK's own tool objects with the same name, description
and input schema, whose ``call`` goes through ``runtime.call``. A refused call never reaches the tool:
it raises the SDK's ``ToolError`` with the refusal text, which the runner sends back as a
``tool_result`` with ``is_error: true``. Raw tool definitions (dicts: server tools, or tools the
caller runs itself) pass through; the runner does not run them.

    results = run_tool_uses(message, [get_weather, send_email], runtime)
    messages += [{"role": "assistant", "content": message.content}, {"role": "user", "content": results}]

``run_tool_uses`` (``arun_tool_uses`` in async code) answers every ``tool_use`` block of a Message with
a ``tool_result`` block: the allowed ones run, the refused ones are ``is_error: true`` with the rule
and reason. A call to a tool that is not in ``tools`` is still decided and audited, then answered
with an error, so the audit trail holds every call the model made.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aegis_cli.adapters import refusal_text, require, source
from aegis_cli.adapters._sync_call import call_sync
from aegis_cli.engine.toolcalls import tool_call_to_action

VIA = "anthropic"


def govern(tools: Iterable[Any], runtime: Any) -> list[Any]:
    """Copies of the runner's tools (``@beta_tool``, ``@beta_async_tool``, builtin tools such as memory),
    each call decided, audited and run only when allowed."""
    lib = require("anthropic.lib.tools", "anthropic")
    toolsets = (lib.BetaRunnableToolset, lib.BetaAsyncRunnableToolset)
    out = []
    for tool in tools:
        if isinstance(tool, Mapping):
            out.append(tool)  # a raw definition: the API or the caller runs it, not the runner
        elif isinstance(tool, toolsets):
            raise TypeError(f"govern() cannot govern toolset {type(tool).__name__}: pass its tools one by one")
        elif callable(getattr(tool, "call", None)) and isinstance(getattr(tool, "name", None), str):
            out.append(_governed(lib, tool, runtime))
        else:
            raise TypeError(f"govern() takes the tool runner's tools (@beta_tool functions), "
                            f"not {type(tool).__name__}")
    return out


def _governed(lib: Any, tool: Any, runtime: Any) -> Any:
    governed = copy.copy(tool)
    original = tool.call
    name = tool.name

    def refused(result: Any) -> BaseException:
        if result.ran and result.exception is not None:
            return result.exception  # the tool's own failure, reported by the runner as without aegis
        return lib.ToolError(refusal_text(result))

    if inspect.iscoroutinefunction(original):
        async def call(input: object) -> Any:
            result = await runtime.call(_action(name, input, runtime), original, input, source=source(VIA, name))
            if result.ok:
                return result.value
            raise refused(result)
    else:
        def call(input: object) -> Any:
            result = call_sync(runtime, _action(name, input, runtime), original, input, source=source(VIA, name))
            if result.ok:
                return result.value
            raise refused(result)

    governed.call = call  # an instance attribute: the runner calls tool.call(tool_use.input)
    return governed


def _action(name: str, input: object, runtime: Any) -> Any:
    return tool_call_to_action(name, input, tools=runtime.policy.tools)


# -- hand-written loops ---------------------------------------------------------------------------

def run_tool_uses(message: Any, tools: Any, runtime: Any) -> list[dict[str, Any]]:
    """The ``tool_result`` blocks answering each ``tool_use`` block of ``message``, in order."""
    table = _table(tools)
    out = []
    for block in _tool_uses(message):
        action, fn, kw = _plan(block, table, runtime)
        out.append(_result_block(block, call_sync(runtime, action, fn, **kw)))
    return out


async def arun_tool_uses(message: Any, tools: Any, runtime: Any) -> list[dict[str, Any]]:
    """``run_tool_uses`` for async code (async tools are awaited; sync ones run in this thread)."""
    table = _table(tools)
    out = []
    for block in _tool_uses(message):
        action, fn, kw = _plan(block, table, runtime)
        out.append(_result_block(block, await runtime.call(action, fn, **kw)))
    return out


def _table(tools: Any) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """name -> a callable taking the tool_use input: a runner tool's ``call``, or a function's keywords."""
    items = tools.items() if isinstance(tools, Mapping) else ((getattr(t, "name", None), t) for t in tools)
    table: dict[str, Callable[[dict[str, Any]], Any]] = {}
    for name, tool in items:
        if callable(getattr(tool, "call", None)) and isinstance(getattr(tool, "name", None), str):
            table[name or tool.name] = tool.call
        elif callable(tool):
            table[name or tool.__name__] = _by_keywords(tool)
        else:
            raise TypeError(f"run_tool_uses() needs tools or functions, not {type(tool).__name__}")
    return table


def _by_keywords(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    def call(input: dict[str, Any]) -> Any:
        return fn(**input)

    return call


def _tool_uses(message: Any) -> list[Any]:
    content = message.get("content") if isinstance(message, Mapping) else getattr(message, "content", None)
    if not isinstance(content, list):
        raise TypeError(f"run_tool_uses() needs a Message (or a dict with a content list), "
                        f"not {type(message).__name__}")
    return [b for b in content if _get(b, "type") == "tool_use"]


def _get(block: Any, key: str) -> Any:
    return block.get(key) if isinstance(block, Mapping) else getattr(block, key, None)


def _plan(block: Any, table: dict[str, Callable[[dict[str, Any]], Any]],
          runtime: Any) -> tuple[Any, Callable[..., Any], dict[str, Any]]:
    name, input = str(_get(block, "name")), _get(block, "input")
    action = tool_call_to_action(name, input, tools=runtime.policy.tools)
    fn = table.get(name)
    if fn is None:
        fn = functools.partial(_missing, name)
    elif not isinstance(input, Mapping):
        fn = functools.partial(_not_an_object, input)
    else:
        fn = functools.partial(fn, dict(input))
    return action, fn, {"source": source(VIA, name, call_id=_get(block, "id"))}


def _missing(name: str) -> Any:
    raise LookupError(f"no tool named {name!r}")


def _not_an_object(input: Any) -> Any:
    raise TypeError(f"tool input must be a JSON object, not {type(input).__name__}")


def _result_block(block: Any, result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "tool_result", "tool_use_id": _get(block, "id")}
    if result.ok:
        out["content"] = _content(result.value)
    elif result.ran:  # the tool ran and failed: its own error, as the tool runner reports it
        exc = result.exception
        content = getattr(exc, "content", None)  # the SDK's ToolError carries its own content
        out["content"] = _content(content) if content is not None else f"Error: {exc!r}"
        out["is_error"] = True
    else:
        out["content"] = refusal_text(result)
        out["is_error"] = True
    return out


def _content(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, Mapping) and "type" in b for b in value):
        return value  # content blocks (text, image, ...)
    return json.dumps(value, default=str)


__all__ = ["arun_tool_uses", "govern", "run_tool_uses"]
