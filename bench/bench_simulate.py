"""Throughput of `aegis simulate`: N recorded actions through read -> decide -> summary (and JSONL out).

    python bench/bench_simulate.py            # 1,000,000 actions, 3 runs
    python bench/bench_simulate.py -n 200000 --runs 5

Prints the median wall time and calls/s for: the library (read + replay + summary), and the
real CLI as a subprocess writing the text summary and JSONL decisions to /dev/null, with its
peak RSS (memory must stay flat: the trace is streamed).
"""

from __future__ import annotations

import argparse
import json
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


def bench_library(policy_path: Path, trace: Path) -> tuple[float, int]:
    from aegis_cli.policy import Policy
    from aegis_cli.simulate import simulate
    from aegis_cli.traces import read_traces

    policy = Policy.from_yaml(policy_path)
    t0 = time.perf_counter()
    summary = simulate(policy, read_traces([str(trace)]))
    return time.perf_counter() - t0, summary.calls


def bench_cli(policy_path: Path, trace: Path, fmt: str) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "aegis_cli", "simulate", "-p", str(policy_path), str(trace),
           "--format", fmt, "--fail-on", "never"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024


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
        lib = [bench_library(policy_path, trace)[0] for _ in range(args.runs)]
        med = statistics.median(lib)
        print(f"library read+replay+summary: median {med:.2f} s  ({args.n / med:,.0f} calls/s)")
        for fmt in ("text", "jsonl"):
            times, rss = [], 0
            for _ in range(args.runs):
                t, rss = bench_cli(policy_path, trace, fmt)
                times.append(t)
            med = statistics.median(times)
            print(f"cli simulate --format {fmt:5s}: median {med:.2f} s  ({args.n / med:,.0f} calls/s), "
                  f"peak RSS {rss} MB")


if __name__ == "__main__":
    main()
