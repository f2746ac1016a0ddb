"""Checks in front of every request that no endpoint should have to remember.

- Without tokens the server trusts whoever reaches it, which is only safe while that is this
  machine: the Host header must then name loopback, so a web page cannot reach the server through
  DNS rebinding (a hostile name that resolves to 127.0.0.1).
- State-changing requests from another origin are refused: a page on another site cannot make a
  browser approve an action, with or without a token.
- Every response says nosniff and no-store; decisions and approvals must not sit in caches.
"""

from __future__ import annotations

import ipaddress
import json
from time import perf_counter
from typing import Any

from aegis_cli.serve.http import RESPONSE_HEADERS

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_EXTRA_HEADERS = [h for h in RESPONSE_HEADERS if h[0] != b"cache-control"]


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(host: str) -> bool:
    """Whether a Host header names this machine: localhost, *.localhost, or a loopback address."""
    name = _host_name(host.strip().lower())
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:  # an address, not a name that merely starts like one (127.0.0.1.evil.example)
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """Pure ASGI middleware (no per-request objects beyond a header scan)."""

    def __init__(self, app: Any, *, loopback_only: bool, fast: dict[tuple[str, str], Any] | None = None,
                 metrics: Any = None) -> None:
        self.app = app
        self.metrics = metrics  # serve.metrics.Metrics: each request's duration
        self.loopback_only = loopback_only
        self.fast = fast or {}  # (method, path) -> plain ASGI app that sets RESPONSE_HEADERS itself
        self._loopback: dict[str, bool] = {}  # Host header -> is_loopback_host: a client sends the same one

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics is None:
            await self._guarded(scope, receive, send)
            return
        started = perf_counter()
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.metrics.request(scope["path"], perf_counter() - started)

    def problem(self, method: str, headers: list[tuple[bytes, bytes]]) -> str | None:
        """Why a request must be refused (403), or None. (serve.protocol asks this too.)"""
        host = origin = fetch_site = ""
        for key, value in headers:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"sec-fetch-site":
                fetch_site = value.decode("latin-1")
        if self.loopback_only:
            loopback = self._loopback.get(host)
            if loopback is None:
                if len(self._loopback) >= 256:
                    self._loopback.clear()
                loopback = self._loopback[host] = is_loopback_host(host)
            if not loopback:
                return "this server has no tokens configured and answers only requests addressed to loopback"
        if method not in _SAFE_METHODS:
            if fetch_site == "cross-site" or (origin and origin != "null" and _origin_host(origin) != host.lower()):
                return "cross-origin request refused"
            if origin == "null":
                return "request from an opaque origin refused"
        return None

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        problem = self.problem(scope["method"], scope["headers"])
        if problem is not None:
            await _refuse(send, problem)
            return
        fast = self.fast.get((scope["method"], scope["path"]))
        if fast is not None:
            await fast(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in _EXTRA_HEADERS if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _origin_host(origin: str) -> str:
    _, _, rest = origin.partition("://")
    return rest.rstrip("/").lower()


def refusal(message: str) -> bytes:
    return json.dumps({"error": "forbidden", "message": message}).encode()


async def _refuse(send: Any, message: str) -> None:
    body = refusal(message)
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *RESPONSE_HEADERS]})
    await send({"type": "http.response.body", "body": body})
