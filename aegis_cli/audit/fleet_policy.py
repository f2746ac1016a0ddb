"""The fleet's policy in PostgreSQL: one policy in force on every ``aegis serve`` replica.

Kept in ``fleet_policy`` (one row per version, never edited), written in the same transaction
as its ``policy_change`` audit record, while the chain's head is locked: versions follow the
chain's order, two replicas publishing at once queue on that lock, and a change that cannot be
audited is not kept either. The commit NOTIFYs ``aegis_policy`` with the new version; every
replica LISTENs and puts the newest version in force (``serve.fleet``).

The policy is stored as its canonical document (``Policy.to_dict()``), from which
``build_policy`` gives back a policy with the same hash.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any

from aegis_cli.audit.canonical import utc_now

CHANNEL = "aegis_policy"
TABLE = "fleet_policy"


@dataclass(frozen=True)
class StoredPolicy:
    version: int
    hash: str
    document: str
    changed_by: str
    source: str
    changed_at: str

    def policy(self) -> Any:
        """The stored policy, compiled (same hash: checked, or a PolicyError)."""
        from aegis_cli.engine.errors import Issue, PolicyError
        from aegis_cli.engine.policy import build_policy

        policy = build_policy(json.loads(self.document), f"<fleet policy version {self.version}>", {})
        if policy.hash != self.hash:
            raise PolicyError(Issue(f"<fleet policy version {self.version}>", None, None,
                                    f"stored as {self.hash} but compiles to {policy.hash}"))
        return policy

    def changed_at_time(self) -> _dt.datetime:
        return _dt.datetime.fromisoformat(self.changed_at.replace("Z", "+00:00"))


def create_table(cur: Any) -> None:
    """Migration m003 (PostgreSQL)."""
    cur.execute(f"""
        CREATE TABLE {TABLE} (
            version bigint PRIMARY KEY, hash text NOT NULL, document text NOT NULL,
            changed_by text NOT NULL, source text NOT NULL, changed_at text NOT NULL, audit_id bigint
        )""")
    cur.execute(f"CREATE TRIGGER {TABLE}_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE} "
                "FOR EACH ROW EXECUTE FUNCTION aegis_audit_append_only()")


def latest(cur: Any) -> StoredPolicy | None:
    row = cur.execute(f"SELECT version, hash, document, changed_by, source, changed_at FROM {TABLE} "
                      "ORDER BY version DESC LIMIT 1").fetchone()
    return StoredPolicy(*row) if row else None


def insert(cur: Any, policy: Any, *, by: str, source: str, audit_id: int | None) -> StoredPolicy:
    """Keep ``policy`` as the next version and announce it; the caller holds the head lock."""
    current = latest(cur)
    stored = StoredPolicy((current.version if current else 0) + 1, policy.hash,
                          json.dumps(policy.to_dict(), sort_keys=True), by, source, utc_now())
    cur.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [stored.version, stored.hash, stored.document, by, source, stored.changed_at, audit_id])
    cur.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(stored.version)])
    return stored
