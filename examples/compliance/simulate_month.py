"""A month at Riverside Clinic: the scheduling and records agent's tool calls, run through aegis.

    python simulate_month.py --audit-db clinic_audit.db            # a fresh trail, 30 days from 2026-03-02
    aegis report --audit-db clinic_audit.db -o report.html

Every call goes through ``Runtime.call`` (decide, audit, ask, run, audit) with the policy in
``policy.yaml``; approvals are answered by a handler standing in for the clinic's staff, who
approve most requests, refuse some and leave a few unanswered until they time out. Halfway
through, the compliance officer tightens the claims limit (a policy change, audited).

The month is simulated: the trail's clock is set to the simulated time of each call (so the
report shows a month, not the seconds the script took), and approval waits advance it. Nothing
else is pretend: the decisions, approvals, timeouts and executions are aegis's own.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
from pathlib import Path

from aegis_cli import Action, Policy, Runtime
from aegis_cli.approvals.base import ApprovalAnswer
from aegis_cli.audit import open_audit, store
from aegis_cli.audit.canonical import format_ts

HERE = Path(__file__).parent
STAFF = ("dr.okafor", "dr.lindqvist", "nurse.patel", "records.office")


class Clock:
    """The simulated time; the audit store stamps records with it."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Staff:
    """Answers approval requests as the clinic's staff would: mostly yes, sometimes no, sometimes not in time."""

    timeout = 0.05  # real seconds ask() waits; a request left unanswered becomes "timed_out"

    def __init__(self, rng: random.Random, clock: Clock) -> None:
        self.rng, self.clock = rng, clock

    async def request(self, action: Action, decision, *, decision_id):
        roll = self.rng.random()
        if roll < 0.07:  # nobody answers: the request expires after 30 simulated minutes
            self.clock.advance(1800)
            await asyncio.sleep(1)  # longer than timeout: ask() gives up and denies
        self.clock.advance(self.rng.lognormvariate(5.5, 1.0))  # minutes, mostly; now and then hours
        who = self.rng.choice(STAFF)
        if roll < 0.15:
            return ApprovalAnswer(False, "denied", who, "not needed for care", at=self.clock.now)
        return ApprovalAnswer(True, "approved", who, "", at=self.clock.now)


def tool(name: str):
    def run(**params):
        return {"tool": name, "ok": True}

    return run


def day_of_calls(rng: random.Random, day: dt.date) -> list[tuple[Action, float]]:
    """One clinic day's calls as (action, seconds after 07:00)."""
    weekend = day.weekday() >= 5
    calls: list[tuple[Action, float]] = []

    def add(type_: str, target: str, agent: str, **params: object) -> None:
        calls.append((Action(type_, target, dict(params), agent=agent, session=f"{day}-{agent}"),
                      rng.uniform(0, 11 * 3600)))

    for _ in range(rng.randint(4, 8) if weekend else rng.randint(25, 40)):
        patient = f"P{rng.randint(1000, 1400)}"
        kind = rng.choices(("book", "reschedule", "cancel"), (6, 2, 1))[0]
        add(f"{kind}_appointment", "calendar", "scheduling-agent", patient=patient,
            slot=f"{day}T{rng.randint(8, 17):02d}:00")
        if kind == "book":
            add("send_reminder", "sms", "scheduling-agent", patient=patient)
    for _ in range(0 if weekend else rng.randint(15, 25)):
        visit = {"appointment_id": f"A{rng.randint(1, 99999)}"} if rng.random() < 0.85 else {}
        add("read_chart", "ehr", "records-agent", patient=f"P{rng.randint(1000, 1400)}", **visit)
    for _ in range(0 if weekend else rng.randint(0, 3)):
        add("export_record", "ehr", "records-agent", patient=f"P{rng.randint(1000, 1400)}",
            to=rng.choice(("referral:cardiology", "patient-portal", "insurer:acme")))
    for _ in range(0 if weekend else rng.randint(5, 10)):
        add("submit_claim", "billing", "billing-agent", patient=f"P{rng.randint(1000, 1400)}",
            amount=round(rng.lognormvariate(6.5, 0.9), 2))
    if rng.random() < 0.15:
        add("read_charts_bulk", "ehr", "records-agent", query="all patients seen this year")
    if rng.random() < 0.06:
        add("share_record", "external:marketing-partner", "records-agent", patient=f"P{rng.randint(1000, 1400)}")
    if rng.random() < 0.03:
        add("delete_record", "ehr", "records-agent", patient=f"P{rng.randint(1000, 1400)}")
    calls.sort(key=lambda c: c[1])
    return calls


async def simulate(audit_db: str, days: int, start: dt.date, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    clock = Clock(dt.datetime.combine(start, dt.time(7, 0), dt.UTC))
    store.utc_now = lambda: format_ts(clock.now)  # the trail's clock is the simulated one
    policy = Policy.from_yaml(HERE / "policy.yaml")
    counts: dict[str, int] = {}
    with open_audit(audit_db, redact=policy.redact) as audit:
        runtime = Runtime(policy=policy, approval_handler=Staff(rng, clock), audit=audit,
                          source={"via": "clinic-agent"})
        for n in range(days):
            day = start + dt.timedelta(days=n)
            if n == days // 2:  # the compliance officer lowers the routine claims limit to 1,000
                clock.now = dt.datetime.combine(day, dt.time(6, 30), dt.UTC)
                tighter = (HERE / "policy.yaml").read_text().replace("amount: 2000", "amount: 1000")
                runtime.update_policy(Policy.from_string(tighter, "policy.yaml (claims limit 1000)"),
                                      by="compliance.officer", source="policy.yaml: claims limit 2000 -> 1000")
            for action, offset in day_of_calls(rng, day):
                at = dt.datetime.combine(day, dt.time(7, 0), dt.UTC) + dt.timedelta(seconds=offset)
                clock.now = max(clock.now, at)
                result = await runtime.call(action, tool(action.type), **action.params)
                counts[result.status.value] = counts.get(result.status.value, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit-db", default="clinic_audit.db", help="a new SQLite trail (must not exist)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", default="2026-03-02", help="first simulated day (YYYY-MM-DD)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    if Path(args.audit_db).exists():
        sys.stderr.write(f"{args.audit_db} exists; the simulation writes a fresh trail\n")
        return 2
    counts = asyncio.run(simulate(args.audit_db, args.days, dt.date.fromisoformat(args.start), args.seed))
    print(f"{sum(counts.values()):,} calls over {args.days} days into {args.audit_db}: "
          + ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
