"""Executors: what actually performs an action once the policy (and perhaps a person) allowed it.

The runtime knows nothing about Salesforce or shells; it hands allowed actions to an executor::

    class Executor(Protocol):
        async def execute(self, action: Action) -> Any: ...

``FunctionExecutor`` wraps a function, ``RoutingExecutor`` picks an executor by target glob.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from aegis_cli.engine.errors import AegisError
from aegis_cli.engine.matching import Glob, compile_glob
from aegis_cli.engine.models import Action


@runtime_checkable
class Executor(Protocol):
    """Performs an allowed action and returns its result; raising means the action failed."""

    async def execute(self, action: Action) -> Any:
        ...


class NoExecutorError(AegisError, LookupError):
    """No route of a ``RoutingExecutor`` matches the action's target."""


class FunctionExecutor:
    """Run ``fn(action)``; ``fn`` may be async or plain.

    A plain function runs in a worker thread (``in_thread=True``, the default) so that a slow one
    does not stall the event loop or other actions of a parallel plan. Python cannot stop a thread:
    when such an action is cancelled, its result is reported as cancelled and discarded, but the
    function runs to completion. Use an async function where cancellation must really stop the work.
    """

    def __init__(self, fn: Callable[[Action], Any], *, in_thread: bool = True) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionExecutor needs a callable, not {type(fn).__name__}")
        self.fn = fn
        self.in_thread = in_thread
        self._is_async = _is_async_callable(fn)

    async def execute(self, action: Action) -> Any:
        if self._is_async:
            return await self.fn(action)
        if self.in_thread:
            return await asyncio.to_thread(self.fn, action)
        result = self.fn(action)
        if inspect.isawaitable(result):  # a lambda returning a coroutine, say
            return await result
        return result

    def __repr__(self) -> str:
        return f"FunctionExecutor({getattr(self.fn, '__qualname__', self.fn)!r})"


class RoutingExecutor:
    """Send each action to the first route whose target glob matches (same globs as policies).

    ``routes`` maps a target glob to an executor or a function; ``default`` (optional) takes
    what no route matches, otherwise such an action fails with ``NoExecutorError``::

        RoutingExecutor({"salesforce": crm, "github*": gh, "prod-*": deployer}, default=log_only)
    """

    def __init__(self, routes: Mapping[str, Executor | Callable[[Action], Any]],
                 default: Executor | Callable[[Action], Any] | None = None) -> None:
        self.routes: list[tuple[Glob, Executor]] = [(compile_glob(pattern), as_executor(ex))
                                                    for pattern, ex in routes.items()]
        self.default = as_executor(default) if default is not None else None

    def route(self, action: Action) -> Executor:
        """The executor ``action`` goes to; raises ``NoExecutorError`` when there is none."""
        from aegis_cli.engine.matching import normalize

        target = normalize(action.target)
        for glob, executor in self.routes:
            if glob.test(target):
                return executor
        if self.default is not None:
            return self.default
        patterns = ", ".join(repr(g.pattern) for g, _ in self.routes) or "none"
        raise NoExecutorError(f"no executor for target {action.target!r} (routes: {patterns})")

    async def execute(self, action: Action) -> Any:
        return await self.route(action).execute(action)


def as_executor(obj: Executor | Callable[[Action], Any]) -> Executor:
    """An executor as-is; a function wrapped in ``FunctionExecutor``; anything else is a ``TypeError``."""
    execute = getattr(obj, "execute", None)
    if execute is not None and _is_async_callable(execute):
        return obj  # type: ignore[return-value]
    if execute is not None:
        raise TypeError(f"{type(obj).__name__}.execute must be 'async def'")
    if callable(obj):
        return FunctionExecutor(obj)
    raise TypeError(f"not an executor or a function: {obj!r}")


def _is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    # an object whose __call__ is async (a callable class instance) counts too
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


