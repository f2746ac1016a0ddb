"""A real ``aegis serve`` process for the serve tests (no tests in this module).

The server is started as ``python -m aegis_cli serve ... --port 0``; it binds a free port and
announces it on stderr, so tests never race for a port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from pg import stored_text  # noqa: F401  (the serve tests import it from here)

from aegis_cli.audit import open_reader, query

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = ROOT / "examples" / "policy.yaml"
_ANNOUNCE = re.compile(r"serving on (http://\S+:(\d+))")


class ServeProcess:
    """``aegis serve`` in a subprocess; ``url`` once started, ``stderr`` collected as it comes."""

    def __init__(self, tmp: Path, *, policy: Path | str = EXAMPLE_POLICY, args: list[str] | None = None,
                 env: dict[str, str] | None = None, audit_db: Path | str | None = None) -> None:
        self.tmp = tmp
        self.policy = Path(policy)
        self.audit_db = audit_db or tmp / "audit.db"
        self.args = args or []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
        self.env.update(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.url = ""
        self.port = 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "aegis_cli", "serve", "-p", str(self.policy), "--port", "0",
                "--audit-db", str(self.audit_db), *self.args]

    def start(self, timeout: float = 30) -> ServeProcess:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env, cwd=self.tmp)
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                m = _ANNOUNCE.search(line)
                if m and not ready.is_set():
                    self.url, self.port = m.group(1), int(m.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or not self.url:
            self.kill()
            raise RuntimeError("aegis serve did not start:\n" + "".join(self.lines))
        return self

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def aegis(*args: str, cwd: Path | None = None, input: str | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    return subprocess.run([sys.executable, "-m", "aegis_cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, input=input, timeout=timeout)


TOKENS = {"agent": "agent-token-0123456789abcdef", "approver": "approver-token-0123456789ab",
          "admin": "admin-token-0123456789abcdef"}


def tokens_file(tmp: Path) -> Path:
    path = tmp / "tokens.yaml"
    path.write_text(textwrap.dedent(f"""\
        tokens:
          - {{name: agent, role: evaluate, token: "{TOKENS['agent']}"}}
          - {{name: approver, role: approve, token: "{TOKENS['approver']}"}}
          - {{name: root, role: admin, token: "{TOKENS['admin']}"}}
        """))
    return path


def records(db: Path | str) -> dict[int, dict[str, Any]]:
    with open_reader(db) as trail:
        return {row[0]: query.record(row) for row in trail.rows()}


def trail_for(request: Any, tmp: Path) -> Path | str:
    """A module-scoped store for a parametrised server fixture: an SQLite file, or a fresh PostgreSQL trail."""
    if getattr(request, "param", "sqlite") == "postgres":
        return str(request.getfixturevalue("pg_cluster").fresh_trail())
    return tmp / "audit.db"
