"""The runtime: decide each action, ask when the policy says so, run what is allowed, audit every step.

    runtime = Runtime(executor=run_tool, policy=Policy.from_yaml("policy.yaml"),
                      approval_handler=CLIApprovalHandler(timeout=60), audit=SQLiteAuditLogger("aegis_audit.db"))
    result = await runtime.run_one(Action("write", "salesforce", params={...}))
    results = await runtime.execute(runtime.plan([a1, a2, a3]), concurrency=8)

    # when a framework runs the tools itself, no executor: hand each call's own function to call()
    runtime = Runtime(policy=policy, approval_handler=handler, audit=audit)
    result = await runtime.call(Action("send", "email", params=args), send_email, **args)

Rules it keeps:
- ``auto`` runs, ``approve`` runs only on a yes from the approval handler (via ``ask()``: timeouts,
  handler errors and a missing handler are denials), ``block`` never runs.
- The decision is audited before anything happens; if it cannot be audited the action does not run.
  An approval that cannot be audited does not count. ``audit=None`` turns auditing off entirely.
- A plan stops at the first action that is blocked, denied, fails or errs: nothing after it starts and,
  with ``concurrency``, running actions are cancelled. Results say which ran, which were cancelled
  and which never started.
- ``update_policy`` swaps the policy atomically: each ``run_one``/``execute`` call decides with the
  policy current when it starts and finishes under it; later calls see the new one.

Audit calls are synchronous (SQLite commits take well under a millisecond to a few ms) and made from
the event loop's thread, so records of one runtime are written in the order things happened.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aegis_cli.approvals.base import ApprovalAnswer, ApprovalHandler, DenyAllApprovalHandler, ask
from aegis_cli.engine.errors import AegisError, PolicyError
from aegis_cli.engine.models import Action, Approval, Decision
from aegis_cli.engine.policy import Policy
from aegis_cli.runtime.executors import Executor, as_executor
from aegis_cli.runtime.sync import call_here

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.runtime.watcher import PolicyWatcher

log = logging.getLogger("aegis.runtime")
T = TypeVar("T")


class Status(str, Enum):
    """What happened to one action."""

    OK = "ok"  # ran and returned
    FAILED = "failed"  # ran and raised
    BLOCKED = "blocked"  # the policy said block
    DENIED = "denied"  # needed approval and did not get it (denied, timed out, handler error)
    CANCELLED = "cancelled"  # was waiting for approval or running, and was cancelled
    SKIPPED = "skipped"  # never started: the plan had stopped
    ERROR = "error"  # aegis could not audit it, so it did not run (fail closed)

    def __str__(self) -> str:
        return self.value


class ActionNotCompleted(AegisError):
    """Raised by ``Result.unwrap()`` when the action did not run to completion."""

    def __init__(self, result: Result) -> None:
        self.result = result
        super().__init__(f"{result.action.type} on {result.action.target}: {result.why}")


@dataclass(frozen=True, slots=True)
class Result:
    """What happened to one action and why. ``value`` is the executor's return value when ``ok``."""

    action: Action
    decision: Decision
    status: Status
    value: Any = None
    error: str = ""
    approval: ApprovalAnswer | None = None
    decision_id: int | None = None
    duration_ms: float | None = None  # time in the executor; None when it never started
    audit_error: str = ""  # set when a step after the decision could not be audited
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def ran(self) -> bool:
        """Whether the executor was started (it may have failed or been cancelled)."""
        return self.duration_ms is not None

    @property
    def why(self) -> str:
        d = self.decision
        by_rule = f"rule '{d.rule}'" if d.rule else "the policy defaults"
        if self.status is Status.BLOCKED:
            return f"blocked by {by_rule}: {d.reason}"
        if self.status is Status.DENIED:
            answer = self.approval.describe() if self.approval else "not approved"
            return f"needs approval ({by_rule}): {answer}"
        if self.status is Status.OK:
            how = self.approval.describe() if self.approval else f"{d.approval.value} by {by_rule}"
            return f"ran ({how})"
        return self.error or self.status.value

    def unwrap(self) -> Any:
        """The executor's value; raises ``ActionNotCompleted`` (chained to the executor's error) otherwise."""
        if self.ok:
            return self.value
        raise ActionNotCompleted(self) from self.exception

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action.to_dict(),
            "decision": self.decision.to_dict(),
            "decision_id": self.decision_id,
            "status": self.status.value,
            "why": self.why,
            "ran": self.ran,
            "duration_ms": self.duration_ms,
        }
        if self.approval is not None:
            out["approval"] = self.approval.to_dict()
        if self.error:
            out["error"] = self.error
        if self.audit_error:
            out["audit_error"] = self.audit_error
        return out


@dataclass(frozen=True, slots=True)
class PlannedAction:
    index: int
    action: Action
    decision: Decision


@dataclass(frozen=True)
class Plan:
    """The decisions for a list of actions, made together; nothing has run. ``print(plan)`` shows them.

    ``execute(plan)`` decides again with the policy current at that moment, so a plan made before
    a policy reload never runs under the old policy; normally the decisions are identical.
    """

    steps: tuple[PlannedAction, ...]
    policy_hash: str
    created_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))

    def __iter__(self) -> Iterator[PlannedAction]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> PlannedAction:
        return self.steps[index]

    @property
    def actions(self) -> list[Action]:
        return [s.action for s in self.steps]

    def with_approval(self, approval: Approval | str) -> list[PlannedAction]:
        wanted = Approval(approval)
        return [s for s in self.steps if s.decision.approval is wanted]

    @property
    def blocked(self) -> list[PlannedAction]:
        return self.with_approval(Approval.BLOCK)

    @property
    def needs_approval(self) -> list[PlannedAction]:
        return self.with_approval(Approval.APPROVE)

    def to_dict(self) -> dict[str, Any]:
        return {"policy_hash": self.policy_hash, "created_at": self.created_at.isoformat(),
                "steps": [{"index": s.index, "action": s.action.to_dict(), "decision": s.decision.to_dict()}
                          for s in self.steps]}

    def __str__(self) -> str:
        rows = [("#", "approval", "risk", "action", "rule", "reason")]
        for s in self.steps:
            d = s.decision
            rows.append((str(s.index + 1), d.approval.value, d.risk_level.value,
                         f"{s.action.type} on {s.action.target}", d.rule or "(defaults)", d.reason))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]
        counts = {a: len(self.with_approval(a)) for a in Approval}
        lines.append(f"{len(self)} actions: {counts[Approval.AUTO]} auto, {counts[Approval.APPROVE]} need approval, "
                     f"{counts[Approval.BLOCK]} blocked (policy {self.policy_hash[:19]})")
        return "\n".join(line.rstrip() for line in lines)


@dataclass
class _Progress:
    """How far one action got; read when it is cancelled from outside."""

    approval: ApprovalAnswer | None = None
    started: float | None = None


class Runtime:
    """Governed execution: see the module docstring. Thread-safe for ``update_policy`` only."""

    def __init__(self, executor: Executor | Any = None, policy: Policy | None = None,
                 approval_handler: ApprovalHandler | None = None, audit: Any = None, *,
                 source: Mapping[str, Any] | None = None) -> None:
        # No executor is normal when a framework runs the tools itself: adapters hand each call's
        # callable to ``call()``, and only ``run_one``/``execute`` need an executor.
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy (e.g. Policy.from_yaml(...)), not {type(policy).__name__}")
        if approval_handler is not None and not callable(getattr(approval_handler, "request", None)):
            raise TypeError(f"approval_handler must have an async request() method (see aegis_cli.approvals), "
                            f"not {type(approval_handler).__name__}")
        self.executor = as_executor(executor) if executor is not None else None
        self._policy = policy
        self.approval_handler: ApprovalHandler = approval_handler or DenyAllApprovalHandler()
        self.audit = audit
        self.source: dict[str, Any] = dict(source or {"via": "runtime"})
        self._lock = threading.Lock()
        self._unrecorded_changes: list[dict[str, Any]] = []

    # -- policy --------------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._policy

    def update_policy(self, new_policy: Policy, *, by: str = "", source: str = "") -> bool:
        """Swap the policy atomically; returns False when it is the same policy (same hash).

        Calls already running finish under the policy they started with. The change is audited as a
        ``policy_change`` event; if that cannot be written now (say, from a watcher thread), it is
        written before the next decision, and that decision fails closed if it still cannot be.
        """
        if not isinstance(new_policy, Policy):
            raise TypeError(f"update_policy needs a Policy, not {type(new_policy).__name__}")
        with self._lock:
            old = self._policy
            if old.hash == new_policy.hash:
                return False
            self._policy = new_policy
            self._unrecorded_changes.append({
                "by": by, "old_hash": old.hash, "new_hash": new_policy.hash,
                "source": source or ", ".join(new_policy.sources),
                "at": _dt.datetime.now(_dt.UTC).isoformat()})
        log.info("policy updated: %s -> %s", old.hash[:19], new_policy.hash[:19])
        try:
            self._record_policy_changes()
        except Exception as exc:
            log.warning("policy change not audited yet (%s); it will be before the next decision", exc)
        return True

    def watch(self, *paths: str | Path, debounce: float = 0.25,
              on_error: Any = None) -> PolicyWatcher:
        """Reload the policy when these files change (started; call ``.stop()``). Invalid edits are
        reported to ``on_error`` (default: logged) and the current policy stays."""
        from aegis_cli.runtime.watcher import PolicyWatcher

        def changed(policy: Policy) -> None:
            self.update_policy(policy, by="watcher", source=", ".join(map(str, paths)))

        def rejected(error: PolicyError) -> None:
            log.error("policy reload rejected; keeping %s: %s", self._policy.hash[:19], error)

        watcher = PolicyWatcher(paths, changed, on_error or rejected, debounce=debounce, initial=self._policy)
        watcher.start()
        return watcher

    # -- deciding --------------------------------------------------------------------------------

    def decide(self, action: Action) -> Decision:
        """The current policy's decision; nothing is audited or run."""
        return self._policy.evaluate(action)

    def plan(self, actions: Iterable[Action]) -> Plan:
        """Decide every action with one policy; nothing is audited or run."""
        policy = self._policy
        steps = tuple(PlannedAction(i, a, policy.evaluate(a)) for i, a in enumerate(_check_actions(actions)))
        return Plan(steps, policy.hash)

    # -- running ---------------------------------------------------------------------------------

    async def run_one(self, action: Action) -> Result:
        """Decide, audit, ask if needed, run if allowed. Cancelling it cancels the approval or execution."""
        self._need_executor("run_one")
        return await self.call(action, None)

    async def call(self, action: Action, fn: Callable[..., Any] | None, /, *args: Any,
                   source: Mapping[str, Any] | None = None, **kwargs: Any) -> Result:
        """Decide, audit, ask if needed and, only if allowed, run ``fn(*args, **kwargs)`` (sync or async).

        The one path adapters share: the framework's own tool function is ``fn``, so the runtime's
        executor plays no part (``None`` runs the executor). ``source`` replaces the runtime's
        ``source`` in the audit record (``{"via": "langchain", "tool": name}``). A sync ``fn`` runs
        in this thread: tools are the framework's, and some are not safe to move between threads.
        """
        (action,) = _check_actions([action])
        decision = self._policy.evaluate(action)
        try:
            (decision_id,) = self._record_decisions([(action, decision, dict(source) if source else self.source)])
        except Exception as exc:
            return _not_audited(action, decision, exc)
        run = None if fn is None else functools.partial(_call, fn, args, kwargs)
        return await self._carry_out(action, decision, decision_id, _Progress(), run)

    def call_sync(self, action: Action, fn: Callable[..., Any], /, *args: Any,
                  source: Mapping[str, Any] | None = None, **kwargs: Any) -> Result:
        """``call`` for code without an event loop (a sync tool in a sync framework). It runs on a
        loop kept for this thread (``asyncio.run`` per call would cost 20-50x more); ``fn`` runs in
        this thread with no loop running, as without aegis (see ``aegis_cli.runtime.sync``)."""
        if asyncio.events._get_running_loop() is not None:
            raise RuntimeError("call_sync() cannot run inside a running event loop; use `await runtime.call(...)`")
        return call_here(self, action, fn, args, kwargs, source)

    def _need_executor(self, method: str) -> None:
        if self.executor is None:
            raise TypeError(f"{method}() needs a Runtime built with an executor; without one, run each "
                            "call with runtime.call(action, fn, ...)")

    async def execute(self, plan: Plan | Iterable[Action], *, concurrency: int = 1,
                      fail_fast: bool = True) -> list[Result]:
        """Run a plan (or a list of actions); results in plan order.

        ``concurrency`` actions run at once (1: in order). With ``fail_fast`` (the default) the first
        action that does not succeed stops the plan: nothing further starts and, in parallel, running
        actions are cancelled (status ``cancelled``); those never started are ``skipped``.
        """
        self._need_executor("execute")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
        actions = plan.actions if isinstance(plan, Plan) else _check_actions(plan)
        if not actions:
            return []
        policy = self._policy  # one policy decides the whole plan, even if it is swapped meanwhile
        decisions = [policy.evaluate(a) for a in actions]
        run_id = uuid.uuid4().hex[:16]
        n = len(actions)
        try:
            ids = self._record_decisions([(a, d, {**self.source, "plan": run_id, "step": i + 1, "of": n})
                                          for i, (a, d) in enumerate(zip(actions, decisions, strict=True))])
        except Exception as exc:
            return [_not_audited(a, d, exc) for a, d in zip(actions, decisions, strict=True)]
        return await _PlanRun(self, actions, decisions, ids, concurrency, fail_fast).run()

    def run_one_sync(self, action: Action) -> Result:
        """``run_one`` for code without an event loop (runs one with ``asyncio.run``)."""
        return _run_sync(self.run_one(action), "run_one")

    def execute_sync(self, plan: Plan | Iterable[Action], *, concurrency: int = 1,
                     fail_fast: bool = True) -> list[Result]:
        """``execute`` for code without an event loop."""
        return _run_sync(self.execute(plan, concurrency=concurrency, fail_fast=fail_fast), "execute")

    # -- the steps of one action -------------------------------------------------------------------

    async def _carry_out(self, action: Action, decision: Decision, decision_id: int | None,
                         progress: _Progress, run: Callable[[], Awaitable[Any]] | None = None) -> Result:
        def result(status: Status, **kw: Any) -> Result:
            return Result(action, decision, status, approval=progress.approval, decision_id=decision_id, **kw)

        if decision.approval is Approval.BLOCK:
            return result(Status.BLOCKED)
        if decision.approval is Approval.APPROVE:
            try:
                answer = await ask(self.approval_handler, action, decision, decision_id=decision_id)
            except asyncio.CancelledError:
                progress.approval = ApprovalAnswer.deny("", "cancelled while waiting for approval", "cancelled")
                self._event_quietly("approval", decision_id, progress.approval.to_dict())
                raise
            progress.approval = answer
            try:
                if not _records_own_answers(self.approval_handler, self.audit):
                    self._event("approval", decision_id, {**answer.to_dict(),
                                                          "handler": type(self.approval_handler).__name__})
            except Exception as exc:
                if answer.approved:  # an approval nobody can see later does not count
                    return result(Status.ERROR, error=f"could not audit the approval ({_describe(exc)}); "
                                                      "not run (fail closed)", exception=exc)
                return result(Status.DENIED, audit_error=_describe(exc))
            if not answer.approved:
                return result(Status.DENIED)
        progress.started = time.perf_counter()
        try:
            value = await (run() if run is not None else self.executor.execute(action))  # type: ignore[union-attr]
        except asyncio.CancelledError:
            self._event_quietly("execution", decision_id, {"status": "cancelled", "duration_ms": _ms(progress),
                                                           "error": ""})
            raise
        except BaseException as exc:
            ms = _ms(progress)
            audit_error = self._event_quietly("execution", decision_id,
                                              {"status": "error", "duration_ms": ms, "error": _describe(exc)})
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: audited, then on their way
            return result(Status.FAILED, error=f"failed: {_describe(exc)}", duration_ms=ms,
                          exception=exc, audit_error=audit_error)
        ms = _ms(progress)
        audit_error = self._event_quietly("execution", decision_id, {"status": "ok", "duration_ms": ms, "error": ""})
        return result(Status.OK, value=value, duration_ms=ms, audit_error=audit_error)

    # -- auditing ----------------------------------------------------------------------------------

    def _record_decisions(self, items: list[tuple[Action, Decision, dict[str, Any]]]) -> list[int | None]:
        if self.audit is None:
            return [None] * len(items)
        self._record_policy_changes()  # an unrecorded policy change must not be skipped over
        if len(items) == 1:
            action, decision, source = items[0]
            return [self.audit.record_decision(action, decision, source=source)]
        return list(self.audit.record_decisions(items))

    def _record_policy_changes(self) -> None:
        if self.audit is None:
            return
        with self._lock:
            while self._unrecorded_changes:
                self.audit.record_event("policy_change", None, self._unrecorded_changes[0])
                self._unrecorded_changes.pop(0)

    def _event(self, kind: str, decision_id: int | None, data: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record_event(kind, decision_id, data)

    def _event_quietly(self, kind: str, decision_id: int | None, data: dict[str, Any]) -> str:
        """Audit something that has already happened; a failure is logged and returned, not raised."""
        try:
            self._event(kind, decision_id, data)
        except Exception as exc:
            log.error("could not audit %s event for decision %s: %s", kind, decision_id, exc)
            return _describe(exc)
        return ""


class _PlanRun:
    """One ``execute`` call: workers take actions in order; the first failure stops the rest."""

    def __init__(self, runtime: Runtime, actions: list[Action], decisions: list[Decision],
                 ids: list[int | None], concurrency: int, fail_fast: bool) -> None:
        self.rt = runtime
        self.actions, self.decisions, self.ids = actions, decisions, ids
        self.concurrency = min(concurrency, len(actions))
        self.fail_fast = fail_fast
        self.results: list[Result | None] = [None] * len(actions)
        self.running: dict[int, tuple[asyncio.Task[Result], _Progress]] = {}
        self.stop_reason = ""
        self._next = iter(range(len(actions)))

    async def run(self) -> list[Result]:
        workers = [asyncio.ensure_future(self._worker()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
        except BaseException:  # execute() itself was cancelled (or interrupted): cancel and account for all
            self.stop_reason = self.stop_reason or "execute() was cancelled"
            tasks = [t for t, _ in self.running.values()]
            for t in (*tasks, *workers):
                t.cancel()
            if tasks:
                await asyncio.wait(tasks)
            for i, (task, progress) in list(self.running.items()):
                self.results[i] = self._settled(i, task, progress)
            self._mark_skipped()
            raise
        self._mark_skipped()
        return [r for r in self.results if r is not None]

    async def _worker(self) -> None:
        for i in self._next:  # the shared iterator hands each index to exactly one worker, in order
            if self.stop_reason:
                return
            progress = _Progress()
            task = asyncio.ensure_future(self.rt._carry_out(self.actions[i], self.decisions[i], self.ids[i], progress))
            self.running[i] = (task, progress)
            await asyncio.wait({task})
            del self.running[i]
            result = self.results[i] = self._settled(i, task, progress)
            if self.fail_fast and not result.ok and not self.stop_reason:
                what = f"{self.actions[i].type} on {self.actions[i].target}"
                self.stop_reason = f"action {i + 1} ({what}) {_OUTCOME[result.status]}"
                for other, _ in self.running.values():
                    other.cancel()

    def _settled(self, i: int, task: asyncio.Task[Result], progress: _Progress) -> Result:
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                raise exc
            return task.result()
        ran = progress.started is not None
        return Result(self.actions[i], self.decisions[i], Status.CANCELLED, approval=progress.approval,
                      decision_id=self.ids[i], duration_ms=_ms(progress) if ran else None,
                      error=f"cancelled {'while running' if ran else 'while waiting for approval'}: "
                            f"{self.stop_reason or 'cancelled'}")

    def _mark_skipped(self) -> None:
        for i, r in enumerate(self.results):
            if r is None:
                why = f"not started: {self.stop_reason}"
                audit_error = self.rt._event_quietly("execution", self.ids[i],
                                                     {"status": "cancelled", "duration_ms": 0.0, "error": why})
                self.results[i] = Result(self.actions[i], self.decisions[i], Status.SKIPPED, error=why,
                                         decision_id=self.ids[i], audit_error=audit_error)


_OUTCOME = {Status.FAILED: "failed", Status.BLOCKED: "was blocked", Status.DENIED: "was denied",
            Status.CANCELLED: "was cancelled", Status.ERROR: "could not be audited", Status.SKIPPED: "was skipped",
            Status.OK: "succeeded"}


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def _check_actions(actions: Iterable[Action]) -> list[Action]:
    out = list(actions)
    for a in out:
        if not isinstance(a, Action):
            raise TypeError(f"expected an Action, got {type(a).__name__} (build one with Action(type, target, ...) "
                            "or Action.from_dict)")
    return out


def _not_audited(action: Action, decision: Decision, exc: BaseException) -> Result:
    log.error("could not audit the decision for %s on %s: %s", action.type, action.target, exc)
    return Result(action, decision, Status.ERROR, exception=exc,
                  error=f"could not audit the decision ({_describe(exc)}); not run (fail closed)")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ms(progress: _Progress) -> float:
    return round((time.perf_counter() - progress.started) * 1000, 3) if progress.started is not None else 0.0


def _run_sync(coro: Coroutine[Any, Any, T], name: str) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(f"{name}_sync() cannot run inside a running event loop; use `await runtime.{name}(...)`")


def _records_own_answers(handler: Any, audit: Any) -> bool:
    """True when the handler's queue writes approval events into this very audit trail (no duplicates)."""
    import os

    queue_path = getattr(getattr(handler, "queue", None), "path", None)
    audit_path = getattr(audit, "path", None)
    if not queue_path or not audit_path or ":memory:" in (queue_path, audit_path):
        return False
    return os.path.realpath(queue_path) == os.path.realpath(audit_path)
