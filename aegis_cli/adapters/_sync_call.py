"""``runtime.call`` from synchronous framework code, with the tool running in the caller's thread.

Adapters of sync APIs (an ``httpx.Client``'s transport, Playwright's sync ``Page``, LangChain's
``invoke``) go through here, whatever the thread they are called from:

- no loop runs in this thread: ``aegis_cli.runtime.sync.call_here`` (what ``Runtime.call_sync``
  does): the call runs on a loop kept for this thread, stepped by hand unless it suspends (~8 us
  for an ``auto`` call); the tool runs with no loop running, as without aegis;
- a loop runs here but this code is not one of its tasks (Playwright's sync API drives its own loop
  from a greenlet): the coroutine is stepped by hand; it only suspends while an approval is asked,
  and then ``wait(awaitable)`` gives the running loop turns until that is settled;
- a loop runs here and there is no ``wait`` (sync code called from a coroutine): the whole call,
  tool included, runs on a helper thread with its own loop, since this thread's loop is blocked;
  in a copy of the caller's context, as the tool would see it without aegis (LangGraph's config
  and stream writer live in context variables).

Every path is ``runtime.call`` itself: decide, audit, approve, run, audit the outcome; fail closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from asyncio import events
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aegis_cli.runtime.sync import call_here

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.engine.models import Action
    from aegis_cli.runtime.core import Result, Runtime

Wait = Callable[[Awaitable[Any] | None], None]


def call_sync(runtime: Runtime, action: Action, fn: Callable[..., Any], /, *args: Any,
              source: dict[str, Any], wait: Wait | None = None, **kwargs: Any) -> Result:
    """``runtime.call(action, fn, *args, **kwargs)`` from sync code; ``fn`` runs in this thread
    unless this thread's loop is busy running the caller (see the module docstring)."""
    if events._get_running_loop() is None:
        return call_here(runtime, action, fn, args, kwargs, source)
    if wait is not None:
        return _step(runtime.call(action, fn, *args, source=source, **kwargs), wait)
    context = contextvars.copy_context()  # a new thread starts with an empty one
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aegis-adapter") as pool:
        return pool.submit(context.run, asyncio.run,
                           runtime.call(action, fn, *args, source=source, **kwargs)).result()


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
