"""Reading live input: know whether more is already waiting, so batches never hold a caller up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def live_lines(stream: Any = None) -> tuple[Iterator[str], Callable[[], bool]]:
    """Lines of a stream (stdin by default; text or binary) and a ``more_ready`` that says if one is waiting.

    A thread reads the stream into a queue: Python's buffers hide already-read lines from
    ``select``, so asking the queue is the only reliable "is more input here?".
    """
    import queue
    import sys
    import threading

    stream = stream or sys.stdin
    q: queue.Queue[str | None] = queue.Queue(maxsize=10_000)

    def pump() -> None:
        try:
            for line in stream:
                q.put(line)
        finally:
            q.put(None)

    threading.Thread(target=pump, name="aegis-live-lines", daemon=True).start()

    def lines() -> Iterator[str]:
        while (line := q.get()) is not None:
            yield line

    return lines(), lambda: not q.empty()
