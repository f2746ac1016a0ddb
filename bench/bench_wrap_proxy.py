"""Added latency of the `aegis wrap` model-API proxy, per request, JSON and streamed (SSE) replies.

    python bench/bench_wrap_proxy.py [--requests 300] [--audit-db PATH] [--only 'anthropic_messages sse']
                                     [--baseline CHECKOUT] [--instructions] [--pace MS]

Three processes, as a user runs it: a local upstream (uvicorn) replaying the recorded provider
replies in tests/data/provider_replays (each reply holds two tool calls, one allowed, one blocked by
the policy); the real ``aegis wrap -p POLICY -- CLIENT`` with its SQLite audit trail (every decision
committed before the reply is released); and the client, the wrapped command, which asks the
upstream directly and through the proxy (the ``*_BASE_URL`` aegis gave it) in alternation, one
request each in turn, with one keep-alive httpx client per side. A streamed reply is timed to its
last byte. Alternating call by call, rather than run after run, lets drift on a shared machine
(other load, CPU frequency) hit both sides alike.

``added`` is the proxy's p50 minus the direct p50; ``cpu/req`` is the aegis process's own CPU time
per proxied request (from /proc, start-up excluded), which does not depend on other load.

Streamed replies come in 512-byte writes as fast as the upstream can make them (a burst: the
proxy then handles most of the reply after its last byte has arrived). ``--pace MS`` sends them
as a provider does, one event per write, MS milliseconds apart; the proxy then handles each event
while the next is on its way, and what it adds to the reply is what it does after the last one.

``--floor`` adds a do-nothing relay as a side (``relay``): a TCP forwarder on the same event loop
aegis uses (uvloop), copying bytes both ways without reading them. What it adds is what any
process placed between the client and the upstream costs on this machine (two more socket hops,
one more process to wake); aegis's own work is what it adds beyond that.

``--baseline CHECKOUT`` runs a second ``aegis wrap`` from another checkout of aegis (a ``git
worktree`` of an earlier commit) beside the first, on the same upstream, and the client takes turns
among the three (direct, aegis, baseline), so both versions are measured under the same load.
``--instructions`` counts instead of timing: the aegis process runs under valgrind (callgrind), once
with a few requests per case and once with more, and the difference per extra request is printed
(instructions per proxied request, start-up and warm-up cancelled out), a figure the machine's
load does not move; with ``--baseline``, for both versions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPLAYS = Path(__file__).resolve().parent.parent / "tests" / "data" / "provider_replays"
POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-deletes
    match: {type: delete_file}
    approval: block
    risk_level: critical
"""
# (replay, upstream path, the proxy path under the base URL aegis gives the child)
CASES = [("anthropic_messages", "/v1/messages", ("ANTHROPIC_BASE_URL", "/v1/messages")),
         ("openai_chat", "/v1/chat/completions", ("OPENAI_BASE_URL", "/chat/completions")),
         ("openai_responses", "/v1/responses", ("OPENAI_BASE_URL", "/responses"))]
WARMUP = 20


def upstream(port: int, pace: float = 0.0) -> None:
    """The provider stand-in: the recorded reply, JSON or streamed in 512-byte writes (or, with
    ``pace``, one event per write, ``pace`` seconds apart)."""
    import asyncio

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    files = {path: ((REPLAYS / f"{name}.json").read_bytes(), (REPLAYS / f"{name}.sse").read_bytes())
             for name, path, _ in CASES}

    async def reply(request: Request) -> Response:
        body = await request.json()
        data, stream = files[request.url.path]
        if body.get("stream") and pace:
            async def events():  # type: ignore[no-untyped-def]
                # Each event at its time from the first (not a sleep after the last write), as a
                # provider's clock does not slow when this machine is busy: one late wake-up here
                # does not push every later event back.
                loop = asyncio.get_running_loop()
                start = loop.time()
                for i, event in enumerate(stream.split(b"\n\n")[:-1]):
                    if i:
                        await asyncio.sleep(max(0.0, start + i * pace - loop.time()))
                    yield event + b"\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        if body.get("stream"):
            async def chunks():  # type: ignore[no-untyped-def]
                for i in range(0, len(stream), 512):
                    yield stream[i:i + 512]
            return StreamingResponse(chunks(), media_type="text/event-stream")
        return Response(data, media_type="application/json")

    app = Starlette(routes=[Route(path, reply, methods=["POST"]) for path in files])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def relay(port: int, upstream_port: int) -> None:
    """The floor: a TCP forwarder that copies bytes both ways, on uvloop as aegis's proxy is."""
    import asyncio

    class Pipe(asyncio.Protocol):
        def __init__(self, peer: asyncio.Transport | None = None) -> None:
            self.peer = peer
            self.transport: asyncio.Transport | None = None
            self.early: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            transport.set_write_buffer_limits(0)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            if self.peer is None:
                self.early.append(data)
            else:
                self.peer.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.peer is not None:
                self.peer.close()

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        class Inbound(Pipe):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                self.task = loop.create_task(self.connect())

            async def connect(self) -> None:
                out, _ = await loop.create_connection(lambda: Pipe(self.transport), "127.0.0.1", upstream_port)
                self.peer = out
                for data in self.early:
                    out.write(data)

        server = await loop.create_server(Inbound, "127.0.0.1", port)
        await server.serve_forever()

    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client(direct_base: str, n: int, out: str, only: str = "", sides: str = "direct,aegis") -> None:
    """The wrapped command: time each case directly and through aegis (and the baseline), taking turns."""
    import httpx

    results = {}
    names = sides.split(",")
    baseline = json.loads(os.environ.get("AEGIS_BENCH_BASELINE", "{}"))
    pids = {"aegis": os.getppid(), "baseline": baseline.get("pid"),
            "relay": int(os.environ.get("AEGIS_BENCH_RELAY_PID", 0)) or None}
    orders = list(itertools.permutations(names))
    clients = {side: httpx.Client(timeout=30) for side in names}
    try:
        for name, path, (env, proxy_path) in CASES:
            for stream in (False, True):
                case = f"{name} {'sse' if stream else 'json'}"
                if only and only not in case:
                    continue
                bases = {"direct": direct_base + path, "aegis": os.environ[env] + proxy_path,
                         "baseline": baseline.get(env, "") + proxy_path,
                         "relay": os.environ.get("AEGIS_BENCH_RELAY", "") + path}
                times: dict[str, list[float]] = {side: [] for side in names}
                payload = json.dumps({"model": "m", "stream": stream, "messages": []}).encode()
                headers = {"content-type": "application/json"}
                cpu0: dict[str, float] = {}
                for i in range(WARMUP + n):
                    if i == WARMUP:
                        cpu0 = {side: cpu_seconds(pid) or 0.0 for side, pid in pids.items() if pid}
                    for side in orders[i % len(orders)]:
                        t0 = time.perf_counter()
                        with clients[side].stream("POST", bases[side], content=payload, headers=headers) as r:
                            body = b"".join(r.iter_bytes())
                        elapsed = time.perf_counter() - t0
                        if r.status_code != 200 or (b"[aegis]" in body) != (side not in ("direct", "relay")):
                            raise SystemExit(f"{side} {name} stream={stream}: {r.status_code} {body[:300]!r}")
                        if i >= WARMUP:
                            times[side].append(elapsed * 1000)
                cpu = {}
                for side, start in cpu0.items():
                    end = cpu_seconds(pids[side])
                    cpu[side] = (end - start) * 1000 / n if end is not None else None
                results[case] = {"times": times, "cpu": cpu}
    finally:
        for http in clients.values():
            http.close()
    Path(out).write_text(json.dumps(results))


def hold(out: str) -> None:
    """The baseline aegis's wrapped command: say where its proxy is, then wait until stdin closes."""
    keys = ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL")
    Path(out + ".tmp").write_text(json.dumps({"pid": os.getppid(), **{k: os.environ[k] for k in keys}}))
    os.replace(out + ".tmp", out)
    sys.stdin.read()


def wait_for(port: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrap_command(policy: Path, audit_db: str, child: list[str], valgrind: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "aegis_cli", "wrap", "-p", str(policy), "--audit-db", audit_db, "--", *child]
    return [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd] if valgrind else cmd


def checkout_env(env: dict[str, str], checkout: str | None) -> tuple[dict[str, str], str | None]:
    """(env, cwd) that make ``python -m aegis_cli`` import the given checkout's aegis (default: this one)."""
    root = checkout or str(Path(__file__).resolve().parent.parent)
    return {**env, "PYTHONPATH": os.pathsep.join(x for x in (root, env.get("PYTHONPATH", "")) if x)}, root


def start_baseline(checkout: str, policy: Path, tmp: Path, env: dict[str, str],
                   valgrind: str | None = None) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """The baseline's ``aegis wrap``, its child holding it open; returns it and where its proxy is."""
    where = tmp / f"baseline-{time.monotonic_ns()}.json"
    benv, cwd = checkout_env(env, checkout)
    proc = subprocess.Popen(wrap_command(policy, str(tmp / "baseline.db"), [sys.executable, __file__, "--hold",
                                                                             str(where)], valgrind),
                            env=benv, cwd=cwd, stdin=subprocess.PIPE, stderr=subprocess.PIPE if valgrind else None)
    deadline = time.monotonic() + 600
    while not where.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the baseline's aegis wrap did not start")
        time.sleep(0.05)
    return proc, json.loads(where.read_text())


def stop_baseline(proc: subprocess.Popen[bytes]) -> bytes:
    proc.stdin.close()  # type: ignore[union-attr]
    err = proc.stderr.read() if proc.stderr is not None else b""
    proc.wait()
    return err


def collected(stderr: bytes) -> int:
    found = re.search(rb"Collected : (\d+)", stderr)
    if found is None:
        raise SystemExit(f"no callgrind count in: {stderr[-500:]!r}")
    return int(found.group(1))


def instructions(args: argparse.Namespace, base: str, policy: Path, tmp: Path, env: dict[str, str]) -> None:
    """Instructions per proxied request: the difference between a short and a longer run, per case."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind not found")
    few, more = 5, 5 + args.requests
    versions = {"aegis": None, **({"baseline": args.baseline} if args.baseline else {})}
    cases = [f"{name} {kind}" for name, _, _ in CASES for kind in ("json", "sse") if not args.only or
             args.only in f"{name} {kind}"]
    print(f"instructions per proxied request under callgrind ({more} - {few} requests after {WARMUP} warm-up, "
          "2 tool calls per reply, SQLite audit on), millions")
    print(f"{'case':<24}" + "".join(f"{v:>12}" for v in versions))
    for case in cases:
        row = []
        for version, checkout in versions.items():
            counts = []
            for n in (few, more):
                vt = Path(tempfile.mkdtemp(dir=tmp))
                venv, cwd = checkout_env({**env, "PYTHONHASHSEED": "0"}, checkout)
                out = vt / "result.json"
                child = [sys.executable, str(Path(__file__).resolve()), "--requests", str(n), "--only", case,
                         "--sides", "aegis", "--client", base, str(out)]
                proc = subprocess.run(wrap_command(policy, str(vt / "audit.db"), child, valgrind), env=venv,
                                      cwd=cwd, capture_output=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{version} {case}: exit {proc.returncode}\n{proc.stderr[-800:]!r}")
                counts.append(collected(proc.stderr))
            row.append((counts[1] - counts[0]) / (more - few) / 1e6)
        print(f"{case:<24}" + "".join(f"{x:12.3f}" for x in row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="timed requests per case and side")
    ap.add_argument("--audit-db", help="audit database (default: a fresh one in a temporary directory)")
    ap.add_argument("--only", default="", help="run the cases whose name holds this text")
    ap.add_argument("--baseline", metavar="CHECKOUT",
                    help="another checkout of aegis (e.g. a git worktree of an earlier commit), measured beside")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per proxied request under callgrind instead of timing "
                         "(--requests: the extra requests of the longer run; 50 is plenty)")
    ap.add_argument("--pace", type=float, default=0.0, metavar="MS",
                    help="stream one event per write, MS milliseconds apart, as a provider does "
                         "(default: 512-byte writes at once)")
    ap.add_argument("--floor", action="store_true",
                    help="also time a do-nothing TCP relay (what any process in between costs here)")
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--relay", type=int, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=2, metavar=("DIRECT_BASE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--sides", default="direct,aegis", help=argparse.SUPPRESS)
    ap.add_argument("--hold", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream:
        return upstream(args.upstream, args.pace / 1000)
    if args.relay:
        return relay(*args.relay)
    if args.client:
        return client(args.client[0], args.requests, args.client[1], args.only, args.sides)
    if args.hold:
        return hold(args.hold)
    port = free_port()
    up = subprocess.Popen([sys.executable, __file__, "--upstream", str(port), "--pace", str(args.pace)])
    baseline = floor = None
    try:
        if args.floor and not args.instructions:
            floor_port = free_port()
            floor = subprocess.Popen([sys.executable, __file__, "--relay", str(floor_port), str(port)])
        for what, p in [("the upstream", port)] + ([("the relay", floor_port)] if floor else []):
            wait_for(p, what)
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            policy = Path(tmp) / "policy.yaml"
            policy.write_text(POLICY)
            out = Path(tmp) / "result.json"
            env = {**os.environ, "ANTHROPIC_BASE_URL": base, "OPENAI_BASE_URL": base + "/v1"}
            if args.instructions:
                return instructions(args, base, policy, Path(tmp), env)
            sides = "direct,aegis"
            if floor is not None:
                env["AEGIS_BENCH_RELAY"] = f"http://127.0.0.1:{floor_port}"
                env["AEGIS_BENCH_RELAY_PID"] = str(floor.pid)
                sides += ",relay"
            if args.baseline:
                baseline, where = start_baseline(args.baseline, policy, Path(tmp), env)
                env["AEGIS_BENCH_BASELINE"] = json.dumps(where)
                sides += ",baseline"
            child = [sys.executable, str(Path(__file__).resolve()), "--requests", str(args.requests), "--only",
                     args.only, "--sides", sides, "--client", base, str(out)]
            aenv, cwd = checkout_env(env, None)
            subprocess.run(wrap_command(policy, args.audit_db or str(Path(tmp) / "audit.db"), child), env=aenv,
                           cwd=cwd, check=True)
            results = json.loads(out.read_text())
            if baseline is not None:
                stop_baseline(baseline)
                baseline = None
    finally:
        if baseline is not None:
            stop_baseline(baseline)
        for proc in (up, floor):
            if proc is not None:
                proc.terminate()
                proc.wait()

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    paced = f", streams one event per write {args.pace:g} ms apart" if args.pace else ""
    print(f"{args.requests} requests per case and side, taking turns; ms per request, 2 tool calls per reply, "
          f"SQLite audit on{paced}")
    shown = ["aegis"] + (["baseline"] if args.baseline else []) + (["relay"] if args.floor else [])
    head = f"{'case':<24}{'direct p50':>11}{'p95':>8}"
    for side in shown:
        head += f"{side + ' p50':>{max(11, len(side) + 5)}}{'p95':>8}{'added p50':>11}{'cpu/req':>9}"
    print(head)
    for case, r in results.items():
        d = r["times"]["direct"]
        line = f"{case:<24}{pct(d, 50):11.3f}{pct(d, 95):8.3f}"
        for side in shown:
            a, cpu = r["times"][side], r["cpu"].get(side)
            line += (f"{pct(a, 50):{max(11, len(side) + 5)}.3f}{pct(a, 95):8.3f}"
                     f"{pct(a, 50) - pct(d, 50):11.3f}" + (f"{cpu:9.3f}" if cpu is not None else f"{'':>9}"))
        print(line)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
