"""``runtime.call`` from synchronous framework code, with the tool running in the caller's thread.

``Runtime.call_sync`` starts a fresh event loop per call (``asyncio.run``, ~150 us) and cannot run
where a loop is already running in the thread. Adapters of sync APIs (an ``httpx.Client``'s
transport, Playwright's sync ``Page``) need neither cost nor limit, so they go through here:

- no loop runs in this thread: the call runs on a loop kept for this thread (~20 us a call);
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
import threading
from collections.abc import Awaitable, Callable, Coroutine
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
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _loops.get().run_until_complete(runtime.call(action, fn, *args, source=source, **kwargs))
    if wait is not None:
        return _step(runtime.call(action, fn, *args, source=source, **kwargs), wait)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aegis-adapter") as pool:
        return pool.submit(asyncio.run, runtime.call(action, fn, *args, source=source, **kwargs)).result()


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
