"""Decide a stream of JSON Lines actions, one decision line out per line in, in constant memory.

Used by ``aegis evaluate -`` as a co-process: decisions are handled in batches of up to 1,000
(one audit transaction each), but a batch is cut as soon as no further input is waiting, so a
caller that writes one action and waits for its answer gets it at once.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from aegis_cli.engine.errors import InputError
from aegis_cli.engine.models import Action, Approval, RiskLevel
from aegis_cli.engine.policy import Policy

BATCH = 1000
_THRESHOLD = {"block": 2, "approve": 1, "never": 99}


@dataclass
class StreamSummary:
    read: int = 0
    evaluated: int = 0
    bad_lines: int = 0
    reached_fail_on: int = 0


def _open(source: str) -> tuple[IO[bytes], str, bool]:
    """The stream, its name, and whether it is a regular file (always has more until EOF)."""
    if source == "-":
        stream = sys.stdin.buffer
        name = "<stdin>"
    else:
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise InputError(f"{source}: {exc.strerror or exc}") from None
        name = source
    try:
        batched = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):
        batched = False
    return stream, name, batched


def _actions(lines: Iterable[bytes], name: str, summary: StreamSummary) -> Iterator[tuple[int, Action | str]]:
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        summary.read += 1
        try:
            data = json.loads(raw)
            yield number, Action.from_dict(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and InputError are all ValueErrors
            message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            col = f":{exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            yield number, f"{name}:{number}{col}: {message}"


def evaluate_stream(
    policy: Policy,
    source: str,
    *,
    now: _dt.datetime | None = None,
    fail_on: str = "block",
    explain: bool = False,
    audit_db: str | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run the stream; returns the exit code (2 bad input, 1 a decision reached ``fail_on``, else 0)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        stream, name, batched = _open(source)
    except InputError as exc:
        err.write(f"aegis: {exc}\n")
        return 2
    log = None
    if audit_db is not None:
        from aegis_cli.audit.trail import open_audit, shown

        try:
            log = open_audit(audit_db, redact=policy.redact)
        except Exception as exc:
            err.write(f"aegis: cannot open audit database {shown(audit_db)}: {exc}\n")
            return 2
    summary = StreamSummary()
    threshold = _THRESHOLD[fail_on]
    pending: list[tuple[dict[str, Any], Action | None, Any]] = []
    lines: Iterable[bytes] = stream
    more_ready: Callable[[], bool] = lambda: True  # noqa: E731
    if not batched:
        from aegis_cli.streams import live_lines

        lines, more_ready = live_lines(stream)
    evaluate = policy.evaluate
    try:
        for number, item in _actions(lines, name, summary):
            if isinstance(item, str):
                summary.bad_lines += 1
                err.write(f"aegis: {item}\n")
                pending.append(({"line": number, "error": item, "approval": Approval.BLOCK.value,
                                 "risk_level": RiskLevel.CRITICAL.value, "rule": None,
                                 "reason": "input line could not be read; blocked"}, None, None))
            else:
                decision = evaluate(item, now, explain=explain)
                summary.evaluated += 1
                if decision.approval.severity >= threshold:
                    summary.reached_fail_on += 1
                row = {"action": item.to_dict(), **decision.to_dict()}
                pending.append((row, item, decision))
            if len(pending) >= BATCH or not more_ready():
                _flush(pending, out, log)
        _flush(pending, out, log)
    finally:
        if log is not None:
            log.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    if summary.bad_lines:
        return 2
    return 1 if summary.reached_fail_on else 0


def _flush(pending: list[tuple[dict[str, Any], Action | None, Any]], out: IO[str], log: Any) -> None:
    if not pending:
        return
    if log is not None:
        # Written before printed: a decision that has been reported is already on disk.
        batch = [(action, decision, {"via": "evaluate"}) for _, action, decision in pending if action is not None]
        ids = iter(log.record_decisions(batch)) if batch else iter(())
        for row, action, _ in pending:
            if action is not None:
                row["audit_id"] = next(ids)
    dumps = json.dumps
    out.write("".join(dumps(row, ensure_ascii=False) + "\n" for row, _, _ in pending))
    out.flush()
    pending.clear()
