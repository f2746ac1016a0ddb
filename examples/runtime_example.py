"""A governed agent in one file: decide, ask, run, audit (see docs/readme/runtime.md).

    python examples/runtime_example.py                 # approvals on this terminal
    python examples/runtime_example.py --queue         # approvals from any shell: aegis approvals approve ID
    python examples/runtime_example.py --audit-db /tmp/demo.db

Then look at what happened: ``aegis tail-audit --audit-db aegis_audit.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from aegis_cli import Action, Plan, Policy, Result, Runtime
from aegis_cli.approvals import CLIApprovalHandler, QueueApprovalHandler
from aegis_cli.audit import SQLiteAuditLogger
from aegis_cli.runtime.executors import RoutingExecutor

HERE = Path(__file__).parent


# Executors are where your real tools go. Each takes an Action and returns anything.
async def crm(action: Action) -> dict[str, object]:
    await asyncio.sleep(0.2)  # stands in for an HTTP call
    return {"record": action.params.get("id"), "name": "ACME Corp"}


async def payments(action: Action) -> str:
    await asyncio.sleep(0.3)
    return f"sent {action.params['amount']} {action.params['currency']}"


def email(action: Action) -> str:  # plain functions are fine too (they run in a worker thread)
    return f"mailed {action.params['to']}"


def show(plan: Plan, results: list[Result]) -> None:
    for step, r in zip(plan, results, strict=True):
        print(f"{step.index + 1}. {r.status:<9} {r.action.type} on {r.action.target}: {r.why}")
    print()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queue", action="store_true", help="queue approvals in the audit database")
    parser.add_argument("--audit-db", default=os.environ.get("AEGIS_AUDIT_DB", "aegis_audit.db"))
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for an approval")
    args = parser.parse_args()

    policy = Policy.from_yaml(HERE / "policy.yaml")
    if args.queue:
        approvals = QueueApprovalHandler(args.audit_db, timeout=args.timeout, requested_by="runtime_example",
                                         redact=policy.redact)
        print(f"approvals are queued: run `aegis approvals list --audit-db {args.audit_db}`", file=sys.stderr)
    else:
        approvals = CLIApprovalHandler(timeout=args.timeout)
    runtime = Runtime(
        executor=RoutingExecutor({"crm": crm, "payments": payments, "email": email}),
        policy=policy,
        approval_handler=approvals,
        audit=SQLiteAuditLogger(args.audit_db, redact=policy.redact),
    )

    # One action: auto-approved by the 'reads' rule, runs at once.
    result = await runtime.run_one(Action("read", "crm", {"id": 42}, agent="support-bot"))
    print(f"{result.status}: {result.value}  ({result.why})")

    # A plan: every decision up front, printable, nothing has run yet.
    plan = runtime.plan([
        Action("transfer", "payments", {"amount": 25, "currency": "USD"}, agent="billing-bot"),
        Action("send", "email", {"to": "ops@example.com", "subject": "refunds done"}, agent="billing-bot"),
        Action("transfer", "payments", {"amount": 2500, "currency": "USD"}, agent="billing-bot"),  # asks you
    ])
    print(plan, end="\n\n")

    # Run it, three at a time. The first block, denial or failure stops the rest.
    results = await runtime.execute(plan, concurrency=3)
    show(plan, results)

    # In order, fail-fast: the blocked delete stops the plan, so the last email is never sent.
    cleanup = runtime.plan([
        Action("send", "email", {"to": "ops@example.com", "subject": "cleaning up"}, agent="billing-bot"),
        Action("delete", "production", {"count": 5000}, agent="billing-bot"),
        Action("send", "email", {"to": "ops@example.com", "subject": "cleaned up"}, agent="billing-bot"),
    ])
    results += (more := await runtime.execute(cleanup))
    show(cleanup, more)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
