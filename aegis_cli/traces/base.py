"""What every trace reader yields: tool calls, each located in its file, and problems, also located.

A reader turns one *record* (a JSONL line, or a whole JSON document) into tool calls. Readers are
small classes behind one protocol so detection can try them in order and a new format is one module.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

from aegis_cli.engine.models import Action, parse_timestamp
from aegis_cli.engine.toolcalls import tool_call_to_action


class Location(NamedTuple):
    """Where a record starts: a JSONL line number, or a JSON document (line None) plus a pointer.

    A tuple rather than a frozen dataclass: one is made per record, millions per replay.
    """

    file: str
    line: int | None = None
    pointer: str = ""

    def at(self, *parts: Any) -> Location:
        """The location of a value nested inside this one (a JSON pointer appended)."""
        tail = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
        return Location(self.file, self.line, self.pointer + tail)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} (at {self.pointer})" if self.pointer else where


@dataclass(slots=True)
class ToolCall:
    """One recorded tool call. ``action`` is set when the trace already holds an aegis action.

    ``index`` counts calls within the file (0-based), so every call has a position even in a
    JSON document without lines; the file reader sets it, and ``format``, as calls pass.
    """

    name: str
    arguments: Any
    where: Location
    index: int = 0
    format: str = ""
    namespace: str | None = None
    timestamp: _dt.datetime | None = None
    call_id: str | None = None
    agent: str = ""
    session: str = ""
    action: Action | None = None

    def to_action(self, tools: Mapping[str, Mapping[str, str]] | None = None) -> Action:
        """The action this call is, through the one tool-call mapping (``policy.tools`` applies)."""
        if self.action is not None:
            return self.action
        return tool_call_to_action(self.name, self.arguments, namespace=self.namespace, tools=tools,
                                   agent=self.agent, session=self.session, timestamp=self.timestamp)

    def source(self) -> dict[str, Any]:
        """Where the call came from, as simulate's JSONL and the audit trail record it."""
        out: dict[str, Any] = {"file": self.where.file}
        if self.where.line is not None:
            out["line"] = self.where.line
        else:
            out["index"] = self.index
        if self.where.pointer:
            out["pointer"] = self.where.pointer
        out["call_id"] = self.call_id
        out["format"] = self.format
        return out


@dataclass(frozen=True, slots=True)
class Problem:
    """A record that could not be read. ``fatal`` problems stop the whole file (e.g. not JSON)."""

    where: Location
    message: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class MalformedRecord(ValueError):
    """Raised by a reader for a record (or part of one) it recognises but cannot read."""

    def __init__(self, message: str, *pointer: Any) -> None:
        super().__init__(message)
        self.pointer = pointer


Item = ToolCall | Problem


class TraceReader(Protocol):
    """One trace format. ``detect`` sees a record; ``read`` turns a record into calls and problems.

    A reader instance is made per file, so it may keep state across the records of that file
    (Claude Code repeats a response's content blocks over several lines, for instance).
    """

    name: ClassVar[str]
    description: ClassVar[str]

    @staticmethod
    def detect(record: Any) -> bool: ...

    def read(self, record: Any, where: Location) -> Iterable[Item]: ...


def timestamp_or_none(value: Any) -> _dt.datetime | None:
    """A recorded time, or None when absent or unreadable (a bad time must not lose the call)."""
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def call_id(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return value if isinstance(value, str) else str(value)
