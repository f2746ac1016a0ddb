"""A writer that stays open checkpoints the WAL on a thread of its own (audit/checkpoint.py)."""

from __future__ import annotations

import os
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


def test_a_writer_that_stays_open_checkpoints_on_its_own_thread(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    log = SQLiteAuditLogger(db)
    try:
        for _ in range(audit_sqlite.RECORDS_BEFORE_CHECKPOINTER - 1):
            log.record_decision(ACTION, DECISION)
        assert log._checkpointer is None  # a short-lived writer never starts the thread,
        assert _pragma(log, "wal_autocheckpoint") == 1000  # and checkpoints as SQLite does
        start = db.stat().st_size
        for _ in range(400):
            log.record_decision(ACTION, DECISION)
        assert log._checkpointer is not None
        # The writer's own checkpoint is only the backstop now, far past where SQLite's would have run,
        assert _pragma(log, "wal_autocheckpoint") == checkpoint.BACKSTOP_PAGES
        # and the thread's copied the log into the database file while the writer stayed open.
        assert _wait_for(lambda: log._checkpointer.checkpoints >= 1)
        assert _wait_for(lambda: db.stat().st_size > start + 100_000)
        thread = log._checkpointer._thread
        assert thread.is_alive() and thread.name == "aegis-audit-checkpoint"
    finally:
        log.close()
    assert not thread.is_alive()  # (this writer's: another test's unclosed logger may have one running)
    assert not Path(f"{db}-wal").exists()  # closing still checkpoints and removes the log
    with open_reader(db) as reader:
        result = verify_db(reader.conn)
    assert result.ok and result.records == audit_sqlite.RECORDS_BEFORE_CHECKPOINTER - 1 + 400


def test_the_backstop_bounds_the_log_while_writes_never_pause(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A PASSIVE checkpoint racing a writer never catches up, and SQLite starts the log over only once
    # one has: the writer's own checkpoint at the backstop is what bounds it.
    monkeypatch.setattr(checkpoint, "BACKSTOP_PAGES", 300)
    db = tmp_path / "a.db"
    log = SQLiteAuditLogger(db)
    biggest = 0
    try:
        for i in range(4000):
            log.record_decision(ACTION, DECISION)
            if i % 100 == 0:
                biggest = max(biggest, os.path.getsize(f"{db}-wal"))
        assert _pragma(log, "wal_autocheckpoint") == 300
    finally:
        log.close()
    # Unbounded, the log reaches ~75 MB here; bounded, a few MB (10 MB seen under load, when the
    # writer's own checkpoint finds the thread's under way and the log cannot start over yet).
    assert biggest < 32_000_000, biggest
    with open_reader(db) as reader:
        assert verify_db(reader.conn).records == 4000


def test_if_the_thread_cannot_start_the_writer_checkpoints_as_before(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no more file descriptors")

    monkeypatch.setattr(checkpoint, "sqlite3", types.SimpleNamespace(connect=refuse, Error=Exception))
    log = SQLiteAuditLogger(tmp_path / "a.db")
    try:
        for _ in range(audit_sqlite.RECORDS_BEFORE_CHECKPOINTER + 10):
            log.record_decision(ACTION, DECISION)
        assert log._checkpointer is None
        assert _pragma(log, "wal_autocheckpoint") == 1000
    finally:
        log.close()
