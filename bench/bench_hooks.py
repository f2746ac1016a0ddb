"""Cold-call latency of ``aegis hook claude-code | codex | gemini``, beside the bare interpreter, and
of the same events posted to ``aegis serve`` with curl, beside a plain ``/healthz``.

    python bench/bench_hooks.py            # 20 calls of each
    python bench/bench_hooks.py -n 50

A hook is a new process per tool call, so every call here is one: ``aegis hook <agent> -p POLICY
--audit-db DB`` (the script beside this interpreter, as ``--print-settings`` installs it) with the
event on stdin, a real policy (examples/policy.yaml plus
coding-agent rules) and an SQLite audit trail that grows with every call, as an agent runs it.
``python -c pass`` is the floor any Python command pays. "typer path" is the same command
through the CLI framework and the normal loaders (no policy cache, sqlite-utils writer), what
every call cost before the hook path was made lean. Each row is the median (and p90) of N wall-
clock times, plus the median CPU time (user + sys) of the child, which shared machines disturb less.

The server rows start ``aegis serve`` on a free loopback port and time ``curl`` processes, the
way the ``--print-settings --server`` hook command runs: each a new curl posting one event.
Every hook answer is checked (exit 0, the expected decision), and the trails are verified at the end.

Run it with the interpreter of a fresh venv (``python -m venv v && v/bin/pip install -e . &&
v/bin/python bench/bench_hooks.py``) to see what users see: site hooks of a shared interpreter
(a sandbox's ``.pth`` files, say) load modules into every process, the bare one included.
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


def aegis_command() -> list[str]:
    """What ``--print-settings`` installs: the ``aegis`` script beside this interpreter (else ``-m``)."""
    script = Path(sys.executable).with_name("aegis")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "aegis_cli"]


def interleaved(commands: dict[str, tuple[list[str], bytes, str | None]], env: dict[str, str],
                n: int) -> dict[str, dict[str, float]]:
    """``series`` of every command, one call of each per round, so drift falls on all alike."""
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(n):
        for name, (argv, stdin, check) in commands.items():
            wall, cpu, proc = timed(argv, stdin, env)
            if proc.returncode != 0 or (check is not None and check.encode() not in proc.stdout):
                raise SystemExit(f"unexpected answer from {name}: exit {proc.returncode}\n"
                                 f"{proc.stdout[:300]!r}\n{proc.stderr[:300]!r}")
            walls[name].append(wall)
            cpus[name].append(cpu)
    out = {}
    for name in commands:
        w = sorted(walls[name])
        out[name] = {"median": statistics.median(w), "p90": w[min(n - 1, int(n * 0.9))],
                     "cpu": statistics.median(cpus[name])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="calls per row (default 20)")
    ap.add_argument("--no-serve", action="store_true", help="skip the server rows")
    ap.add_argument("--instructions", action="store_true",
                    help="also count each command's instructions under valgrind (callgrind): the same figure "
                    "whatever else the machine is doing")
    args = ap.parse_args()
    py = sys.executable
    # As installed: pip writes every module's bytecode, so the hook never compiles source. A shell
    # with PYTHONDONTWRITEBYTECODE set (some sandboxes do) would otherwise time the compiler.
    subprocess.run([py, "-m", "compileall", "-q", str(ROOT / "aegis_cli")], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="aegis-bench-hooks-") as d:
        tmp = Path(d)
        (tmp / "agents.yaml").write_text(RULES)
        policy = [ROOT / "examples" / "policy.yaml", tmp / "agents.yaml"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["XDG_CACHE_HOME"] = str(tmp / "cache")
        opts = [a for p in policy for a in ("-p", str(p))]
        aegis = aegis_command()
        print(f"{py} ({sys.version.split()[0]}), {args.n} cold calls each, interleaved, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}\nhook command: {' '.join(aegis)} hook <agent> ...\n")
        print(f"| {'command':<44} | {'median':>7} | {'p90':>7} | {'cpu':>7} | {'added':>7} |")
        print(f"|{'-' * 46}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
        commands: dict[str, tuple[list[str], bytes, str | None]] = {
            "python -c pass (bare interpreter)": ([py, "-c", "pass"], b"", None)}
        for agent, event in EVENTS.items():
            argv = [*aegis, "hook", agent, *opts, "--audit-db", str(tmp / f"{agent}.db")]
            commands[f"aegis hook {agent}"] = (argv, json.dumps(event).encode(), EXPECT[agent])
        slow = [py, "-c", "import sys; from aegis_cli.cli.root import app; sys.argv[0] = 'aegis'; app()",
                "hook", "claude-code", *opts, "--audit-db", str(tmp / "typer.db")]
        commands["aegis hook claude-code, typer path (before)"] = (
            slow, json.dumps(EVENTS["claude-code"]).encode(), EXPECT["claude-code"])
        for argv, stdin, check in commands.values():  # creates the trails and the cache entry
            series(argv, stdin, env, 1, check)
        results = interleaved(commands, env, args.n)
        bare = results["python -c pass (bare interpreter)"]
        for name, s in results.items():
            print(row(name, s, None if s is bare else bare["median"]), flush=True)
        if not args.no_serve:
            serve_rows(tmp, policy, env, args.n)
        if args.instructions:
            instruction_rows(commands, env)
        for agent in (*EVENTS, "typer"):
            db = tmp / ("typer.db" if agent == "typer" else f"{agent}.db")
            out = subprocess.run([py, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(db)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"{db.name}: {out.stdout}{out.stderr}")
        print("\nevery answer checked; every trail verifies (aegis audit verify)")


def instruction_rows(commands: dict[str, tuple[list[str], bytes, str | None]], env: dict[str, str]) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("\n(valgrind not found: no instruction counts)")
        return
    print(f"\n| {'command':<44} | {'instructions':>14} | {'added':>14} |")
    print(f"|{'-' * 46}|{'-' * 16}|{'-' * 16}|")
    floor = None
    for name, (argv, stdin, _) in commands.items():
        proc = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv], input=stdin,
                              capture_output=True, env=env)
        found = re.search(rb"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or found is None:
            raise SystemExit(f"valgrind on {name}: exit {proc.returncode}\n{proc.stderr[-500:]!r}")
        count = int(found.group(1))
        added = f"{count - floor:+14,}" if floor is not None else f"{'-':>14}"
        floor = count if floor is None else floor
        print(f"| {name:<44} | {count:>14,} | {added} |", flush=True)


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
