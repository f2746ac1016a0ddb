"""Recording a stream of decisions in batches, releasing each only once it is on disk.

    lines, more_ready = live_lines(sys.stdin)
    for rid, action, decision, source in record_stream(log, decide_all(lines), more_ready=more_ready):
        print(render(rid, action, decision))

A decision must not be reported (printed, returned) before it is recorded, and one transaction
per decision caps throughput at the disk's fsync rate; so decisions are gathered into batches of
up to ``batch``, each written in one transaction, and yielded after it commits. A live stream
(an agent writing one action at a time to stdin) must not wait for a full batch: ``more_ready()``
says whether the next item is already available; when it is not, the batch is written at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aegis_cli.engine.models import Action, Decision
from aegis_cli.streams import live_lines

__all__ = ["live_lines", "record_stream"]

Item = tuple[Action, Decision, Mapping[str, Any] | None]


def record_stream(log: Any, items: Iterable[Item], *, batch: int = 1000,
                  more_ready: Callable[[], bool] | None = None) -> Iterator[tuple[int, Action, Decision,
                                                                                   Mapping[str, Any] | None]]:
    """Yield ``(record_id, action, decision, source)`` for each item, after its batch is durable.

    ``log`` is any ``AuditLogger``. Without ``more_ready`` batches are only cut by size (right for
    files and pipes that are read to the end).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    pending: list[Item] = []
    for item in items:
        pending.append(item)
        if len(pending) >= batch or (more_ready is not None and not more_ready()):
            yield from _flush(log, pending)
            pending = []
    if pending:
        yield from _flush(log, pending)


def _flush(log: Any, pending: list[Item]) -> Iterator[tuple[int, Action, Decision, Mapping[str, Any] | None]]:
    ids = log.record_decisions(pending)
    for rid, (action, decision, source) in zip(ids, pending, strict=True):
        yield rid, action, decision, source
