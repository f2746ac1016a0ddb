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

With ``wrk`` on the PATH (Debian: ``apt-get install wrk``) the load comes from it instead: a C
load generator, 16 connections on 2 threads (``--threads``), cycling the same four bodies
through a small Lua script; it costs the servers' shared CPUs far less than any Python client,
so the servers, not the client, set the figures. ``--client python`` forces the asyncio client.

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


_WRK_SCRIPT = """
local bodies = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/api/v1/evaluate", {["Content-Type"] = "application/json"}, bodies[i %% #bodies + 1])
end
"""


def wrk_available() -> bool:
    import shutil

    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def drive_wrk(ports: list[int], connections: int, threads: int, seconds: float, warmup: float) -> dict[str, float]:
    """Drive every port at once with one ``wrk`` each (connections and threads split between them);
    requests/s summed, latency quantiles of the first. Any non-2xx answer fails the run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_SCRIPT % ", ".join(_lua_string(json.dumps(a)) for a in ACTIONS))
        script = f.name
    try:
        def run(duration: float) -> list[str]:
            per_conn = max(connections // len(ports), 1)
            per_thread = max(min(threads // len(ports), per_conn), 1)
            # --timeout: an answer that is slow (a commit waiting on a busy disk) counts in the
            # latency, instead of as a socket error after wrk's default 2 s that fails the run.
            procs = [subprocess.Popen(["wrk", "-t", str(per_thread), "-c", str(per_conn),
                                       "-d", f"{max(duration, 1):.0f}s", "--latency", "--timeout", "30s", "-s", script,
                                       f"http://127.0.0.1:{port}/api/v1/evaluate"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for port in ports]
            return [p.communicate()[0] for p in procs]

        if warmup > 0:
            run(warmup)
        outputs = run(seconds)
    finally:
        os.unlink(script)
    rps = 0.0
    total = 0
    for out in outputs:
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw failed requests:\n{out}")
        rps += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        total += int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    def quantile(name: str) -> float:
        m = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)\b", outputs[0], re.M)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"requests": total, "rps": rps, "p50_ms": quantile("50"), "p99_ms": quantile("99")}


def drive(ports: list[int], args: argparse.Namespace) -> dict[str, float]:
    """The load of one run: wrk when it is there (and not ``--client python``), else the asyncio client."""
    if args.client == "wrk" or (args.client == "auto" and wrk_available()):
        return drive_wrk(ports, args.connections, args.threads, args.seconds, args.warmup)
    if len(ports) != 1:
        raise SystemExit("driving several servers at once needs wrk (apt-get install wrk)")
    return asyncio.run(_drive(ports[0], args.connections, args.seconds, args.warmup))


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
        result = drive([port], args)
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
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk when installed (auto), or the asyncio client")
    parser.add_argument("--baseline", metavar="PYTHON",
                        help="python of a virtualenv with agent-aegis 1.0 installed, to measure side by side")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times")
    parser.add_argument("--audit-sync", choices=["normal", "full"], default="normal",
                        help="aegis serve --audit-sync (full: fsync every commit)")
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and wrk_available())
    print(f"load: {'wrk, ' + str(args.threads) + ' threads' if use_wrk else 'asyncio client'}, "
          f"{args.connections} connections, {args.seconds:g} s after {args.warmup:g} s warm-up; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

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
            print(f"\n{'':<16}{'aegis serve':>14}{'agent-aegis 1.0':>18}{'ratio':>8}\n"
                  f"{'req/s (median)':<16}{statistics.median(x['rps'] for x in ours):>14,.0f}{base:>18,.0f}"
                  f"{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
