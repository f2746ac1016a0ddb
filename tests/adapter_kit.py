"""What the framework-adapter tests share: one policy, a runtime on a real SQLite audit trail, a person
who answers the approval queue from another thread, and readers for the trail.

The policy: ``delete_file`` is blocked, ``send_email`` (type ``send`` on ``email``) needs approval,
everything else runs.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aegis_cli import Policy, Runtime, SQLiteAuditLogger
from aegis_cli.approvals import QueueApprovalHandler

POLICY = """
version: "1"
defaults: {risk_level: low, approval: auto, reason: "nothing risky"}
tools:
  send_email: {type: send, target: email}
rules:
  - name: no-deletes
    match: {type: delete_file}
    risk_level: critical
    approval: block
    reason: deleting files is never automated
  - name: email-needs-a-human
    match: {type: send, target: email}
    risk_level: high
    approval: approve
    reason: outgoing email needs a human
"""


def runtime(tmp_path: Path, *, timeout: float = 10.0) -> tuple[Runtime, Path]:
    """A runtime whose approvals wait in the audit database's queue (``aegis approvals approve ID``)."""
    db = tmp_path / "audit.db"
    handler = QueueApprovalHandler(db, timeout=timeout, requested_by="adapter-test")
    return Runtime(policy=Policy.from_string(POLICY), approval_handler=handler, audit=SQLiteAuditLogger(db)), db


class Approver:
    """Someone at another terminal: waits for a pending request, then answers it after ``delay``."""

    def __init__(self, db: Path, *, approve: bool = True, delay: float = 0.2, by: str = "alice") -> None:
        from aegis_cli.audit.approvals import ApprovalQueue

        self.queue = ApprovalQueue(db)
        self.approve, self.delay, self.by = approve, delay, by
        self.answered: list[int] = []
        self.asked_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pending = self.queue.list("pending")
            if pending:
                self.asked_at = time.monotonic()
                time.sleep(self.delay)
                req = self.queue.answer(pending[0].id, self.approve, by=self.by, note="checked")
                self.answered.append(req.id)
                return
            time.sleep(0.02)

    def __enter__(self) -> Approver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.queue.close()


def records(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        return [json.loads(body) for (body,) in conn.execute("SELECT body FROM audit ORDER BY id")]


def decisions(db: Path) -> list[dict[str, Any]]:
    return [r for r in records(db) if r["kind"] == "decision"]


def events(db: Path, decision_id: int, kind: str) -> list[dict[str, Any]]:
    return [r["data"] for r in records(db) if r["kind"] == kind and r["decision_id"] == decision_id]


def verify(db: Path) -> str:
    """``aegis audit verify`` on the trail; fails the test when the chain is broken."""
    out = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(db)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def outcome(db: Path, decision: dict[str, Any]) -> str:
    """What became of one decision: ``blocked``, ``denied``/``timed_out`` (approval), or the execution status."""
    if decision["decision"]["approval"] == "block":
        return "blocked"
    approvals = events(db, decision["decision_id"], "approval")
    if approvals and approvals[-1]["status"] != "approved":
        return approvals[-1]["status"]
    executions = events(db, decision["decision_id"], "execution")
    return executions[-1]["status"] if executions else "(none)"
