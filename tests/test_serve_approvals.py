"""Approvals over HTTP: the same queue as `aegis approvals` and the runtime, answered from anywhere."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_serve_helpers import TOKENS, ServeProcess, aegis, records, tokens_file, trail_for, wait_for

from aegis_cli.audit.approvals import ApprovalQueue
from aegis_cli.engine.policy import Policy

RISKY = {"type": "delete", "target": "production", "params": {"count": 3, "table": "<b>users</b>"},
         "agent": "cleanup-bot"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("serve-approvals")
    with ServeProcess(tmp, args=["--tokens", str(tokens_file(tmp)), "--no-watch"],
                      audit_db=trail_for(request, tmp)) as srv:
        yield srv


def test_long_poll_answered_from_another_process(server: ServeProcess) -> None:
    with server.client(TOKENS["agent"]) as agent:
        r = agent.post("/api/v1/approvals", json=RISKY)
        assert r.status_code == 202, r.text
        req = r.json()
        assert req["status"] == "pending" and req["requested_by"] == "agent"
        assert req["rule"] == "prod_deletes_need_approval" and req["risk_level"] == "high"
        assert r.headers["location"] == f"/api/v1/approvals/{req['id']}"
        # without waiting: still pending
        assert agent.get(f"/api/v1/approvals/{req['id']}").json()["status"] == "pending"

        result: dict[str, Any] = {}

        def poll() -> None:
            started = time.monotonic()
            result["answer"] = agent.get(f"/api/v1/approvals/{req['id']}?wait=30").json()
            result["took"] = time.monotonic() - started

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.5)
        assert "answer" not in result  # the poll is held open
        # The shell sees the server's request and answers it: the same queue.
        listed = aegis("approvals", "list", "--audit-db", str(server.audit_db), "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert str(req["id"]) in listed.stdout
        done = aegis("approvals", "approve", str(req["id"]), "--note", "checked the table",
                     "--audit-db", str(server.audit_db))
        assert done.returncode == 0, done.stderr
        t.join(30)
    answer = result["answer"]
    assert answer["status"] == "approved" and answer["note"] == "checked the table"
    assert result["took"] < 25
    # the decision and its approval are linked in the audit trail
    events = [r for r in records(server.audit_db).values() if r["decision_id"] == req["decision_id"]]
    assert [e["kind"] for e in events] == ["decision", "approval"]
    assert events[1]["data"]["status"] == "approved"


def test_answer_over_the_api_with_roles(server: ServeProcess) -> None:
    with server.client(TOKENS["agent"]) as agent, server.client(TOKENS["approver"]) as approver:
        rid = agent.post("/api/v1/approvals", json=RISKY).json()["id"]
        assert agent.get("/api/v1/approvals").status_code == 403  # listing is for approvers
        pending = approver.get("/api/v1/approvals?status=pending").json()["approvals"]
        assert rid in [p["id"] for p in pending]
        assert agent.post(f"/api/v1/approvals/{rid}/deny").status_code == 403

        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(
            answer=agent.get(f"/api/v1/approvals/{rid}?wait=30").json()))
        t.start()
        time.sleep(0.3)
        started = time.monotonic()
        r = approver.post(f"/api/v1/approvals/{rid}/deny", json={"note": "not on a Friday"})
        assert r.status_code == 200 and r.json()["status"] == "denied"
        t.join(10)
        assert time.monotonic() - started < 5  # woken by the answer, not by the poll's timeout
        assert result["answer"]["status"] == "denied" and result["answer"]["answered_by"] == "approver"

        again = approver.post(f"/api/v1/approvals/{rid}/approve")
        assert again.status_code == 409 and again.json()["error"] == "already_answered"
        assert approver.post("/api/v1/approvals/999999/approve").status_code == 404
        assert agent.get("/api/v1/approvals/999999").status_code == 404
        answered = approver.get("/api/v1/approvals?status=answered&limit=5").json()["approvals"]
        assert answered[0]["id"] == rid


def test_policy_decides_without_a_person(server: ServeProcess) -> None:
    with server.client(TOKENS["agent"]) as agent:
        auto = agent.post("/api/v1/approvals", json={"type": "read", "target": "crm"})
        block = agent.post("/api/v1/approvals", json={"type": "delete", "target": "production",
                                                      "params": {"count": 1000}})
    assert auto.status_code == 200 and auto.json()["status"] == "approved" and auto.json()["id"] is None
    assert block.status_code == 200 and block.json()["status"] == "denied"
    assert block.json()["approval"] == "block" and block.json()["answered_by"] == "policy"


def test_unanswered_request_times_out_as_denied(server: ServeProcess) -> None:
    with server.client(TOKENS["agent"]) as agent, server.client(TOKENS["approver"]) as approver:
        rid = agent.post("/api/v1/approvals?timeout=1", json=RISKY).json()["id"]
        answer = agent.get(f"/api/v1/approvals/{rid}?wait=10").json()
        assert answer["status"] == "timed_out"
        late = approver.post(f"/api/v1/approvals/{rid}/approve")
        assert late.status_code == 409
    assert aegis("audit", "verify", "--audit-db", str(server.audit_db)).returncode == 0


def test_runtime_queue_requests_appear_in_the_api(server: ServeProcess, tmp_path: Path) -> None:
    # A request queued by a Python process (the runtime's QueueApprovalHandler uses this queue)
    # is listed and answered through the server.
    policy = Policy.from_yaml(Path(__file__).resolve().parent.parent / "examples" / "policy.yaml")
    from aegis_cli.engine.models import Action

    action = Action("delete", "production", {"count": 2})
    with ApprovalQueue(server.audit_db) as queue:
        req = queue.submit(action, policy.evaluate(action), requested_by="runtime", timeout=60)
        with server.client(TOKENS["approver"]) as approver:
            assert approver.post(f"/api/v1/approvals/{req.id}/approve").status_code == 200
        answered = wait_for(lambda: (got := queue.get(req.id)) and not got.pending and got)
        assert answered.status == "approved" and answered.answered_by == "approver"
