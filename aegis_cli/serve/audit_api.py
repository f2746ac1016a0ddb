"""The audit trail over HTTP: pages of records (the filters of ``tail-audit``) and a live stream.

Reading goes through the trail's reader (``aegis_cli.audit.trail.open_reader``: SQLite or
PostgreSQL) on one read-only connection (reads never block the writer). The stream is server-sent
events; one poller per server watches the reader's ``version()`` (SQLite's ``PRAGMA data_version``,
PostgreSQL's chain head), so records committed by *any* process (a shell answering an approval,
``aegis evaluate --record``, another server) appear, and idle streams cost one page read per tick.
Reading the trail needs the ``approve`` role: it holds every agent's parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aegis_cli.serve.auth import Role
from aegis_cli.serve.http import HTTPProblem, authorize, json_response, only_params, query_int

POLL_INTERVAL = 0.2
KEEPALIVE = 15.0
STREAM_BATCH = 500
MAX_STREAMS = 64  # event streams at once; more are told to come back (429)


def routes() -> list[Route]:
    return [
        Route("/api/v1/audit", list_audit, methods=["GET"]),
        Route("/api/v1/audit/stream", stream_audit, methods=["GET"]),
    ]


class AuditReader:
    """One read-only connection, shared under a lock (reads are short), and a change signal."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: Any = None
        self._lock = threading.Lock()
        self._changed = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self.listeners = 0

    def _trail(self) -> Any:
        if self._db is None:
            from aegis_cli.audit.trail import open_reader

            self._db = open_reader(self.path)
        return self._db

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One read; after a failure the connection is dropped, so the next read reconnects."""
        try:
            return getattr(self._trail(), method)(*args, **kwargs)
        except Exception:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._db.close()
                self._db = None
            raise

    def page(self, filters: Any, after: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        from aegis_cli.audit import query

        with self._lock:
            got = list(self._call("rows", filters, after_id=after, limit=limit + 1))
            if len(got) > limit:
                got = got[:limit]
                return [query.record(r) for r in got], got[-1][0]  # more to come
            return [query.record(r) for r in got], None

    def head(self) -> int:
        with self._lock:
            return int(self._call("head")[0])

    def data_version(self) -> int:
        with self._lock:
            return int(self._call("version"))

    async def changed(self, timeout: float) -> None:
        """Wait until something was committed (or ``timeout`` passed)."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _poll(self) -> None:
        seen = await run_in_threadpool(self.data_version)
        while self.listeners > 0:
            await asyncio.sleep(POLL_INTERVAL)
            version = await run_in_threadpool(self.data_version)
            if version != seen:
                seen = version
                event, self._changed = self._changed, asyncio.Event()
                event.set()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _reader(request: Request) -> AuditReader:
    state = request.app.state.aegis
    reader = state.audit_reader
    if reader is None:
        reader = state.audit_reader = AuditReader(state.audit_db)
    return reader


def _filters(request: Request, *extra: str) -> Any:
    from aegis_cli.audit.query import Filters, parse_time

    q = request.query_params
    only_params(request, *extra, "kind", "approval", "agent", "type", "since", "until", "decision_id")
    for name in ("kind", "approval", "agent", "type", "since", "until"):
        if name in q and not q[name]:
            raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}' is empty")
    for name in ("agent", "type"):
        pattern = q.get(name)
        if pattern:
            _check_glob(name, pattern)
    try:
        return Filters(
            approval=q.get("approval") or None, agent=q.get("agent") or None, type=q.get("type") or None,
            kind=q.get("kind") or None,
            since=parse_time(q["since"]) if q.get("since") else None,
            until=parse_time(q["until"]) if q.get("until") else None,
            decision_id=query_int(request, "decision_id", None, 0, 2**63 - 1),
        )
    except (ValueError, OverflowError) as exc:  # OverflowError: a duration reaching before year 1
        raise HTTPProblem(422, "invalid_parameter", str(exc)) from None


def _check_glob(name: str, pattern: str) -> None:
    from aegis_cli.engine.matching import GlobError, compile_glob

    if len(pattern) > 200:
        raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}' is longer than 200 characters")
    if any(c in "[]" or ord(c) < 0x20 or c == "\x7f" for c in pattern):
        # The API's filter globs are * and ? only (as its OpenAPI document says); no control characters.
        raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}' may use * and ? but not "
                          "brackets or control characters")
    try:
        compile_glob(pattern)
    except (GlobError, ValueError) as exc:
        raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}': {exc}") from None


async def list_audit(request: Request) -> Response:
    authorize(request, Role.APPROVE)
    filters = _filters(request, "after", "limit")
    after = query_int(request, "after", 0, 0, 2**63 - 1) or 0
    limit = query_int(request, "limit", 100, 1, 1000) or 100
    try:
        records, cursor = await run_in_threadpool(_reader(request).page, filters, after, limit)
    except Exception as exc:
        raise HTTPProblem(503, "audit_unavailable", f"cannot read the audit trail: {exc}") from None
    return json_response({"records": records, "next_cursor": cursor})


async def stream_audit(request: Request) -> Response:
    authorize(request, Role.APPROVE)
    filters = _filters(request, "after")
    if request.app.state.aegis.streaming >= MAX_STREAMS:
        raise HTTPProblem(429, "too_many_streams", f"{MAX_STREAMS} audit streams are already open; retry",
                          headers={"Retry-After": "5"})
    reader = _reader(request)
    after = query_int(request, "after", None, 0, 2**63 - 1)
    last_event = request.headers.get("last-event-id")
    if after is None and last_event and last_event.isdigit():
        after = int(last_event)
    if after is None:
        after = await run_in_threadpool(reader.head)
    return StreamingResponse(_events(request, reader, filters, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(request: Request, reader: AuditReader, filters: Any, after: int) -> AsyncIterator[bytes]:
    import json

    state = request.app.state.aegis
    reader.listeners += 1
    state.streaming += 1
    try:
        yield b"retry: 2000\n: aegis audit stream\n\n"
        idle = 0.0
        while not state.shutdown.is_set():
            records, more = await run_in_threadpool(reader.page, filters, after, STREAM_BATCH)
            if records:
                idle = 0.0
                chunks = []
                for rec in records:
                    data = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
                    chunks.append(f"id: {rec['id']}\nevent: record\ndata: {data}\n\n")
                    after = rec["id"]
                yield "".join(chunks).encode()
                if more is not None:
                    continue
            await reader.changed(1.0)
            idle += 1.0
            if idle >= KEEPALIVE:
                idle = 0.0
                yield b": keep-alive\n\n"
    finally:
        reader.listeners -= 1
        state.streaming -= 1
