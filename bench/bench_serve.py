"""Throughput and latency of ``POST /api/v1/evaluate`` with 16 concurrent keep-alive clients.

    python bench/bench_serve.py                       # aegis serve, auditing on
    python bench/bench_serve.py --baseline /tmp/agent_aegis_venv/bin/python
                                                      # ... side by side with agent-aegis 1.0's server

Each server is started as its own process on a free loopback port, warmed up, then driven for
``--seconds`` by the same client: one asyncio process holding 16 HTTP/1.1 keep-alive
connections, each sending a request as soon as the previous answer arrived (closed loop), so
requests/s and latency are measured together. Every answer must be 200, or the run fails.
The client is raw asyncio streams rather than an HTTP library, so it is cheap enough not to be
the bottleneck on a small machine, and identical for both servers.

agent-aegis 1.0 (PyPI ``agent-aegis==1.0.0``) ships a top-level package ``aegis``, so it lives in
its own virtualenv: ``python -m venv /tmp/agent_aegis_venv && /tmp/agent_aegis_venv/bin/pip
install 'agent-aegis[server]==1.0.0'``. Its ``aegis serve POLICY`` does not audit /evaluate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Plain rules both servers read the same way (agent-aegis 1.0 shares the basic rule syntax).
POLICY = """\
version: "1"
defaults:
  risk_level: medium
  approval: approve
rules:
  - name: reads
    match: {type: "read*", target: "*"}
    risk_level: low
    approval: auto
  - name: prod_deletes
    match: {type: "delete*", target: "prod*"}
    risk_level: high
    approval: approve
  - name: payments
    match: {type: transfer, target: payments}
    risk_level: high
    approval: approve
  - name: shell
    match: {type: Bash, target: "*"}
    risk_level: critical
    approval: block
"""

ACTIONS = [
    {"type": "read_file", "target": "docs", "params": {"path": "README.md"}, "agent": "bench"},
    {"type": "delete_rows", "target": "production", "params": {"count": 3}, "agent": "bench"},
    {"type": "transfer", "target": "payments", "params": {"amount": 12.5, "currency": "EUR"}, "agent": "bench"},
    {"type": "send", "target": "email", "params": {"to": "a@example.com"}, "agent": "bench"},
]


def _requests(port: int) -> list[bytes]:
    out = []
    for action in ACTIONS:
        body = json.dumps(action).encode()
        head = (f"POST /api/v1/evaluate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if m is None:
        raise RuntimeError("response without Content-Length")
    await reader.readexactly(int(m.group(1)))
    return status


async def _drive(port: int, connections: int, seconds: float, warmup: float) -> dict[str, float]:
    reqs = _requests(port)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def worker(n: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = n
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                writer.write(reqs[i % len(reqs)])
                i += 1
                status = await _read_response(reader)
                t1 = time.perf_counter()
                if status != 200:
                    errors += 1
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
        finally:
            writer.close()

    await asyncio.gather(*(worker(n) for n in range(connections)))
    if errors:
        raise RuntimeError(f"{errors} non-200 answers")
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "rps": len(latencies) / seconds,
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not come up")


def _run(name: str, cmd: list[str], port: int, health: str, args: argparse.Namespace,
         env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        _wait_ready(port, proc, health)
        result = asyncio.run(_drive(port, args.connections, args.seconds, args.warmup))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"{name:<34} {result['rps']:>9.0f} req/s   p50 {result['p50_ms']:6.2f} ms   "
          f"p99 {result['p99_ms']:6.2f} ms   ({result['requests']} requests)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--baseline", metavar="PYTHON",
                        help="python of a virtualenv with agent-aegis 1.0 installed, to measure side by side")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times")
    parser.add_argument("--audit-sync", choices=["normal", "full"], default="normal",
                        help="aegis serve --audit-sync (full: fsync every commit)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp, "policy.yaml")
        policy.write_text(POLICY)
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        for r in range(args.rounds):
            port = _free_port()
            db = Path(tmp, f"audit{r}.db")
            env = {k: v for k, v in os.environ.items() if k != "AEGIS_API_TOKEN"}
            ours.append(_run(f"aegis serve (audit, sync={args.audit_sync})",
                             [sys.executable, "-m", "aegis_cli", "serve", "-p", str(policy), "--port", str(port),
                              "--audit-db", str(db), "--no-watch", "--audit-sync", args.audit_sync],
                             port, "/healthz", args, env))
            if args.baseline:
                port = _free_port()
                theirs.append(_run("agent-aegis 1.0 serve (no audit)", [args.baseline, "-m", "aegis", "serve",
                                                                       str(policy), "--port", str(port),
                                                                       "--no-dashboard"],
                                   port, "/health", args, env))
            with_audit = db.exists()
            if not with_audit:
                raise RuntimeError("aegis serve wrote no audit database")
        best = max(x["rps"] for x in ours)
        print(f"\naegis serve: median {statistics.median(x['rps'] for x in ours):.0f} req/s, "
              f"p50 {statistics.median(x['p50_ms'] for x in ours):.2f} ms, "
              f"p99 {statistics.median(x['p99_ms'] for x in ours):.2f} ms over {args.rounds} round(s)")
        if theirs:
            base = statistics.median(x["rps"] for x in theirs)
            ratio = statistics.median(x["rps"] for x in ours) / base
            print(f"agent-aegis 1.0: median {base:.0f} req/s, "
                  f"p50 {statistics.median(x['p50_ms'] for x in theirs):.2f} ms, "
                  f"p99 {statistics.median(x['p99_ms'] for x in theirs):.2f} ms")
            print(f"ratio (median req/s): {ratio:.2f}x  (best aegis round {best:.0f} req/s)")


if __name__ == "__main__":
    main()
