"""Running ``Runtime.call`` from synchronous code, on an event loop kept for the calling thread.

``asyncio.run`` per call costs ~150-450 us (a new loop, its selector and self-pipe, then closing
them) and ``run_until_complete`` on a kept loop still ~12 us (a task and two loop turns). Neither
is needed for the usual call: an ``auto`` decision on a sync tool never suspends. So the call's
coroutine is stepped by hand, with this thread's loop set as the running one so asyncio calls
inside it work; if it does suspend (an approval is asked), the rest runs as a task of that loop
until it is done. The tool runs with no loop running, as it would be called without aegis (a sync
tool that calls ``asyncio.run`` still can). An async tool runs as a task from the start, since its
code may need one (``asyncio.timeout``).

Only for threads where no event loop is running; the caller checks.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from asyncio import events
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.engine.models import Action
    from aegis_cli.runtime.core import Result, Runtime


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


def call_here(runtime: Runtime, action: Action, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any], source: Any) -> Result:
    """``runtime.call(action, fn, *args, source=source, **kwargs)`` in this thread, which runs no loop."""
    loop = _loops.get()
    if loop.is_running():
        # A governed tool calling another from inside this thread's loop (it runs tools with no
        # loop running): the inner call gets a loop of its own while it lasts.
        inner = asyncio.new_event_loop()
        try:
            return _call_on(inner, runtime, action, fn, args, kwargs, source)
        finally:
            inner.close()
    return _call_on(loop, runtime, action, fn, args, kwargs, source)


def _call_on(loop: asyncio.AbstractEventLoop, runtime: Runtime, action: Action, fn: Callable[..., Any],
             args: tuple[Any, ...], kwargs: dict[str, Any], source: Any) -> Result:
    if inspect.iscoroutinefunction(fn):
        return loop.run_until_complete(runtime.call(action, fn, *args, source=source, **kwargs))
    coro = runtime.call(action, functools.partial(_without_loop, fn), *args, source=source, **kwargs)
    events._set_running_loop(loop)
    try:
        pending = coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
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
