"""Group commit: one thread owns the audit logger; concurrent decisions share one transaction.

A request hands its decisions to the writer and awaits them. The writer thread takes everything
queued since its last commit, writes all decisions in one ``record_decisions`` transaction, and
wakes every waiting request with one loop callback. Under load, batches grow by themselves (the
queue fills while a commit runs), so the cost of a commit is shared by the requests it carries;
when idle, a decision is written on its own at once. Either way a request is only answered after
its decision is durable, and if the write fails the request fails: nothing is answered unaudited.

Other writes (policy changes) go through the same thread, in order, so SQLite sees one writer.

``submit`` is ``record`` for the server's own HTTP protocol (serve.protocol): a callback instead of
a future, and the submissions of one event-loop pass handed over together, so a busy loop wakes
the writer thread once per pass rather than once per request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("aegis.serve")

MAX_BATCH = 2048

Entry = tuple[Any, Any, dict[str, Any] | None]  # (action, decision, source) as record_decisions takes them


class WriterClosed(RuntimeError):
    """The writer has stopped (the server is shutting down); nothing more can be audited."""


Done = Callable[[Any, BaseException | None], None]  # (ids, None) or (None, error), on the loop


class _Item:
    __slots__ = ("entries", "fn", "future", "loop")

    def __init__(self, entries: Sequence[Entry] | None, fn: Callable[[Any], Any] | None,
                 loop: asyncio.AbstractEventLoop | None, future: Any) -> None:
        self.entries = entries
        self.fn = fn
        self.loop = loop  # None: ``future`` is a concurrent.futures.Future
        self.future = future  # an asyncio future, a concurrent one, or a ``Done`` callback


_STOP = object()


class AuditWriter:
    """Run ``open_logger()`` on a dedicated thread and serialise every write through it."""

    def __init__(self, open_logger: Callable[[], Any], *, max_batch: int = MAX_BATCH,
                 on_commit: Callable[[Sequence[Entry], float], None] | None = None) -> None:
        self._open_logger = open_logger
        self.on_commit = on_commit  # (entries, seconds) after each committed batch: the metrics
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0  # commits made, and decisions written: for /healthz and the benchmark
        self.decisions = 0
        self._gathered: dict[asyncio.AbstractEventLoop, list[_Item]] = {}  # submit(): this loop pass's

    def start(self) -> None:
        """Open the logger on the writer thread; raises whatever opening raised."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="aegis-audit-writer", daemon=True)
        self._thread.start()
        ready.result()

    async def record(self, entries: Sequence[Entry]) -> list[int]:
        """Write ``entries`` (in one transaction with whatever else is queued); their record ids."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(_Item(entries, None, loop, future))
        return await future

    def submit(self, entries: Sequence[Entry], done: Done) -> None:
        """``record`` with a callback, from code running on an event loop: ``done(ids, None)`` once
        ``entries`` are committed, or ``done(None, error)``, called on that loop. Raises
        ``WriterClosed`` at once if the writer is closed.

        What is submitted during one pass of the loop is handed to the writer thread together at
        the end of the pass (each submission still its own item: a failing one fails alone).
        """
        if self._closed:
            raise WriterClosed("the audit writer is closed")
        loop = asyncio.get_running_loop()
        item = _Item(entries, None, loop, done)
        gathered = self._gathered.get(loop)
        if gathered is None:
            gathered = self._gathered[loop] = [item]
            loop.call_soon(self._hand_over, loop)
        else:
            gathered.append(item)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._gathered.pop(loop)
        try:
            self._put(items)
        except WriterClosed as exc:  # closed since they were submitted: nothing of theirs was written
            _settle([(item.future, None, exc) for item in items])

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(logger)`` on the writer thread, in order with the decisions queued before it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(_Item(None, fn, loop, future))
        return await future

    def call_sync(self, fn: Callable[[Any], Any], timeout: float | None = 30.0) -> Any:
        """``call`` for threads outside the event loop (the policy watcher)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._put(_Item(None, fn, None, future))
        return future.result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, close the logger and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _put(self, item: _Item | list[_Item]) -> None:
        with self._lock:  # so nothing slips in behind _STOP and waits forever
            if self._closed:
                raise WriterClosed("the audit writer is closed")
            self._queue.put(item)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            logger = self._open_logger()
        except BaseException as exc:
            self._closed = True
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stopping = False
            while not stopping:
                items: list[Any] = []
                got = self._queue.get()
                while True:
                    if type(got) is list:  # one loop pass's submissions
                        items.extend(got)
                    else:
                        items.append(got)
                    if len(items) >= self._max_batch:
                        break
                    try:
                        got = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if _STOP in items:
                    stopping = True
                    items = [i for i in items if i is not _STOP]
                self._process(logger, items)
        finally:
            close = getattr(logger, "close", None)
            if close is not None:
                close()

    def _process(self, logger: Any, items: list[_Item]) -> None:
        results: list[tuple[_Item, Any, BaseException | None]] = []
        group: list[_Item] = []
        for item in items:
            if item.entries is not None:
                group.append(item)
                continue
            self._flush(logger, group, results)
            group = []
            try:
                results.append((item, item.fn(logger), None))  # type: ignore[misc]
            except Exception as exc:
                results.append((item, None, exc))
        self._flush(logger, group, results)
        _deliver(results)

    def _flush(self, logger: Any, group: list[_Item], results: list[tuple[_Item, Any, BaseException | None]]) -> None:
        if not group:
            return
        entries = [e for item in group for e in item.entries]  # type: ignore[union-attr]
        started = time.perf_counter()
        try:
            ids = logger.record_decisions(entries)
            if len(ids) != len(entries):
                raise RuntimeError(f"audit logger returned {len(ids)} ids for {len(entries)} decisions")
        except Exception as exc:
            if len(group) > 1:
                # One request's entries must not sink the others': write each on its own.
                for item in group:
                    self._flush(logger, [item], results)
                return
            results.append((group[0], None, exc))  # this request fails: it is never answered unaudited
            return
        self.batches += 1
        self.decisions += len(entries)
        if self.on_commit is not None:
            with contextlib.suppress(Exception):  # counting must never fail a committed batch
                self.on_commit(entries, time.perf_counter() - started)
        start = 0
        for item in group:
            n = len(item.entries)  # type: ignore[arg-type]
            results.append((item, list(ids[start:start + n]), None))
            start += n


def _deliver(results: list[tuple[_Item, Any, BaseException | None]]) -> None:
    """Wake the waiters: one callback per event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
    for item, value, exc in results:
        if item.loop is None:
            if exc is None:
                item.future.set_result(value)
            else:
                item.future.set_exception(exc)
        else:
            by_loop.setdefault(item.loop, []).append((item.future, value, exc))
    for loop, done in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, done)


def _settle(done: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, value, exc in done:
        if not isinstance(future, asyncio.Future):  # submit()'s callback
            try:
                future(value, exc)
            except Exception:  # one broken answer must not keep the others waiting
                log.exception("internal error answering an audited request")
            continue
        if future.done():  # the request was cancelled (client went away); its record stands
            continue
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
