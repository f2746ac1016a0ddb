"""The approval queue: submit, answer from anywhere, wait, time out; every answer audited."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis_cli.audit import open_audit, open_reader, query
from aegis_cli.audit.approvals import ApprovalQueue, ApprovalRequest
from aegis_cli.cli import app
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.engine.schemas import validator

ACTION = Action("send_email", "email", {"to": "cfo@example.com", "password": "hunter2"}, agent="mailer",
                session="s9")
DECISION = Decision(Approval.APPROVE, RiskLevel.HIGH, "mail-needs-ok", "outbound mail needs a human", "sha256:p")


def audit_events(target: Path | str) -> list[dict]:
    with open_reader(target) as db:
        assert db.verify().ok
        return [query.record(r) for r in db.rows(query.Filters(kind="approval"))]


def test_submit_get_list_and_the_json_shape(audit_target: str) -> None:
    q = ApprovalQueue(audit_target)
    req = q.submit(ACTION, DECISION, requested_by="runtime", timeout=60)
    assert isinstance(req, ApprovalRequest) and req.id == 1 and req.status == "pending" and req.pending
    assert req.action == Action("send_email", "email", ACTION.params, "mailer", "s9")
    assert (req.approval, req.risk_level, req.rule, req.policy_hash) == (Approval.APPROVE, RiskLevel.HIGH,
                                                                          "mail-needs-ok", "sha256:p")
    assert req.expires_at is not None and 59 < (req.expires_at - req.created_at).total_seconds() <= 60
    assert q.get(1) == req and q.get(99) is None
    d = req.to_dict()
    assert list(validator("approval").iter_errors(d)) == []
    assert json.loads(json.dumps(d))["action"]["params"]["to"] == "cfo@example.com"
    second = q.submit(ACTION, DECISION)
    assert [r.id for r in q.list()] == [second.id, req.id]
    with pytest.raises(ValueError, match="unknown status"):
        q.list("waiting")
    q.close()


def test_answers_are_final_and_audited_with_their_decision(audit_target: str) -> None:
    db = audit_target
    with open_audit(db) as log:
        did = log.record_decision(ACTION, DECISION)
    q = ApprovalQueue(db, redact=["password"])
    a = q.submit(ACTION, DECISION, decision_id=did)
    assert a.action.params["password"] == "[REDACTED]"
    b = q.submit(ACTION, DECISION)
    c = q.submit(ACTION, DECISION)
    done = q.answer(a.id, True, by="alice", note="looks fine")
    assert (done.status, done.answered_by, done.note) == ("approved", "alice", "looks fine")
    assert done.answered_at is not None
    assert q.answer(b.id, False, by="bob").status == "denied"
    assert q.cancel(c.id).status == "cancelled"
    for rid in (a.id, b.id, c.id):
        with pytest.raises(ValueError, match="already"):
            q.answer(rid, True, by="mallory")
    with pytest.raises(ValueError, match="no approval request #42"):
        q.answer(42, True, by="x")
    events = audit_events(db)
    assert [(e["decision_id"], e["data"]["status"], e["data"]["by"]) for e in events] == [
        (did, "approved", "alice"), (None, "denied", "bob"), (None, "cancelled", "")]
    assert events[0]["data"]["note"] == "looks fine" and events[0]["data"]["request_id"] == a.id
    # an event with no decision record to point at carries the action itself
    assert events[1]["data"]["action"]["type"] == "send_email"
    q.close()


def test_wait_returns_an_answer_given_by_another_process(audit_target: str) -> None:
    db = audit_target
    q = ApprovalQueue(db)
    req = q.submit(ACTION, DECISION, timeout=30)

    def approve_from_a_shell() -> None:
        time.sleep(0.3)
        subprocess.run([sys.executable, "-m", "aegis_cli", "approvals", "approve", str(req.id), "--note", "ok",
                        "--by", "carol", "--audit-db", str(db)], check=True, capture_output=True, timeout=30)

    t = threading.Thread(target=approve_from_a_shell)
    t.start()
    got = q.wait(req.id, timeout=20)
    t.join()
    assert (got.status, got.answered_by, got.note) == ("approved", "carol", "ok")
    q.close()


def test_wait_times_out_and_late_answers_do_not_count(audit_target: str) -> None:
    q = ApprovalQueue(audit_target)
    req = q.submit(ACTION, DECISION)
    got = q.wait(req.id, timeout=0.2)
    assert got.status == "timed_out"
    with pytest.raises(ValueError, match="timed_out"):
        q.answer(req.id, True, by="late")
    # a request past its deadline that nobody is waiting on times out when anyone looks
    stale = q.submit(ACTION, DECISION, timeout=0.05)
    time.sleep(0.1)
    with pytest.raises(ValueError, match="timed out before it was answered"):
        q.answer(stale.id, True, by="late")
    assert q.get(stale.id).status == "timed_out"  # type: ignore[union-attr]
    stale2 = q.submit(ACTION, DECISION, timeout=0.05)
    time.sleep(0.1)
    assert stale2.id not in [r.id for r in q.list()]
    assert q.get(stale2.id).status == "timed_out"  # type: ignore[union-attr]
    assert [e["data"]["status"] for e in audit_events(audit_target)] == ["timed_out"] * 3
    q.close()


def test_wait_async_does_not_block_the_event_loop(audit_target: str) -> None:
    q = ApprovalQueue(audit_target)
    req = q.submit(ACTION, DECISION)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> ApprovalRequest:
        task = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, lambda: ApprovalQueue(audit_target).answer(req.id, False, by="dave"))
        try:
            return await q.wait_async(req.id, timeout=10)
        finally:
            task.cancel()

    got = asyncio.run(main())
    assert got.status == "denied" and got.answered_by == "dave" and ticks >= 5
    assert asyncio.run(q.wait_async(q.submit(ACTION, DECISION).id, timeout=0.1)).status == "timed_out"
    q.close()


def test_cli_list_approve_deny(audit_target: str) -> None:
    db = ["--audit-db", str(audit_target)]
    q = ApprovalQueue(audit_target)
    first, second = q.submit(ACTION, DECISION), q.submit(ACTION, DECISION)
    q.close()
    runner = CliRunner()
    r = runner.invoke(app, ["approvals", "list", *db])
    assert r.exit_code == 0 and f"#{second.id}  pending" in r.stdout and "send_email -> email" in r.stdout
    r = runner.invoke(app, ["approvals", "approve", str(first.id), "--note", "fine", "--by", "erin", *db])
    assert r.exit_code == 0 and r.stdout.strip() == f"#{first.id} approved by erin"
    r = runner.invoke(app, ["approvals", "deny", str(second.id), "--format", "json", *db],
                      env={"AEGIS_USER": "frank"})
    assert r.exit_code == 0 and json.loads(r.stdout)["answered_by"] == "frank"
    r = runner.invoke(app, ["approvals", "deny", str(second.id), *db])
    assert r.exit_code == 2 and "already denied" in r.output
    r = runner.invoke(app, ["approvals", "list", "--status", "all", "--format", "json", *db])
    assert [x["status"] for x in json.loads(r.stdout)] == ["denied", "approved"]
    r = runner.invoke(app, ["approvals", "list", *db])
    assert r.exit_code == 0 and r.stdout == ""
