"""QueueApprovalHandler: the request waits in the audit database and is answered from another process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from aegis_cli import Action, Policy
from aegis_cli.runtime.core import Runtime, Status

pytest.importorskip("aegis_cli.audit.approvals", reason="the approval queue (audit worker) has not landed")

from aegis_cli.approvals import QueueApprovalHandler
from aegis_cli.audit import open_audit, open_reader
from aegis_cli.audit.approvals import ApprovalQueue

REPO = Path(__file__).resolve().parents[1]
POLICY = Policy.from_string("""
version: "1"
audit: {redact: [api_key]}
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
""")
WRITE = Action("write", "salesforce", {"amount": 5, "api_key": "sk-live-123"}, agent="sales-bot")


def _cli_has_approvals() -> bool:
    from aegis_cli.cli import app

    return any(getattr(g, "name", None) == "approvals" for g in app.registered_groups)


needs_cli = pytest.mark.skipif(not _cli_has_approvals(), reason="`aegis approvals` (audit worker) not registered")


class Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []

    async def execute(self, action: Action) -> str:
        self.ran.append(action.target)
        if action.params.get("boom"):
            await asyncio.sleep(0.3)  # long enough for the other action to be waiting in the queue
            raise RuntimeError("boom")
        return "written"


def runtime(db: Path | str, timeout: float = 20) -> tuple[Runtime, QueueApprovalHandler, Recorder]:
    handler = QueueApprovalHandler(db, timeout=timeout, requested_by="test-agent", redact=POLICY.redact)
    ex = Recorder()
    rt = Runtime(ex, POLICY, approval_handler=handler, audit=open_audit(db, redact=POLICY.redact))
    return rt, handler, ex


async def aegis(*args: str) -> tuple[int, str, str]:
    """`python -m aegis_cli ...` as a real second process."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "aegis_cli", *args, cwd=REPO,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def pending_ids(db: Path | str) -> list[int]:
    code, out, err = await aegis("approvals", "list", "--audit-db", str(db), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    items = data if isinstance(data, list) else data.get("approvals", [])
    return [item["id"] for item in items if item["status"] == "pending"]


async def first_pending(db: Path | str) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ids = await pending_ids(db)
        if ids:
            return ids[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no pending approval appeared")


@needs_cli
def test_approved_from_another_shell_with_the_cli(audit_target: str) -> None:
    db = audit_target
    rt, _handler, ex = runtime(db)

    async def main() -> Any:
        task = asyncio.ensure_future(rt.run_one(WRITE))
        request_id = await first_pending(db)
        assert not task.done() and ex.ran == []  # waiting for a person, not running
        code, _, err = await aegis("approvals", "approve", str(request_id), "--note", "checked with finance",
                                   "--audit-db", str(db))
        assert code == 0, err
        return request_id, await asyncio.wait_for(task, 10)

    request_id, result = asyncio.run(main())
    assert result.status is Status.OK and ex.ran == ["salesforce"]
    assert result.approval.status == "approved" and result.approval.note == "checked with finance"
    assert result.approval.by  # whoever ran the command
    req = ApprovalQueue(db).get(request_id)
    assert req.status == "approved" and req.decision_id == result.decision_id
    assert req.requested_by == "test-agent"
    assert req.action.params["api_key"] != "sk-live-123"  # redacted in the queue too


@needs_cli
def test_denied_from_another_shell_with_the_cli(audit_target: str) -> None:
    db = audit_target
    rt, _handler, ex = runtime(db)

    async def main() -> Any:
        task = asyncio.ensure_future(rt.run_one(WRITE))
        request_id = await first_pending(db)
        code, _, err = await aegis("approvals", "deny", str(request_id), "--note", "wrong account",
                                   "--audit-db", str(db))
        assert code == 0, err
        return await asyncio.wait_for(task, 10)

    result = asyncio.run(main())
    assert result.status is Status.DENIED and ex.ran == []
    assert result.approval.status == "denied" and result.approval.note == "wrong account"


@needs_cli
def test_cli_runner_answers_in_process(audit_target: str) -> None:
    from typer.testing import CliRunner

    from aegis_cli.cli import app

    db = audit_target
    rt, handler, _ex = runtime(db)

    async def main() -> Any:
        task = asyncio.ensure_future(rt.run_one(WRITE))
        while handler.last_request_id is None:
            await asyncio.sleep(0.02)
        result = await asyncio.to_thread(CliRunner().invoke, app, [
            "approvals", "approve", str(handler.last_request_id), "--audit-db", str(db)])
        assert result.exit_code == 0, result.output
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(main()).status is Status.OK


def test_answered_by_another_process_through_the_library(audit_target: str) -> None:
    db = audit_target
    rt, _handler, ex = runtime(db)
    answerer = textwrap.dedent(f"""
        import time
        from aegis_cli.audit.approvals import ApprovalQueue
        q = ApprovalQueue({str(db)!r})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pending = q.list("pending")
            if pending:
                q.answer(pending[0].id, True, by="ops-ui", note="fine")
                break
            time.sleep(0.05)
    """)
    proc = subprocess.Popen([sys.executable, "-c", answerer], cwd=REPO)
    try:
        result = rt.run_one_sync(WRITE)
    finally:
        proc.wait(20)
    assert result.status is Status.OK and result.approval.by == "ops-ui" and ex.ran == ["salesforce"]


def test_nobody_answers_it_times_out_in_the_queue_too(audit_target: str) -> None:
    db = audit_target
    rt, handler, ex = runtime(db, timeout=0.5)
    result = rt.run_one_sync(WRITE)
    assert result.status is Status.DENIED and result.approval.status == "timed_out" and ex.ran == []
    queue = ApprovalQueue(db)
    assert queue.get(handler.last_request_id).status == "timed_out"
    with pytest.raises(ValueError):  # a late answer cannot approve it
        queue.answer(handler.last_request_id, True, by="late")


def test_a_cancelled_plan_withdraws_its_request(audit_target: str) -> None:
    db = audit_target
    rt, handler, _ex = runtime(db)
    # the write waits for approval while the failing read stops the plan
    results = rt.execute_sync([WRITE, Action("read", "x", {"boom": True})], concurrency=2)
    assert results[0].status is Status.CANCELLED, results
    assert ApprovalQueue(db).get(handler.last_request_id).status == "cancelled"


def test_the_audit_trail_holds_the_whole_story(audit_target: str) -> None:
    db = audit_target
    rt, _handler, _ex = runtime(db, timeout=0.3)
    result = rt.run_one_sync(WRITE)
    with open_reader(db) as trail:
        bodies = [json.loads(b) for (_, _, b) in trail.rows()]
    kinds = [(b["kind"], b.get("data", {}) and b["data"].get("status")) for b in bodies
             if b["id"] == result.decision_id or b.get("decision_id") == result.decision_id]
    assert kinds[0] == ("decision", None)
    # the queue writes the answer into this same trail, so the runtime does not write it again
    assert [k for k in kinds if k[0] == "approval"] == [("approval", "timed_out")]
