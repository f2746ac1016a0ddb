"""LangChain (langchain-core 1.x): govern a list of tools, or every tool call of a ``create_agent`` agent.

    from aegis_cli.adapters.langchain import govern, AegisMiddleware
    tools = govern([search, send_email], runtime)                        # still BaseTools
    agent = create_agent(model, tools)
    # or, for every tool the agent has:
    agent = create_agent(model, [search, send_email], middleware=[AegisMiddleware(runtime)])

A governed tool is a copy of the tool whose class is a subclass of the tool's own class, with only
``_run``/``_arun`` overridden: name, description, args schema, callbacks, injected arguments and
``response_format`` stay the framework's. A refused call raises a ``ToolException`` (which is also an
``ActionRefused``) that the governed tool always handles, so the model gets a ``ToolMessage`` with
``status="error"`` naming the rule and the reason. The tool's own errors are handled (or not) exactly
as its ``handle_tool_error`` says.

The middleware decides in ``wrap_tool_call``/``awrap_tool_call``; a refusal is a ``ToolMessage`` with
``status="error"``. Use one or the other for a tool: both would decide (and audit) each call twice.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aegis_cli.adapters import ActionRefused, Governor, refusal_text, require, source
from aegis_cli.adapters._sync_call import call_sync

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.engine.models import Action
    from aegis_cli.runtime.core import Result, Runtime

VIA = "langchain"
EXTRA = "langchain"

# Set while a governed ``_arun`` hands the call to the framework's default ``_arun``, which runs
# ``self._run`` on a worker thread (the context is copied there): that ``_run`` must not decide again.
_delegated: contextvars.ContextVar[object] = contextvars.ContextVar("aegis_langchain_delegated", default=None)
_classes: dict[type, type] = {}
_NOT_ARGUMENTS = frozenset({"run_manager", "callbacks", "config"})


def govern(tools: Iterable[Any], runtime: Runtime, *, namespace: str | None = None, agent: str = "",
           session: str = "") -> list[Any]:
    """Governed copies of LangChain tools (``BaseTool``s, ``@tool`` functions), in the same order.

    ``namespace`` is the action target when the policy's ``tools:`` section does not name one
    (default: the tool name); ``agent`` and ``session`` go into every action.
    """
    base_tool = require("langchain_core.tools", EXTRA).BaseTool
    governor = Governor(runtime, namespace, agent, session)
    out = []
    for tool in tools:
        if not isinstance(tool, base_tool):
            raise TypeError(f"govern() takes LangChain tools (BaseTool, @tool functions), not {type(tool).__name__}")
        out.append(_governed_copy(tool, governor))
    return out


def _governed_copy(tool: Any, governor: Governor) -> Any:
    if getattr(tool, "__aegis_governed__", False):
        raise ValueError(f"tool '{tool.name}' is already governed")
    cls = _governed_class(type(tool))
    copy = cls.__new__(cls)
    # What pydantic's model_copy does, into the subclass: same field values, same private state.
    object.__setattr__(copy, "__dict__", dict(tool.__dict__))
    object.__setattr__(copy, "__pydantic_fields_set__", set(tool.__pydantic_fields_set__))
    object.__setattr__(copy, "__pydantic_extra__", tool.__pydantic_extra__)
    private = dict(tool.__pydantic_private__ or {})
    private["_aegis"] = _Bound(governor, _visible_arguments(tool), source(VIA, tool.name))
    object.__setattr__(copy, "__pydantic_private__", private)
    copy.handle_tool_error = _error_handler(tool.handle_tool_error)
    return copy


@dataclass(frozen=True, slots=True)
class _Bound:
    governor: Governor
    visible: frozenset[str] | None  # the argument names the model sees; None when the schema does not say
    source: dict[str, Any]  # the audit record's source (runtime.call copies it)

    def arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """The model's arguments of one call: injected values (run manager, config, state) left out."""
        if args:  # a single-input tool gets its input positionally
            return args[0] if len(args) == 1 and not kwargs else {"args": list(args), **self._named(kwargs)}
        return self._named(kwargs)

    def _named(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self.visible is not None:
            return {k: _plain(v) for k, v in kwargs.items() if k in self.visible}
        return {k: _plain(v) for k, v in kwargs.items() if k not in _NOT_ARGUMENTS}


def _visible_arguments(tool: Any) -> frozenset[str] | None:
    try:
        schema = tool.tool_call_schema
        if isinstance(schema, dict):
            return frozenset((schema.get("properties") or {}).keys())
        return frozenset(schema.model_fields)
    except Exception:
        return None


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:
            return value
    return value


def _governed_class(base: type) -> type:
    cls = _classes.get(base)
    if cls is not None:
        return cls
    from langchain_core.tools import BaseTool
    from pydantic import PrivateAttr

    orig_run = base._run
    orig_arun = base._arun
    default_arun = orig_arun is BaseTool._arun

    # functools.wraps keeps the original signature and annotations visible: BaseTool.run passes
    # ``run_manager`` and the RunnableConfig parameter only to a ``_run`` that declares them.
    @functools.wraps(orig_run)
    def _run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _delegated.get() is self:
            _delegated.set(None)  # this copied context only: calls the tool itself makes are decided again
            return orig_run(self, *args, **kwargs)
        bound: _Bound = self.__pydantic_private__["_aegis"]  # pydantic's private-attribute lookup costs ~4 us
        action = bound.governor.action(self.name, bound.arguments(args, kwargs))
        # The tool's arguments are bound here: a tool may well have one called ``source``.
        run = functools.partial(orig_run, self, *args, **kwargs)
        result = call_sync(bound.governor.runtime, action, run, source=bound.source)
        return _outcome(result)

    async def _arun_body(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound: _Bound = self.__pydantic_private__["_aegis"]  # pydantic's private-attribute lookup costs ~4 us
        action = bound.governor.action(self.name, bound.arguments(args, kwargs))

        async def run_original() -> Any:
            token = _delegated.set(self)
            try:
                return await orig_arun(self, *args, **kwargs)
            finally:
                _delegated.reset(token)

        result = await bound.governor.runtime.call(action, run_original, source=bound.source)
        return _outcome(result)

    # With the default _arun (run _run on a thread) BaseTool.arun inspects _run's signature; keep that.
    _arun = functools.wraps(orig_run if default_arun else orig_arun)(_arun_body)

    cls = type(base)(f"Governed{base.__name__}", (base,), {
        "__module__": __name__,
        "__annotations__": {"_aegis": Any},
        "_aegis": PrivateAttr(default=None),
        "__aegis_governed__": True,
        "_run": _run,
        "_arun": _arun,
    })
    _classes[base] = cls
    return cls


def _refused_class() -> type[Exception]:
    global _Refused
    if _Refused is None:
        from langchain_core.tools import ToolException

        class AegisToolRefused(ActionRefused, ToolException):
            """A call aegis refused: a ``ToolException`` for LangChain, an ``ActionRefused`` for Python."""

        _Refused = AegisToolRefused
    return _Refused


_Refused: type[Exception] | None = None


def _outcome(result: Result) -> Any:
    if result.ok:
        return result.value
    if result.ran and result.exception is not None:
        raise result.exception  # the tool's own error, handled as the tool would have handled it
    raise _refused_class()(result)


def _error_handler(original: Any) -> Callable[[Exception], Any]:
    """``handle_tool_error`` of a governed tool: a refusal always reaches the model; the tool's own
    ``ToolException``s are treated as ``original`` says (raised when it is unset)."""

    def handle(exc: Exception) -> Any:
        if isinstance(exc, ActionRefused):
            return str(exc)
        if not original:
            raise exc
        if isinstance(original, bool):
            return exc.args[0] if exc.args else "Tool execution error"
        if isinstance(original, str):
            return original
        return original(exc)

    return handle


# -- middleware for create_agent ------------------------------------------------------------------

class _ToolErrorMessage(Exception):
    """Carries a tool's error ToolMessage through the runtime, so the audit says the tool failed."""

    def __init__(self, message: Any) -> None:
        self.message = message
        super().__init__(str(getattr(message, "content", "")) or "tool error")


def _middleware_class() -> type:
    global _Middleware
    if _Middleware is not None:
        return _Middleware
    agents = require("langchain.agents.middleware", EXTRA)
    from langchain_core.messages import ToolMessage

    def is_error(message: Any) -> bool:
        return isinstance(message, ToolMessage) and message.status == "error"

    class AegisMiddleware(agents.AgentMiddleware):  # type: ignore[misc,name-defined]
        """Decides every tool call of a ``create_agent`` agent; a refusal is an error ``ToolMessage``."""

        def __init__(self, runtime: Runtime, *, namespace: str | None = None, agent: str = "",
                     session: str = "") -> None:
            super().__init__()
            self.governor = Governor(runtime, namespace, agent, session)

        def _action(self, request: Any) -> Action:
            call = request.tool_call
            return self.governor.action(call["name"], call.get("args"))

        def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
            def run(req: Any) -> Any:
                out = handler(req)
                if is_error(out):
                    raise _ToolErrorMessage(out)
                return out

            name = request.tool_call["name"]
            result = call_sync(self.governor.runtime, self._action(request), run, request,
                               source=source(VIA, name, hook="middleware"))
            return self._reply(request, result)

        async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
            async def run(req: Any) -> Any:
                out = await handler(req)
                if is_error(out):
                    raise _ToolErrorMessage(out)
                return out

            name = request.tool_call["name"]
            result = await self.governor.runtime.call(self._action(request), run, request,
                                                      source=source(VIA, name, hook="middleware"))
            return self._reply(request, result)

        @staticmethod
        def _reply(request: Any, result: Result) -> Any:
            if result.ok:
                return result.value
            if isinstance(result.exception, _ToolErrorMessage):
                return result.exception.message
            if result.ran and result.exception is not None:
                raise result.exception
            call = request.tool_call
            return ToolMessage(content=refusal_text(result), tool_call_id=call["id"], name=call["name"],
                               status="error")

    _Middleware = AegisMiddleware
    return AegisMiddleware


_Middleware: type | None = None


def __getattr__(name: str) -> Any:
    # ``AegisMiddleware`` subclasses LangChain's AgentMiddleware, so it is built on first use.
    if name == "AegisMiddleware":
        return _middleware_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["VIA", "AegisMiddleware", "govern"]  # noqa: F822 (AegisMiddleware comes from __getattr__)
