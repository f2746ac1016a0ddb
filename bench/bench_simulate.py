"""Throughput of `aegis simulate`: N recorded actions through read -> decide -> summary (and JSONL out).

    python bench/bench_simulate.py            # 1,000,000 actions, 3 runs
    python bench/bench_simulate.py -n 200000 --runs 5

Prints median wall and CPU time and calls per CPU-second for: the library (read + replay +
summary), and the real CLI as a subprocess writing the text summary and JSONL decisions to
/dev/null, with its peak RSS (memory must stay flat: the trace is streamed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICY = """\
version: "1"
defaults: {risk_level: medium, approval: approve}
tools:
  send_email: {type: send, target: email}
rules:
  - name: no-prod-deletes
    match: {type: delete, target: "prod*"}
    risk_level: critical
    approval: block
  - name: big-payments
    match: {type: pay}
    conditions: {param_gt: {amount: 1000}}
    risk_level: high
    approval: approve
  - name: office-hours-deploys
    match: {type: deploy}
    conditions: {time_after: "09:00", time_before: "17:00"}
    risk_level: medium
    approval: auto
  - name: reads
    match: {type: "read*"}
    risk_level: low
    approval: auto
"""

TOOLS = [("read_file", "fs"), ("delete", "production"), ("delete", "staging"), ("pay", "stripe"),
         ("deploy", "web"), ("send_email", "send_email"), ("read_db", "postgres")]


def make_trace(path: Path, n: int) -> None:
    rng = random.Random(7)
    with path.open("w") as f:
        for i in range(n):
            type_, target = rng.choice(TOOLS)
            rec = {"type": type_, "target": target, "params": {"amount": rng.randint(1, 5000), "i": i},
                   "agent": f"agent-{i % 5}", "timestamp": f"2025-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"}
            f.write(json.dumps(rec) + "\n")


def bench_library(policy_path: Path, trace: Path) -> tuple[float, float]:
    """(wall, cpu) seconds for read + replay + summary in this process."""
    from aegis_cli.engine.policy import Policy
    from aegis_cli.traces import read_traces
    from aegis_cli.traces.simulate import simulate

    policy = Policy.from_yaml(policy_path)
    t0, c0 = time.perf_counter(), time.process_time()
    simulate(policy, read_traces([str(trace)]))
    return time.perf_counter() - t0, time.process_time() - c0


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench_cli(policy_path: Path, trace: Path, fmt: str) -> tuple[float, float, int]:
    """(wall, cpu, peak RSS MB) of the real CLI as a subprocess, output to /dev/null."""
    cmd = [sys.executable, "-m", "aegis_cli", "simulate", "-p", str(policy_path), str(trace),
           "--format", fmt, "--fail-on", "never"]
    t0, c0 = time.perf_counter(), _child_cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    elapsed, cpu = time.perf_counter() - t0, _child_cpu() - c0
    return elapsed, cpu, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy_path, trace = Path(tmp, "policy.yaml"), Path(tmp, "trace.jsonl")
        policy_path.write_text(POLICY)
        make_trace(trace, args.n)
        print(f"trace: {args.n:,} actions, {trace.stat().st_size / 1e6:.0f} MB (aegis actions JSONL)")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start "
              "(wall time suffers on a shared machine; CPU time much less)")
        lib = [bench_library(policy_path, trace) for _ in range(args.runs)]
        wall, cpu = statistics.median(w for w, _ in lib), statistics.median(c for _, c in lib)
        print(f"library read+replay+summary: median wall {wall:.2f} s, cpu {cpu:.2f} s "
              f"({args.n / cpu:,.0f} calls per cpu-second)")
        for fmt in ("text", "jsonl"):
            runs = [bench_cli(policy_path, trace, fmt) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"cli simulate --format {fmt:5s}: median wall {wall:.2f} s, cpu {cpu:.2f} s "
                  f"({args.n / cpu:,.0f} calls per cpu-second), peak RSS {max(r[2] for r in runs)} MB")


if __name__ == "__main__":
    main()
