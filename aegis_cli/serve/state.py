"""What one running server holds: the policy in force, the audit writer, the queue, the tokens.

The policy is swapped by assigning one attribute, so a request that has read ``state.policy``
decides with one policy from start to end, and every decision carries that policy's hash.
Every swap (PUT or file watcher) is audited *before* it takes effect: if the change cannot be
recorded, it does not happen.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import sys
from dataclasses import dataclass, field
from typing import Any

from aegis_cli.engine.policy import Policy
from aegis_cli.serve.auth import TokenStore
from aegis_cli.serve.metrics import Metrics
from aegis_cli.serve.writer import AuditWriter


@dataclass
class PolicyInForce:
    policy: Policy
    loaded_at: _dt.datetime
    changed_by: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.policy.hash,
            "loaded_at": self.loaded_at.isoformat(),
            "changed_by": self.changed_by,
            "source": self.source,
            "sources": list(self.policy.sources),
            "rules": len(self.policy.rules),
            "policy": self.policy.to_dict(),
        }


@dataclass
class ServerState:
    current: PolicyInForce
    writer: AuditWriter
    tokens: TokenStore
    audit_db: str
    approvals: Any = None  # ApprovalQueue
    approval_timeout: float = 3600.0
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    _swap_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    answered: dict[int, asyncio.Event] = field(default_factory=dict)
    audit_reader: Any = None  # audit_api.AuditReader, opened on first use
    # Long polls and event streams each hold a connection and poll SQLite from the thread pool;
    # bounded so that a client opening thousands cannot starve decisions of threads.
    waiting: int = 0
    streaming: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    fleet: Any = None  # serve.fleet.FleetPolicy: on PostgreSQL, one policy for every replica

    @property
    def policy(self) -> Policy:
        return self.current.policy

    async def replace_policy(self, new: Policy, *, by: str, source: str) -> tuple[PolicyInForce, int | None]:
        """Audit the change, then put ``new`` in force. Returns the old state and the event's id."""
        from aegis_cli.audit import Redactor

        redactor = Redactor(new.redact)  # a bad pattern fails here (GlobError), before anything changed
        async with self._swap_lock:
            old = self.current
            data = {"by": by, "old_hash": old.policy.hash, "new_hash": new.hash, "source": source}

            fleet = self.fleet

            def record_and_redact(log: Any) -> int:
                # One step on the writer thread: no decision is written between the event and the
                # switch to the new policy's redaction.
                if fleet is not None:  # kept for every replica in the same transaction as its event
                    event_id, stored = log.publish_policy(new, by=by, source=source, data=data)
                    fleet.version = max(fleet.version, stored.version)
                    fleet.origin = "file" if by == "watcher" else "api"
                else:
                    event_id = log.record_event("policy_change", None, data)
                log.redactor = redactor
                return event_id

            event_id = await self.writer.call(record_and_redact)
            if self.approvals is not None:
                self.approvals.redactor = redactor
            self.current = PolicyInForce(new, _dt.datetime.now(_dt.UTC), by, source)
            return old, event_id

    async def apply_fleet_policy(self, stored: Any) -> None:
        """Put a newer version of the fleet's policy in force (published and audited by another replica)."""
        from aegis_cli.audit import Redactor

        async with self._swap_lock:
            if stored.version <= self.fleet.version:
                return  # this replica published it, or has a newer one already
            try:
                new = stored.policy()
                redactor = Redactor(new.redact)
            except Exception as exc:  # keep the one in force rather than run without a policy
                sys.stderr.write(f"aegis: fleet policy version {stored.version} cannot be used; keeping "
                                 f"{self.policy.hash[:19]}: {exc}\n")
                self.fleet.version = stored.version
                return

            def redact(log: Any) -> None:
                log.redactor = redactor

            await self.writer.call(redact)
            if self.approvals is not None:
                self.approvals.redactor = redactor
            old = self.current
            self.current = PolicyInForce(new, _dt.datetime.now(_dt.UTC), stored.changed_by,
                                         f"fleet policy version {stored.version} ({stored.source})")
            self.fleet.version = stored.version
            self.fleet.origin = "database"
        sys.stderr.write(f"aegis: fleet policy version {stored.version} in force (by {stored.changed_by}): "
                         f"{old.policy.hash[:19]} -> {new.hash[:19]}\n")

    def replace_policy_threadsafe(self, new: Policy, loop: asyncio.AbstractEventLoop, *, by: str,
                                  source: str) -> None:
        """From the file watcher's thread: same as ``replace_policy``; failures go to stderr."""
        future = asyncio.run_coroutine_threadsafe(self.replace_policy(new, by=by, source=source), loop)
        try:
            old, _ = future.result(timeout=30)
        except ValueError as exc:  # a bad audit.redact pattern
            sys.stderr.write(f"aegis: policy change refused; keeping {self.policy.hash[:19]}: {exc}\n")
            return
        except Exception as exc:
            sys.stderr.write(f"aegis: policy change from {source} not applied: cannot audit it ({exc})\n")
            return
        sys.stderr.write(f"aegis: policy reloaded from {source}: {old.policy.hash[:19]} -> {new.hash[:19]}\n")

    def notify_answered(self, approval_id: int) -> None:
        event = self.answered.pop(approval_id, None)
        if event is not None:
            event.set()

