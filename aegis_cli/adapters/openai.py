"""OpenAI SDK: ``run_tool_calls`` answers the function calls of a Chat Completions or Responses reply, governed.

    from aegis_cli.adapters.openai import run_tool_calls
    reply = client.chat.completions.create(model=..., messages=messages, tools=tools)
    messages += [reply.choices[0].message, *run_tool_calls(reply, [get_weather, send_email], runtime)]

    response = client.responses.create(model=..., input=items, tools=tools)
    items += [*response.output, *run_tool_calls(response, [get_weather, send_email], runtime)]

It takes a ``ChatCompletion`` or its ``message`` (``tool_calls``), or a ``Response`` or its ``output``
items (``function_call``), as the SDK returns them or as dicts, and ``functions`` (a list of
functions, called by their ``__name__``, or a dict name -> function; each gets the call's arguments
as keywords). It returns one answer per call, in order: ``{"role": "tool", ...}`` messages or
``{"type": "function_call_output", ...}`` items. Allowed calls run; a refused call never reaches its
function and its answer is the refusal text naming the rule and the reason; a function that raises is
answered with its error. A call to an unknown function is still decided and audited, then answered
with an error, so the audit trail holds every call the model made. ``arun_tool_calls`` is the same
for async code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aegis_cli.adapters import refusal_text, source
from aegis_cli.adapters._sync_call import call_sync
from aegis_cli.engine.toolcalls import tool_call_to_action

VIA = "openai"


def run_tool_calls(message_or_response: Any, functions: Any, runtime: Any) -> list[dict[str, Any]]:
    """The tool messages / ``function_call_output`` items answering each function call, in order."""
    table = _table(functions)
    return [call.answer(call_sync(runtime, call.action, call.fn, source=call.source))
            for call in _calls(message_or_response, table, runtime)]


async def arun_tool_calls(message_or_response: Any, functions: Any, runtime: Any) -> list[dict[str, Any]]:
    """``run_tool_calls`` for async code: async functions are awaited, sync ones run in this thread."""
    table = _table(functions)
    return [call.answer(await runtime.call(call.action, call.fn, source=call.source))
            for call in _calls(message_or_response, table, runtime)]


class _Call:
    """One function call of the reply: its action, what runs it, and how its answer is shaped."""

    def __init__(self, api: str, call_id: str, name: str, arguments: Any, table: Mapping[str, Callable[..., Any]],
                 runtime: Any) -> None:
        self.api, self.call_id = api, call_id
        self.action = tool_call_to_action(name, arguments, tools=runtime.policy.tools)
        self.source = source(VIA, name, api=api, call_id=call_id)
        fn = table.get(name)
        args = _arguments(arguments)
        if fn is None:
            self.fn: Callable[[], Any] = functools.partial(_fail, LookupError(f"no function named {name!r}"))
        elif args is None:
            self.fn = functools.partial(_fail, ValueError("the arguments are not a JSON object"))
        else:
            self.fn = functools.partial(fn, **args)  # bound here: an argument named "source" stays the tool's

    def answer(self, result: Any) -> dict[str, Any]:
        if result.ok:
            text = _text(result.value)
        elif result.ran and result.exception is not None:
            text = f"error: {type(result.exception).__name__}: {result.exception}"
        else:
            text = refusal_text(result)
        if self.api == "chat":
            return {"role": "tool", "tool_call_id": self.call_id, "content": text}
        return {"type": "function_call_output", "call_id": self.call_id, "output": text}


def _calls(reply: Any, table: Mapping[str, Callable[..., Any]], runtime: Any) -> list[_Call]:
    choices = _get(reply, "choices")
    if isinstance(choices, list):  # a ChatCompletion: its first choice's message
        if not choices:
            return []
        reply = _get(choices[0], "message")
    tool_calls = _get(reply, "tool_calls", _MISSING)
    if tool_calls is not _MISSING:
        return [_Call("chat", str(_get(c, "id")), str(_get(f, "name")), _get(f, "arguments"), table, runtime)
                for c in tool_calls or [] if (f := _get(c, "function")) is not None]
    output = _get(reply, "output", _MISSING)
    items = output if output is not _MISSING else reply
    if isinstance(items, (list, tuple)):
        return [_Call("responses", str(_get(i, "call_id")), str(_get(i, "name")), _get(i, "arguments"), table,
                      runtime)
                for i in items if _get(i, "type") == "function_call"]
    raise TypeError(f"run_tool_calls() needs a ChatCompletion, its message, a Response or its output items, "
                    f"not {type(reply).__name__}")


_MISSING = object()


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _table(functions: Any) -> dict[str, Callable[..., Any]]:
    if isinstance(functions, Mapping):
        items: Iterable[tuple[str, Any]] = functions.items()
    else:
        items = ((getattr(fn, "__name__", ""), fn) for fn in functions)
    table = {}
    for name, fn in items:
        if not callable(fn) or not name:
            raise TypeError(f"run_tool_calls() needs named functions, not {fn!r}")
        table[name] = fn
    return table


def _arguments(arguments: Any) -> dict[str, Any] | None:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return dict(arguments) if isinstance(arguments, Mapping) else None


def _fail(exc: BaseException) -> Any:
    raise exc


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


__all__ = ["arun_tool_calls", "run_tool_calls"]
