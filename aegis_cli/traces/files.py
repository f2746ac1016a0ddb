"""Reading trace files: JSON or JSON Lines, from a path, a directory (recursively) or stdin.

A file is JSON Lines when its first line is a JSON value on its own; otherwise it is one JSON
document. JSONL is read line by line (memory stays flat however long the file); a JSON document
is parsed whole. The format is detected from the first records unless one is forced.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from aegis_cli.engine.errors import InputError
from aegis_cli.traces.base import Item, Location, MalformedRecord, Problem, ToolCall, TraceReader
from aegis_cli.traces.formats import FORMATS, READERS

DETECT_RECORDS = 64  # JSONL records looked at before a file is called unrecognisable


@dataclass
class FileStats:
    """What was read from one file."""

    file: str
    format: str | None = None
    records: int = 0
    calls: int = 0
    problems: int = 0
    skipped: str = ""  # why the whole file was skipped, if it was

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "format": self.format, "records": self.records,
                               "calls": self.calls, "problems": self.problems}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


@dataclass
class ReadStats:
    """Every file looked at, so nothing silently vanishes."""

    files: list[FileStats] = field(default_factory=list)

    @property
    def read(self) -> list[FileStats]:
        return [f for f in self.files if not f.skipped]

    @property
    def skipped(self) -> list[FileStats]:
        return [f for f in self.files if f.skipped]

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def calls(self) -> int:
        return sum(f.calls for f in self.files)

    @property
    def problems(self) -> int:
        return sum(f.problems for f in self.files)


def expand(paths: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """(path, named) for each file: named files were given explicitly, others found in a directory."""
    for path in paths:
        if path != "-" and os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield os.path.join(root, name), False
        else:
            yield path, True


def read_traces(paths: Iterable[str], *, format: str | None = None,
                stats: ReadStats | None = None) -> Iterator[Item]:
    """Every tool call (and every problem) in ``paths``, in order. ``-`` is stdin.

    A named file that cannot be read or holds no known trace raises ``InputError``; a file found
    in a directory is skipped instead and listed in ``stats``.
    """
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown trace format '{format}'; known: {', '.join(FORMATS)}")
    stats = stats if stats is not None else ReadStats()
    for path, named in expand(paths):
        file_stats = FileStats("<stdin>" if path == "-" else path)
        stats.files.append(file_stats)
        try:
            stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if named:
                raise InputError(f"{path}: cannot read: {reason}") from None
            file_stats.skipped = f"cannot read: {reason}"
            continue
        try:
            for item in _read_stream(stream, file_stats, format):
                if isinstance(item, Problem) and item.fatal:
                    if named:
                        raise InputError(str(item))
                    file_stats.skipped = item.message
                    break
                yield item
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


def _read_stream(stream: IO[bytes], st: FileStats, forced: str | None) -> Iterator[Item]:
    name = st.file
    head: list[tuple[int, bytes]] = []
    lines = enumerate(stream, 1)
    for number, raw in lines:
        if raw.strip():
            head.append((number, raw))
            break
    if not head:
        yield Problem(Location(name), "empty file", fatal=True)
        return
    first = head[0][1].lstrip(b"\xef\xbb\xbf").strip()
    if first not in (b"{", b"[") and _parses(first):
        yield from _read_jsonl(name, head, lines, st, forced)
        return
    # One JSON document (or JSONL whose first line is broken: then the second line parses).
    rest = stream.read()
    text = b"".join(r for _, r in head) + rest
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        second = next((ln for ln in rest.splitlines() if ln.strip()), b"")
        if second and _parses(second.strip()):
            yield from _read_jsonl(name, head, enumerate(io.BytesIO(rest), head[0][0] + 1), st, forced)
            return
        yield Problem(Location(name), f"not JSON or JSON Lines ({_json_error(exc)})", fatal=True)
        return
    reader = _choose(forced, [document])
    if reader is None:
        yield Problem(Location(name), "no known trace format (see --trace-format)", fatal=True)
        return
    st.format = reader.name
    st.records = 1
    yield from _run(reader, document, Location(name), st)


def _read_jsonl(name: str, head: list[tuple[int, bytes]], lines: Iterator[tuple[int, bytes]], st: FileStats,
                forced: str | None) -> Iterator[Item]:
    loads = json.loads

    def parsed(source: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, Any, Problem | None]]:
        for number, raw in source:
            try:
                yield number, loads(raw.decode()), None
            except (ValueError, UnicodeDecodeError) as exc:
                if raw.strip():
                    yield number, None, Problem(Location(name, number), f"invalid JSON ({_json_error(exc)})")

    buffered = list(parsed(head))
    reader = None
    if forced is not None:
        reader = FORMATS[forced]()
    elif buffered and buffered[0][2] is None:
        reader = _choose(None, [buffered[0][1]])
    if reader is None:
        for entry in parsed(lines):
            buffered.append(entry)
            if len(buffered) >= DETECT_RECORDS or (entry[2] is None and _choose(None, [entry[1]])):
                break
        reader = _choose(forced, [rec for _, rec, bad in buffered if bad is None])
    if reader is None:
        yield Problem(Location(name), "no known trace format in its first records (see --trace-format)", fatal=True)
        return
    st.format = reader.name
    for number, record, bad in buffered:
        st.records += 1
        if bad is not None:
            st.problems += 1
            yield bad
        else:
            yield from _run(reader, record, Location(name, number), st)
    # The hot loop: one JSON value per line, straight to the reader. The scanner is json.loads
    # without its wrappers (half the time per line); anything it does not take whole (leading
    # blanks, trailing junk, bad JSON) goes through json.loads for the same result or error.
    read, fmt = reader.read, reader.name
    scan = json.JSONDecoder().scan_once
    for number, raw in lines:
        try:
            text = raw.decode()
            try:
                record, end = scan(text, 0)
                if end != len(text) and not text[end:].isspace():
                    record = loads(text)
            except StopIteration:
                record = loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            if raw.strip():
                st.records += 1
                st.problems += 1
                yield Problem(Location(name, number), f"invalid JSON ({_json_error(exc)})")
            continue
        st.records += 1
        try:
            for item in read(record, Location(name, number)):
                if type(item) is ToolCall:
                    item.index = st.calls
                    item.format = fmt
                    st.calls += 1
                else:
                    st.problems += 1
                yield item
        except MalformedRecord as exc:
            st.problems += 1
            yield Problem(Location(name, number).at(*exc.pointer), str(exc))
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            st.problems += 1
            yield Problem(Location(name, number), _unreadable(reader, exc))


def _run(reader: TraceReader, record: Any, where: Location, st: FileStats) -> Iterator[Item]:
    try:
        for item in reader.read(record, where):
            if isinstance(item, ToolCall):
                item.index = st.calls
                item.format = reader.name
                st.calls += 1
            else:
                st.problems += 1
            yield item
    except MalformedRecord as exc:
        st.problems += 1
        yield Problem(where.at(*exc.pointer), str(exc))
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        # A record shaped unlike anything the reader expects: report it, never lose it silently.
        st.problems += 1
        yield Problem(where, _unreadable(reader, exc))


def _unreadable(reader: TraceReader, exc: Exception) -> str:
    return f"cannot read this {reader.name} record ({type(exc).__name__}: {exc})"


def _choose(forced: str | None, records: list[Any]) -> Any:
    if forced is not None:
        return FORMATS[forced]()
    for record in records:
        for reader in READERS:
            if reader.detect(record):
                return reader()
    return None


def _chain(first: Iterable[Any], rest: Iterable[Any]) -> Iterator[Any]:
    yield from first
    yield from rest


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc)


