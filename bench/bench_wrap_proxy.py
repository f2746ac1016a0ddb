"""Added latency of the `aegis wrap` model-API proxy, per request.

A local upstream (uvicorn) replays the recorded provider replies in tests/data/provider_replays;
each reply holds two tool calls (one allowed, one blocked by the policy). The same client (httpx,
keep-alive) asks the upstream directly, then through the proxy: without an audit trail, and with
the SQLite audit trail (every decision fsynced before the reply is released).

    python bench/bench_wrap_proxy.py [--requests 200]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aegis_cli.audit import SQLiteAuditLogger
from aegis_cli.engine.policy import Policy
from aegis_cli.wrap.model_proxy import ModelProxy, Upstreams
from aegis_cli.wrap.tool_gate import ToolGate

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
CASES = [("anthropic_messages", "/v1/messages", "/anthropic/v1/messages"),
         ("openai_chat", "/v1/chat/completions", "/openai/v1/chat/completions"),
         ("openai_responses", "/v1/responses", "/openai/v1/responses")]


def upstream_app() -> Starlette:
    files = {name: ((REPLAYS / f"{name}.json").read_bytes(), (REPLAYS / f"{name}.sse").read_bytes())
             for name, _, _ in CASES}
    by_path = {path: name for name, path, _ in CASES}

    async def reply(request: Request) -> Response:
        body = await request.json()
        data, stream = files[by_path[request.url.path]]
        if body.get("stream"):
            async def chunks():  # type: ignore[no-untyped-def]
                for i in range(0, len(stream), 512):
                    yield stream[i:i + 512]
            return StreamingResponse(chunks(), media_type="text/event-stream")
        return Response(data, media_type="application/json")

    return Starlette(routes=[Route(path, reply, methods=["POST"]) for path in by_path])


def serve_upstream() -> tuple[str, uvicorn.Server]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(upstream_app(), log_level="warning", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server


def timings(client: httpx.Client, url: str, stream: bool, n: int) -> list[float]:
    out = []
    payload = {"model": "m", "stream": stream, "messages": []}
    for _ in range(n + 5):
        t = time.perf_counter()
        if stream:
            with client.stream("POST", url, json=payload) as r:
                for _chunk in r.iter_bytes():
                    pass
        else:
            client.post(url, json=payload).raise_for_status()
        out.append((time.perf_counter() - t) * 1000)
    return out[5:]  # warm-up dropped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    n = ap.parse_args().requests
    base, upstream = serve_upstream()
    policy = Policy.from_string(POLICY)
    with tempfile.TemporaryDirectory() as tmp:
        setups = [("no audit", None),
                  ("sqlite audit", lambda: SQLiteAuditLogger(Path(tmp) / "audit.db", redact=policy.redact))]
        print(f"{n} requests each; median / p95 milliseconds per request (2 tool calls per reply)")
        print(f"{'api':<22}{'mode':<8}{'direct':>16}{'proxy, no audit':>20}{'proxy, sqlite audit':>24}"
              f"{'added (no audit)':>18}")
        rows: dict[tuple[str, bool], list[list[float]]] = {}
        with httpx.Client(timeout=30) as client:
            for name, path, _ in CASES:
                for stream in (False, True):
                    rows[(name, stream)] = [timings(client, base + path, stream, n)]
            for _label, factory in setups:
                gate = ToolGate(policy, audit_factory=factory, approvals=None)
                with ModelProxy(gate.decide, Upstreams(base, base + "/v1")) as proxy:
                    for name, _, proxy_path in CASES:
                        for stream in (False, True):
                            rows[(name, stream)].append(timings(client, proxy.url + proxy_path, stream, n))
                gate.close()
        for (name, stream), series in rows.items():
            cells = [f"{statistics.median(s):.2f} / {sorted(s)[int(len(s) * 0.95)]:.2f}" for s in series]
            added = statistics.median(series[1]) - statistics.median(series[0])
            print(f"{name:<22}{'sse' if stream else 'json':<8}{cells[0]:>16}{cells[1]:>20}{cells[2]:>24}"
                  f"{added:>18.2f}")
    upstream.should_exit = True


if __name__ == "__main__":
    main()
