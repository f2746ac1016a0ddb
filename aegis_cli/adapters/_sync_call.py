"""``runtime.call`` from synchronous framework code, with the tool running in the caller's thread.

``Runtime.call_sync`` starts a fresh event loop per call (``asyncio.run``, ~150 us) and cannot run
where a loop is already running in the thread. Adapters of sync APIs (an ``httpx.Client``'s
transport, Playwright's sync ``Page``, LangChain's ``invoke``) need neither cost nor limit, so they
go through here:

- no loop runs in this thread: the call's coroutine is stepped by hand, with a loop kept for this
  thread set as the running one so asyncio calls inside it work. An ``auto`` call of a sync tool
  never suspends, so it finishes in that one step (~8 us; ``run_until_complete`` adds ~12 us of
  task and loop turns to each call). If it suspends (an approval is asked), the rest runs as a
  task of that loop until it is done. The tool itself runs with no loop running, as it would
  without aegis, so a sync tool that calls ``asyncio.run`` still can. An async ``fn`` runs as a
  task from the start, since its code may need one (``asyncio.timeout``);
- a loop runs here but this code is not one of its tasks (Playwright's sync API drives its own loop
  from a greenlet): the coroutine is stepped by hand; it only suspends while an approval is asked,
  and then ``wait(awaitable)`` gives the running loop turns until that is settled;
- a loop runs here and there is no ``wait`` (sync code called from a coroutine): the whole call,
  tool included, runs on a helper thread with its own loop, since this thread's loop is blocked.

Every path is ``runtime.call`` itself: decide, audit, approve, run, audit the outcome; fail closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from asyncio import events
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.engine.models import Action
    from aegis_cli.runtime.core import Result, Runtime

Wait = Callable[[Awaitable[Any] | None], None]


class _ThreadLoop(threading.local):
    loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        if self.loop is None or self.loop.is_closed():
            self.loop = asyncio.new_event_loop()
        return self.loop

    def __del__(self) -> None:  # the thread is gone: so is its loop
        if self.loop is not None and not self.loop.is_closed():
            self.loop.close()


_loops = _ThreadLoop()


def call_sync(runtime: Runtime, action: Action, fn: Callable[..., Any], /, *args: Any,
              source: dict[str, Any], wait: Wait | None = None, **kwargs: Any) -> Result:
    """``runtime.call(action, fn, *args, **kwargs)`` from sync code; ``fn`` runs in this thread
    unless this thread's loop is busy running the caller (see the module docstring)."""
    if events._get_running_loop() is None:
        loop = _loops.get()
        if inspect.iscoroutinefunction(fn):
            return loop.run_until_complete(runtime.call(action, fn, *args, source=source, **kwargs))
        run = functools.partial(_without_loop, fn)
        return _run_on(loop, runtime.call(action, run, *args, source=source, **kwargs))
    if wait is not None:
        return _step(runtime.call(action, fn, *args, source=source, **kwargs), wait)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aegis-adapter") as pool:
        return pool.submit(asyncio.run, runtime.call(action, fn, *args, source=source, **kwargs)).result()


def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Result]) -> Result:
    """``loop.run_until_complete(coro)``, without the task and loop turns when ``coro`` never suspends."""
    events._set_running_loop(loop)
    try:
        pending = coro.send(None)
    except StopIteration as done:
        return done.value
    finally:
        events._set_running_loop(None)
    return loop.run_until_complete(_finish(coro, pending))


async def _finish(coro: Coroutine[Any, Any, Result], pending: Any) -> Result:
    return await _Resumed(coro, pending)


class _Resumed:
    """Awaiting it carries on a coroutine that suspended on ``pending`` outside any task, as part of
    the awaiting task: each future it waits on is handed to that task, and whatever is thrown into
    the task (a cancellation) is thrown into the coroutine, as a task running it would do."""

    def __init__(self, coro: Coroutine[Any, Any, Result], pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, None, Result]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                yield pending
            except BaseException as exc:
                step: Callable[[Any], Any] = coro.throw
                value: Any = exc
            else:
                step, value = coro.send, None
            try:
                pending = step(value)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


def _without_loop(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with no event loop running in this thread, as without aegis."""
    loop = events._get_running_loop()
    events._set_running_loop(None)
    try:
        return fn(*args, **kwargs)
    finally:
        events._set_running_loop(loop)


def _step(coro: Coroutine[Any, Any, Result], wait: Wait) -> Result:
    """Run ``coro`` as a task would, outside any task: each time it suspends on a future (``None``
    means "let the loop take a turn"), ``wait`` returns once that future is settled."""
    try:
        pending = coro.send(None)
        while True:
            try:
                wait(pending)
            except BaseException as exc:  # the wait itself was interrupted: the call must know
                pending = coro.throw(exc)
            else:
                pending = coro.send(None)
    except StopIteration as done:
        return done.value
