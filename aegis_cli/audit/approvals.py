"""The approval queue: requests that wait for a human, in the audit database.

An agent's process submits a request and waits; a person answers from any shell with
``aegis approvals approve ID`` (or a UI over ``ApprovalQueue``). State changes run in immediate
transactions and write an "approval" audit event in the same transaction, so the queue and the
audit trail cannot disagree. A request that nobody answered by its deadline becomes
``timed_out`` the next time anyone looks at it, even if the process that waited has died.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aegis_cli.audit.canonical import Pending, canonical, format_ts, pending, utc_now
from aegis_cli.audit.errors import AuditError
from aegis_cli.audit.redact import Redactor
from aegis_cli.audit.sqlite import DEFAULT_PATH, action_record
from aegis_cli.audit.store import DEFAULT_BUSY_TIMEOUT, append, open_writer
from aegis_cli.audit.target import is_postgres
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel, parse_timestamp

STATUSES = ("pending", "approved", "denied", "timed_out", "cancelled")
_POLL = 0.1


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One request for a human's answer, as the queue holds it."""

    id: int
    status: str
    action: Action
    approval: Approval
    risk_level: RiskLevel
    rule: str | None
    reason: str
    policy_hash: str
    created_at: _dt.datetime
    expires_at: _dt.datetime | None = None
    answered_by: str = ""
    answered_at: _dt.datetime | None = None
    note: str = ""
    decision_id: int | None = None
    requested_by: str = ""

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def to_dict(self) -> dict[str, Any]:
        """JSON shape (schemas/approval.schema.json)."""
        return {
            "id": self.id, "status": self.status, "action": self.action.to_dict(),
            "approval": self.approval.value, "risk_level": self.risk_level.value, "rule": self.rule,
            "reason": self.reason, "policy_hash": self.policy_hash,
            "created_at": format_ts(self.created_at),
            "expires_at": format_ts(self.expires_at) if self.expires_at else None,
            "answered_by": self.answered_by or None,
            "answered_at": format_ts(self.answered_at) if self.answered_at else None,
            "note": self.note, "decision_id": self.decision_id, "requested_by": self.requested_by,
        }


def _ts(value: str | None) -> _dt.datetime | None:
    return parse_timestamp(value) if value else None


def _request(row: dict[str, Any]) -> ApprovalRequest:
    a = json.loads(row["action"])
    action = Action(a["type"], a["target"], a.get("params") or {}, a.get("agent", ""), a.get("session", ""))
    return ApprovalRequest(
        id=row["id"], status=row["status"], action=action, approval=Approval(row["approval"]),
        risk_level=RiskLevel(row["risk_level"]), rule=row["rule"], reason=row["reason"] or "",
        policy_hash=row["policy_hash"] or "", created_at=parse_timestamp(row["created_at"]),
        expires_at=_ts(row["expires_at"]), answered_by=row["answered_by"] or "",
        answered_at=_ts(row["answered_at"]), note=row["note"] or "", decision_id=row["decision_id"],
        requested_by=row["requested_by"] or "",
    )


class ApprovalQueue:
    """Approval requests in the audit database at ``db_path``; safe across threads and processes.

    ``db_path`` may be a PostgreSQL URL (``postgresql://...``): the queue then lives in that
    database (``postgres.PostgresQueueStore``), shared by every host (``aegis-cli[postgres]``).
    """

    def __init__(self, db_path: str | os.PathLike[str] = DEFAULT_PATH, *, redact: Iterable[str] = (),
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = os.fspath(db_path)
        self.redactor = Redactor(redact)
        self._lock = threading.RLock()
        self._pg: Any = None
        if is_postgres(self.path):
            from aegis_cli.audit.postgres import CONNECT_TIMEOUT, PostgresQueueStore

            self._pg = PostgresQueueStore(self.path, timeout=min(busy_timeout, CONNECT_TIMEOUT))
            return
        self.db = open_writer(self.path, busy_timeout=busy_timeout)
        self._conn = self.db.conn

    # -- asking -----------------------------------------------------------------------------

    def submit(self, action: Action, decision: Decision, *, decision_id: int | None = None,
               requested_by: str = "", timeout: float | None = None) -> ApprovalRequest:
        """Queue a request; ``timeout`` seconds from now it can only time out."""
        now = utc_now()
        expires = None
        if timeout is not None:
            expires = format_ts(parse_timestamp(now) + _dt.timedelta(seconds=timeout))
        row = {
            "status": "pending", "created_at": now, "expires_at": expires,
            "action": canonical(action_record(action, self.redactor)),
            "approval": decision.approval.value, "risk_level": decision.risk_level.value,
            "rule": decision.rule, "reason": decision.reason, "policy_hash": decision.policy_hash,
            "decision_id": decision_id, "requested_by": requested_by, "answered_by": None,
            "answered_at": None, "note": "",
        }
        got = self.get(self._insert(row))
        assert got is not None
        return got

    def _insert(self, row: dict[str, Any]) -> int:
        if self._pg is not None:
            return int(self._pg.insert(row))
        with self._transaction():
            return int(self.db["approvals"].insert(row).last_pk)

    # -- reading ----------------------------------------------------------------------------

    def get(self, id: int) -> ApprovalRequest | None:
        rows = self._select("WHERE id = ?", [id])
        return _request(rows[0]) if rows else None

    def _select(self, where: str, args: list[Any]) -> list[dict[str, Any]]:
        """``SELECT * FROM approvals <where>`` (``?`` placeholders) as dicts."""
        if self._pg is not None:
            return list(self._pg.select(where, args))
        with self._lock:
            return list(self.db.query(f"SELECT * FROM approvals {where}", args))

    def list(self, status: str | None = "pending", limit: int = 100) -> list[ApprovalRequest]:
        """Requests with ``status`` (None: all), newest first. Overdue requests are timed out first."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        self.expire_overdue()
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        return [_request(r) for r in self._select(f"{where} ORDER BY id DESC LIMIT ?", [*args, limit])]

    # -- answering --------------------------------------------------------------------------

    def answer(self, id: int, approved: bool, *, by: str, note: str = "") -> ApprovalRequest:
        """Approve or deny a pending request. Raises ``ValueError`` if it is not pending."""
        return self._close(id, "approved" if approved else "denied", by, note)

    def expire(self, id: int) -> ApprovalRequest:
        """Mark a pending request timed out (nobody answered in time)."""
        return self._close(id, "timed_out", "", "no answer before the deadline")

    def cancel(self, id: int, *, by: str = "", note: str = "") -> ApprovalRequest:
        """Withdraw a pending request (the agent gave up, the run ended)."""
        return self._close(id, "cancelled", by, note)

    def expire_overdue(self) -> list[int]:
        """Time out every pending request past its deadline; returns their ids."""
        now = utc_now()
        ids = [r["id"] for r in self._select(
            "WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?", [now])]
        done = []
        for rid in ids:
            try:
                self.expire(rid)
                done.append(rid)
            except ValueError:
                pass  # answered meanwhile
        return done

    def _close(self, id: int, status: str, by: str, note: str) -> ApprovalRequest:
        if self._pg is not None:
            c = self._pg.close_request(id, lambda row: closing(id, row, status, by, note))
            return self._closed(id, c.overdue)
        with self._transaction():
            rows = list(self.db.query("SELECT * FROM approvals WHERE id = ?", [id]))
            c = closing(id, rows[0] if rows else None, status, by, note)
            self._conn.execute(
                "UPDATE approvals SET status = ?, answered_by = ?, answered_at = ?, note = ? WHERE id = ?",
                [c.status, c.by, c.at, c.note, id])
            append(self._conn, [c.event])
        return self._closed(id, c.overdue)

    def _closed(self, id: int, overdue: bool) -> ApprovalRequest:
        if overdue:
            raise ValueError(f"approval request #{id} timed out before it was answered")
        got = self.get(id)
        assert got is not None
        return got

    # -- waiting ----------------------------------------------------------------------------

    def wait(self, id: int, timeout: float) -> ApprovalRequest:
        """Block until the request is answered; at ``timeout`` seconds mark it timed out."""
        deadline = time.monotonic() + timeout
        while True:
            req = self._settle(id, deadline)
            if req is not None:
                return req
            time.sleep(min(_POLL, max(deadline - time.monotonic(), 0)))

    async def wait_async(self, id: int, timeout: float) -> ApprovalRequest:
        """``wait`` for asyncio: database calls run in a thread, so the event loop never blocks."""
        deadline = time.monotonic() + timeout
        while True:
            req = await asyncio.to_thread(self._settle, id, deadline)
            if req is not None:
                return req
            await asyncio.sleep(min(_POLL, max(deadline - time.monotonic(), 0)))

    def _settle(self, id: int, deadline: float) -> ApprovalRequest | None:
        req = self.get(id)
        if req is None:
            raise ValueError(f"no approval request #{id}")
        if not req.pending:
            return req
        if time.monotonic() >= deadline or (req.expires_at and req.expires_at <= _dt.datetime.now(_dt.UTC)):
            try:
                return self.expire(id)
            except ValueError:  # answered in the meantime: that answer stands
                return self.get(id)
        return None

    # -- plumbing ---------------------------------------------------------------------------

    def _transaction(self) -> _Tx:
        return _Tx(self)

    def close(self) -> None:
        with self._lock:
            if self._pg is not None:
                self._pg.close()
            else:
                self.db.close()

    def __enter__(self) -> ApprovalQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Closing:
    """How a pending request is closed, and the audit event that says so (any store)."""

    status: str
    by: str
    note: str
    at: str
    overdue: bool
    event: Pending


def closing(id: int, row: dict[str, Any] | None, status: str, by: str, note: str) -> Closing:
    """Check that request ``row`` can be closed as ``status``; raises ``ValueError`` if not."""
    if row is None:
        raise ValueError(f"no approval request #{id}")
    if row["status"] != "pending":
        raise ValueError(f"approval request #{id} is already {row['status']}")
    now = utc_now()
    overdue = False
    if status in ("approved", "denied") and row["expires_at"] and row["expires_at"] <= now:
        # Too late: an answer after the deadline must not let the action run.
        overdue, status, by, note = True, "timed_out", "", "no answer before the deadline"
    data: dict[str, Any] = {"status": status, "by": by, "note": note, "at": now, "request_id": id}
    if row["decision_id"] is None:
        # No decision record to point to: make the event self-describing.
        data["action"] = json.loads(row["action"])
        data["rule"] = row["rule"]
    return Closing(status, by, note, now, overdue, pending("approval", data=data, decision_id=row["decision_id"]))


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT under the queue's lock; sqlite errors become AuditError."""

    def __init__(self, queue: ApprovalQueue) -> None:
        self.q = queue

    def __enter__(self) -> None:
        self.q._lock.acquire()
        try:
            self.q._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.q._lock.release()
            raise AuditError(f"could not open the approval queue: {exc}") from exc

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        conn = self.q._conn
        try:
            if exc_type is None:
                conn.execute("COMMIT")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise AuditError(f"could not write to the approval queue: {err}") from err
        finally:
            self.q._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise AuditError(f"could not write to the approval queue: {exc}") from exc
