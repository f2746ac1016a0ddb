"""The audit trail: records, chain, redaction, migrations, export, verify, CLI."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aegis_cli.audit import (
    GENESIS,
    AuditError,
    AuditLogger,
    LoggingAuditLogger,
    NewerDatabaseError,
    NotAnAuditDatabase,
    SQLiteAuditLogger,
    canonical,
    is_postgres,
    open_audit,
    open_reader,
    query,
    store,
    verify,
)
from aegis_cli.audit import export as ex
from aegis_cli.audit.canonical import link_of, pending
from aegis_cli.audit.redact import REDACTED, Redactor
from aegis_cli.cli import app
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.engine.schemas import validator

REPO = Path(__file__).resolve().parent.parent
BLOCK = Decision(Approval.BLOCK, RiskLevel.CRITICAL, "no-prod", "production is off limits", "sha256:abc")
AUTO = Decision(Approval.AUTO, RiskLevel.LOW, None, "no rule matched; the policy defaults apply", "sha256:abc")


def action(i: int = 0, **kw: object) -> Action:
    return Action(kw.pop("type", "delete"), f"target-{i}", {"i": i, "path": f"/srv/{i}", "f": 1.5, "u": "é😀"},
                  agent=str(kw.pop("agent", "bot")), session="s-1")


def fill(path: Path, n: int = 20) -> list[int]:
    with open_audit(path) as log:
        ids = log.record_decisions([(action(i, agent="bot" if i % 2 else "ci"), BLOCK if i % 3 == 0 else AUTO,
                                     {"file": "t.jsonl", "line": i}) for i in range(n)])
        log.record_event("approval", ids[0], {"status": "approved", "by": "alice", "note": "ok",
                                              "at": "2026-01-01T00:00:00Z"})
        log.record_event("execution", ids[0], {"status": "ok", "duration_ms": 12.5})
    return ids


# Most tests run on both stores: ``audit_target`` (tests/pg.py) is an SQLite path, then the URL of
# a fresh PostgreSQL database. The SQL in ``tamper`` is valid in both.


def records(target: Path | str) -> list[dict]:
    with open_reader(target) as db:
        return [query.record(r) for r in db.rows()]


def check(target: Path | str) -> verify.VerifyResult:
    with open_reader(target) as db:
        return db.verify()


def tamper(target: Path | str, *sql: str, insert: tuple[int, str, str] | None = None) -> None:
    """Drop the append-only triggers, then edit the trail behind aegis's back."""
    if is_postgres(target):
        import psycopg

        from aegis_cli.audit.postgres import columns, insert_rows

        with psycopg.connect(str(target), autocommit=True) as pg:
            pg.execute("DROP TRIGGER audit_no_update_delete ON audit")
            for s in sql:
                pg.execute(s)
            if insert:
                with pg.cursor() as cur:
                    insert_rows(cur, [columns(*insert)])
        return
    conn = sqlite3.connect(target)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for s in sql:
        conn.execute(s)
    if insert:
        conn.execute("INSERT INTO audit (id, hash, body) VALUES (?, ?, ?)", insert)
    conn.commit()
    conn.close()


def raw_bodies(target: Path | str) -> str:
    """Everything the store holds about its records, as text (what a disk thief would read)."""
    if is_postgres(target):
        import psycopg

        with psycopg.connect(str(target)) as pg:
            return "\n".join(" ".join(map(str, row)) for row in pg.execute("SELECT * FROM audit"))
    return Path(target).read_bytes().decode("utf-8", "replace")


# -- records and the chain ------------------------------------------------------------------------


def test_records_hold_the_decision_and_follow_ups(audit_target: str) -> None:
    ids = fill(audit_target, 3)
    recs = records(audit_target)
    assert [r["id"] for r in recs] == [1, 2, 3, 4, 5] and ids == [1, 2, 3]
    first = recs[0]
    assert first["kind"] == "decision" and first["decision_id"] == 1
    assert first["action"] == {"type": "delete", "target": "target-0", "agent": "ci", "session": "s-1",
                               "params": {"i": 0, "path": "/srv/0", "f": 1.5, "u": "é😀"}}
    assert first["decision"] == {"approval": "block", "risk_level": "critical", "rule": "no-prod",
                                 "reason": "production is off limits"}
    assert first["policy_hash"] == "sha256:abc" and first["origin"] == {"file": "t.jsonl", "line": 0}
    assert first["prev_hash"] == GENESIS and recs[1]["prev_hash"] == first["hash"]
    assert first["ts"].endswith("Z") and len(first["ts"]) == 27
    # follow-ups point at their decision: one query finds a decision and what became of it
    assert [(r["kind"], r["decision_id"]) for r in recs[3:]] == [("approval", 1), ("execution", 1)]
    assert recs[3]["data"]["by"] == "alice" and recs[4]["data"]["duration_ms"] == 12.5
    for r in recs:
        assert list(validator("audit-record").iter_errors(r)) == []
    assert check(audit_target).ok


def test_sqlite_and_logging_sinks_implement_the_protocol(tmp_path: Path, pg_url: str) -> None:
    from aegis_cli.audit.postgres import PostgresAuditLogger

    with open_audit(tmp_path / "a.db") as log:
        assert isinstance(log, AuditLogger) and isinstance(log, SQLiteAuditLogger)
    with open_audit(pg_url) as log:
        assert isinstance(log, AuditLogger) and isinstance(log, PostgresAuditLogger)
    assert isinstance(LoggingAuditLogger(), AuditLogger)


def test_logging_sink_emits_a_verifiable_chain(caplog: pytest.LogCaptureFixture) -> None:
    log = LoggingAuditLogger("aegis.audit.test", redact=["path"])
    with caplog.at_level(logging.INFO, logger="aegis.audit.test"):
        rid = log.record_decision(action(1), BLOCK)
        assert log.record_decisions([(action(2), AUTO, None)]) == [rid + 1]
        log.record_event("execution", rid, {"status": "error", "duration_ms": 3.0, "error": "boom"})
    recs = [json.loads(r.getMessage()) for r in caplog.records]
    assert [r["id"] for r in recs] == [1, 2, 3]
    assert recs[0]["action"]["params"]["path"] == REDACTED
    assert verify.verify_records(recs).ok


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(params=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
       origin=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
       extra=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
       text=st.text(max_size=20))
def test_spliced_body_is_the_canonical_json_of_the_record(params: dict, origin: dict | None,
                                                          extra: dict | None, text: str) -> None:
    from aegis_cli.audit.sqlite import decision_entry

    act = Action(text or "t", text, params, agent=text, session=text)
    dec = Decision(Approval.APPROVE, RiskLevel.HIGH, text or None, text, text)
    body = decision_entry(act, dec, origin, extra).body(7, "a" * 64, "2026-01-01T00:00:00.000000Z")
    parsed = json.loads(body)
    assert canonical(parsed) == body  # what an auditor re-serialises is what was hashed
    assert list(parsed) == sorted(parsed) and parsed["id"] == 7 and parsed["decision_id"] == 7
    assert link_of(body) == "a" * 64  # even when params hold keys named prev_hash or ts
    assert body.isascii()


def test_canonical_form_is_what_the_readme_says() -> None:
    value = {"b": [1, 2.5, None, True], "a": "é", "c": {"z": 1, "y": "\n"}}
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert canonical({"x": float("nan"), 1: "one"}) == '{"1":"one","x":"NaN"}'


def test_event_kinds_and_decision_ids_are_checked(audit_target: str) -> None:
    with open_audit(audit_target) as log:
        with pytest.raises(ValueError, match="unknown audit record kind"):
            log.record_event("bogus", 1, {})
        with pytest.raises(ValueError, match="decision_id"):
            log.record_event("execution", "1", {})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="record_decision"):
            log.record_event("decision", 1, {})
        rid = log.record_event("policy_change", None, {"by": "ops", "old_hash": "a", "new_hash": "b"})
    assert records(audit_target)[0]["decision_id"] is None and rid == 1
    with pytest.raises(ValueError, match="unknown audit record kind"):
        pending("nope")


# -- redaction --------------------------------------------------------------------------------------


def test_redaction_by_key_name_and_dotted_glob(audit_target: str) -> None:
    params = {"password": "p", "user": "u", "db": {"Password": "p2", "host": "h"},
              "headers": {"auth": {"token": "t"}}, "items": [{"token": "t2", "n": 1}], "token": "top"}
    r = Redactor(["password", "*.token"])
    out = r(params)
    assert out["password"] == REDACTED and out["db"]["Password"] == REDACTED and out["db"]["host"] == "h"
    assert out["headers"]["auth"]["token"] == REDACTED and out["items"][0] == {"token": REDACTED, "n": 1}
    assert out["token"] == "top" and out["user"] == "u"  # "*.token" needs a parent
    assert params["password"] == "p"  # the caller's dict is untouched
    with open_audit(audit_target, redact=["password", "*.token"]) as log:
        log.record_decision(Action("login", "db", params), AUTO)
    stored = raw_bodies(audit_target)
    assert '"p2"' not in stored and '"t2"' not in stored and "Password" in stored
    assert records(audit_target)[0]["action"]["params"]["db"]["Password"] == REDACTED


# -- verify catches tampering ---------------------------------------------------------------------


def test_verify_intact_chain(audit_target: str) -> None:
    fill(audit_target)
    result = check(audit_target)
    assert result.ok and result.records == 22 and result.head_id == 22


def test_append_only_triggers_on_postgresql(pg_url: str) -> None:
    import psycopg

    fill(pg_url, 2)
    with psycopg.connect(pg_url, autocommit=True) as pg:
        for sql in ("DELETE FROM audit WHERE id = 1", "UPDATE audit SET hash = 'x' WHERE id = 1", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                pg.execute(sql)
    assert check(pg_url).ok


def test_newer_postgresql_schema_is_refused(pg_url: str) -> None:
    import psycopg

    fill(pg_url, 1)
    with psycopg.connect(pg_url, autocommit=True) as pg:
        assert [r[0] for r in pg.execute("SELECT name FROM _aegis_migrations ORDER BY name")] == \
            ["m001_audit", "m002_approvals", "m003_fleet_policy"]
        pg.execute("INSERT INTO _aegis_migrations VALUES ('m999_from_the_future', 'later')")
    with pytest.raises(NewerDatabaseError, match="upgrade aegis"):
        open_audit(pg_url)
    with pytest.raises(NewerDatabaseError, match="upgrade aegis"):
        open_reader(pg_url)
    r = CliRunner().invoke(app, ["audit", "verify", "--audit-db", pg_url])
    assert r.exit_code == 2 and "upgrade aegis" in r.output


def test_a_postgresql_url_that_cannot_be_used(pg_cluster: object) -> None:
    runner = CliRunner()
    # no server on this port: one line, exit 2, no password shown
    r = runner.invoke(app, ["audit", "verify", "--audit-db", "postgresql://u:secret@127.0.0.1:1/x"])
    assert r.exit_code == 2 and r.output.startswith("aegis: ") and "secret" not in r.output
    r = runner.invoke(app, ["approvals", "list", "--audit-db", "postgres://u:secret@127.0.0.1:1/x"])
    assert r.exit_code == 2 and "secret" not in r.output
    url = pg_cluster.fresh_trail()  # type: ignore[attr-defined]
    with pytest.raises(NotAnAuditDatabase, match="not an aegis audit database"):
        open_reader(url)  # reading never creates
    with open_audit(url):  # writing creates and migrates
        pass
    assert check(url).ok and check(url).records == 0


def test_the_postgres_extra_is_named_when_missing() -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from aegis_cli.audit import open_audit\n"
            "try:\n    open_audit('postgresql://localhost/x')\n"
            "except ImportError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "aegis-cli[postgres]" in p.stdout and len(p.stdout.strip().splitlines()) == 1


def test_copy_between_sqlite_and_postgresql_keeps_ids_hashes_and_approvals(tmp_path: Path, pg_url: str) -> None:
    from aegis_cli.audit.approvals import ApprovalQueue

    src = tmp_path / "src.db"
    fill(src, 30)
    q = ApprovalQueue(src)
    waiting = q.submit(action(1), BLOCK, decision_id=1, timeout=3600)
    answered = q.submit(action(2), BLOCK)
    q.answer(answered.id, False, by="carol", note="no")
    q.close()
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "copy", str(src), pg_url])
    assert r.exit_code == 0, r.output
    assert "copied 33 records and 2 approval requests" in r.stdout
    head = check(src)
    assert check(pg_url) == head and records(pg_url) == records(src)
    back = tmp_path / "back.db"
    r = runner.invoke(app, ["audit", "copy", pg_url, str(back), "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["copy"]["head_hash"] == head.head_hash
    assert records(back) == records(src)
    for target in (pg_url, back):
        q = ApprovalQueue(target)
        assert [(x.id, x.status) for x in q.list(None)] == [(2, "denied"), (1, "pending")]
        q.answer(waiting.id, True, by="dave")  # the copied queue is live
        assert q.submit(action(3), BLOCK).id == 3  # new requests continue after the copied ids
        q.close()
        assert check(target).ok and check(target).head_id == head.head_id + 1
    r = runner.invoke(app, ["audit", "copy", str(src), pg_url])  # not into a trail that has records
    assert r.exit_code == 2 and "empty" in r.output
    tamper(src, "UPDATE audit SET body = replace(body, 'target-3', 'target-X')")
    r = runner.invoke(app, ["audit", "copy", str(src), str(tmp_path / "x.db")])
    assert r.exit_code == 2 and "broken" in r.output


def test_append_only_triggers_stop_casual_edits(tmp_path: Path) -> None:
    fill(tmp_path / "a.db", 2)
    conn = sqlite3.connect(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET hash = 'x' WHERE id = 1")
    conn.close()


def test_verify_catches_an_edited_field(audit_target: str) -> None:
    fill(audit_target)
    tamper(audit_target, "UPDATE audit SET body = replace(body, '\"approval\":\"block\"', "
           "'\"approval\":\"auto\"') WHERE id = 7")
    result = check(audit_target)
    assert not result.ok and result.bad_id == 7 and "edited" in result.problem and result.records == 6


def test_verify_catches_a_deleted_row(audit_target: str) -> None:
    fill(audit_target)
    tamper(audit_target, "DELETE FROM audit WHERE id = 5")
    result = check(audit_target)
    assert not result.ok and result.bad_id == 6


def test_verify_catches_deleted_rows_renumbered(audit_target: str) -> None:
    fill(audit_target)
    tamper(audit_target, "DELETE FROM audit WHERE id = 5", "UPDATE audit SET id = id - 1 WHERE id > 5",
           "UPDATE audit_head SET last_id = last_id - 1")
    result = check(audit_target)
    assert not result.ok and result.bad_id == 5 and "prev_hash" in result.problem


def test_verify_catches_a_truncated_tail(audit_target: str) -> None:
    fill(audit_target)
    tamper(audit_target, "DELETE FROM audit WHERE id >= 21")
    result = check(audit_target)
    assert not result.ok and "end" in result.problem


def test_verify_catches_an_inserted_row(audit_target: str) -> None:
    fill(audit_target)
    # make room after #4 and insert a plausible record there, chained to #4
    recs = records(audit_target)
    fake = dict(recs[4], id=5, decision_id=5, prev_hash=recs[3]["hash"])
    fake.pop("hash")
    body = canonical(fake)
    tamper(audit_target, "UPDATE audit SET id = -id WHERE id >= 5", "UPDATE audit SET id = 1 - id WHERE id < 0",
           "UPDATE audit_head SET last_id = last_id + 1",
           insert=(5, __import__("hashlib").sha256(body.encode()).hexdigest(), body))
    result = check(audit_target)
    assert not result.ok and result.bad_id == 6


def test_verify_catches_swapped_rows(audit_target: str) -> None:
    fill(audit_target)
    tamper(audit_target, "UPDATE audit SET id = -1 WHERE id = 8", "UPDATE audit SET id = 8 WHERE id = 9",
           "UPDATE audit SET id = 9 WHERE id = -1")
    result = check(audit_target)
    assert not result.ok and result.bad_id == 8


def test_writers_refuse_to_extend_a_damaged_head(audit_target: str) -> None:
    fill(audit_target, 3)
    tamper(audit_target, "DELETE FROM audit WHERE id = 5")
    with open_audit(audit_target) as log, pytest.raises(AuditError, match="head"):
        log.record_decision(action(), AUTO)


def test_verify_exports_catch_edits(audit_target: str) -> None:
    fill(audit_target)
    recs = records(audit_target)
    assert verify.verify_records(recs).ok
    edited = [dict(r) for r in recs]
    edited[3]["action"] = dict(edited[3]["action"], target="elsewhere")
    assert verify.verify_records(edited).bad_id == 4
    assert verify.verify_records(recs[:5] + recs[6:]).bad_id == 7
    assert verify.verify_records(recs[10:], prev_hash=None).ok  # a --since export checks internally
    assert not verify.verify_records(recs[10:]).ok


# -- migrations ---------------------------------------------------------------------------------------


def test_schema_version_is_recorded_and_newer_databases_refused(tmp_path: Path) -> None:
    from aegis_cli.audit.migrations import MIGRATIONS, SCHEMA_VERSION

    fill(tmp_path / "a.db", 1)
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    names = [r[0] for r in conn.execute("SELECT name FROM _aegis_migrations ORDER BY rowid")]
    assert names == [m.__name__ for m in MIGRATIONS]
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(NewerDatabaseError, match="upgrade aegis"):
        open_audit(tmp_path / "a.db")
    with pytest.raises(NewerDatabaseError):
        store.open_reader(tmp_path / "a.db")
    r = CliRunner().invoke(app, ["audit", "verify", "--audit-db", str(tmp_path / "a.db")])
    assert r.exit_code == 2 and "upgrade aegis" in r.output


def test_an_old_database_upgrades_itself(tmp_path: Path) -> None:
    import sqlite_utils

    from aegis_cli.audit.migrations import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db = sqlite_utils.Database(conn)
    db["_aegis_migrations"].create({"name": str, "applied_at": str}, pk="name")
    MIGRATIONS[0](db)
    db["_aegis_migrations"].insert({"name": MIGRATIONS[0].__name__, "applied_at": "then"})
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with open_audit(tmp_path / "old.db") as log:
        log.record_decision(action(), AUTO)
        assert "approvals" in log.db.table_names()
    assert check(tmp_path / "old.db").ok


def test_not_an_audit_database(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_text("not sqlite at all, just text " * 100)
    with pytest.raises(NotAnAuditDatabase, match="not an SQLite database"):
        store.open_reader(tmp_path / "junk.db")
    with pytest.raises(NotAnAuditDatabase, match="not an SQLite database"):
        open_audit(tmp_path / "junk.db")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(NotAnAuditDatabase, match="not an aegis audit database"):
        store.open_reader(tmp_path / "other.db")
    with pytest.raises(NotAnAuditDatabase, match="no audit database"):
        store.open_reader(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # reading never creates
    with pytest.raises(AuditError, match="cannot open audit database"):
        open_audit(tmp_path / "no" / "such" / "dir.db")


# -- export --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_records_round_trip_through_export(audit_target: str, fmt: str) -> None:
    fill(audit_target)
    original = records(audit_target)
    r = CliRunner().invoke(app, ["export", f"--{fmt}", "--audit-db", str(audit_target)])
    assert r.exit_code == 0, r.output
    if fmt == "jsonl":
        back = [json.loads(line) for line in r.stdout.splitlines()]
    elif fmt == "json":
        back = json.loads(r.stdout)
    else:
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert list(rows[0]) == list(ex.CSV_COLUMNS)
        back = [_from_csv(row) for row in rows]
    assert back == original
    assert verify.verify_records(back).ok


def _from_csv(row: dict[str, str]) -> dict:
    def j(v: str) -> object:
        return json.loads(v) if v else None

    def s(v: str) -> str | None:
        return v or None

    rec: dict = {"id": int(row["id"]), "ts": row["ts"], "kind": row["kind"],
                 "decision_id": int(row["decision_id"]) if row["decision_id"] else None,
                 "action": None, "decision": None, "policy_hash": s(row["policy_hash"]),
                 "origin": j(row["origin"]), "data": j(row["data"]), "prev_hash": row["prev_hash"], "hash": row["hash"]}
    if row["kind"] == "decision":
        rec["action"] = {"type": row["type"], "target": row["target"], "agent": row["agent"],
                         "session": row["session"], "params": j(row["params"])}
        rec["decision"] = {"approval": row["approval"], "risk_level": row["risk_level"],
                           "rule": s(row["rule"]), "reason": row["reason"]}
    return rec


def test_export_to_file_is_atomic_and_filtered(audit_target: str, tmp_path: Path) -> None:
    fill(audit_target)
    out = tmp_path / "out.json"
    out.write_text("old")
    r = CliRunner().invoke(app, ["export", "-o", str(out), "--approval", "block", "--agent", "B*",
                                 "--audit-db", str(audit_target)])
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())  # format from the suffix
    assert got and all(x["decision"]["approval"] == "block" and x["action"]["agent"] == "bot" for x in got)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    # an export that fails half way leaves the old file alone
    with pytest.raises(RuntimeError), ex.atomic_output(str(out)) as f:
        f.write("partial")
        raise RuntimeError
    assert json.loads(out.read_text()) == got


def test_export_empty_json_is_valid(audit_target: str) -> None:
    fill(audit_target, 1)
    r = CliRunner().invoke(app, ["export", "--json", "--type", "nothing*", "--audit-db", str(audit_target)])
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_since_until_and_bad_times(audit_target: str) -> None:
    fill(audit_target, 3)
    recs = records(audit_target)
    db = open_reader(audit_target)
    mid = recs[2]["ts"]
    got = [r[0] for r in db.rows(query.Filters(since=mid))]
    assert got == [3, 4, 5]
    assert [r[0] for r in db.rows(query.Filters(until=mid))] == [1, 2]
    assert [r[0] for r in db.rows(query.Filters(since=query.parse_time("1h")))] == [1, 2, 3, 4, 5]
    assert [r[0] for r in db.rows(query.Filters(kind="execution"))] == [5]
    assert [r[0] for r in db.rows(query.Filters(agent="C?"), limit=1)] == [1]
    assert db.count(query.Filters(agent="*o*")) == 1 and db.count() == 5
    db.close()
    r = CliRunner().invoke(app, ["export", "--since", "yesterday-ish", "--audit-db", str(audit_target)])
    assert r.exit_code == 2 and "ISO 8601" in r.output


# -- CLI: verify, tail, stats ---------------------------------------------------------------------------


def test_cli_verify_exit_codes(audit_target: str, tmp_path: Path) -> None:
    runner = CliRunner()
    fill(audit_target)
    r = runner.invoke(app, ["audit", "verify", "--audit-db", str(audit_target)])
    assert r.exit_code == 0 and "chain intact: 22 records" in r.stdout
    r = runner.invoke(app, ["export", "-o", str(tmp_path / "e.jsonl"), "--audit-db", str(audit_target)])
    r = runner.invoke(app, ["audit", "verify", "--export", str(tmp_path / "e.jsonl")])
    assert r.exit_code == 0, r.output
    tamper(audit_target, "UPDATE audit SET body = replace(body, 'target-3', 'target-X')")
    r = runner.invoke(app, ["audit", "verify", "--audit-db", str(audit_target), "--format", "json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["bad_id"] == 4
    (tmp_path / "x.db").write_text("hello")
    r = runner.invoke(app, ["audit", "verify", "--audit-db", str(tmp_path / "x.db")])
    assert r.exit_code == 2 and r.output.startswith("aegis: ")
    r = runner.invoke(app, ["audit", "verify"], env={"AEGIS_AUDIT_DB": str(tmp_path / "none.db")})
    assert r.exit_code == 2 and "none.db" in r.output


def test_cli_verify_as_a_real_subprocess(audit_target: str) -> None:
    fill(audit_target, 5)
    p = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(audit_target)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "chain intact: 7 records" in p.stdout
    tamper(audit_target, "DELETE FROM audit WHERE id = 3")
    p = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(audit_target)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "record #4" in p.stderr and p.stdout == ""


def test_cli_tail_and_stats(audit_target: str) -> None:
    runner = CliRunner()
    fill(audit_target)
    db = ["--audit-db", str(audit_target)]
    r = runner.invoke(app, ["tail-audit", "-n", "3", *db])
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and len(lines) == 3 and lines[-1].startswith("#22") and "execution of #1" in lines[-1]
    r = runner.invoke(app, ["tail-audit", "-n", "100", "--format", "jsonl", "--type", "DEL*", "--approval", "block",
                            *db])
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["id"] for x in got] == [1, 4, 7, 10, 13, 16, 19]
    r = runner.invoke(app, ["audit", "stats", "--format", "json", *db])
    s = json.loads(r.stdout)
    assert s["records"] == 22 and s["decisions"]["by_approval"] == {"auto": 13, "block": 7}
    assert s["decisions"]["by_rule"] == {"(defaults)": 13, "no-prod": 7}
    assert s["decisions"]["by_agent"] == {"bot": 10, "ci": 10} and s["approvals"] == {"approved": 1}
    r = runner.invoke(app, ["audit", "stats", *db])
    assert r.exit_code == 0 and "decisions by approval" in r.stdout and "no-prod" in r.stdout


def test_record_stream_batches_and_releases_only_recorded_decisions(tmp_path: Path) -> None:
    from aegis_cli.audit import record_stream

    calls: list[int] = []

    class Counting(SQLiteAuditLogger):
        def record_decisions(self, items):  # type: ignore[no-untyped-def]
            items = list(items)
            calls.append(len(items))
            return super().record_decisions(items)

    with Counting(tmp_path / "a.db") as log:
        out = list(record_stream(log, ((action(i), AUTO, None) for i in range(2500)), batch=1000))
        assert calls == [1000, 1000, 500] and [o[0] for o in out] == list(range(1, 2501))
        assert out[7][1].target == "target-7"
        # a live stream: nothing more is waiting, so every item is written (and released) at once
        calls.clear()
        seen = []
        for rid, *_ in record_stream(log, ((action(i), AUTO, None) for i in range(3)), more_ready=lambda: False):
            seen.append(rid)
            assert len(calls) == len(seen)  # released only after its own write
        assert calls == [1, 1, 1]
    assert check(tmp_path / "a.db").records == 2503


def test_live_lines_knows_when_more_input_is_waiting() -> None:
    import os
    import time

    from aegis_cli.audit import live_lines

    r, w = os.pipe()
    with os.fdopen(r, "r") as reader, os.fdopen(w, "w") as writer:
        lines, ready = live_lines(reader)
        assert not ready()
        writer.write("one\ntwo\n")
        writer.flush()
        deadline = time.monotonic() + 5
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert next(lines) == "one\n"
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert next(lines) == "two\n"
        assert not ready()
        writer.close()
        assert list(lines) == []


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(st.text(max_size=10), json_values, max_size=5), text=st.text(max_size=12),
       stamped=st.booleans())
def test_hand_built_action_text_is_canonical(params: dict, text: str, stamped: bool) -> None:
    import datetime as dt

    from aegis_cli.audit.sqlite import action_record, action_text

    ts = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC) if stamped else None
    act = Action(text, text + "x", params, agent=text, session=text, timestamp=ts)
    redactor = Redactor(["*.token", "password"])
    assert action_text(act, redactor) == canonical(action_record(act, redactor))


def test_opening_the_trail_loads_neither_pandas_nor_numpy_and_leaves_them_importable(tmp_path: Path) -> None:
    # sqlite-utils imports both when installed; aegis hides them while it loads (start-up, and
    # numpy's BLAS threads inside the proxy). Stand-ins that leave a mark when imported show it.
    for name in ("numpy", "pandas"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"import pathlib\npathlib.Path({str(tmp_path / (name + '.imported'))!r}).touch()\n")
    script = f"""
import sys
from aegis_cli.audit import open_audit, open_reader
from aegis_cli.audit.query import stats
open_audit({str(tmp_path / 'a.db')!r}).close()
open_reader({str(tmp_path / 'a.db')!r}).close()
print(sorted(m for m in ("numpy", "pandas") if m in sys.modules))
import numpy, pandas
print(numpy.__file__.startswith({str(tmp_path)!r}), pandas.__file__.startswith({str(tmp_path)!r}))
"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}:{root}"})
    assert out.stdout.split("\n")[:2] == ["[]", "True True"]
    assert {p.name for p in tmp_path.glob("*.imported")} == {"numpy.imported", "pandas.imported"}
