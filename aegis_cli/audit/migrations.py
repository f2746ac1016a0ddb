"""The audit database's schema, as an ordered list of small migrations (the way simonw/llm does it).

Each migration is a function registered with ``@migration``; ``migrate`` applies the ones a
database has not seen, in order, each recorded by name in ``_aegis_migrations`` inside the same
transaction, and sets ``PRAGMA user_version`` to the number applied, so an old database upgrades
itself and one written by a newer aegis is refused instead of misread. Never edit a released
migration: add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from aegis_cli.audit.canonical import GENESIS
from aegis_cli.audit.errors import NewerDatabaseError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up

if TYPE_CHECKING:  # only the migrations themselves need sqlite-utils, and they get it passed in
    from sqlite_utils import Database

MIGRATIONS: list[Callable[[Database], None]] = []
MIGRATIONS_TABLE = "_aegis_migrations"
SCHEMA_VERSION = 0  # set below, once every migration is registered


def migration(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_audit(db: Database) -> None:
    # The record body is the canonical JSON that was hashed, stored verbatim: verifying and
    # exporting then need no re-serialisation, and the columns used for filtering are generated
    # from the body, so they cannot disagree with what the hash covers. (sqlite-utils cannot
    # declare generated columns, hence the DDL.)
    db.execute("""
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL,
            body TEXT NOT NULL,
            kind TEXT GENERATED ALWAYS AS (json_extract(body, '$.kind')) VIRTUAL,
            ts TEXT GENERATED ALWAYS AS (json_extract(body, '$.ts')) VIRTUAL,
            decision_id INTEGER GENERATED ALWAYS AS (json_extract(body, '$.decision_id')) VIRTUAL,
            type TEXT GENERATED ALWAYS AS (json_extract(body, '$.action.type')) VIRTUAL,
            target TEXT GENERATED ALWAYS AS (json_extract(body, '$.action.target')) VIRTUAL,
            agent TEXT GENERATED ALWAYS AS (json_extract(body, '$.action.agent')) VIRTUAL,
            approval TEXT GENERATED ALWAYS AS (json_extract(body, '$.decision.approval')) VIRTUAL,
            risk_level TEXT GENERATED ALWAYS AS (json_extract(body, '$.decision.risk_level')) VIRTUAL,
            rule TEXT GENERATED ALWAYS AS (json_extract(body, '$.decision.rule')) VIRTUAL
        )""")
    db["audit"].create_index(["ts"], index_name="audit_ts")
    db["audit"].create_index(["decision_id"], index_name="audit_decision_id")
    # The head of the chain, kept in step with the last record by every write: truncating the
    # table's tail then shows up in `aegis audit verify`, and writers read the head in O(1).
    db["audit_head"].create({"id": int, "last_id": int, "last_hash": str}, pk="id",
                            not_null={"last_id", "last_hash"})
    db["audit_head"].insert({"id": 1, "last_id": 0, "last_hash": GENESIS})
    # Append-only by construction: stop accidental edits by tools (a deliberate attacker can drop
    # these triggers; the hash chain is what catches them).
    for op in ("UPDATE", "DELETE"):
        db.execute(f"""
            CREATE TRIGGER audit_no_{op.lower()} BEFORE {op} ON audit
            BEGIN SELECT RAISE(ABORT, 'aegis audit records are append-only'); END""")


@migration
def m002_approvals(db: Database) -> None:
    db["approvals"].create(
        {
            "id": int, "status": str, "created_at": str, "expires_at": str, "action": str,
            "approval": str, "risk_level": str, "rule": str, "reason": str, "policy_hash": str,
            "decision_id": int, "requested_by": str, "answered_by": str, "answered_at": str, "note": str,
        },
        pk="id",
        not_null={"status", "created_at", "action", "approval", "risk_level"},
    )
    db["approvals"].create_index(["status", "id"], index_name="approvals_status")


@migration
def m003_fleet_policy(db: Database) -> None:
    # Used on PostgreSQL, where replicas of `aegis serve` share one policy (audit/fleet_policy.py);
    # created here too, so that a schema version means the same on both stores.
    db.execute("""
        CREATE TABLE fleet_policy (
            version INTEGER PRIMARY KEY, hash TEXT NOT NULL, document TEXT NOT NULL,
            changed_by TEXT NOT NULL, source TEXT NOT NULL, changed_at TEXT NOT NULL, audit_id INTEGER
        )""")


SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_not_newer(conn: sqlite3.Connection, path: str) -> int:
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise NewerDatabaseError(
            f"{path} has audit schema version {version}, but this aegis understands up to "
            f"{SCHEMA_VERSION}; upgrade aegis to use it")
    return version


def migrate(db: Database, path: str) -> None:
    """Bring the database up to SCHEMA_VERSION. Safe to run from several processes at once."""
    conn = db.conn
    if check_not_newer(conn, path) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find it done
    try:
        check_not_newer(conn, path)
        if not db[MIGRATIONS_TABLE].exists():
            db[MIGRATIONS_TABLE].create({"name": str, "applied_at": str}, pk="name")
        applied = {row["name"] for row in db.query(f"SELECT name FROM {MIGRATIONS_TABLE}")}
        known = {fn.__name__ for fn in MIGRATIONS}
        unknown = sorted(applied - known)
        if unknown:
            raise NewerDatabaseError(
                f"{path} has audit schema migration(s) {', '.join(unknown)} that this aegis does not "
                "know; upgrade aegis to use it")
        from aegis_cli.audit.canonical import utc_now

        for fn in MIGRATIONS:
            if fn.__name__ not in applied:
                fn(db)
                db[MIGRATIONS_TABLE].insert({"name": fn.__name__, "applied_at": utc_now()})
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
