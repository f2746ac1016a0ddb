"""Latency added to each MCP `tools/call` by `aegis wrap --mcp`, against calling the server directly.

    python bench/bench_wrap_mcp.py [--calls 1000] [--audit-db PATH] [--http [--listen]] [--baseline CHECKOUT]
                                   [--instructions] [--floor]

A minimal JSON-RPC client (so the figures are the relay's, not a client SDK's) sends `tools/call`
requests one at a time to `mcp-server-time` (`get_current_time`) directly and through
`aegis wrap --mcp` with a policy that allows the call, and prints p50/p95 of each and the
difference. Through aegis every call is decided and committed to the SQLite audit trail before it
is forwarded (synchronous as $AEGIS_AUDIT_SYNC says, ``normal`` by default), exactly as a user runs it.

``--http`` measures the remote case instead: the official SDK's MCPServer over Streamable HTTP
(tests/mcp_http_server.py, tool ``increment``), called directly over HTTP (aegis's own lean
HTTP/1.1 client, one kept-alive connection) and through ``aegis wrap --mcp --url`` (stdio toward
the client, HTTP toward the server).

Every configuration stays open side by side and they take turns call by call (the order rotating),
so drift on a shared machine (other load, CPU frequency) hits each alike. ``cpu/call`` is the CPU
time per timed call of the relay process (from /proc, start-up excluded), or for ``direct`` of the
stdio server; it depends far less on other load than latency does.

With ``--http``, ``--listen`` adds ``aegis wrap --mcp --listen --url``: aegis serving Streamable HTTP
on loopback in front of the same server, called over HTTP as the server is (what a host that
connects by URL sees); with ``--instructions``, it is the one counted.

``--floor`` (stdio) adds a do-nothing relay in front of the same server: a Python process that
copies bytes between its stdin and stdout and the server's, two threads blocked in ``read``. What it
adds is what any process placed between host and server costs on this machine (two more pipe hops,
one more process to wake); aegis's own work is what it adds beyond that.

``--baseline CHECKOUT`` adds a third configuration: the same relay run from another checkout of
aegis (a ``git worktree`` of an earlier commit, put first on ``PYTHONPATH``), taking its turns with
the others, so both versions are measured under the same load. ``--instructions`` counts instead of
timing: the relay runs under valgrind (callgrind), once with a few calls and once with ``--calls``
more, and the difference per extra call is printed (instructions per ``tools/call``, start-up and
warm-up cancelled out), a figure the machine's load does not move; with ``--baseline``, for both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
TIME_TOOL = {"name": "get_current_time", "arguments": {"timezone": "UTC"}}
HTTP_TOOL = {"name": "increment", "arguments": {"by": 1}}
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}


def floor_relay(argv: list[str]) -> None:
    """The floor: start ``argv`` and copy bytes both ways between it and this process's stdin/stdout."""
    import subprocess
    import threading

    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def pump(src: int, dst: int) -> None:
        while data := os.read(src, 1 << 16):
            os.write(dst, data)

    down = threading.Thread(target=pump, args=(proc.stdout.fileno(), 1), daemon=True)  # type: ignore[union-attr]
    down.start()
    pump(0, proc.stdin.fileno())  # type: ignore[union-attr]
    proc.stdin.close()  # type: ignore[union-attr]
    down.join()
    proc.wait()


def cpu_seconds(pid: int) -> float | None:
    """A process's CPU time so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StdioSide:
    """A server, or aegis in front of one, spoken to over its stdin and stdout."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, capture_stderr: bool = False,
                 cwd: str | None = None) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.capture_stderr = capture_stderr
        self.stderr = b""
        self.proc: Any = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24, env=self.env,
            stderr=asyncio.subprocess.PIPE if self.capture_stderr else None, cwd=self.cwd)
        await self.call({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT})
        self.proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')

    async def call(self, msg: dict[str, Any]) -> bytes:
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        return await self.proc.stdout.readline()

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        self.proc.stdin.close()
        if self.capture_stderr:
            self.stderr = await self.proc.stderr.read()
        await self.proc.wait()


class HttpSide:
    """The server over HTTP, with the lean HTTP/1.1 client aegis uses for its POSTs (aegis_cli.wrap.http1),
    so the difference is the relay's."""

    def __init__(self, url: str) -> None:
        from aegis_cli.wrap.http1 import Http1Pool

        self.pool = Http1Pool(url)
        self.headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

    async def post(self, msg: dict[str, Any]) -> tuple[Any, bytes]:
        response = await self.pool.request("POST", self.headers, json.dumps(msg).encode())
        body = await response.aread()
        await response.aclose()
        return response, body

    async def start(self) -> None:
        init, _ = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT})
        self.headers["mcp-session-id"] = init.headers["mcp-session-id"]
        self.headers["mcp-protocol-version"] = INIT["protocolVersion"]
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, msg: dict[str, Any]) -> bytes:
        return (await self.post(msg))[1]

    def cpu(self) -> float | None:
        return None  # the server's is not ours to see, and this process runs every side's client

    async def stop(self) -> None:
        await self.pool.aclose()


class ListenSide(HttpSide):
    """``aegis wrap --mcp --listen`` in front of the server, called over HTTP like the server itself."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None, cwd: str | None = None,
                 capture_stderr: bool = False) -> None:
        super().__init__(f"http://127.0.0.1:{port}/mcp")
        self.argv, self.port, self.env, self.cwd = argv, port, env, cwd
        self.capture_stderr = capture_stderr
        self.stderr = b""
        self.proc: Any = None

    async def start(self) -> None:
        import socket
        import subprocess

        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE if self.capture_stderr else None)
        deadline = time.monotonic() + 600
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("aegis wrap --mcp --listen did not start") from None
                await asyncio.sleep(0.05)
        await super().start()

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        await super().stop()
        self.proc.terminate()  # --listen stops cleanly on SIGTERM (and callgrind then prints its count)
        if self.capture_stderr:
            self.stderr = self.proc.stderr.read()
        self.proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(sides: dict[str, Any], tool: dict[str, Any], calls: int, warmup: int = 50
              ) -> dict[str, tuple[list[float], float | None]]:
    for side in sides.values():
        await side.start()
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu0: dict[str, float | None] = {}
    names = list(sides)
    for i in range(1, warmup + calls + 1):
        if i == warmup + 1:
            cpu0 = {name: side.cpu() for name, side in sides.items()}
        for name in names[i % len(names):] + names[:i % len(names)]:
            msg = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": tool}
            t0 = time.perf_counter()
            reply = await sides[name].call(msg)
            elapsed = time.perf_counter() - t0
            if b'"isError":false' not in reply.replace(b" ", b""):
                raise SystemExit(f"{name}: call {i} failed: {reply[:200]!r}")
            if i > warmup:
                times[name].append(elapsed * 1000)
    out = {}
    for name, side in sides.items():
        end, start = side.cpu(), cpu0.get(name)
        out[name] = (times[name], (end - start) / calls if end is not None and start is not None else None)
        await side.stop()
    return out


def start_http_server(tmp: str) -> tuple[Any, str]:
    import socket
    import subprocess

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


def checkout_env(checkout: str | None, extra: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """(env, cwd) in which ``python -m aegis_cli`` imports the given checkout's aegis (default: this one):
    ``-m`` puts the working directory first on the path, ahead of ``PYTHONPATH``."""
    root = checkout or str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH", "")) if x)
    return env, root


def instructions(args: argparse.Namespace, make: Any, tool: dict[str, Any]) -> None:
    """Instructions per tools/call of the relay: callgrind's count for a short and a longer run, differenced."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind not found")
    few, more = 20, 20 + args.calls
    versions = {"aegis": None, **({"baseline": args.baseline} if args.baseline else {})}
    print(f"instructions per tools/call under callgrind ({more} - {few} calls after 50 warm-up, SQLite audit on)")
    for version, checkout in versions.items():
        counts = []
        for n in (few, more):
            side = make(checkout, [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"], n)
            asyncio.run(run({version: side}, tool, n))
            found = re.search(rb"Collected : (\d+)", side.stderr)
            if found is None:
                raise SystemExit(f"{version}: no callgrind count in {side.stderr[-500:]!r}")
            counts.append(int(found.group(1)))
        print(f"{version:10}{(counts[1] - counts[0]) / (more - few) / 1e6:8.3f} million", flush=True)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--audit-db", help="audit database (default: a fresh one in a temporary directory)")
    parser.add_argument("--http", action="store_true", help="the remote case: --url to a Streamable HTTP server")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="another checkout of aegis (e.g. a git worktree of an earlier commit), measured beside")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per call under callgrind instead of timing (--calls: the extra "
                             "calls of the longer run; 300 is plenty)")
    parser.add_argument("--listen", action="store_true",
                        help="with --http, also time aegis wrap --mcp --listen (HTTP toward the host too)")
    parser.add_argument("--floor", action="store_true",
                        help="also time a do-nothing stdio relay (what any process in between costs here)")
    parser.add_argument("--floor-relay", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_relay:
        return floor_relay(args.floor_relay)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(HTTP_POLICY if args.http else POLICY)
        http_proc, url = start_http_server(tmp) if args.http else (None, "")
        server_args = ["--url", url] if args.http else ["--", *SERVER]

        def wrapped(db: str, checkout: str | None = None, prefix: tuple[str, ...] = ()) -> StdioSide:
            env, cwd = checkout_env(checkout, {"PYTHONHASHSEED": "0"} if prefix else None)
            return StdioSide([*prefix, sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(policy),
                              "--audit-db", db, *server_args], env=env, capture_stderr=bool(prefix), cwd=cwd)

        def listening(db: str, checkout: str | None = None, prefix: tuple[str, ...] = ()) -> ListenSide:
            port = free_port()
            env, cwd = checkout_env(checkout, {"PYTHONHASHSEED": "0"} if prefix else None)
            return ListenSide([*prefix, sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(policy),
                               "--audit-db", db, "--listen", f"127.0.0.1:{port}", "--url", url], port, env, cwd,
                              capture_stderr=bool(prefix))

        if args.instructions:
            try:
                def counted(checkout: str | None, prefix: list[str], n: int) -> Any:
                    db = str(Path(tempfile.mkdtemp(dir=tmp)) / "audit.db")
                    if args.listen and args.http:
                        return listening(db, checkout, tuple(prefix))
                    return wrapped(db, checkout, tuple(prefix))

                return instructions(args, counted, HTTP_TOOL if args.http else TIME_TOOL)
            finally:
                if http_proc is not None:
                    http_proc.terminate()
                    http_proc.wait()

        name = "aegis wrap --mcp --url" if args.http else "aegis wrap --mcp"
        db = str(Path(args.audit_db).resolve()) if args.audit_db else str(Path(tmp) / "audit.db")
        sides: dict[str, Any] = {"direct": HttpSide(url) if args.http else StdioSide(SERVER), name: wrapped(db)}
        if args.baseline:
            sides["baseline"] = wrapped(str(Path(tmp) / "baseline.db"), args.baseline)
        if args.listen and args.http:
            sides["aegis ... --listen --url"] = listening(str(Path(tmp) / "listen.db"))
            if args.baseline:
                sides["baseline --listen"] = listening(str(Path(tmp) / "listen-baseline.db"), args.baseline)
        if args.floor and not args.http:
            sides["do-nothing relay"] = StdioSide([sys.executable, __file__, "--floor-relay", *SERVER])
        shm = Path("/dev/shm")
        if shm.is_dir() and not args.audit_db:
            # The same, with the audit database on tmpfs: separates the relay from the disk's writes.
            sides["  audit on tmpfs"] = wrapped(str(shm / f"aegis-bench-{os.getpid()}.db"))
        try:
            runs = asyncio.run(run(sides, HTTP_TOOL if args.http else TIME_TOOL, args.calls))
        finally:
            if http_proc is not None:
                http_proc.terminate()
                http_proc.wait()
            for leftover in shm.glob(f"aegis-bench-{os.getpid()}.db*"):
                leftover.unlink()
    direct_t, _ = runs["direct"]
    what = "MCPServer over Streamable HTTP, increment" if args.http else "mcp-server-time get_current_time"
    print(f"tools/call latency, {what}, {len(direct_t)} calls per configuration, taking turns (ms)")
    print(f"{'':24}{'p50':>9}{'p95':>9}{'mean':>9}{'+p50':>9}{'+p95':>9}{'cpu/call':>10}")
    for name, (times, cpu) in runs.items():
        added = "" if name == "direct" else (f"{pct(times, 50) - pct(direct_t, 50):9.3f}"
                                             f"{pct(times, 95) - pct(direct_t, 95):9.3f}")
        cpu_cell = f"{cpu * 1000:10.3f}" if cpu is not None else ""
        print(f"{name:24}{pct(times, 50):9.3f}{pct(times, 95):9.3f}{statistics.fmean(times):9.3f}"
              f"{added:18}{cpu_cell}")
    print(f"+p50/+p95: added over direct. load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
