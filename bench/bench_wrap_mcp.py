"""Latency added to each MCP `tools/call` by `aegis wrap --mcp`, against calling the server directly.

    python bench/bench_wrap_mcp.py [--calls 1000] [--audit-db PATH] [--http]

A minimal JSON-RPC client (so the figures are the relay's, not a client SDK's) sends `tools/call`
requests one at a time to `mcp-server-time` (`get_current_time`), first directly, then through
`aegis wrap --mcp` with a policy that allows the call, and prints p50/p95 of each and the
difference. Through aegis every call is decided and committed to the SQLite audit trail before it
is forwarded (synchronous as $AEGIS_AUDIT_SYNC says, ``normal`` by default), exactly as a user runs it.

``--http`` measures the remote case instead: the official SDK's MCPServer over Streamable HTTP
(tests/mcp_http_server.py, tool ``increment``), called directly over HTTP (aegis's own lean
HTTP/1.1 client, one kept-alive connection) and through ``aegis wrap --mcp --url`` (stdio toward
the client, HTTP toward the server).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICY = """\
version: "1"
defaults: {risk_level: medium, approval: block}
rules:
  - name: read-time
    match: {type: get_current_time}
    risk_level: low
    approval: auto
"""
SERVER = [sys.executable, "-m", "mcp_server_time"]
HTTP_SERVER = Path(__file__).resolve().parent.parent / "tests" / "mcp_http_server.py"
HTTP_POLICY = POLICY.replace("get_current_time", "increment")
TOOL = {"name": "get_current_time", "arguments": {"timezone": "UTC"}}


def measure(argv: list[str], calls: int, warmup: int = 50) -> tuple[list[float], float]:
    """Per-call latencies (ms), and the CPU seconds the process tree used (rusage from wait4)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdout

    def send(msg: dict) -> None:
        proc.stdin.write(json.dumps(msg).encode() + b"\n")  # type: ignore[union-attr]

    send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    out.readline()
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    times: list[float] = []
    for i in range(1, warmup + calls + 1):
        line = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                           "params": TOOL}).encode() + b"\n"
        t0 = time.perf_counter()
        proc.stdin.write(line)
        reply = out.readline()
        elapsed = time.perf_counter() - t0
        if b'"isError":false' not in reply.replace(b" ", b""):
            raise SystemExit(f"call {i} failed: {reply[:200]!r}")
        if i > warmup:
            times.append(elapsed * 1000)
    proc.stdin.close()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return times, usage.ru_utime + usage.ru_stime


def measure_http(url: str, calls: int, warmup: int = 50) -> tuple[list[float], float]:
    """Per-call latencies (ms) calling the HTTP server directly, with the same lean HTTP/1.1 client
    aegis uses for its POSTs (aegis_cli.wrap.http1), so the difference is the relay's; CPU is this
    client's own."""
    import asyncio

    from aegis_cli.wrap.http1 import Http1Pool

    async def run() -> list[float]:
        pool = Http1Pool(url)
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

        async def post(msg: dict) -> tuple[object, bytes]:
            response = await pool.request("POST", headers, json.dumps(msg).encode())
            body = await response.aread()
            await response.aclose()
            return response, body

        init, _ = await post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        headers["mcp-session-id"] = init.headers["mcp-session-id"]  # type: ignore[attr-defined]
        headers["mcp-protocol-version"] = "2025-11-25"
        await post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        times: list[float] = []
        for i in range(1, warmup + calls + 1):
            t0 = time.perf_counter()
            _, reply = await post({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": TOOL})
            elapsed = time.perf_counter() - t0
            if b'"isError":false' not in reply.replace(b" ", b""):
                raise SystemExit(f"call {i} failed: {reply[:200]!r}")
            if i > warmup:
                times.append(elapsed * 1000)
        await pool.aclose()
        return times

    cpu0 = time.process_time()
    times = asyncio.run(run())
    return times, time.process_time() - cpu0


def start_http_server(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(HTTP_SERVER), "--port", str(port), "--counter",
                             str(Path(tmp) / "counter")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the MCP HTTP server did not start")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--audit-db", help="audit database (default: a fresh one in a temporary directory)")
    parser.add_argument("--http", action="store_true", help="the remote case: --url to a Streamable HTTP server")
    args = parser.parse_args()
    runs: dict[str, tuple[list[float], float]] = {}
    global TOOL
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(HTTP_POLICY if args.http else POLICY)
        http_proc, url = start_http_server(tmp) if args.http else (None, "")
        if args.http:
            TOOL = {"name": "increment", "arguments": {"by": 1}}
        configs: dict[str, list[str]] = {"direct": ["http"] if args.http else SERVER}
        server_args = ["--url", url] if args.http else ["--", *SERVER]

        def wrapped(db: str) -> list[str]:
            return [sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(policy), "--audit-db", db,
                    *server_args]

        name = "aegis wrap --mcp --url" if args.http else "aegis wrap --mcp"
        configs[name] = wrapped(args.audit_db or str(Path(tmp) / "audit.db"))
        shm = Path("/dev/shm")
        if shm.is_dir() and not args.audit_db:
            # The same, with the audit database on tmpfs: separates the relay from the disk's fsync.
            configs["  audit on tmpfs"] = wrapped(str(shm / f"aegis-bench-{os.getpid()}.db"))
        try:
            # Interleave runs so drift (CPU frequency, page cache, other load) hits every side alike.
            for _ in range(2):
                for name, argv in configs.items():
                    times, cpu = (measure_http(url, args.calls // 2) if argv == ["http"]
                                  else measure(argv, args.calls // 2))
                    prev_t, prev_cpu = runs.get(name, ([], 0.0))
                    runs[name] = (prev_t + times, prev_cpu + cpu)
        finally:
            if http_proc is not None:
                http_proc.terminate()
                http_proc.wait()
            for leftover in shm.glob(f"aegis-bench-{os.getpid()}.db*"):
                leftover.unlink()
    direct_t, _ = runs["direct"]
    what = "MCPServer over Streamable HTTP, increment" if args.http else "mcp-server-time get_current_time"
    print(f"tools/call latency, {what}, {len(direct_t)} calls per configuration (ms)")
    print(f"{'':22}{'p50':>9}{'p95':>9}{'mean':>9}{'+p50':>9}{'+p95':>9}{'cpu/call':>10}")
    for name, (times, cpu) in runs.items():
        added = "" if name == "direct" else (f"{pct(times, 50) - pct(direct_t, 50):9.3f}"
                                             f"{pct(times, 95) - pct(direct_t, 95):9.3f}")
        print(f"{name:22}{pct(times, 50):9.3f}{pct(times, 95):9.3f}{statistics.fmean(times):9.3f}"
              f"{added:18}{cpu * 1000 / len(times):10.3f}")
    # CPU time (process tree, start-up included) does not depend on other load on the machine.
    print(f"+p50/+p95: added over direct. load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
