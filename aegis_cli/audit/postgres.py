"""The audit trail and approval queue on PostgreSQL: one chain for every writer on every host.

    from aegis_cli.audit import open_audit
    with open_audit("postgresql://aegis@db.internal/aegis", redact=policy.redact) as log: ...

Records, their canonical JSON and hashes are exactly the SQLite store's (the same ``Pending``
bodies, chained the same way), so an export from either verifies alike and ``aegis audit copy``
moves a trail between them unchanged.

One chain: every append locks the head row (``SELECT ... FOR UPDATE`` on ``audit_head``) before
reading it, so writers in any process on any host queue on that lock and each extends the head
the previous one committed. A batch is chained and inserted in one transaction with one COPY,
never one round trip per record. The commit also NOTIFYs ``aegis_audit`` with the new head id,
which ``tail-audit -f`` LISTENs for.

Append-only in the database: triggers refuse UPDATE, DELETE and TRUNCATE on ``audit``, and the
roles in docs/fleet.md give writers INSERT only. The filter columns beside the body (kind, ts,
agent ...) are derived from the body by the writer, in Python: PostgreSQL's JSON functions refuse
some strings that canonical JSON holds (``\\u0000``, lone surrogates), and a body must never be
refused. The hash covers the body only; the columns are an index, ``audit verify`` checks bodies.

The schema is created and migrated on first use, under an advisory lock (several processes may
start at once); a database migrated by a newer aegis is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from aegis_cli.audit.canonical import GENESIS, Pending, record_hash, utc_now
from aegis_cli.audit.errors import AuditError, NewerDatabaseError, NotAnAuditDatabase
from aegis_cli.audit.query import Filters, Row, stats_report
from aegis_cli.audit.redact import Redactor
from aegis_cli.audit.sqlite import decision_entry, event_entry
from aegis_cli.audit.target import shown
from aegis_cli.audit.verify import VerifyResult, verify_chain
from aegis_cli.engine.matching import compile_glob, normalize
from aegis_cli.engine.models import Action, Decision

EXTRA = "postgres"
CHANNEL = "aegis_audit"
MIGRATIONS_TABLE = "_aegis_migrations"
_LOCK_KEY = 0x6165676973  # "aegis": the advisory lock that serialises migrations
CONNECT_TIMEOUT = 10.0
# How long a write waits for a pooled connection. While the database is down the pool reconnects
# in the background; a write fails (and its caller fails closed: serve answers 503) after this long
# rather than holding every request until the database is back.
CHECKOUT_TIMEOUT = 2.0
_COLUMNS = ("id", "hash", "body", "kind", "ts", "decision_id", "type", "target", "agent", "approval",
            "risk_level", "rule", "status")


def require() -> Any:
    """psycopg, or an ImportError naming the extra to install."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ImportError("PostgreSQL audit trails need the postgres extra: pip install 'aegis-cli[postgres]'") \
            from None
    return psycopg


def _error(psycopg: Any, url: str, exc: BaseException, doing: str) -> AuditError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return NotAnAuditDatabase(f"{shown(url)} is not an aegis audit database (it has no audit trail)")
    return AuditError(f"{doing} {shown(url)}: {msg}")


# -- schema -----------------------------------------------------------------------------------

def _m001_audit(cur: Any) -> None:
    cur.execute("""
        CREATE TABLE audit (
            id bigint PRIMARY KEY,
            hash text NOT NULL,
            body text NOT NULL,
            kind text NOT NULL,
            ts text NOT NULL,
            decision_id bigint,
            type text,
            target text,
            agent text,
            approval text,
            risk_level text,
            rule text,
            status text
        )""")
    cur.execute("CREATE INDEX audit_ts ON audit (ts)")
    cur.execute("CREATE INDEX audit_decision_id ON audit (decision_id)")
    cur.execute("CREATE TABLE audit_head (id int PRIMARY KEY, last_id bigint NOT NULL, last_hash text NOT NULL)")
    cur.execute("INSERT INTO audit_head VALUES (1, 0, %s)", [GENESIS])
    # Refuse edits in the database itself; the owner can drop these, which the chain then catches.
    cur.execute("""
        CREATE FUNCTION aegis_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'aegis audit records are append-only'; END $$""")
    cur.execute("CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit "
                "FOR EACH ROW EXECUTE FUNCTION aegis_audit_append_only()")
    cur.execute("CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
                "FOR EACH STATEMENT EXECUTE FUNCTION aegis_audit_append_only()")


def _m002_approvals(cur: Any) -> None:
    cur.execute("""
        CREATE TABLE approvals (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            status text NOT NULL, created_at text NOT NULL, expires_at text, action text NOT NULL,
            approval text NOT NULL, risk_level text NOT NULL, rule text, reason text, policy_hash text,
            decision_id bigint, requested_by text, answered_by text, answered_at text, note text
        )""")
    cur.execute("CREATE INDEX approvals_status ON approvals (status, id)")


def _m003_fleet_policy(cur: Any) -> None:
    from aegis_cli.audit import fleet_policy

    fleet_policy.create_table(cur)


# The same migration names as the SQLite store's (aegis_cli.audit.migrations), so a trail's
# schema version means the same on both. Never edit a released migration: add a new one.
MIGRATIONS: list[tuple[str, Callable[[Any], None]]] = [("m001_audit", _m001_audit),
                                                         ("m002_approvals", _m002_approvals),
                                                         ("m003_fleet_policy", _m003_fleet_policy)]
SCHEMA_VERSION = len(MIGRATIONS)


def _exists(cur: Any, table: str) -> bool:
    # pg_class read by a statement (not to_regclass, whose catalog cache may predate the advisory
    # lock we waited on, and miss the tables the process before us just created)
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relname = %s AND n.nspname = current_schema())", [table])
    return bool(cur.fetchone()[0])


def _applied(cur: Any) -> set[str] | None:
    if not _exists(cur, MIGRATIONS_TABLE):
        return None
    cur.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")
    return {r[0] for r in cur.fetchall()}


def _check_not_newer(applied: set[str], url: str) -> None:
    unknown = sorted(applied - {name for name, _ in MIGRATIONS})
    if unknown:
        raise NewerDatabaseError(
            f"{shown(url)} has audit schema migration(s) {', '.join(unknown)} that this aegis does not know "
            f"(it understands schema version {SCHEMA_VERSION}); upgrade aegis to use it")


def migrate(conn: Any, url: str) -> None:
    """Create or upgrade the schema; several processes may call this at once."""
    with conn.cursor() as cur:
        applied = _applied(cur)
        conn.commit()
        if applied is not None:
            _check_not_newer(applied, url)
            if len(applied) == SCHEMA_VERSION:
                return
        with conn.transaction():
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])  # one migrates, the others wait
            applied = _applied(cur)
            if applied is None:
                if _exists(cur, "audit"):
                    raise NotAnAuditDatabase(f"{shown(url)} has an 'audit' table that is not aegis's")
                cur.execute(f"CREATE TABLE {MIGRATIONS_TABLE} (name text PRIMARY KEY, applied_at text NOT NULL)")
                applied = set()
            _check_not_newer(applied, url)
            for name, fn in MIGRATIONS:
                if name not in applied:
                    fn(cur)
                    cur.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (%s, %s)", [name, utc_now()])


def check_schema(conn: Any, url: str) -> None:
    """For readers: the trail must exist and not be newer than this aegis."""
    with conn.cursor() as cur:
        applied = _applied(cur)
    if applied is None or "m001_audit" not in applied:
        raise NotAnAuditDatabase(f"{shown(url)} is not an aegis audit database (it has no audit trail)")
    _check_not_newer(applied, url)


# -- appending --------------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    """A column value: text PostgreSQL accepts (no NUL, no lone surrogates), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(int(value)) if isinstance(value, bool) else str(value)
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates; a NUL passes through
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def columns(rid: int, hash_: str, body: str) -> tuple[Any, ...]:
    """The row for one record: the body with the filter columns derived from it."""
    rec = json.loads(body)
    return (rid, hash_, body, _text(rec.get("kind")), _text(rec.get("ts")), *_derived(rec))


def _derived(rec: dict[str, Any]) -> tuple[Any, ...]:
    """decision_id, type, target, agent, approval, risk_level, rule, status of a parsed body."""
    action = rec.get("action") if isinstance(rec.get("action"), dict) else {}
    decision = rec.get("decision") if isinstance(rec.get("decision"), dict) else {}
    data = rec.get("data")
    did = rec.get("decision_id")
    return (did if isinstance(did, int) and not isinstance(did, bool) else None,
            _text(action.get("type")), _text(action.get("target")), _text(action.get("agent")),
            _text(decision.get("approval")), _text(decision.get("risk_level")), _text(decision.get("rule")),
            _text(data.get("status")) if isinstance(data, dict) else None)


_PROBE_TS = "1970-01-01T00:00:00.000000Z"


def static_columns(entry: Pending) -> tuple[str | None, bool, tuple[Any, ...]]:
    """What of a record's row does not depend on its place in the chain: parsed before the lock.

    Returns (kind, whether decision_id is the record's own id, the derived columns).
    """
    rec = json.loads(entry.body(1, GENESIS, _PROBE_TS))
    return _text(rec.get("kind")), entry.did == "", _derived(rec)


def insert_rows(cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``columns`` rows: one statement for one row, one COPY for many."""
    if len(rows) == 1:
        cur.execute(f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
                    rows[0])
        return
    with cur.copy(f"COPY audit ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def lock_head(cur: Any) -> tuple[int, str]:
    """Lock the chain's head for this transaction and return it, checked against the last record."""
    cur.execute("SELECT last_id, last_hash FROM audit_head WHERE id = 1 FOR UPDATE")
    got = cur.fetchone()
    if got is None:
        raise AuditError("the audit chain's head row is missing; run 'aegis audit verify'")
    last_id, prev = got
    # A statement of its own, after the lock: in READ COMMITTED each statement sees what was
    # committed before it began, so this one sees the records of the writer we waited for (a
    # subquery in the locking statement would still see the snapshot from before the wait).
    actual = cur.execute("SELECT max(id) FROM audit").fetchone()[0]
    if (actual or 0) != last_id:
        # Fail closed: extending a chain whose head was tampered with would bless the damage.
        raise AuditError(f"the audit chain's head (#{last_id}) does not match its last record (#{actual or 0}); "
                         "run 'aegis audit verify'")
    return int(last_id), str(prev)


def set_head(cur: Any, last_id: int, last_hash: str) -> None:
    """Move the head and announce it (NOTIFY is delivered when the transaction commits)."""
    cur.execute("WITH moved AS (UPDATE audit_head SET last_id = %s, last_hash = %s WHERE id = 1 RETURNING last_id) "
                "SELECT pg_notify(%s, last_id::text) FROM moved", [last_id, last_hash, CHANNEL])


def append(cur: Any, entries: Sequence[Pending],
           static: Sequence[tuple[str | None, bool, tuple[Any, ...]]] | None = None) -> list[int]:
    """Chain and insert ``entries`` inside the caller's transaction (as store.append does for SQLite).

    ``static`` (``static_columns`` of each entry) lets the caller parse outside the transaction:
    everything done here is done while every other writer waits.
    """
    if not entries:
        return []
    if static is None:
        static = [static_columns(e) for e in entries]
    last_id, prev = lock_head(cur)
    first = last_id + 1
    rows = []
    for e, (kind, own, derived) in zip(entries, static, strict=True):
        last_id += 1
        ts = utc_now()  # inside the lock: timestamps follow the chain order
        body = e.body(last_id, prev, ts)
        prev = record_hash(body)
        rows.append((last_id, prev, body, kind, ts, last_id if own else derived[0], *derived[1:]))
    insert_rows(cur, rows)
    set_head(cur, last_id, prev)
    return list(range(first, last_id + 1))


class _Store:
    """A pool of connections to one database, with the schema checked (and migrated for writers)."""

    def __init__(self, url: str, *, write: bool, max_size: int = 4, timeout: float = CONNECT_TIMEOUT) -> None:
        psycopg = require()
        from psycopg_pool import ConnectionPool

        self.url = url
        self.psycopg = psycopg
        connect = {"connect_timeout": max(int(timeout), 1)}
        # One plain connection first: a refused or mistyped URL fails at once with the server's
        # own words (a pool would retry until its timeout), and the schema is ready before the pool.
        try:
            with psycopg.connect(url, **connect) as conn:
                migrate(conn, url) if write else check_schema(conn, url)
        except psycopg.Error as exc:
            raise _error(psycopg, url, exc, "cannot open audit database") from None
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False,
                                   timeout=min(timeout, CHECKOUT_TIMEOUT), name="aegis-audit", kwargs=connect)
        try:
            self.pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            self.pool.close()
            raise _error(psycopg, url, _cause(exc), "cannot open audit database") from None

    @contextmanager
    def transaction(self, doing: str = "could not write to the audit trail in") -> Iterator[Any]:
        """A cursor in one transaction; database errors become AuditError (callers fail closed)."""
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except (AuditError, ValueError):
            raise
        except self.psycopg.Error as exc:
            raise _error(self.psycopg, self.url, exc, doing) from exc
        except Exception as exc:  # PoolTimeout and friends: the database is unreachable
            if type(exc).__module__.startswith("psycopg"):
                raise _error(self.psycopg, self.url, exc, doing) from exc
            raise

    def close(self) -> None:
        self.pool.close()


def _cause(exc: BaseException) -> BaseException:
    # PoolTimeout hides why connecting failed; the server's refusal is the useful message.
    return exc.__cause__ or exc.__context__ or exc if type(exc).__name__ == "PoolTimeout" else exc


class PostgresAuditLogger:
    """Append decisions and events to a hash-chained trail in PostgreSQL (see the module doc).

    Same contract as ``SQLiteAuditLogger``: each ``record_*`` call is one transaction, committed
    before it returns; ``record_decisions`` batches; thread-safe (a small pool); failures raise
    ``AuditError`` and callers fail closed.
    """

    def __init__(self, url: str, *, redact: Iterable[str] = (), pool_size: int = 4,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self.path = url
        self.redactor = Redactor(redact)
        self._store = _Store(url, write=True, max_size=pool_size, timeout=timeout)

    def record_decision(self, action: Action, decision: Decision, source: Mapping[str, Any] | None = None,
                        extra: Mapping[str, Any] | None = None) -> int:
        return self._write([decision_entry(action, decision, source, extra, self.redactor)])[0]

    def record_decisions(self, items: Iterable[Sequence[Any]]) -> list[int]:
        entries = []
        for item in items:
            if len(item) < 2:
                raise ValueError(f"record_decisions takes (action, decision[, source[, extra]]) items, not {item!r}")
            entries.append(decision_entry(*item[:4], redactor=self.redactor))
        return self._write(entries)

    def record_event(self, kind: str, decision_id: int | None, data: Mapping[str, Any] | None) -> int:
        return self._write([event_entry(kind, decision_id, data)])[0]

    def _write(self, entries: list[Pending]) -> list[int]:
        if not entries:
            return []
        static = [static_columns(e) for e in entries]
        with self._store.transaction() as cur:
            return append(cur, entries, static)

    # -- the fleet's policy (aegis_cli.audit.fleet_policy) ------------------------------------

    def publish_policy(self, policy: Any, *, by: str, source: str, data: Mapping[str, Any]) -> tuple[int, Any]:
        """Audit a policy change and keep it for the fleet, in one transaction: (event id, StoredPolicy)."""
        from aegis_cli.audit import fleet_policy

        entry = event_entry("policy_change", None, data)
        static = [static_columns(entry)]
        with self._store.transaction() as cur:
            (event_id,) = append(cur, [entry], static)  # locks the head: versions follow the chain
            return event_id, fleet_policy.insert(cur, policy, by=by, source=source, audit_id=event_id)

    def fleet_policy(self) -> Any:
        """The newest StoredPolicy, or None."""
        from aegis_cli.audit import fleet_policy

        with self._store.transaction("could not read the fleet policy in") as cur:
            return fleet_policy.latest(cur)

    def startup_policy(self, policy: Any, *, source: str, file_time: Any) -> tuple[Any, str]:
        """Agree with the fleet on the policy a starting server enforces, in one transaction under the
        head lock (replicas and workers starting together each see the one before them decided).

        Returns (the newest StoredPolicy, what happened): ``seeded`` (the database had none: ``policy``
        is version 1, not audited, a first policy is not a change), ``same`` (same hash),
        ``database`` (the stored one changed after ``file_time``: enforce it) or ``published``
        (``policy`` is newer: kept as the next version, with its ``policy_change`` record).
        """
        from aegis_cli.audit import fleet_policy

        with self._store.transaction() as cur:
            lock_head(cur)
            current = fleet_policy.latest(cur)
            if current is None:
                return fleet_policy.insert(cur, policy, by="startup", source=source, audit_id=None), "seeded"
            if current.hash == policy.hash:
                return current, "same"
            if file_time is not None and current.changed_at_time() >= file_time:
                return current, "database"
            entry = event_entry("policy_change", None, {"by": "startup", "old_hash": current.hash,
                                                        "new_hash": policy.hash, "source": f"startup: {source}"})
            (event_id,) = append(cur, [entry])
            return fleet_policy.insert(cur, policy, by="startup", source=source, audit_id=event_id), "published"

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> PostgresAuditLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PostgresAuditLogger {shown(self.path)!r}>"


# -- reading ----------------------------------------------------------------------------------

class PostgresReader:
    """Reading a trail in PostgreSQL: the operations of ``aegis_cli.audit.query`` and ``verify``.

    Nothing is created or changed. One connection (autocommit); large reads stream through a
    server-side cursor.
    """

    def __init__(self, url: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
        self.psycopg = psycopg = require()
        self.path = url
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=max(int(timeout), 1))
        except psycopg.Error as exc:
            raise _error(psycopg, url, exc, "cannot open audit database") from None
        try:
            check_schema(self.conn, url)
        except BaseException:
            self.conn.close()
            raise
        self._glob_cache: dict[tuple[str, str], Callable[[str], bool]] = {}

    # Filters.sql() writes SQLite; PostgreSQL gets its own, with globs resolved against the
    # distinct agents/types (few) in Python, so they match exactly as the policy engine does.
    def _where(self, filters: Filters) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", filters.kind), ("approval", filters.approval),
                              ("decision_id", filters.decision_id)):
            if value is not None:
                parts.append(f"{column} = %s")
                params.append(value)
        for column, pattern in (("agent", filters.agent), ("type", filters.type)):
            if pattern is not None:
                parts.append(f"{column} = ANY(%s)")
                params.append(self._matching(column, pattern))
        if filters.since is not None:
            parts.append("ts >= %s")
            params.append(filters.since)
        if filters.until is not None:
            parts.append("ts < %s")
            params.append(filters.until)
        return "".join(f" AND {p}" for p in parts), params

    def _matching(self, column: str, pattern: str) -> list[str]:
        test = compile_glob(pattern).test
        values = [r[0] for r in self.conn.execute(
            f"SELECT DISTINCT {column} FROM audit WHERE {column} IS NOT NULL")]
        return [v for v in values if test(normalize(v))]

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            return self.conn.execute(sql, args)
        except self.psycopg.Error as exc:
            raise _error(self.psycopg, self.path, exc, "cannot read the audit trail in") from exc

    def head(self) -> tuple[int, str]:
        last_id, last_hash = self._run("SELECT last_id, last_hash FROM audit_head WHERE id = 1").fetchone()
        return int(last_id), str(last_hash)

    def version(self) -> int:
        """Changes whenever a record is committed (serve's stream polls it)."""
        return self.head()[0]

    def rows(self, filters: Filters = Filters(), *, after_id: int = 0, before_id: int | None = None,
             limit: int | None = None) -> Iterator[Row]:
        where, params = self._where(filters)
        sql = f"SELECT id, hash, body FROM audit WHERE id > %s{where}"
        args: list[Any] = [after_id, *params]
        if before_id is not None:
            sql += " AND id < %s"
            args.append(before_id)
        sql += " ORDER BY id"
        if limit is not None:
            return iter(self._run(sql + " LIMIT %s", [*args, limit]).fetchall())
        return self._stream(sql, args)

    def _stream(self, sql: str, args: Sequence[Any]) -> Iterator[Row]:
        # A server-side cursor: constant memory however long the trail, one statement's snapshot.
        try:
            with self.conn.transaction(), self.conn.cursor(name="aegis_rows") as cur:
                cur.itersize = 2000
                cur.execute(sql, args)
                yield from cur
        except self.psycopg.Error as exc:
            raise _error(self.psycopg, self.path, exc, "cannot read the audit trail in") from exc

    def count(self, filters: Filters = Filters()) -> int:
        where, params = self._where(filters)
        return int(self._run(f"SELECT count(*) FROM audit WHERE true{where}", params).fetchone()[0])

    def newest(self, n: int, filters: Filters = Filters()) -> list[Row]:
        where, params = self._where(filters)
        out = self._run(f"SELECT id, hash, body FROM audit WHERE true{where} ORDER BY id DESC LIMIT %s",
                        [*params, max(n, 0)]).fetchall()
        out.reverse()
        return out

    def follow(self, filters: Filters = Filters(), *, after_id: int = 0, interval: float = 1.0,
               stop: Callable[[], bool] = lambda: False) -> Iterator[Row]:
        """Rows committed after ``after_id`` by any writer anywhere, as NOTIFY announces them."""
        psycopg = self.psycopg
        try:
            listener = psycopg.connect(self.path, autocommit=True)
        except psycopg.Error as exc:
            raise _error(psycopg, self.path, exc, "cannot follow the audit trail in") from exc
        try:
            listener.execute(f"LISTEN {CHANNEL}")  # before reading: no commit can slip between
            while not stop():
                for row in self.rows(filters, after_id=after_id):
                    after_id = row[0]
                    yield row
                # Wake on the next commit anywhere (or every `interval`, to look at stop()).
                for _ in listener.notifies(timeout=interval, stop_after=1):
                    pass
        except psycopg.Error as exc:
            raise _error(psycopg, self.path, exc, "lost the audit trail in") from exc
        finally:
            listener.close()

    def stats(self, filters: Filters = Filters(), *, top: int = 10) -> dict[str, Any]:
        """As ``query.stats``: the same shape and the same order (NULL first, byte order)."""
        where, params = self._where(filters)

        def grouped(column: str, kind: str, limit: int | None = None, none: str = "(none)") -> dict[str, int]:
            sql = (f"SELECT {column} AS k, count(*) AS n FROM audit WHERE kind = %s{where} "
                   f'GROUP BY {column} ORDER BY n DESC, {column} COLLATE "C" NULLS FIRST')
            if limit:
                sql += f" LIMIT {int(limit)}"
            return {(none if k is None or k == "" else str(k)): n for k, n in self._run(sql, [kind, *params])}

        totals = self._run(f"SELECT min(ts), max(ts), count(*) FROM audit WHERE true{where}", params).fetchone()
        by_kind = {k: n for k, n in self._run(
            f'SELECT kind, count(*) FROM audit WHERE true{where} GROUP BY kind ORDER BY kind COLLATE "C"', params)}
        return stats_report(totals, by_kind, grouped, "status", top)

    def verify(self) -> VerifyResult:
        """``verify_chain`` over one snapshot: rows and head as of one moment, writers carry on."""
        try:
            with self.conn.transaction(), self.conn.cursor() as tx:
                tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                head = tx.execute("SELECT last_id, last_hash FROM audit_head WHERE id = 1").fetchone()
                with self.conn.cursor(name="aegis_verify") as cur:
                    cur.itersize = 5000
                    cur.execute("SELECT id, hash, body FROM audit ORDER BY id")
                    return verify_chain(cur, lambda: head)
        except self.psycopg.Error as exc:
            raise _error(self.psycopg, self.path, exc, "cannot read the audit trail in") from exc

    def approvals(self) -> list[dict[str, Any]]:
        """Every approval request, as stored, in id order."""
        from psycopg.rows import dict_row

        with self.conn.cursor(row_factory=dict_row) as cur:
            try:
                return list(cur.execute("SELECT * FROM approvals ORDER BY id"))
            except self.psycopg.Error as exc:
                raise _error(self.psycopg, self.path, exc, "cannot read the approval queue in") from exc

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PostgresReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def import_trail(url: str, rows: Iterable[Row], head: tuple[int, str], approvals: list[dict[str, Any]]) -> None:
    """Fill an empty trail with another store's records and requests, verbatim, in one transaction."""
    store = _Store(url, write=True, max_size=1)
    try:
        with store.transaction("could not copy into") as cur:
            last_id, _ = lock_head(cur)
            cur.execute("SELECT count(*) FROM approvals")
            if last_id or cur.fetchone()[0]:
                raise ValueError(f"{shown(url)} already holds an audit trail or approval requests; "
                                 "copy into an empty database")
            chunk: list[tuple[Any, ...]] = []
            for rid, hash_, body in rows:
                chunk.append(columns(rid, hash_, body))
                if len(chunk) == 5000:
                    insert_rows(cur, chunk)
                    chunk = []
            if chunk:
                insert_rows(cur, chunk)
            set_head(cur, *head)
            if approvals:
                names = list(approvals[0])
                with cur.copy(f"COPY approvals ({', '.join(names)}) FROM STDIN") as copy:
                    for req in approvals:
                        copy.write_row([_text(req[n]) if isinstance(req[n], str) else req[n] for n in names])
                # new requests continue after the copied ids
                cur.execute("SELECT setval(pg_get_serial_sequence('approvals', 'id'), %s)",
                            [max(int(r["id"]) for r in approvals)])
    finally:
        store.close()


# -- the approval queue -----------------------------------------------------------------------

class PostgresQueueStore:
    """Where ``ApprovalQueue("postgresql://...")`` keeps its requests: every host sees the same ones.

    The queue's logic (deadlines, which answers count, the audit event) is ``ApprovalQueue``'s;
    this is its storage. An answer and its audit event commit in one transaction, the request's
    row locked first and then the chain's head: always in that order, so answers and appends
    cannot deadlock.
    """

    def __init__(self, url: str, *, timeout: float = CONNECT_TIMEOUT, pool_size: int = 4) -> None:
        self._store = _Store(url, write=True, max_size=pool_size, timeout=timeout)

    def _cur(self) -> Any:
        return self._store.transaction("could not use the approval queue in")

    def insert(self, row: dict[str, Any]) -> int:
        names = list(row)
        with self._cur() as cur:
            cur.execute(f"INSERT INTO approvals ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
                        "RETURNING id", [_text(row[n]) if isinstance(row[n], str) else row[n] for n in names])
            return int(cur.fetchone()[0])

    def select(self, where: str, args: list[Any]) -> list[dict[str, Any]]:
        """``SELECT * FROM approvals <where>`` with ``?`` placeholders, as dicts."""
        from psycopg.rows import dict_row

        with self._cur() as cur:
            cur.row_factory = dict_row
            cur.execute(f"SELECT * FROM approvals {where.replace('?', '%s')}", args)
            return list(cur.fetchall())

    def close_request(self, id: int, decide: Callable[[dict[str, Any] | None], Any]) -> Any:
        """Lock request ``id``, ask ``decide(row)`` how to close it (a ``Closing``), store that and its event."""
        from psycopg.rows import dict_row, tuple_row

        with self._cur() as cur:
            cur.row_factory = dict_row
            row = cur.execute("SELECT * FROM approvals WHERE id = %s FOR UPDATE", [id]).fetchone()
            c = decide(row)
            cur.row_factory = tuple_row
            cur.execute("UPDATE approvals SET status = %s, answered_by = %s, answered_at = %s, note = %s "
                        "WHERE id = %s", [c.status, _text(c.by), c.at, _text(c.note), id])
            append(cur, [c.event])
        return c

    def close(self) -> None:
        self._store.close()
