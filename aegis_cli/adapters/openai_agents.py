"""OpenAI Agents SDK: ``govern(agent, runtime)`` returns a copy of the ``Agent`` whose function tools are governed.

    from aegis_cli.adapters.openai_agents import govern
    result = await Runner.run(govern(agent, runtime), "...")

Each ``FunctionTool`` becomes a copy with the same name, description, parameters schema and
strictness (the model sees no difference) whose invocation goes through ``runtime.call``. A refused
call never reaches the tool: its output to the model is the refusal text (rule and reason), the way
the SDK reports a tool error. Handoffs are not decided (they only change which agent speaks), but
the agents they lead to are governed the same way, so no tool in the agent graph runs ungoverned.
Hosted tools (web search, file search, code interpreter, ...) run on OpenAI's side and pass through.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from aegis_cli.adapters import refusal_text, require, source
from aegis_cli.engine.toolcalls import tool_call_to_action

VIA = "openai-agents"


def govern(agent: Any, runtime: Any) -> Any:
    """A copy of ``agent`` (``agent.clone(...)``) whose function tools, and handed-off agents' tools, are governed."""
    agents = require("agents", "openai-agents")
    if not isinstance(agent, agents.Agent):
        raise TypeError(f"govern() takes an agents.Agent, not {type(agent).__name__}")
    return _Governor(agents, runtime).agent(agent)


class _Governor:
    """One ``govern`` call: each agent of the graph is cloned once, so handoff cycles end."""

    def __init__(self, agents: Any, runtime: Any) -> None:
        self.sdk = agents
        self.runtime = runtime
        self.done: dict[int, Any] = {}

    def agent(self, agent: Any) -> Any:
        if getattr(agent, "_aegis_governed", None) is self.runtime or id(agent) in self.done:
            return self.done.get(id(agent), agent)
        governed = agent.clone(tools=[self.tool(t, agent) for t in agent.tools], handoffs=[])
        governed._aegis_governed = self.runtime
        self.done[id(agent)] = governed
        # filled in after registering the clone: a handoff back to this agent finds it
        governed.handoffs = [self.handoff(h) for h in agent.handoffs]
        return governed

    def handoff(self, item: Any) -> Any:
        if isinstance(item, self.sdk.Agent):
            return self.agent(item)
        if not isinstance(item, self.sdk.Handoff):
            return item
        original = item.on_invoke_handoff

        async def on_invoke_handoff(ctx: Any, input_json: str) -> Any:
            target = await original(ctx, input_json)
            return self.agent(target) if isinstance(target, self.sdk.Agent) else target

        governed = copy.copy(item)
        governed.on_invoke_handoff = on_invoke_handoff
        return governed

    def tool(self, tool: Any, agent: Any) -> Any:
        if not isinstance(tool, self.sdk.FunctionTool):
            return tool  # hosted tools run at OpenAI; nothing here can stop them
        governed = copy.copy(tool)  # FunctionTool.__copy__ keeps subclasses and re-binds their invokers
        governed.on_invoke_tool = _governed_invoker(tool, tool.on_invoke_tool, self.runtime, agent.name)
        return governed


def _governed_invoker(tool: Any, invoke: Callable[[Any, str], Awaitable[Any]], runtime: Any,
                      agent_name: str) -> Callable[[Any, str], Awaitable[Any]]:
    async def on_invoke_tool(ctx: Any, input_json: str) -> Any:
        name = tool.name
        action = tool_call_to_action(name, input_json, tools=runtime.policy.tools, agent=agent_name)
        result = await runtime.call(action, invoke, ctx, input_json,
                                    source=source(VIA, name, agent=agent_name,
                                                  call_id=getattr(ctx, "tool_call_id", None)))
        if result.ok:
            return result.value
        if result.ran and result.exception is not None:
            raise result.exception  # the tool's own failure: the SDK's failure_error_function handles it
        return refusal_text(result)

    return on_invoke_tool


__all__ = ["govern"]
