"""One policy for every replica of ``aegis serve`` on one PostgreSQL database.

- At start-up a replica compares its policy file with the database's newest policy
  (``audit.fleet_policy``): an empty database takes the file's (not audited: a first policy is not a
  change); the same hash changes nothing; otherwise the newer one wins: the database's when it was
  changed after the file was last modified, else the file's, which is then published to the fleet
  (audited once). The log and ``/healthz`` say which is in force.
- ``PUT /api/v1/policy`` (and the file watcher) publish through ``ServerState.replace_policy``:
  kept and audited in one transaction, announced with NOTIFY.
- A listener thread per replica LISTENs on ``aegis_policy`` and puts every newer version in force,
  without auditing it again. After a lost connection it reconnects and catches up on the newest
  version, so a replica that was cut off converges as soon as it can reach the database.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

NOTIFY_WAIT = 0.5  # seconds between looks at the stop flag while listening
RECONNECT_WAIT = 1.0


@dataclass
class FleetPolicy:
    """What a replica knows of the fleet's policy."""

    url: str
    version: int = 0  # the newest version in force here
    origin: str = "file"  # where the policy in force at start-up came from: file or database
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "origin": self.origin}

    def listen(self, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=self._listen, args=(state, loop), name="aegis-fleet-policy",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _listen(self, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        import psycopg

        from aegis_cli.audit import fleet_policy

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {fleet_policy.CHANNEL}")  # before reading: nothing slips between
                    self._catch_up(conn, state, loop)
                    while not self._stop.is_set():
                        # read after the generator ends: it holds the connection while it runs
                        if list(conn.notifies(timeout=NOTIFY_WAIT, stop_after=1)):
                            self._catch_up(conn, state, loop)
            except Exception as exc:  # the database is away: keep the policy in force, try again
                if not self._stop.is_set():
                    sys.stderr.write(f"aegis: fleet policy: lost the database ({str(exc).strip()[:200]}); "
                                     "reconnecting\n")
                self._stop.wait(RECONNECT_WAIT)

    def _catch_up(self, conn: Any, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        from aegis_cli.audit import fleet_policy

        stored = fleet_policy.latest(conn.cursor())
        if stored is None or stored.version <= self.version:
            return
        future = asyncio.run_coroutine_threadsafe(state.apply_fleet_policy(stored), loop)
        future.result(timeout=30)


def file_time(paths: list[str]) -> _dt.datetime | None:
    """When the policy files were last modified (the newest of them)."""
    try:
        return max(_dt.datetime.fromtimestamp(os.stat(p).st_mtime, _dt.UTC) for p in paths)
    except (OSError, ValueError):
        return None


def at_startup(writer: Any, policy: Any, paths: list[str], url: str) -> tuple[Any, FleetPolicy, str]:
    """Which policy a starting replica puts in force: (policy, FleetPolicy, the line for the log)."""
    from aegis_cli.audit.trail import shown

    fleet = FleetPolicy(url)
    source = ", ".join(paths)
    changed = file_time(paths)
    stored, what = writer.call_sync(lambda log: log.startup_policy(policy, source=source, file_time=changed))
    fleet.version = stored.version
    if what == "seeded":
        return policy, fleet, f"policy from {source}, now the fleet's (version {stored.version} in {shown(url)})"
    if what == "same":
        return policy, fleet, f"policy from {source}, the same as the fleet's (version {stored.version})"
    if what == "database":
        fleet.origin = "database"
        return (stored.policy(), fleet,
                f"policy from the database (version {stored.version}, by {stored.changed_by} via {stored.source} "
                f"at {stored.changed_at}), newer than {source}")
    return policy, fleet, f"policy from {source}, newer than the fleet's: published as version {stored.version}"
