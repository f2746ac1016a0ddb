"""Exporting records as JSONL, a JSON array or CSV: streamed in id order, in constant memory.

JSONL and JSON lines are the stored body with its hash spliced in, so exporting re-serialises
nothing and an auditor can re-check every hash (see verify.py). CSV flattens a record into
columns for spreadsheets; nested values (params, tags, origin, data) are JSON text in their cells.
``atomic_output`` writes to a temporary file beside the target and renames it into place, so a
reader never sees a half-written export.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from aegis_cli.audit.query import Row, record_line

FORMATS = ("jsonl", "json", "csv")
CSV_COLUMNS = ("id", "ts", "kind", "decision_id", "type", "target", "agent", "session", "params",
               "approval", "risk_level", "rule", "reason", "tags", "policy_hash", "origin", "data",
               "prev_hash", "hash")
_JSON_CELLS = ("params", "tags", "origin", "data")
_CHUNK = 1000


def _chunks(rows: Iterable[Row], progress: Callable[[int], None] | None) -> Iterator[list[Row]]:
    it = iter(rows)
    while True:
        chunk = []
        for row in it:
            chunk.append(row)
            if len(chunk) == _CHUNK:
                break
        if not chunk:
            return
        yield chunk
        if progress is not None:
            progress(len(chunk))


def write_jsonl(rows: Iterable[Row], out: IO[str], progress: Callable[[int], None] | None = None) -> int:
    n = 0
    for chunk in _chunks(rows, progress):
        out.write("".join(f'{body[:-1]},"hash":"{h}"}}\n' for _, h, body in chunk))
        n += len(chunk)
    return n


def write_json(rows: Iterable[Row], out: IO[str], progress: Callable[[int], None] | None = None) -> int:
    """One JSON array, one record per line, valid however many records (``[]`` for none)."""
    n = 0
    out.write("[")
    for chunk in _chunks(rows, progress):
        out.write(("\n" if n == 0 else ",\n") + ",\n".join(record_line(r) for r in chunk))
        n += len(chunk)
    out.write("\n]\n" if n else "]\n")
    return n


def csv_row(rec: dict[str, Any]) -> list[Any]:
    action = rec.get("action") or {}
    decision = rec.get("decision") or {}
    flat: dict[str, Any] = {
        **{k: rec.get(k) for k in ("id", "ts", "kind", "decision_id", "policy_hash", "prev_hash", "hash")},
        **{k: action.get(k) for k in ("type", "target", "agent", "session", "params")},
        **{k: decision.get(k) for k in ("approval", "risk_level", "rule", "reason", "tags")},
        "origin": rec.get("origin"),
        "data": rec.get("data"),
    }
    for k in _JSON_CELLS:
        v = flat[k]
        flat[k] = "" if v is None else json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ["" if flat[c] is None else flat[c] for c in CSV_COLUMNS]


def write_csv(rows: Iterable[Row], out: IO[str], progress: Callable[[int], None] | None = None) -> int:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    for chunk in _chunks(rows, progress):
        for _, h, body in chunk:
            rec = json.loads(body)
            rec["hash"] = h
            w.writerow(csv_row(rec))
        n += len(chunk)
    return n


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv}


def write(fmt: str, rows: Iterable[Row], out: IO[str], progress: Callable[[int], None] | None = None) -> int:
    """Write ``rows`` in format ``fmt`` to ``out``; returns how many records were written."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return WRITERS[fmt](rows, out, progress)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` only once complete (temp file, fsync, rename)."""
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="", buffering=1 << 20) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(target):
            # keep the mode of the file being replaced; mkstemp files are 0600
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
