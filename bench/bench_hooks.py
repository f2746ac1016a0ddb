"""Cold-call latency of ``aegis hook claude-code | codex | gemini``, beside the bare interpreter, and
of the same events posted to ``aegis serve`` with curl, beside a plain ``/healthz``.

    python bench/bench_hooks.py            # 20 calls of each
    python bench/bench_hooks.py -n 50

A hook is a new process per tool call, so every call here is one: ``python -m aegis_cli hook
<agent> -p POLICY --audit-db DB`` with the event on stdin, a real policy (examples/policy.yaml plus
coding-agent rules) and an SQLite audit trail that grows with every call, as an agent runs it.
``python -c pass`` is the floor any Python command pays. "typer path" is the same command
through the CLI framework and the normal loaders (no policy cache, sqlite-utils writer), what
every call cost before the hook path was made lean. Each row is the median (and p90) of N wall-
clock times, plus the median CPU time (user + sys) of the child, which shared machines disturb less.

The server rows start ``aegis serve`` on a free loopback port and time ``curl`` processes, the
way the ``--print-settings --server`` hook command runs: each a new curl posting one event.
Every hook answer is checked (exit 0, the expected decision), and the trails are verified at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = """\
version: "1"
name: coding-agents
rules:
  - name: no-rm-rf
    match: {type: "Bash"}
    conditions: {param_matches: {command: "rm\\\\s+-rf"}}
    risk_level: critical
    approval: block
    reason: recursive deletes are not allowed
  - name: no-rm-rf-gemini
    match: {type: run_shell_command}
    conditions: {param_matches: {command: "rm\\\\s+-rf"}}
    risk_level: critical
    approval: block
  - name: shell
    match: {type: Bash}
    risk_level: low
    approval: auto
  - name: shell-gemini
    match: {type: run_shell_command}
    risk_level: low
    approval: auto
"""
EVENTS = {
    "claude-code": {"session_id": "s-1", "cwd": "/repo", "hook_event_name": "PreToolUse", "tool_name": "Bash",
                    "tool_input": {"command": "ls -la"}, "tool_use_id": "toolu_1"},
    "codex": {"session_id": "s-1", "turn_id": "t-1", "cwd": "/repo", "hook_event_name": "PreToolUse",
              "model": "gpt-5.5", "tool_name": "Bash", "tool_input": {"command": "rm -rf build"},
              "tool_use_id": "call_1"},
    "gemini": {"session_id": "g-1", "cwd": "/repo", "hook_event_name": "BeforeTool",
               "tool_name": "run_shell_command", "tool_input": {"command": "ls"}},
}
EXPECT = {"claude-code": '"allow"', "codex": '"deny"', "gemini": '"allow"'}


def timed(argv: list[str], stdin: bytes, env: dict[str, str]
          ) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Wall seconds, child CPU seconds, and the finished process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def series(argv: list[str], stdin: bytes, env: dict[str, str], n: int, check: str | None = None) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(n):
        wall, cpu, proc = timed(argv, stdin, env)
        if proc.returncode != 0 or (check is not None and check.encode() not in proc.stdout):
            raise SystemExit(f"unexpected answer from {' '.join(argv[:6])}: exit {proc.returncode}\n"
                             f"{proc.stdout[:300]!r}\n{proc.stderr[:300]!r}")
        walls.append(wall)
        cpus.append(cpu)
    walls.sort()
    return {"median": statistics.median(walls), "p90": walls[min(n - 1, int(n * 0.9))], "cpu": statistics.median(cpus)}


def row(name: str, s: dict[str, float], floor: float | None = None) -> str:
    extra = f"{(s['median'] - floor) * 1000:+7.1f}" if floor is not None else "      -"
    return f"| {name:<44} | {s['median'] * 1000:7.1f} | {s['p90'] * 1000:7.1f} | {s['cpu'] * 1000:7.1f} | {extra} |"


def start_server(tmp: Path, policy: list[Path], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "aegis_cli", "serve", "--port", "0", "--no-watch",
            "--audit-db", str(tmp / "serve.db")]
    for p in policy:
        argv += ["-p", str(p)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"serving on (http://\S+)", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("aegis serve did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="calls per row (default 20)")
    ap.add_argument("--no-serve", action="store_true", help="skip the server rows")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="aegis-bench-hooks-") as d:
        tmp = Path(d)
        (tmp / "agents.yaml").write_text(RULES)
        policy = [ROOT / "examples" / "policy.yaml", tmp / "agents.yaml"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
        env["XDG_CACHE_HOME"] = str(tmp / "cache")
        opts = [a for p in policy for a in ("-p", str(p))]
        print(f"{py} ({sys.version.split()[0]}), {args.n} cold calls each, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}\n")
        print(f"| {'command':<44} | {'median':>7} | {'p90':>7} | {'cpu':>7} | {'added':>7} |")
        print(f"|{'-' * 46}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
        bare = series([py, "-c", "pass"], b"", env, args.n)
        print(row("python -c pass (bare interpreter)", bare), flush=True)
        for agent, event in EVENTS.items():
            stdin = json.dumps(event).encode()
            db = tmp / f"{agent}.db"
            argv = [py, "-m", "aegis_cli", "hook", agent, *opts, "--audit-db", str(db)]
            series(argv, stdin, env, 1, EXPECT[agent])  # creates the trail and the cache entry
            s = series(argv, stdin, env, args.n, EXPECT[agent])
            print(row(f"aegis hook {agent}", s, bare["median"]), flush=True)
        agent = "claude-code"
        slow = [py, "-c", "import sys; from aegis_cli.cli.root import app; sys.argv[0] = 'aegis'; app()",
                "hook", agent, *opts, "--audit-db", str(tmp / "typer.db")]
        s = series(slow, json.dumps(EVENTS[agent]).encode(), env, args.n, EXPECT[agent])
        print(row(f"aegis hook {agent}, typer path (before)", s, bare["median"]), flush=True)
        if not args.no_serve:
            serve_rows(tmp, policy, env, args.n)
        for agent in (*EVENTS, "typer"):
            db = tmp / ("typer.db" if agent == "typer" else f"{agent}.db")
            out = subprocess.run([py, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(db)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"{db.name}: {out.stdout}{out.stderr}")
        print("\nevery answer checked; every trail verifies (aegis audit verify)")


def serve_rows(tmp: Path, policy: list[Path], env: dict[str, str], n: int) -> None:
    curl = shutil.which("curl")
    if curl is None:
        print("(curl not found: server rows skipped)")
        return
    proc, url = start_server(tmp, policy, env)
    try:
        health = series([curl, "-sf", "--max-time", "10", url + "/healthz"], b"", env, n)
        print(row("curl GET /healthz (aegis serve)", health))
        for agent, event in EVENTS.items():
            argv = [curl, "-sf", "--max-time", "10", "-H", "Content-Type: application/json", "--data-binary", "@-",
                    f"{url}/api/v1/hooks/{agent}"]
            stdin = json.dumps(event).encode()
            series(argv, stdin, env, 1, EXPECT[agent])
            s = series(argv, stdin, env, n, EXPECT[agent])
            print(row(f"curl POST /api/v1/hooks/{agent}", s, health["median"]), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    out = subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(tmp / "serve.db")],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"serve.db: {out.stdout}{out.stderr}")


if __name__ == "__main__":
    main()
