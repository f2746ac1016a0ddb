"""Deciding one tool call from a model's reply: policy, audit, approval; and the note that replaces a refusal.

Every step fails closed. A call whose arguments cannot be read, a policy that raises, an audit
record that cannot be written, an approval that errs or times out: each ends as a blocked call,
which the proxy removes from the reply before the agent sees it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.engine.policy import Policy
from aegis_cli.engine.toolcalls import split_gemini_mcp_name, tool_call_to_action
from aegis_cli.wrap import agents, codex_tools

log = logging.getLogger("aegis.wrap")
_STRICTNESS = {Approval.AUTO: 0, Approval.APPROVE: 1, Approval.BLOCK: 2}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call as the provider sent it. ``error`` says why it cannot be read (then it is blocked)."""

    provider: str  # "anthropic" | "openai"
    api: str  # "messages" | "chat.completions" | "responses"
    id: str
    name: str
    arguments: Any = None
    error: str | None = None
    model: str = ""
    coding_agent: Any = None  # the wrap.agents.CodingAgent the request came from, when recognised


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happens to the call: passed on (``allowed``) or replaced by ``note``."""

    allowed: bool
    decision: Decision
    note: str = ""
    decision_id: int | None = None
    approval: dict[str, Any] | None = field(default=None)


Decide = Callable[[ToolCall], Awaitable[Verdict]]


class DecidedAhead:
    """A ``decide`` that can decide calls ahead, together (``ahead``: one audit transaction), and then
    hands each verdict out once when that very call is decided; any other call is decided as usual.
    A stream's calls that complete in one read are decided so (``sse.HoldQueue``)."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self._ready: list[tuple[ToolCall, Verdict]] = []

    def _take(self, call: ToolCall) -> Verdict | None:
        for i, (known, verdict) in enumerate(self._ready):
            if known is call or known == call:  # the very call, as a rewriter makes it once: no field compare
                del self._ready[i]
                return verdict
        return None

    async def __call__(self, call: ToolCall) -> Verdict:
        verdict = self._take(call)
        return verdict if verdict is not None else await self.decide(call)

    async def batch(self, calls: list[ToolCall]) -> list[Verdict]:
        """For ``decide_each``: those decided ahead from there, the rest together."""
        verdicts = [self._take(call) for call in calls]
        rest = [i for i, verdict in enumerate(verdicts) if verdict is None]
        for i, verdict in zip(rest, await decide_each(self.decide, [calls[i] for i in rest]), strict=True):
            verdicts[i] = verdict
        return verdicts  # type: ignore[return-value]

    async def ahead(self, calls: list[ToolCall]) -> None:
        self._ready += zip(calls, await decide_each(self.decide, calls), strict=True)


async def decide_each(decide: Decide, calls: Sequence[ToolCall]) -> list[Verdict]:
    """The verdicts on the calls of one reply, in order. With a ``ToolGate``'s ``decide`` (or a wrapper
    of it that carries a ``batch``) their decisions are audited in one transaction: one commit for
    the reply rather than one per call, which on a busy disk is most of what deciding costs."""
    batch = getattr(decide, "batch", None)
    if batch is None:
        gate = getattr(decide, "__self__", None)
        if isinstance(gate, ToolGate) and getattr(decide, "__func__", None) is ToolGate.decide:
            batch = gate.decide_batch
    if batch is not None and len(calls) > 1:
        return list(await batch(list(calls)))
    return [await decide(call) for call in calls]


def blocked_decision(reason: str, policy_hash: str = "") -> Decision:
    """The decision for a call aegis could not decide: blocked, critical."""
    return Decision(Approval.BLOCK, RiskLevel.CRITICAL, None, reason, policy_hash)


def note_for(call: ToolCall, decision: Decision, outcome: str = "") -> str:
    """The text the model sees instead of its call: which tool, which rule, why."""
    rule = f"rule '{decision.rule}'" if decision.rule else "the policy defaults"
    why = f": {decision.reason}" if decision.reason else ""
    what = outcome or "blocked"
    return (f"[aegis] Tool call `{call.name}` was {what} and not executed "
            f"({rule}, {decision.risk_level.value} risk{why}).")


class ToolGate:
    """Decides tool calls for the proxy: evaluate, audit, ask a person when the policy says approve.

    ``audit`` is an object with ``record_decision`` / ``record_event`` (``SQLiteAuditLogger``). A
    SQLite trail is written on the event loop's own thread, as the MCP relay does: a local commit
    takes less time than handing it to a thread and back (``bench/bench_wrap_proxy.py``), and the
    logger is thread-safe. Any other trail (PostgreSQL, over a network) is only ever called from
    one worker thread, so its connection never crosses threads and a slow round trip never holds
    up other replies. ``approvals`` is an ``ApprovalHandler``; it is called through ``ask()``.
    ``records_approvals`` says the handler writes its own "approval" events (the queue does).
    """

    def __init__(self, policy: Policy, *, audit_factory: Callable[[], Any] | None, approvals: Any,
                 records_approvals: bool = False, session: str = "", agent: str = "",
                 coding_agent: Any = None) -> None:
        self.policy = policy
        self.coding_agent = coding_agent  # the wrapped command's, for requests that do not say whose they are
        self.approvals = approvals
        self.records_approvals = records_approvals
        self.session = session
        self.agent = agent
        self._audit: Any = None
        self._inline = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aegis-audit")
        if audit_factory is not None:
            # Opened on the audit thread, so the connection lives where it is used.
            try:
                self._audit = self._pool.submit(audit_factory).result()
            except BaseException:
                self._pool.shutdown(wait=False)
                raise
            from aegis_cli.audit.sqlite import SQLiteAuditLogger

            self._inline = isinstance(self._audit, SQLiteAuditLogger)

    def close(self) -> None:
        if self._audit is not None and hasattr(self._audit, "close"):
            self._pool.submit(self._audit.close).result()
        self._pool.shutdown(wait=True)

    async def _on_audit_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._inline:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def actions_for(self, call: ToolCall) -> list[Action]:
        """The actions the call is decided as: one, or one per file of a Codex patch. Raises when the
        call cannot be mapped (it is then blocked)."""
        coding_agent = call.coding_agent or self.coding_agent
        if coding_agent is agents.CODEX:  # Codex's tools as its hook reports them: exec_command -> Bash, ...
            mapped = codex_tools.actions(call.name, call.arguments, tools=self.policy.tools, agent=self.agent,
                                         session=self.session)
            if mapped is not None:
                return mapped
        return [self.action_for(call)]

    def action_for(self, call: ToolCall) -> Action:
        """The plain mapping of one call (``actions_for`` adds what an agent's hook does differently)."""
        # A coding agent's built-in tools act on the target its hook gives them (wrap.agents), so one
        # policy means the same under `aegis hook` and `aegis wrap`; other clients: target = tool name.
        coding_agent = call.coding_agent or self.coding_agent
        namespace = coding_agent.target if coding_agent is not None else None
        mcp = split_gemini_mcp_name(call.name) if coding_agent is not None and coding_agent.gemini_mcp_names else None
        return tool_call_to_action(call.name, call.arguments, namespace=namespace, tools=self.policy.tools,
                                   agent=self.agent, session=self.session, mcp=mcp)

    async def decide(self, call: ToolCall) -> Verdict:
        """Decide one call. Never raises: whatever goes wrong is a blocked verdict."""
        try:
            return await self._decide(call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the last line of fail-closed: nothing escapes as "allowed"
            log.exception("aegis: deciding tool call %s failed", call.name)
            decision = blocked_decision(f"aegis could not decide this call ({type(exc).__name__}: {exc})",
                                        self.policy.hash)
            return Verdict(False, decision, note_for(call, decision))

    async def decide_batch(self, calls: Sequence[ToolCall]) -> list[Verdict]:
        """Decide the calls of one reply, in order, their decisions audited in one transaction (one
        commit, where ``decide`` per call makes one each). Never raises: a fault blocks them all."""
        try:
            return await self._decide_batch(calls)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the last line of fail-closed: nothing escapes as "allowed"
            log.exception("aegis: deciding %d tool calls failed", len(calls))
            decision = blocked_decision(f"aegis could not decide this call ({type(exc).__name__}: {exc})",
                                        self.policy.hash)
            return [Verdict(False, decision, note_for(call, decision)) for call in calls]

    async def _decide(self, call: ToolCall) -> Verdict:
        return (await self._decide_batch([call]))[0]

    async def _decide_batch(self, calls: Sequence[ToolCall]) -> list[Verdict]:
        ruled = [self._rule(call) for call in calls]
        ids: list[int | None] = [None] * len(ruled)
        if self._audit is not None:
            try:
                ids = await self._record(ruled)
            except Exception as exc:
                log.error("aegis: audit write failed, blocking %s: %s", ", ".join(c.name for c in calls), exc)
                failed = blocked_decision(f"the decision could not be audited ({type(exc).__name__}: {exc}); "
                                          "blocked (fail closed)", self.policy.hash)
                return [Verdict(False, failed, note_for(call, failed)) for call in calls]
        verdicts = []
        for (call, decided, _source, _extra), decision_id in zip(ruled, ids, strict=True):
            action, decision = decided[-1]
            if decision.approval is Approval.AUTO:
                verdicts.append(Verdict(True, decision, decision_id=decision_id))
            elif decision.approval is Approval.BLOCK:
                verdicts.append(Verdict(False, decision, note_for(call, decision), decision_id))
            else:
                verdicts.append(await self._ask(call, action, decision, decision_id))
        return verdicts

    def _rule(self, call: ToolCall) -> tuple[ToolCall, list[tuple[Action, Decision]], dict[str, Any], dict[str, Any]]:
        """The policy's answer for one call: (the call, its (action, decision) pairs with the deciding
        one last, the audit record's source and extra)."""
        coding_agent = call.coding_agent or self.coding_agent
        try:
            actions = self.actions_for(call)
        except Exception as exc:
            target = coding_agent.target if coding_agent is not None else call.name or "?"
            actions = [Action(call.name or "?", target, {}, self.agent, self.session)]
            call = dataclasses.replace(call, error=f"the call could not be mapped to an action ({exc})")
        if call.error:
            decided = [(actions[0], blocked_decision(f"{call.error}; blocked (fail closed)", self.policy.hash))]
        elif len(actions) == 1:  # as below, without a sort of one
            decided = [(actions[0], self.policy.evaluate(actions[0]))]
        else:  # several actions (a patch's files): the strictest answers, recorded last, as the hook does
            decided = sorted(((a, self.policy.evaluate(a)) for a in actions),
                             key=lambda pair: _STRICTNESS[pair[1].approval])
        source = {"via": "wrap", "provider": call.provider, "api": call.api, "tool_call_id": call.id}
        extra: dict[str, Any] = {"tool": call.name}
        if coding_agent is not None:
            source["agent"] = coding_agent.name
        if call.model:
            extra["model"] = call.model
        return call, decided, source, extra

    async def _record(self, ruled: list[tuple[ToolCall, list[tuple[Action, Decision]], dict[str, Any],
                                              dict[str, Any]]]) -> list[int | None]:
        """Audit every decision in one transaction; each call's id is its deciding (last) record's."""
        if len(ruled) == 1 and len(ruled[0][1]) == 1:
            _call, [(action, decision)], source, extra = ruled[0]
            return [await self._on_audit_thread(self._audit.record_decision, action, decision,
                                                source=source, extra=extra)]
        items: list[tuple[Action, Decision, dict[str, Any], dict[str, Any]]] = []
        last: list[int] = []
        for _call, decided, source, extra in ruled:
            if len(decided) == 1:
                items.append((decided[0][0], decided[0][1], source, extra))
            else:  # one call's parts; its approval and outcome link to the last, deciding one
                items += [(a, d, source, {**extra, "part": n, "parts": len(decided)})
                          for n, (a, d) in enumerate(decided, 1)]
            last.append(len(items) - 1)
        ids = await self._on_audit_thread(self._audit.record_decisions, items)
        return [ids[i] for i in last]

    async def _ask(self, call: ToolCall, action: Action, decision: Decision, decision_id: int | None) -> Verdict:
        from aegis_cli.approvals import ApprovalAnswer, ask

        try:
            answer = await ask(self.approvals, action, decision, decision_id=decision_id)
        except asyncio.CancelledError:  # the agent hung up while a person was being asked
            if self._audit is not None and decision_id is not None and not self.records_approvals:
                cancelled = ApprovalAnswer.deny("", "the agent disconnected while waiting", "cancelled")
                with contextlib.suppress(Exception):
                    self._pool.submit(self._audit.record_event, "approval", decision_id, cancelled.to_dict())
            raise
        data = answer.to_dict()
        if self._audit is not None and decision_id is not None and not self.records_approvals:
            try:
                await self._on_audit_thread(self._audit.record_event, "approval", decision_id, data)
            except Exception as exc:
                log.error("aegis: audit write failed, blocking %s: %s", call.name, exc)
                return Verdict(False, decision, note_for(call, decision, "not approved (the answer could not "
                                                                         "be audited)"), decision_id, data)
        if answer.approved:
            return Verdict(True, decision, decision_id=decision_id, approval=data)
        return Verdict(False, decision, note_for(call, decision, f"not approved ({answer.describe()})"),
                       decision_id, data)
