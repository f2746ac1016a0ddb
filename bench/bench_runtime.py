"""What governing an action costs: runtime overhead per action, with and without the SQLite audit trail.

    python bench/bench_runtime.py

Prints medians (microseconds per action) for: calling the executor directly; ``run_one`` without
audit; ``run_one`` with the SQLite audit trail (two commits: the decision, then the execution
event; synchronous as $AEGIS_AUDIT_SYNC says, ``normal`` by default: run with AEGIS_AUDIT_SYNC=full
to fsync each commit); and ``execute`` of 100-action plans (decisions batched in one transaction),
sequential and with concurrency=16.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aegis_cli import Action, Policy, Runtime
from aegis_cli.audit import SQLiteAuditLogger

ROOT = Path(__file__).resolve().parent.parent
POLICY = Policy.from_yaml(ROOT / "examples" / "policy.yaml")
ACTION = Action("read", "crm", {"id": 42}, agent="support-bot")


async def tool(action: Action) -> int:
    return 1


def per_action_us(fn, n: int, repeats: int = 7) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    bare = Runtime(tool, POLICY, audit=None)
    audited = Runtime(tool, POLICY, audit=SQLiteAuditLogger(tmp / "a.db"))
    plan = audited.plan([ACTION] * 100)

    def direct(n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await tool(ACTION)
        asyncio.run(go())

    def loop(rt: Runtime):  # type: ignore[no-untyped-def]
        def run(n: int) -> None:
            async def go() -> None:
                for _ in range(n):
                    await rt.run_one(ACTION)
            asyncio.run(go())
        return run

    def plans(concurrency: int):  # type: ignore[no-untyped-def]
        def run(n: int) -> None:
            async def go() -> None:
                for _ in range(n // 100):
                    await audited.execute(plan, concurrency=concurrency)
            asyncio.run(go())
        return run

    rows = [
        ("executor called directly", per_action_us(direct, 2000)),
        ("run_one, audit=None", per_action_us(loop(bare), 2000)),
        ("run_one, SQLite audit (2 commits)", per_action_us(loop(audited), 200)),
        ("execute 100-action plan, SQLite audit", per_action_us(plans(1), 500)),
        ("execute 100-action plan, concurrency=16", per_action_us(plans(16), 500)),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'median per action':<{width}}  microseconds")
    for name, us in rows:
        print(f"{name:<{width}}  {us:10.1f}")


if __name__ == "__main__":
    main()
