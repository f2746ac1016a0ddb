"""Running a governed call from synchronous framework code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.engine.models import Action
    from aegis_cli.runtime.core import Result, Runtime


def call_blocking(runtime: Runtime, action: Action, fn: Callable[..., Any], /, *args: Any,
                  source: Mapping[str, Any], **kwargs: Any) -> Result:
    """``runtime.call_sync``, also from a thread whose event loop is busy running this very call."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return runtime.call_sync(action, fn, *args, source=source, **kwargs)
    # A sync tool invoked from async code: that loop cannot wait for an approval while it is blocked
    # here, so the call is decided (and the tool run) on a helper thread with a loop of its own.
    context = contextvars.copy_context()
    call = functools.partial(runtime.call_sync, action, fn, *args, source=source, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aegis-adapter") as pool:
        return pool.submit(context.run, call).result()
