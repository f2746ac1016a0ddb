"""The runtime with real asyncio, a real SQLite audit trail and approval handlers written the way users write them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aegis_cli import Action, Policy
from aegis_cli.approvals import ApprovalAnswer, DenyAllApprovalHandler
from aegis_cli.runtime.core import ActionNotCompleted, Plan, Result, Runtime, Status
from aegis_cli.runtime.executors import FunctionExecutor, NoExecutorError, RoutingExecutor

POLICY = """
version: "1"
defaults: {risk_level: medium, approval: approve, reason: unknown actions need a human}
rules:
  - name: reads
    match: {type: read}
    risk_level: low
    approval: auto
  - name: crm-writes
    match: {type: write, target: salesforce}
    risk_level: high
    approval: approve
    reason: CRM writes need a human
  - name: no-deletes
    match: {type: delete}
    risk_level: critical
    approval: block
    reason: deletes are never allowed
"""


def policy(text: str = POLICY) -> Policy:
    return Policy.from_string(text)


def audit_logger(path: Path) -> Any:
    from aegis_cli.audit import SQLiteAuditLogger

    return SQLiteAuditLogger(path)


def records(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        return [json.loads(body) for (body,) in conn.execute("SELECT body FROM audit ORDER BY id")]


def origin(record: dict[str, Any]) -> dict[str, Any]:
    """Where a decision came from (the ``source`` given to record_decision, stored as ``origin``)."""
    return record.get("origin") or record.get("source") or {}


def events(path: Path, decision_id: int, kind: str) -> list[dict[str, Any]]:
    return [r["data"] for r in records(path) if r["kind"] == kind and r["decision_id"] == decision_id]


class Recorder:
    """An async executor that remembers what ran, can sleep, fail, and notes cancellation."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []

    async def execute(self, action: Action) -> Any:
        self.started.append(action.target)
        try:
            await asyncio.sleep(float(action.params.get("sleep", 0)))
        except asyncio.CancelledError:
            self.cancelled.append(action.target)
            raise
        if action.params.get("fail"):
            raise RuntimeError(f"{action.target} exploded")
        self.finished.append(action.target)
        return {"done": action.target}


class Scripted:
    """An approval handler that answers after ``delay`` seconds, or raises."""

    def __init__(self, approved: bool | None = True, *, delay: float = 0.0, timeout: float = 5.0,
                 error: Exception | None = None) -> None:
        self.approved, self.delay, self.timeout, self.error = approved, delay, timeout, error
        self.asked: list[int | None] = []

    async def request(self, action: Action, decision: Any, *, decision_id: int | None) -> ApprovalAnswer:
        self.asked.append(decision_id)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return ApprovalAnswer.approve("alice", "ok") if self.approved else ApprovalAnswer.deny("bob", "not today")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


# -- one action ------------------------------------------------------------------------------------


def test_auto_runs_and_every_step_is_audited(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))
    result = asyncio.run(rt.run_one(Action("read", "wiki", {"page": "home"})))
    assert result.status is Status.OK and result.ok and result.ran
    assert result.value == {"done": "wiki"} and result.unwrap() == {"done": "wiki"}
    assert ex.finished == ["wiki"]
    assert "auto by rule 'reads'" in result.why
    recs = records(db)
    assert [r["kind"] for r in recs] == ["decision", "execution"]
    assert recs[0]["id"] == result.decision_id
    assert recs[0]["policy_hash"] == rt.policy.hash and origin(recs[0]) == {"via": "runtime"}
    assert recs[0]["decision"]["approval"] == "auto"
    assert recs[1]["decision_id"] == result.decision_id
    assert recs[1]["data"]["status"] == "ok" and recs[1]["data"]["duration_ms"] >= 0


def test_block_never_runs(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), approval_handler=Scripted(True), audit=audit_logger(db))
    result = rt.run_one_sync(Action("delete", "production"))
    assert result.status is Status.BLOCKED and not result.ran and ex.started == []
    assert result.why == "blocked by rule 'no-deletes': deletes are never allowed"
    with pytest.raises(ActionNotCompleted, match="blocked by rule 'no-deletes'"):
        result.unwrap()
    recs = records(db)
    assert [r["kind"] for r in recs] == ["decision"] and recs[0]["decision"]["approval"] == "block"


def test_approve_yes_runs_and_records_the_approver(db: Path) -> None:
    ex, handler = Recorder(), Scripted(True)
    rt = Runtime(ex, policy(), approval_handler=handler, audit=audit_logger(db))
    result = rt.run_one_sync(Action("write", "salesforce", {"amount": 5}))
    assert result.status is Status.OK and ex.finished == ["salesforce"]
    assert handler.asked == [result.decision_id]  # the handler knows which audit record it answers
    assert result.approval is not None and result.approval.by == "alice"
    assert "approved by alice" in result.why
    (approval,) = events(db, result.decision_id, "approval")
    assert approval["status"] == "approved" and approval["by"] == "alice" and approval["handler"] == "Scripted"
    (execution,) = events(db, result.decision_id, "execution")
    assert execution["status"] == "ok"


def test_approve_no_does_not_run(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), approval_handler=Scripted(False), audit=audit_logger(db))
    result = rt.run_one_sync(Action("write", "salesforce"))
    assert result.status is Status.DENIED and not result.ran and ex.started == []
    assert "denied by bob: not today" in result.why
    (approval,) = events(db, result.decision_id, "approval")
    assert approval["status"] == "denied" and approval["by"] == "bob"
    assert events(db, result.decision_id, "execution") == []


def test_approval_timeout_denies_and_says_so(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), approval_handler=Scripted(True, delay=30, timeout=0.2), audit=audit_logger(db))
    started = time.monotonic()
    result = rt.run_one_sync(Action("write", "salesforce"))
    assert time.monotonic() - started < 5  # the handler's 30 s were not waited out
    assert result.status is Status.DENIED and ex.started == []
    assert result.approval is not None and result.approval.status == "timed_out"
    assert "no answer in time" in result.why
    (approval,) = events(db, result.decision_id, "approval")
    assert approval["status"] == "timed_out" and "0.2s" in approval["note"]


def test_handler_exception_denies(db: Path) -> None:
    ex = Recorder()
    handler = Scripted(True, error=ConnectionError("slack is down"))
    rt = Runtime(ex, policy(), approval_handler=handler, audit=audit_logger(db))
    result = rt.run_one_sync(Action("write", "salesforce"))
    assert result.status is Status.DENIED and ex.started == []
    assert result.approval is not None and result.approval.status == "error"
    assert "ConnectionError: slack is down" in result.approval.note
    (approval,) = events(db, result.decision_id, "approval")
    assert approval["status"] == "error"


def test_no_handler_configured_denies(db: Path) -> None:
    rt = Runtime(Recorder(), policy(), audit=audit_logger(db))
    assert isinstance(rt.approval_handler, DenyAllApprovalHandler)
    result = rt.run_one_sync(Action("send", "email"))  # the defaults say approve
    assert result.status is Status.DENIED
    assert "no approver was configured" in result.why


def test_executor_failure_is_a_failed_result_with_the_error_audited(db: Path) -> None:
    rt = Runtime(Recorder(), policy(), audit=audit_logger(db))
    result = rt.run_one_sync(Action("read", "disk", {"fail": True}))
    assert result.status is Status.FAILED and result.ran
    assert result.error == "failed: RuntimeError: disk exploded"
    assert isinstance(result.exception, RuntimeError)
    with pytest.raises(ActionNotCompleted) as info:
        result.unwrap()
    assert info.value.__cause__ is result.exception
    (execution,) = events(db, result.decision_id, "execution")
    assert execution["status"] == "error" and "disk exploded" in execution["error"]


class BrokenAudit:
    """An audit sink whose disk is full."""

    def record_decision(self, *a: Any, **k: Any) -> int:
        raise OSError(28, "No space left on device")

    record_decisions = record_decision
    record_event = record_decision


def test_decision_that_cannot_be_audited_does_not_run() -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=BrokenAudit())
    result = rt.run_one_sync(Action("read", "wiki"))
    assert result.status is Status.ERROR and ex.started == []
    assert "could not audit the decision" in result.error and "fail closed" in result.error
    results = rt.execute_sync([Action("read", "a"), Action("read", "b")])
    assert [r.status for r in results] == [Status.ERROR, Status.ERROR] and ex.started == []


class AuditFailsOnApproval:
    def __init__(self, path: Path) -> None:
        self.inner = audit_logger(path)

    def record_decision(self, *a: Any, **k: Any) -> int:
        return self.inner.record_decision(*a, **k)

    def record_event(self, kind: str, decision_id: int | None, data: Any) -> int:
        if kind == "approval":
            raise OSError("disk gone")
        return self.inner.record_event(kind, decision_id, data)


def test_an_approval_that_cannot_be_audited_does_not_count(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), approval_handler=Scripted(True), audit=AuditFailsOnApproval(db))
    result = rt.run_one_sync(Action("write", "salesforce"))
    assert result.status is Status.ERROR and ex.started == []
    assert "could not audit the approval" in result.error


def test_audit_none_means_no_auditing() -> None:
    rt = Runtime(lambda a: a.target.upper(), policy(), audit=None)
    result = rt.run_one_sync(Action("read", "wiki"))
    assert result.ok and result.value == "WIKI" and result.decision_id is None


def test_cancelling_run_one_cancels_the_execution_and_audits_it(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))

    async def main() -> None:
        task = asyncio.ensure_future(rt.run_one(Action("read", "slow", {"sleep": 30})))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert ex.cancelled == ["slow"]
    assert [r["data"]["status"] for r in records(db) if r["kind"] == "execution"] == ["cancelled"]


def test_sync_facade_refuses_to_run_inside_an_event_loop() -> None:
    rt = Runtime(Recorder(), policy())

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"await runtime.run_one"):
            rt.run_one_sync(Action("read", "x"))

    asyncio.run(main())


def test_misuse_is_caught_early() -> None:
    with pytest.raises(TypeError, match="policy must be a Policy"):
        Runtime(Recorder(), "policy.yaml")  # type: ignore[arg-type]

    class SyncExecute:
        def execute(self, action: Action) -> None: ...

    with pytest.raises(TypeError, match="async def"):
        Runtime(SyncExecute(), policy())
    with pytest.raises(TypeError, match="approval_handler must have an async request"):
        Runtime(Recorder(), policy(), approval_handler=lambda a: True)  # type: ignore[arg-type]
    rt = Runtime(Recorder(), policy())
    with pytest.raises(TypeError, match="expected an Action"):
        rt.plan([{"type": "read", "target": "x"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="concurrency"):
        rt.execute_sync([Action("read", "x")], concurrency=0)


# -- plans -------------------------------------------------------------------------------------------


def test_plan_decides_everything_and_runs_nothing(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))
    plan = rt.plan([Action("read", "wiki"), Action("write", "salesforce"), Action("delete", "prod")])
    assert isinstance(plan, Plan) and len(plan) == 3
    assert [s.decision.approval.value for s in plan] == ["auto", "approve", "block"]
    assert [s.action.target for s in plan.blocked] == ["prod"]
    assert [s.action.target for s in plan.needs_approval] == ["salesforce"]
    text = str(plan)
    assert "read on wiki" in text and "no-deletes" in text and "1 auto, 1 need approval, 1 blocked" in text
    assert plan.to_dict()["steps"][2]["decision"]["rule"] == "no-deletes"
    assert ex.started == [] and records(db) == []


def test_sequential_plan_stops_at_the_first_block(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))
    plan = rt.plan([Action("read", "a"), Action("delete", "b"), Action("read", "c")])
    results = asyncio.run(rt.execute(plan))
    assert [r.status for r in results] == [Status.OK, Status.BLOCKED, Status.SKIPPED]
    assert ex.started == ["a"]
    assert results[2].error == "not started: action 2 (delete on b) was blocked" and not results[2].ran
    # all three decisions were audited up front, in one plan; the skipped one says it never started
    decisions = [r for r in records(db) if r["kind"] == "decision"]
    assert [origin(d)["step"] for d in decisions] == [1, 2, 3]
    assert len({origin(d)["plan"] for d in decisions}) == 1
    (skipped,) = events(db, results[2].decision_id, "execution")
    assert skipped["status"] == "cancelled" and skipped["error"].startswith("not started")


def test_sequential_plan_stops_at_a_denial_and_at_a_failure(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), approval_handler=Scripted(False), audit=audit_logger(db))
    results = rt.execute_sync([Action("write", "salesforce"), Action("read", "x")])
    assert [r.status for r in results] == [Status.DENIED, Status.SKIPPED] and ex.started == []
    results = rt.execute_sync([Action("read", "x", {"fail": 1}), Action("read", "y")])
    assert [r.status for r in results] == [Status.FAILED, Status.SKIPPED] and ex.started == ["x"]


def test_fail_fast_off_runs_everything(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))
    results = rt.execute_sync([Action("read", "x", {"fail": 1}), Action("delete", "y"), Action("read", "z")],
                              fail_fast=False)
    assert [r.status for r in results] == [Status.FAILED, Status.BLOCKED, Status.OK]


def test_parallel_plan_runs_in_parallel(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))
    actions = [Action("read", f"t{i}", {"sleep": 0.3}) for i in range(8)]
    started = time.monotonic()
    results = asyncio.run(rt.execute(rt.plan(actions), concurrency=8))
    elapsed = time.monotonic() - started
    assert all(r.ok for r in results) and [r.action.target for r in results] == [f"t{i}" for i in range(8)]
    # eight 0.3 s actions: sequentially 2.4 s; in parallel about 0.3 s
    assert elapsed < 1.5, elapsed
    assert all(r.duration_ms >= 290 for r in results)


def test_parallel_fail_fast_cancels_running_and_skips_the_rest(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))
    actions = [Action("read", f"slow{i}", {"sleep": 10}) for i in range(3)]
    actions.append(Action("read", "bad", {"sleep": 0.2, "fail": True}))
    actions += [Action("read", f"later{i}") for i in range(3)]
    started = time.monotonic()
    results = asyncio.run(rt.execute(rt.plan(actions), concurrency=4))
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed  # the 10 s actions were cancelled, not waited for
    assert [r.status for r in results] == [Status.CANCELLED] * 3 + [Status.FAILED] + [Status.SKIPPED] * 3
    assert sorted(ex.cancelled) == ["slow0", "slow1", "slow2"]
    assert not any(t.startswith("later") for t in ex.started)
    for r in results[:3]:
        assert r.ran and 150 <= r.duration_ms < 5000  # they ran until the failure, then stopped
        assert "action 4 (read on bad) failed" in r.error
    statuses = {r.decision_id: events(db, r.decision_id, "execution")[0]["status"] for r in results}
    assert list(statuses.values()) == ["cancelled"] * 3 + ["error"] + ["cancelled"] * 3


def test_parallel_fail_fast_cancels_pending_approvals(db: Path) -> None:
    ex = Recorder()
    handler = Scripted(True, delay=10, timeout=20)
    rt = Runtime(ex, policy(), approval_handler=handler, audit=audit_logger(db))
    actions = [Action("write", "salesforce"), Action("delete", "prod", {"sleep": 0.1})]
    results = rt.execute_sync(actions, concurrency=2)
    assert [r.status for r in results] == [Status.CANCELLED, Status.BLOCKED]
    assert not results[0].ran and "while waiting for approval" in results[0].error
    (approval,) = events(db, results[0].decision_id, "approval")
    assert approval["status"] == "cancelled"


def test_cancelling_execute_cancels_everything_and_audits_it(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))

    async def main() -> None:
        task = asyncio.ensure_future(rt.execute([Action("read", f"s{i}", {"sleep": 30}) for i in range(4)],
                                                concurrency=2))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert sorted(ex.cancelled) == ["s0", "s1"]
    assert [r["data"]["status"] for r in records(db) if r["kind"] == "execution"] == ["cancelled"] * 4


# -- hot reload ----------------------------------------------------------------------------------------


def test_update_policy_applies_to_later_decisions_not_running_ones(db: Path) -> None:
    ex = Recorder()
    rt = Runtime(ex, policy(), audit=audit_logger(db))
    old_hash = rt.policy.hash
    strict = policy(POLICY.replace("approval: auto", "approval: block"))

    async def main() -> tuple[Result, Result]:
        running = asyncio.ensure_future(rt.run_one(Action("read", "slow", {"sleep": 0.3})))
        await asyncio.sleep(0.05)
        assert rt.update_policy(strict, by="test")
        later = await rt.run_one(Action("read", "fast"))
        return await running, later

    first, later = asyncio.run(main())
    assert first.status is Status.OK and first.decision.policy_hash == old_hash
    assert later.status is Status.BLOCKED and later.decision.policy_hash == strict.hash
    assert rt.update_policy(strict) is False  # same policy: nothing to do, nothing audited
    change = [r for r in records(db) if r["kind"] == "policy_change"]
    assert len(change) == 1
    assert change[0]["data"]["old_hash"] == old_hash and change[0]["data"]["new_hash"] == strict.hash
    assert change[0]["data"]["by"] == "test"


def test_update_policy_from_another_thread_is_atomic_and_audited(db: Path) -> None:
    rt = Runtime(Recorder(), policy(), audit=audit_logger(db))
    policies = [policy(), policy(POLICY.replace("approval: auto", "approval: block"))]
    stop = threading.Event()

    def flip() -> None:
        i = 0
        while not stop.is_set():
            rt.update_policy(policies[i % 2])
            i += 1

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        results = rt.execute_sync([Action("read", f"x{i}") for i in range(50)], fail_fast=False)
        singles = [rt.run_one_sync(Action("read", "y")) for _ in range(20)]
    finally:
        stop.set()
        thread.join()
    # within a plan one policy decided everything; every decision names a policy that existed
    assert len({r.decision.policy_hash for r in results}) == 1
    hashes = {p.hash for p in policies}
    assert {r.decision.policy_hash for r in results + singles} <= hashes
    for r in results + singles:
        assert r.status is (Status.OK if r.decision.approval.value == "auto" else Status.BLOCKED)
    assert {r["data"]["new_hash"] for r in records(db) if r["kind"] == "policy_change"} <= hashes


# -- executors -------------------------------------------------------------------------------------------


def test_routing_executor_routes_by_target_glob() -> None:
    seen: list[str] = []

    async def crm(action: Action) -> str:
        seen.append(f"crm:{action.target}")
        return "crm"

    def github(action: Action) -> str:  # plain functions run in a worker thread
        seen.append(f"gh:{action.target}:{threading.current_thread() is threading.main_thread()}")
        return "gh"

    router = RoutingExecutor({"salesforce": crm, "github*": FunctionExecutor(github)})
    rt = Runtime(router, policy(), approval_handler=Scripted(True))
    assert rt.run_one_sync(Action("read", "GitHub-Issues")).value == "gh"  # globs fold case, as in policies
    assert rt.run_one_sync(Action("write", "salesforce")).value == "crm"
    missing = rt.run_one_sync(Action("read", "jira"))
    assert missing.status is Status.FAILED and isinstance(missing.exception, NoExecutorError)
    assert "no executor for target 'jira'" in missing.error
    assert seen == ["gh:GitHub-Issues:False", "crm:salesforce"]
    fallback = RoutingExecutor({"salesforce": crm}, default=lambda a: "default")
    assert Runtime(fallback, policy()).run_one_sync(Action("read", "jira")).value == "default"


# -- call(): the one path adapters share, with the framework's own callable ----------------------

class Approver:
    def __init__(self, approved: bool) -> None:
        self.approved = approved
        self.asked: list[str] = []

    async def request(self, action: Action, decision: Any, **kw: Any) -> ApprovalAnswer:
        self.asked.append(action.type)
        return ApprovalAnswer.approve("alice", "ok") if self.approved else ApprovalAnswer.deny("alice", "no")


def test_call_without_an_executor_runs_the_given_callable_only_when_allowed(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    ran: list[tuple[str, Any]] = []

    def tool(name: str, *, n: int) -> str:
        ran.append((name, n))
        return f"{name}:{n}"

    rt = Runtime(policy=policy(), audit=audit_logger(db))
    ok = rt.call_sync(Action("read", "crm"), tool, "a", n=1, source={"via": "test", "tool": "tool"})
    blocked = rt.call_sync(Action("delete", "crm"), tool, "b", n=2)
    assert (ok.status, ok.value, blocked.status) == (Status.OK, "a:1", Status.BLOCKED)
    assert ran == [("a", 1)]  # the blocked call never reached the tool
    decisions = [r for r in records(db) if r["kind"] == "decision"]
    assert origin(decisions[0]) == {"via": "test", "tool": "tool"}
    assert origin(decisions[1]) == {"via": "runtime"}
    assert events(db, ok.decision_id, "execution")[0]["status"] == "ok"


def test_call_awaits_async_callables_and_asks_before_approve_rules(tmp_path: Path) -> None:
    async def write(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    yes, no = Approver(True), Approver(False)
    allowed = asyncio.run(Runtime(policy=policy(), approval_handler=yes).call(Action("write", "salesforce"), write, 21))
    denied = asyncio.run(Runtime(policy=policy(), approval_handler=no).call(Action("write", "salesforce"), write, 1))
    assert (allowed.status, allowed.value) == (Status.OK, 42)
    assert (denied.status, denied.value, no.asked) == (Status.DENIED, None, ["write"])


def test_call_fails_closed_when_the_decision_cannot_be_audited(tmp_path: Path) -> None:
    class BrokenAudit:
        def record_decision(self, *a: Any, **k: Any) -> int:
            raise OSError("disk full")

    ran: list[int] = []
    result = Runtime(policy=policy(), audit=BrokenAudit()).call_sync(Action("read", "crm"), ran.append, 1)
    assert result.status is Status.ERROR and ran == [] and "disk full" in result.error


def test_call_reports_a_failing_callable_as_failed(tmp_path: Path) -> None:
    def boom() -> None:
        raise ValueError("bad input")

    result = Runtime(policy=policy()).call_sync(Action("read", "crm"), boom)
    assert result.status is Status.FAILED and "bad input" in result.error
    with pytest.raises(ActionNotCompleted):
        result.unwrap()


def test_run_one_and_execute_need_an_executor() -> None:
    rt = Runtime(policy=policy())
    with pytest.raises(TypeError, match="call"):
        rt.run_one_sync(Action("read", "crm"))
    with pytest.raises(TypeError, match="call"):
        rt.execute_sync([Action("read", "crm")])
    with pytest.raises(TypeError, match="Policy"):
        Runtime(executor=lambda a: None)
