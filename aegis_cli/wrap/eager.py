"""Running a coroutine at once, up to the point where it first has to wait.

``asyncio.ensure_future`` only schedules a coroutine: it starts on the event loop's next turn, and
a task is made even for one that never waits. On the hot paths of ``wrap`` (a decision that needs
no person, audited on the loop's thread; a request that is written to an idle connection before
its answer is awaited) that turn and that task cost more than the work itself
(``bench/bench_wrap_proxy.py``, ``bench/bench_wrap_mcp.py --http``). Python 3.12's eager tasks do
the same as ``start`` here.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable
from typing import Any


def start(awaitable: Awaitable[Any]) -> tuple[bool, Any]:
    """Run a coroutine until it first waits: ``(True, its result)`` when it never had to, else
    ``(False, a task running the rest)``. Its exceptions before that raise here. Anything that is not
    a coroutine is simply scheduled."""
    if not isinstance(awaitable, types.CoroutineType):
        return False, asyncio.ensure_future(awaitable)
    try:
        waiting_on = awaitable.send(None)
    except StopIteration as stop:
        return True, stop.value
    # what ensure_future does with a coroutine, without its checks (four Python calls) on the way
    return False, asyncio.get_running_loop().create_task(_rest(awaitable, waiting_on))


async def _rest(coro: Any, waiting_on: Any) -> Any:
    return await _resume(coro, waiting_on)


@types.coroutine
def _resume(coro: Any, waiting_on: Any) -> Any:
    """Drive ``coro`` on from where ``start`` left it: the task waits on what it yielded (the future it
    awaits), then sends or throws into it exactly as it would have from the start."""
    value = waiting_on
    while True:
        try:
            sent = yield value
        except BaseException as exc:
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value
