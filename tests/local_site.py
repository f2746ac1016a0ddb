"""What the httpx, MCP and Playwright adapter tests share: a real HTTP site on 127.0.0.1 that counts
every request it gets, a scripted approver (a person who says yes, no, or nothing), and the audit
checks (records read back, ``aegis audit verify`` run as a user would).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aegis_cli import Action, ApprovalAnswer, Decision

PAGES = {
    "/": """<!doctype html><title>home</title>
<a id="next" href="/next">next</a>
<button id="go" onclick="fetch('/clicked', {method: 'POST'}); window.clicked = (window.clicked || 0) + 1">go</button>
<input id="name"><input id="agree" type="checkbox">
<select id="colour"><option value="red">red</option><option value="blue">blue</option></select>
<input id="upload" type="file">""",
    "/next": "<!doctype html><title>next</title><p>next page</p>",
    "/admin": "<!doctype html><title>admin</title><p>admin page</p>",
}


@dataclass
class Hit:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Site:
    """A live site: ``url``, and ``hits``, every request it answered, in order."""

    url: str
    hits: list[Hit] = field(default_factory=list)

    def paths(self, method: str | None = None) -> list[str]:
        return [h.path for h in self.hits if method is None or h.method == method]


@contextmanager
def local_site() -> Iterator[Site]:
    site = Site("")
    with serve(site, PAGES.get):
        yield site


@contextmanager
def serve(site: Site, page_for: Callable[[str], str | None]) -> Iterator[None]:
    """Serve ``site`` on a free port: a GET of a path ``page_for`` knows gets that HTML, ``/redirect?to=X``
    a 302 to X, anything else (any method) a JSON echo of method and path; every request is a ``Hit``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            site.hits.append(Hit(self.command, self.path, body, {k.lower(): v for k, v in self.headers.items()}))
            path, _, query = self.path.partition("?")
            if path == "/redirect":  # /redirect?to=/somewhere
                self.send_response(302)
                self.send_header("location", query.removeprefix("to="))
                self.send_header("content-length", "0")
                self.end_headers()
                return
            html = page_for(path) if self.command == "GET" else None
            if html is not None:
                data, kind = html.encode(), "text/html"
            else:
                data, kind = json.dumps({"method": self.command, "path": self.path}).encode(), "application/json"
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


class Approver:
    """A person asked through the runtime: says ``answer`` (True/False) after a moment, or, with
    ``answer=None``, never answers (``ask()`` then times out after ``timeout`` seconds).
    ``on_ask(action)`` runs when asked: tests use it to check that nothing ran yet."""

    def __init__(self, answer: bool | None, timeout: float = 10.0, on_ask: Any = None) -> None:
        self.answer = answer
        self.timeout = timeout
        self.on_ask = on_ask
        self.asked: list[Action] = []

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        self.asked.append(action)
        if self.on_ask is not None:
            self.on_ask(action)
        if self.answer is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(0.05)
        if self.answer:
            return ApprovalAnswer.approve("tester", "looks fine")
        return ApprovalAnswer.deny("tester", "not today")


def audit_records(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        return [json.loads(body) for (body,) in conn.execute("SELECT body FROM audit ORDER BY id")]


def decisions(db: Path) -> list[dict[str, Any]]:
    return [r for r in audit_records(db) if r["kind"] == "decision"]


def events_for(db: Path, decision_id: int, kind: str) -> list[dict[str, Any]]:
    return [r for r in audit_records(db) if r["kind"] == kind and r.get("decision_id") == decision_id]


def verify_cli(db: Path) -> subprocess.CompletedProcess[str]:
    """``aegis audit verify --audit-db FILE``, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "aegis_cli", "audit", "verify", "--audit-db", str(db)],
                          capture_output=True, text=True, timeout=60)
