"""Audit trail benchmarks: append throughput, export and verify of a large trail.

    python bench/bench_audit.py                 # 1,000,000 records (takes about a minute)
    python bench/bench_audit.py --records 200000 --keep /tmp/audit-bench.db

Targets (issue 3): append >= 50,000 records/s with the chain, batched; export of 1,000,000 records
as JSONL <= 5 s and < 150 MB peak memory; verify of 1,000,000 records <= 5 s. Export and verify
run as the real CLI in a fresh process, so their times include start-up and their peak memory is
that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from aegis_cli.audit import open_audit
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel

DECISIONS = [
    Decision(Approval.AUTO, RiskLevel.LOW, "reads-ok", "reads are fine", "sha256:" + "a" * 64),
    Decision(Approval.APPROVE, RiskLevel.HIGH, "writes-need-ok", "writes need a human", "sha256:" + "a" * 64),
    Decision(Approval.BLOCK, RiskLevel.CRITICAL, None, "no rule matched; the policy defaults apply",
             "sha256:" + "a" * 64),
]


def items(start: int, n: int) -> list[tuple[Action, Decision, dict[str, object]]]:
    """Realistic records: a tool call with a few parameters, a decision, where it came from."""
    return [(Action(("read_file", "write_file", "bash")[i % 3], f"/srv/app/file-{i}.py",
                    {"path": f"/srv/app/file-{i}.py", "mode": "r", "limit": 4096, "token": "secret"},
                    agent=f"agent-{i % 7}", session=f"run-{i // 1000}"),
             DECISIONS[i % 3], {"via": "bench", "line": i}) for i in range(start, start + n)]


def bench_append(path: str, total: int, batch: int, synchronous: str, prepare: bool = True) -> tuple[float, float]:
    """(records/s by wall clock, records/s by this process's CPU time) for ``total`` records in
    batches of ``batch`` (one transaction each). CPU time shows the cost when the machine is shared."""
    prepared = [items(i, batch) for i in range(0, total, batch)] if prepare else None
    with open_audit(path, redact=["token"], synchronous=synchronous) as log:
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, total, batch):
            log.record_decisions(prepared[i // batch] if prepared else items(i, batch))
        return total / (time.perf_counter() - t), total / (time.process_time() - c)


def _peak_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its
    # parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(argv: list[str]) -> None:
    """Run one CLI command in this (fresh) process; report wall time and peak RSS."""
    from aegis_cli.cli import app

    t, c = time.perf_counter(), time.process_time()
    try:
        app(argv, standalone_mode=False)
    finally:
        sys.stderr.write(f"BENCH {time.perf_counter() - t:.3f} {time.process_time() - c:.3f} {_peak_mb():.1f}\n")


def timed_cli(argv: list[str]) -> tuple[float, float, float, float]:
    """(seconds in the command, its CPU seconds, whole-process seconds incl. interpreter start, peak MB)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t
    line = [x for x in p.stderr.splitlines() if x.startswith("BENCH ")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr}")
    secs, cpu, mb = map(float, line[-1].split()[1:])
    return secs, cpu, wall, mb


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--keep", help="build the big trail here and keep it")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="aegis-bench-")
    print(f"python {sys.version.split()[0]}, sqlite {__import__('sqlite3').sqlite_version}, "
          f"{os.cpu_count()} cpus, {tmp}")

    for sync in ("full", "normal"):
        runs = [bench_append(os.path.join(tmp, f"append-{sync}-{i}.db"), 100_000, args.batch, sync)
                for i in range(5)]
        print(f"append 100,000, batches of {args.batch}, synchronous={sync}: median "
              f"{statistics.median(r[0] for r in runs):,.0f} records/s wall, "
              f"{statistics.median(r[1] for r in runs):,.0f} records/s of CPU "
              f"(wall runs: {', '.join(f'{r[0]:,.0f}' for r in runs)})")
    with open_audit(os.path.join(tmp, "single.db")) as log:
        one = items(0, 500)
        t = time.perf_counter()
        for a, d, s in one:
            log.record_decision(a, d, s)
        print(f"append, one record per transaction, synchronous=full: {500 / (time.perf_counter() - t):,.0f} "
              "records/s (each durable before it returns)")

    big = args.keep or os.path.join(tmp, "big.db")
    t = time.perf_counter()
    rate, cpu_rate = bench_append(big, args.records, 10_000, "full", prepare=False)
    print(f"built {args.records:,} records in {time.perf_counter() - t:.1f} s ({rate:,.0f} records/s wall, "
          f"{cpu_rate:,.0f}/s of CPU, incl. making them; batches of 10,000); "
          f"{os.path.getsize(big) / 1e6:,.0f} MB")

    out = os.path.join(tmp, "export.jsonl")
    for label, argv in ((f"export {args.records:,} records as JSONL (-o, atomic)",
                         ["export", "--jsonl", "-o", out, "--audit-db", big]),
                        (f"verify {args.records:,} records in the database", ["audit", "verify", "--audit-db", big]),
                        ("verify the JSONL export (parses and re-canonicalises every record)",
                         ["audit", "verify", "--export", out])):
        runs = [timed_cli(argv) for _ in range(3 if "database" in label or "JSONL (" in label else 1)]
        secs, cpu, wall, mb = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"{label}: median {secs:.2f} s ({cpu:.2f} s CPU; {wall:.2f} s with interpreter start), "
              f"peak RSS {mb:.0f} MB")
    print(f"export file: {os.path.getsize(out) / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
