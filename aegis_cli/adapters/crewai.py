"""CrewAI: govern a list of tools (``crewai.tools.BaseTool`` subclasses and ``@tool`` functions).

    from aegis_cli.adapters.crewai import govern
    agent = Agent(role=..., goal=..., tools=govern([search, send_email], runtime))

A ``@tool`` function tool is copied with its function governed; any other tool is copied into a
subclass of its own class whose ``_run``/``_arun`` are governed. Name, description and args schema
stay CrewAI's. A refused call never reaches the tool: the agent gets CrewAI's own tool-error output,
a ``ToolFailure`` whose message names the rule and the reason (plain text on CrewAI versions
without ``ToolFailure``). Errors the tool raises itself go to CrewAI unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from aegis_cli.adapters import Governor, refusal_text, require, source
from aegis_cli.adapters._sync_call import call_sync

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.engine.models import Action
    from aegis_cli.runtime.core import Result, Runtime

VIA = "crewai"
EXTRA = "crewai"
_GOVERNED = "__aegis_governed__"


def _action(governor: Governor, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Action:
    arguments: Any = kwargs if not args else (args[0] if len(args) == 1 and not kwargs
                                               else {"args": list(args), **kwargs})
    return governor.action(name, arguments)


def _wrap(governor: Governor, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (sync or async), deciding each call first; keeps its signature for CrewAI's schema."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def governed_async(*args: Any, **kwargs: Any) -> Any:
            # arguments bound here: a tool may well have one called ``source``
            result = await governor.runtime.call(_action(governor, name, args, kwargs),
                                                 functools.partial(fn, *args, **kwargs), source=source(VIA, name))
            return _outcome(result)

        setattr(governed_async, _GOVERNED, True)
        return governed_async

    @functools.wraps(fn)
    def governed(*args: Any, **kwargs: Any) -> Any:
        result = call_sync(governor.runtime, _action(governor, name, args, kwargs),
                           functools.partial(fn, *args, **kwargs), source=source(VIA, name))
        return _outcome(result)

    setattr(governed, _GOVERNED, True)
    return governed


def govern(tools: Iterable[Any], runtime: Runtime, *, namespace: str | None = None, agent: str = "",
           session: str = "") -> list[Any]:
    """Governed copies of CrewAI tools, in the same order.

    ``namespace`` is the action target when the policy's ``tools:`` section does not name one
    (default: the tool name); ``agent`` and ``session`` go into every action.
    """
    base = require("crewai.tools", EXTRA).BaseTool
    from crewai.tools.base_tool import Tool

    governor = Governor(runtime, namespace, agent, session)
    out = []
    for tool in tools:
        if not isinstance(tool, base):
            raise TypeError(f"govern() takes CrewAI tools (crewai.tools.BaseTool, @tool), not {type(tool).__name__}")
        if getattr(type(tool), _GOVERNED, False) or getattr(getattr(tool, "func", None), _GOVERNED, False):
            raise ValueError(f"tool '{tool.name}' is already governed")
        if isinstance(tool, Tool) and type(tool)._run is Tool._run and type(tool).run is Tool.run:
            # A function tool calls its function from run(), arun(), _run() and _arun(): govern the function.
            out.append(tool.model_copy(update={"func": _wrap(governor, tool.name, tool.func)}))
        else:
            out.append(_governed_copy(tool, governor, base))
    return out


def _governed_copy(tool: Any, governor: Governor, base_tool: type) -> Any:
    base = type(tool)
    # Named apart from the tool's class: CrewAI registers every subclass by module and name.
    namespace: dict[str, Any] = {"__module__": __name__, _GOVERNED: True}

    # The governor lives in the class, one class per govern() call: a copied or deep-copied tool
    # stays governed by the same runtime.
    def _run(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _wrap(governor, self.name, functools.partial(base._run, self))(*args, **kwargs)

    namespace["_run"] = functools.wraps(base._run)(_run)
    if base._arun is not base_tool._arun:  # the default _arun only says it has no async version
        async def _arun(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await _wrap(governor, self.name, _as_async(base._arun, self))(*args, **kwargs)

        namespace["_arun"] = functools.wraps(base._arun)(_arun)
    cls = type(base)(f"Governed{base.__name__}", (base,), namespace)
    copy = cls.__new__(cls)
    # What pydantic's model_copy does, into the subclass: same field values, same private state.
    object.__setattr__(copy, "__dict__", dict(tool.__dict__))
    object.__setattr__(copy, "__pydantic_fields_set__", set(tool.__pydantic_fields_set__))
    object.__setattr__(copy, "__pydantic_extra__", tool.__pydantic_extra__)
    object.__setattr__(copy, "__pydantic_private__", dict(tool.__pydantic_private__ or {}))
    return copy


def _as_async(method: Callable[..., Any], self: Any) -> Callable[..., Any]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await method(self, *args, **kwargs)

    return call


def _outcome(result: Result) -> Any:
    if result.ok:
        return result.value
    if result.ran and result.exception is not None:
        raise result.exception  # the tool's own error: CrewAI reports it as it always does
    text = refusal_text(result)
    try:
        from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
    except ImportError:  # CrewAI before ToolFailure: tool errors reach the agent as text
        return text
    return ToolFailure(message=text, reason=ToolFailureReason.TOOL_REPORTED, code=f"aegis_{result.status.value}",
                       details={"rule": result.decision.rule, "status": result.status.value,
                                "decision_id": result.decision_id})


__all__ = ["VIA", "govern"]
