"""Added latency of the `aegis wrap` model-API proxy, per request, JSON and streamed (SSE) replies.

    python bench/bench_wrap_proxy.py [--requests 300] [--audit-db PATH] [--only 'anthropic_messages sse']

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
"""

from __future__ import annotations

import argparse
import json
import os
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


def upstream(port: int) -> None:
    """The provider stand-in: the recorded reply, JSON or streamed in 512-byte writes."""
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
        if body.get("stream"):
            async def chunks():  # type: ignore[no-untyped-def]
                for i in range(0, len(stream), 512):
                    yield stream[i:i + 512]
            return StreamingResponse(chunks(), media_type="text/event-stream")
        return Response(data, media_type="application/json")

    app = Starlette(routes=[Route(path, reply, methods=["POST"]) for path in files])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client(direct_base: str, n: int, out: str, only: str = "") -> None:
    """The wrapped command: time each case directly and through aegis, alternating."""
    import httpx

    results = {}
    aegis_pid = os.getppid()
    with httpx.Client(timeout=30) as direct, httpx.Client(timeout=30) as proxied:
        for name, path, (env, proxy_path) in CASES:
            for stream in (False, True):
                case = f"{name} {'sse' if stream else 'json'}"
                if only and only not in case:
                    continue
                urls = {"direct": (direct, direct_base + path), "aegis": (proxied, os.environ[env] + proxy_path)}
                times: dict[str, list[float]] = {"direct": [], "aegis": []}
                payload = json.dumps({"model": "m", "stream": stream, "messages": []}).encode()
                headers = {"content-type": "application/json"}
                cpu0 = 0.0
                for i in range(WARMUP + n):
                    if i == WARMUP:
                        cpu0 = cpu_seconds(aegis_pid) or 0.0
                    order = ("direct", "aegis") if i % 2 else ("aegis", "direct")
                    for side in order:
                        http, url = urls[side]
                        t0 = time.perf_counter()
                        with http.stream("POST", url, content=payload, headers=headers) as r:
                            body = b"".join(r.iter_bytes())
                        elapsed = time.perf_counter() - t0
                        if r.status_code != 200 or (b"[aegis]" in body) != (side == "aegis"):
                            raise SystemExit(f"{side} {name} stream={stream}: {r.status_code} {body[:300]!r}")
                        if i >= WARMUP:
                            times[side].append(elapsed * 1000)
                cpu1 = cpu_seconds(aegis_pid)
                cpu = (cpu1 - cpu0) * 1000 / n if cpu1 is not None else None
                results[case] = {**times, "cpu": cpu}
    Path(out).write_text(json.dumps(results))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="timed requests per case and side")
    ap.add_argument("--audit-db", help="audit database (default: a fresh one in a temporary directory)")
    ap.add_argument("--only", default="", help="run the cases whose name holds this text")
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=2, metavar=("DIRECT_BASE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream:
        return upstream(args.upstream)
    if args.client:
        return client(args.client[0], args.requests, args.client[1], args.only)
    port = free_port()
    up = subprocess.Popen([sys.executable, __file__, "--upstream", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the upstream did not start") from None
                time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            policy = Path(tmp) / "policy.yaml"
            policy.write_text(POLICY)
            out = Path(tmp) / "result.json"
            env = {**os.environ, "ANTHROPIC_BASE_URL": base, "OPENAI_BASE_URL": base + "/v1"}
            cmd = [sys.executable, "-m", "aegis_cli", "wrap", "-p", str(policy),
                   "--audit-db", args.audit_db or str(Path(tmp) / "audit.db"), "--",
                   sys.executable, __file__, "--requests", str(args.requests), "--only", args.only,
                   "--client", base, str(out)]
            subprocess.run(cmd, env=env, check=True)
            results = json.loads(out.read_text())
    finally:
        up.terminate()
        up.wait()

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    print(f"{args.requests} requests per case and side, alternating; ms per request, 2 tool calls per reply, "
          "SQLite audit on")
    print(f"{'case':<24}{'direct p50':>11}{'p95':>8}{'aegis p50':>11}{'p95':>8}{'added p50':>11}{'cpu/req':>9}")
    for case, r in results.items():
        d, a = r["direct"], r["aegis"]
        cpu = f"{r['cpu']:9.3f}" if r["cpu"] is not None else f"{'':>9}"
        print(f"{case:<24}{pct(d, 50):11.3f}{pct(d, 95):8.3f}{pct(a, 50):11.3f}{pct(a, 95):8.3f}"
              f"{pct(a, 50) - pct(d, 50):11.3f}{cpu}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
