"""A writer that stays open checkpoints the WAL on a thread of its own (audit/checkpoint.py)."""

from __future__ import annotations

import os
import threading
import time
import types
from pathlib import Path

import pytest

from aegis_cli.audit import SQLiteAuditLogger, checkpoint, open_reader
from aegis_cli.audit import sqlite as audit_sqlite
from aegis_cli.audit.verify import verify_db
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel

ACTION = Action("send_email", "smtp", {"to": "ops@example.com", "body": "x" * 300}, "agent", "s1")
DECISION = Decision(Approval.AUTO, RiskLevel.LOW, "mail", "outbound mail", "ph")


def _pragma(log: SQLiteAuditLogger, name: str) -> int:
    return int(log._conn.execute(f"PRAGMA {name}").fetchone()[0])


def _wait_for(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_the_writer_never_checkpoints_and_its_thread_does(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    log = SQLiteAuditLogger(db)
    try:
        assert _pragma(log, "wal_autocheckpoint") == 0  # SQLite's own, inside a commit, is off
        start = db.stat().st_size
        for _ in range(audit_sqlite.RECORDS_PER_CHECKPOINT - 1):
            log.record_decision(ACTION, DECISION)
        assert log._checkpointer is None  # a short-lived writer never starts the thread
        assert db.stat().st_size == start  # and nothing reached the database file: it is all in the log
        for _ in range(2 * audit_sqlite.RECORDS_PER_CHECKPOINT):
            log.record_decision(ACTION, DECISION)
        assert log._checkpointer is not None
        assert _wait_for(lambda: log._checkpointer.checkpoints >= 1)
        # The pages were copied into the database file while the writer stayed open.
        assert _wait_for(lambda: db.stat().st_size > start + 100_000)
        assert any(t.name == "aegis-audit-checkpoint" for t in threading.enumerate())
    finally:
        log.close()
    assert not any(t.name == "aegis-audit-checkpoint" for t in threading.enumerate())
    assert not Path(f"{db}-wal").exists()  # the writer's close, as the last connection, still cleans up
    with open_reader(db) as reader:
        result = verify_db(reader.conn)
    assert result.ok and result.records == 3 * audit_sqlite.RECORDS_PER_CHECKPOINT - 1


def test_the_log_stays_bounded_while_writes_never_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A PASSIVE checkpoint racing a writer never catches up, and SQLite restarts the log only once one
    # has: without the TRUNCATE past the bound the log would hold every page written (~40 MB here).
    monkeypatch.setattr(checkpoint, "LOG_BOUND_PAGES", 200)
    db = tmp_path / "a.db"
    log = SQLiteAuditLogger(db)
    biggest = 0
    try:
        for i in range(4000):
            log.record_decision(ACTION, DECISION)
            if i % 100 == 0:
                biggest = max(biggest, os.path.getsize(f"{db}-wal"))
        assert _wait_for(lambda: os.path.getsize(f"{db}-wal") < 16_000_000)
    finally:
        log.close()
    assert biggest < 24_000_000, biggest
    with open_reader(db) as reader:
        assert verify_db(reader.conn).records == 4000


def test_if_the_thread_cannot_run_sqlite_checkpoints_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no more file descriptors")

    monkeypatch.setattr(checkpoint, "sqlite3", types.SimpleNamespace(connect=refuse))
    log = SQLiteAuditLogger(tmp_path / "a.db")
    try:
        for _ in range(audit_sqlite.RECORDS_PER_CHECKPOINT):
            log.record_decision(ACTION, DECISION)
        assert log._checkpointer is not None and log._checkpointer.failed is not None
        assert _pragma(log, "wal_autocheckpoint") == checkpoint.AUTOCHECKPOINT_PAGES
        log.record_decision(ACTION, DECISION)  # and writing goes on
    finally:
        log.close()
