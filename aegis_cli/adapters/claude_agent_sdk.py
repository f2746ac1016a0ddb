"""Claude Agent SDK (``claude-agent-sdk``): every tool call Claude Code makes is decided by aegis first.

    from aegis_cli.adapters.claude_agent_sdk import govern
    async for message in query(prompt="...", options=govern(ClaudeAgentOptions(...), runtime)):
        ...

``govern(options, runtime)`` returns a copy of the ``ClaudeAgentOptions`` with aegis's in-process
hooks added to the user's own (which still run, unchanged):

- ``PreToolUse`` (every tool, ``on_failure="block"``): the call becomes an action exactly as
  ``aegis hook claude-code`` makes it (the same parser and mapping: built-in tools on target
  ``claude-code``, ``mcp__server__tool`` as ``tool`` on ``server``) and goes through
  ``runtime.call``: decided, audited, the approval handler asked on ``approve``. Refused (blocked,
  denied, timed out, not audited, or aegis failed), the hook answers ``deny`` with the rule and the
  reason, which Claude Code hands the model as the tool's error. Allowed, the hook has no opinion
  (``{}``): aegis only ever takes permission away, so Claude Code's own permission mode, allow
  rules, the user's hooks and ``can_use_tool`` still apply. Why not ``can_use_tool``: Claude Code
  consults it only when it would ask a person, so ``allowed_tools``, ``acceptEdits``, read-only
  tools and ``bypassPermissions`` would all pass it by; PreToolUse sees every call.
- The tool runs inside Claude Code, between the hooks. So the function ``runtime.call`` runs is
  "let Claude Code run it and wait for the outcome": ``PostToolUse`` settles it as ran,
  ``PostToolUseFailure`` as failed, and the runtime writes the ``execution`` record linked to the
  decision with its real duration. A call aegis let through that never ran (refused afterwards by
  the user's ``can_use_tool``, another hook or Claude Code's permissions) is settled when that is
  known (a deny from ``can_use_tool``) or when the agent stops, and recorded as not run.
- ``on_failure="block"`` makes a failing or timed-out aegis hook block the call. A Claude Code too
  old to honour it makes the SDK refuse to connect, so nothing ever runs ungoverned.

The audit source is ``{"via": "claude-agent-sdk", "tool": ..., "tool_use_id": ..., "session_id": ...}``.
The hooks need the SDK's asyncio backend (the default); under trio they fail, and so block.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import numbers
from dataclasses import dataclass, field
from typing import Any

from aegis_cli.adapters import refusal_text, require, source

VIA = "claude-agent-sdk"
# How long Claude Code waits for the PreToolUse hook when the approval handler names no timeout.
DEFAULT_HOOK_TIMEOUT = 3600.0
log = logging.getLogger("aegis.adapters.claude_agent_sdk")


class ToolFailed(Exception):
    """Claude Code ran the tool and reported that it failed (``PostToolUseFailure``)."""


class NotRun(Exception):
    """aegis let the call through but Claude Code never ran it (refused after aegis's hook)."""


def govern(options: Any, runtime: Any, *, hook_timeout: float | None = None) -> Any:
    """A copy of ``options`` (a ``ClaudeAgentOptions``) whose every tool call goes through ``runtime``.

    ``hook_timeout`` (seconds) is how long Claude Code waits for the decision, approval included;
    by default the approval handler's ``timeout`` plus 30 s. Past it the call is blocked.
    """
    sdk = require("claude_agent_sdk", "claude-agent-sdk")
    if not isinstance(options, sdk.ClaudeAgentOptions):
        raise TypeError(f"govern() takes a claude_agent_sdk.ClaudeAgentOptions, not {type(options).__name__}")
    gate = Gate(runtime)
    timeout = hook_timeout if hook_timeout is not None else _hook_timeout(runtime)
    hooks = {event: list(matchers) for event, matchers in (options.hooks or {}).items()}
    hooks.setdefault("PreToolUse", []).append(
        sdk.HookMatcher(matcher=None, hooks=[gate.before], timeout=timeout, on_failure="block"))
    for event, callback in (("PostToolUse", gate.after), ("PostToolUseFailure", gate.after),
                            ("Stop", gate.stopped), ("SubagentStop", gate.stopped)):
        hooks.setdefault(event, []).append(sdk.HookMatcher(matcher=None, hooks=[callback]))
    changes: dict[str, Any] = {"hooks": hooks}
    if options.can_use_tool is not None:
        changes["can_use_tool"] = _watch_can_use_tool(sdk, options.can_use_tool, gate)
    return dataclasses.replace(options, **changes)


def _hook_timeout(runtime: Any) -> float:
    wait = getattr(runtime.approval_handler, "timeout", None)
    if isinstance(wait, numbers.Real) and not isinstance(wait, bool) and wait > 0:
        return float(wait) + 30.0
    return DEFAULT_HOOK_TIMEOUT


def deny(reason: str) -> dict[str, Any]:
    """The PreToolUse answer that refuses the call; Claude Code shows ``reason`` to the model."""
    from aegis_cli.hooks.claude_code import hook_output

    return hook_output("deny", reason)


@dataclass
class _Run:
    """One call aegis is carrying out: allowed once ``runtime.call`` starts it, settled by a later hook."""

    allowed: asyncio.Future[None]
    outcome: asyncio.Future[BaseException | None]
    session: str = ""
    agent_id: str = ""
    task: asyncio.Task[Any] | None = field(default=None, repr=False)

    def settle(self, error: BaseException | None) -> None:
        if not self.outcome.done():
            self.outcome.set_result(error)


class Gate:
    """The hooks ``govern`` adds; one per governed options object, shared by the sessions it starts."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.runs: dict[str, _Run] = {}  # tool_use_id -> the call waiting for Claude Code to run it

    async def before(self, data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        tool = data.get("tool_name", "the tool") if isinstance(data, dict) else "the tool"
        try:
            return await self._before(data, tool_use_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fail closed: a call aegis could not decide does not run
            log.exception("could not decide %s", tool)
            return deny(f"aegis could not decide {tool} ({type(exc).__name__}: {exc}); blocked (fail closed)")

    async def _before(self, data: Any, tool_use_id: str | None) -> dict[str, Any]:
        from aegis_cli.hooks.claude_code import AGENT
        from aegis_cli.hooks.common import Unreadable, call_key

        try:
            call = AGENT.parse(data)  # the hook's own reading of the event: one mapping everywhere
            if call.phase != "before":
                raise Unreadable(f"{call.event} is not a PreToolUse event")
            (action,) = AGENT.actions(call, self.runtime.policy.tools)
        except Unreadable as exc:
            return deny(f"aegis could not read the tool call ({exc}); blocked (fail closed)")
        key = call.call_id or tool_use_id or call_key(call.tool, call.tool_input)
        loop = asyncio.get_running_loop()
        agent_id = data.get("agent_id")
        run = _Run(loop.create_future(), loop.create_future(), call.session,
                   agent_id if isinstance(agent_id, str) else "")

        async def carried_out() -> None:
            # runtime.call allowed it: answer the hook, then wait while Claude Code runs the tool
            run.allowed.set_result(None)
            error = await run.outcome
            if error is not None:
                raise error

        old = self.runs.pop(key, None)
        if old is not None:  # the same id again: the earlier call cannot have run after all
            await _settled(old, NotRun("Claude Code asked again about the same tool_use_id"))
        origin = source(VIA, call.tool, tool_use_id=call.call_id or None, session_id=call.session or None,
                        agent_id=run.agent_id or None)
        run.task = asyncio.ensure_future(self.runtime.call(action, carried_out, source=origin))
        self.runs[key] = run
        try:
            await asyncio.wait({run.task, run.allowed}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # Claude Code gave up on the hook (its timeout): the call is refused
            self.runs.pop(key, None)
            run.task.cancel()
            raise
        if run.allowed.done():
            return {}
        self.runs.pop(key, None)
        return deny(refusal_text(run.task.result()))

    async def after(self, data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        """PostToolUse / PostToolUseFailure: the call ran; the runtime records its outcome."""
        try:
            key = data.get("tool_use_id") or tool_use_id
            if not isinstance(key, str) or not key:
                from aegis_cli.hooks.common import call_key

                key = call_key(data.get("tool_name"), data.get("tool_input"))
            run = self.runs.pop(key, None)
            if run is not None:
                failed = data.get("hook_event_name") == "PostToolUseFailure"
                error = ToolFailed(str(data.get("error") or "the tool failed")) if failed else None
                await _settled(run, error)
        except Exception:  # the tool has run; nothing is left to refuse
            log.exception("could not record the outcome of %s", data.get("tool_name") if isinstance(data, dict)
                          else "a tool call")
        return {}

    async def stopped(self, data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        """Stop / SubagentStop: calls of that agent still waiting for Claude Code did not run."""
        try:
            agent_id = data.get("agent_id") if data.get("hook_event_name") == "SubagentStop" else None
            session = data.get("session_id") or ""
            waiting = [(key, run) for key, run in self.runs.items()
                       if run.agent_id == (agent_id or "") and (not session or run.session in ("", session))]
            for key, _ in waiting:
                self.runs.pop(key, None)
            for _, run in waiting:
                await _settled(run, NotRun("Claude Code did not run it: refused after aegis let it through "
                                           "(its permissions, can_use_tool or another hook)"))
        except Exception:
            log.exception("could not settle the calls that did not run")
        return {}

    def not_run(self, tool_use_id: str | None, why: str) -> _Run | None:
        run = self.runs.pop(tool_use_id, None) if tool_use_id else None
        if run is not None:
            run.settle(NotRun(why))
        return run


async def _settled(run: _Run, error: BaseException | None) -> None:
    """Settle a call and wait for the runtime to audit it, so the record exists before Claude Code goes on."""
    run.settle(error)
    if run.task is not None:
        await asyncio.wait({run.task})


def _watch_can_use_tool(sdk: Any, theirs: Any, gate: Gate) -> Any:
    """The user's ``can_use_tool``, unchanged, except that a call it refuses is recorded as not run."""

    async def can_use_tool(tool_name: str, tool_input: dict[str, Any], context: Any) -> Any:
        tool_use_id = getattr(context, "tool_use_id", None)
        try:
            answer = await theirs(tool_name, tool_input, context)
        except BaseException as exc:  # the SDK answers Claude Code with an error: the call does not run
            gate.not_run(tool_use_id, f"can_use_tool failed ({type(exc).__name__}: {exc})")
            raise
        if isinstance(answer, sdk.PermissionResultDeny):
            run = gate.not_run(tool_use_id, f"refused by can_use_tool: {answer.message}")
            if run is not None and run.task is not None:
                await asyncio.wait({run.task})
        return answer

    return can_use_tool


__all__ = ["DEFAULT_HOOK_TIMEOUT", "VIA", "Gate", "NotRun", "ToolFailed", "govern"]
