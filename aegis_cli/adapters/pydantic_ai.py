"""Pydantic AI (2.x): govern an ``Agent`` or a toolset, or add ``AegisCapability`` to an agent.

    from aegis_cli.adapters.pydantic_ai import govern, AegisCapability
    agent = govern(Agent("openai:gpt-5", tools=[send_email]), runtime)   # run / run_sync / iter / run_stream
    toolset = govern(FunctionToolset([send_email]), runtime)            # any toolset, MCP servers too
    agent = Agent("openai:gpt-5", tools=[send_email], capabilities=[AegisCapability(runtime)])

Every tool call is decided after Pydantic AI has validated its arguments and before the tool runs.
A refused call never reaches the tool: the model gets Pydantic AI's own failed tool result
(``ToolFailed``: seen by the model, no retry budget spent) naming the rule and the reason. The tool's
own errors, ``ModelRetry`` included, go to Pydantic AI unchanged.

``govern(agent)`` returns a ``WrapperAgent`` that adds ``AegisCapability`` to each run, so it decides
the agent's tools of every kind (function tools, toolsets, MCP servers, capabilities' tools).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aegis_cli.adapters import Governor, refusal_text, require, source

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.runtime.core import Result, Runtime

VIA = "pydantic_ai"
EXTRA = "pydantic-ai"


async def _call(governor: Governor, name: str, args: Any, fn: Any, *fn_args: Any, hook: str) -> Any:
    result = await governor.runtime.call(governor.action(name, args), fn, *fn_args, source=source(VIA, name, hook=hook))
    return _outcome(result)


def _outcome(result: Result) -> Any:
    if result.ok:
        return result.value
    if result.ran and result.exception is not None:
        raise result.exception  # the tool's own error or ModelRetry: Pydantic AI handles it as always
    from pydantic_ai import exceptions

    failed = getattr(exceptions, "ToolFailed", None) or exceptions.ModelRetry
    raise failed(refusal_text(result))


def govern(obj: Any, runtime: Runtime, *, namespace: str | None = None, agent: str = "", session: str = "") -> Any:
    """A governed ``Agent`` (a ``WrapperAgent``) or toolset (a ``WrapperToolset``).

    ``namespace`` is the action target when the policy's ``tools:`` section does not name one
    (default: the tool name); ``agent`` and ``session`` go into every action.
    """
    require("pydantic_ai", EXTRA)
    from pydantic_ai.agent import AbstractAgent
    from pydantic_ai.toolsets import AbstractToolset

    governor = Governor(runtime, namespace, agent, session)
    if isinstance(obj, AbstractAgent):
        return _agent_class()(obj, _capability_class()(governor=governor))
    if isinstance(obj, AbstractToolset):
        return _toolset_class()(obj, governor=governor)
    raise TypeError(f"govern() takes a Pydantic AI Agent or toolset, not {type(obj).__name__}")


_built: dict[str, type] = {}


def _capability_class() -> type:
    if "capability" in _built:
        return _built["capability"]
    require("pydantic_ai", EXTRA)
    from pydantic_ai.capabilities import AbstractCapability

    class AegisCapability(AbstractCapability[Any]):
        """Decides each tool call of the agent it is given to (``Agent(..., capabilities=[...])``)."""

        def __init__(self, runtime: Runtime | None = None, *, namespace: str | None = None, agent: str = "",
                     session: str = "", governor: Governor | None = None) -> None:
            if governor is None:
                if runtime is None:
                    raise TypeError("AegisCapability needs a runtime")
                governor = Governor(runtime, namespace, agent, session)
            self.governor = governor

        @classmethod
        def get_serialization_name(cls) -> str | None:
            return None  # holds a live runtime: not something an agent spec can name

        async def wrap_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any, handler: Any) -> Any:
            return await _call(self.governor, call.tool_name, args, handler, args, hook="capability")

    _built["capability"] = AegisCapability
    return AegisCapability


def _toolset_class() -> type:
    if "toolset" in _built:
        return _built["toolset"]
    from dataclasses import dataclass as _dataclass

    from pydantic_ai.toolsets import WrapperToolset

    @_dataclass
    class GovernedToolset(WrapperToolset[Any]):
        """The wrapped toolset, each ``call_tool`` decided first."""

        governor: Any = None

        async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: Any, tool: Any) -> Any:
            return await _call(self.governor, name, tool_args, self.wrapped.call_tool, name, tool_args, ctx, tool,
                                            hook="toolset")

    _built["toolset"] = GovernedToolset
    return GovernedToolset


def _agent_class() -> type:
    if "agent" in _built:
        return _built["agent"]
    from pydantic_ai.agent import WrapperAgent

    class GovernedAgent(WrapperAgent[Any, Any]):
        """The wrapped agent; every run (run, run_sync, run_stream, iter) gets ``AegisCapability``."""

        def __init__(self, wrapped: Any, capability: Any) -> None:
            super().__init__(wrapped)
            self.aegis_capability = capability

        def iter(self, user_prompt: Any = None, **kwargs: Any) -> Any:
            kwargs["capabilities"] = [*(kwargs.get("capabilities") or ()), self.aegis_capability]
            return self.wrapped.iter(user_prompt, **kwargs)

    _built["agent"] = GovernedAgent
    return GovernedAgent


def __getattr__(name: str) -> Any:
    # ``AegisCapability`` subclasses Pydantic AI's AbstractCapability, so it is built on first use.
    if name == "AegisCapability":
        return _capability_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["VIA", "AegisCapability", "govern"]  # noqa: F822 (AegisCapability comes from __getattr__)
