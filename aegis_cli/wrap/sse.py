"""Server-sent events, read and written byte-exactly, plus the hold-and-decide queue every stream uses.

The proxy re-emits an event it does not change as the very bytes it received, so a stream with no
tool call in it reaches the agent exactly as the provider sent it. Only events that are rewritten
(a blocked call's replacement, a changed stop reason) are serialized again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aegis_cli.wrap import eager

#: Sent while a decision (usually a person) is awaited, so that the SDK's read timeout does not fire.
#: SSE comments are ignored by every conforming client, the Anthropic and OpenAI SDKs included.
KEEPALIVE = b": aegis: waiting for a decision\n\n"
KEEPALIVE_INTERVAL = 10.0


class SSEEvent:
    """One event. ``raw`` is the exact bytes received (terminator included); ``event`` and ``data`` parsed
    from it, on first use for an event read off an LF stream (one known by its raw bytes, as a text
    delta is, is never parsed at all)."""

    __slots__ = ("_data", "_event", "_json", "_parsed", "more", "raw", "seen")

    def __init__(self, raw: bytes, event: str | None = None, data: str | None = None, more: bool = False) -> None:
        self.raw = raw
        self._event = event
        self._data = data  # None: not read yet (``raw`` is then an event and its LF LF)
        self._json: Any = None
        self._parsed = False
        self.more = more  # another event is already here (came in the same read): no wait before it
        #: What a provider module read from ``raw`` by its exact shape, without parsing it (for instance
        #: a sequence number); None when nothing was.
        self.seen: Any = None

    @property
    def event(self) -> str | None:
        if self._data is None:
            self._read()
        return self._event

    @property
    def data(self) -> str:
        if self._data is None:
            self._read()
        return self._data  # type: ignore[return-value]

    def _read(self) -> None:
        # What ``_simple`` matches (an optional event line, then one data line), read with bytes methods:
        # a regex spends some instructions on every byte of the data, a find next to none.
        block = self.raw[:-2]
        name = None
        data = block
        if block.startswith(b"event:"):
            nl = block.find(b"\n")
            name, data = block[6:nl], block[nl + 1:]
            if name.startswith(b" "):
                name = name[1:]
        if data.startswith(b"data:") and data.find(b"\n") < 0:
            data = data[6:] if data.startswith(b" ", 5) else data[5:]
            self._event = name.decode("utf-8", "replace") if name is not None else None
            self._data = data.decode("utf-8", "replace")
        else:
            self._event, self._data = _parse(block)

    def __repr__(self) -> str:
        return f"SSEEvent(raw={self.raw!r}, event={self.event!r}, data={self.data!r}, more={self.more!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.raw, self.event, self.data, self.more) == (other.raw, other.event, other.data, other.more)

    __hash__ = None  # type: ignore[assignment]

    def json(self) -> Any:
        """The data as JSON, or None when it is not JSON (``[DONE]``, a comment-only event)."""
        if not self._parsed:
            self._parsed = True
            data = self.data
            try:
                self._json = loads(data) if data else None
            except ValueError:
                self._json = None
        return self._json


_scan_once = json.JSONDecoder().scan_once


def loads(text: str) -> Any:
    """``json.loads`` for what the providers send, one JSON value (perhaps a newline after it), without the
    wrapper's two whitespace scans; anything else goes to ``json.loads``, which decides (and raises) as
    ever."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)
    # JSON's own whitespace may follow (a reply ending in a newline); anything else is for json.loads to refuse
    return value if end == len(text) or not text[end:].strip(" \t\n\r") else json.loads(text)


def json_string(literal: bytes) -> str | None:
    """The value of a JSON string literal matched in an event's bytes, as a parse of the event would read
    it (decoded as ``SSEEvent`` decodes); None when it is not a valid one."""
    try:
        return _scanstring(literal.decode("utf-8", "replace"), 1)[0]
    except ValueError:
        return None


_scanstring = json.decoder.scanstring


def encode(data: Any, event: str | None = None) -> bytes:
    """One event with JSON data, in the compact form the providers use."""
    if event:
        return f"event: {event}\ndata: {_compact(data)}\n\n".encode()
    return f"data: {_compact(data)}\n\n".encode()


#: ``json.dumps(data, separators=(",", ":"), ensure_ascii=False)``, its encoder made once, not per event
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# JSONEncoder.encode still builds its C encoder on every call (1-3 µs a replacement event, more than a small
# event's encoding): build that once too, as audit.canonical does. No cycle check (markers None): data
# comes from parsed JSON and aegis's own literals.
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_encoder is not None:
    _fast = _c_encoder(None, _compact.__self__.default, json.encoder.encode_basestring,  # type: ignore[attr-defined]
                       None, ":", ",", False, False, True)

    def _compact(data: Any) -> str:
        return "".join(_fast(data, 0))


def _parse(block: bytes) -> tuple[str | None, str]:
    event: bytes | None = None
    data: list[bytes] = []
    # SSE lines end at CR, LF or CRLF only (as the SDKs split them, on bytes); str.splitlines would
    # also cut at U+2028, U+2029 and NEL, which are legal inside a JSON string. Fields are read on
    # bytes and decoded once: a newline never falls inside a UTF-8 sequence, so it is the same text.
    for line in block.splitlines():
        if not line or line[0] == 58:  # b":", a comment
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value
    text = (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace")
    return (event.decode("utf-8", "replace") if event is not None else None), text


def _boundary(buf: bytes, start: int = 0) -> tuple[int, int]:
    """Where the first event in ``buf[start:]`` ends: (end of event, start of the next); (-1, -1) if incomplete."""
    best = (-1, -1)
    for sep in (b"\r\n\r\n", b"\n\n", b"\r\r"):
        i = buf.find(sep, start)
        if i != -1 and (best[0] == -1 or i < best[0]):
            best = (i, i + len(sep))
    return best


def _lf_boundary(buf: bytes, start: int = 0) -> tuple[int, int]:
    """``_boundary`` for a stream that has sent no CR so far: a blank line can only be LF LF."""
    i = buf.find(b"\n\n", start)
    return (i, i + 2) if i != -1 else (-1, -1)


#: The event the providers send, on a stream with no CR in it: an optional event line, then one data
#: line. Matched whole, so that anything else (comments, ids, several data lines) is read by ``_parse``.
_simple = re.compile(rb"(?:event: ?([^\n]*)\n)?data: ?([^\n]*)").fullmatch


def _lf_events(buf: bytes) -> tuple[list[SSEEvent], bytes]:
    """The complete events in ``buf`` (a stream with no CR so far), each ``more``, and what follows them.
    Each is read (``event``, ``data``) only when asked: many are passed on by their bytes alone."""
    blocks = buf.split(b"\n\n")  # the same cuts as finding each blank line in turn
    rest = blocks.pop()
    return [SSEEvent(block + b"\n\n", None, None, True) for block in blocks], rest


async def read_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
    """Split a byte stream into events, whatever the chunking: the events each read completes, as a
    list (every one ``more`` but the last); a trailing unterminated event is kept. One step per read
    rather than per event, so a provider module handles a read's events in one go."""
    buf = b""
    pending: list[bytes] = []  # reads since the last boundary, joined only once an event ends
    tail = b""  # the last 3 bytes of buf + pending
    boundary = _lf_boundary  # the providers end lines with LF; one CR anywhere and every rule applies
    async for chunk in chunks:
        if boundary is _lf_boundary and b"\r" in chunk:
            boundary = _boundary
        if buf or pending:
            # The event so far holds no boundary: one can only end in this read (or straddle into it).
            seen = tail + chunk
            if boundary(seen)[0] == -1:
                pending.append(chunk)
                tail = seen[-3:]
                continue
            buf = b"".join([buf, *pending, chunk])
            pending = []
        else:
            buf = chunk
        if boundary is _lf_boundary:
            found, buf = _lf_events(buf)
        else:
            start = 0
            found = []
            while True:
                end, nxt = boundary(buf, start)
                if end == -1:
                    break
                event, data = _parse(buf[start:end])
                found.append(SSEEvent(buf[start:nxt], event, data, True))
                start = nxt
            buf = buf[start:] if start else buf
        tail = buf[-3:]
        if found:
            found[-1].more = False
            yield found
    buf = b"".join([buf, *pending])
    if buf.strip():
        event, data = _parse(buf)
        yield [SSEEvent(buf + b"\n\n", event, data)]


async def read_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Split a byte stream into events, whatever the chunking; a trailing unterminated event is kept."""
    batches = read_batches(chunks)
    try:
        async for batch in batches:
            for ev in batch:
                yield ev
    finally:
        await batches.aclose()


async def await_with_keepalive(awaitable: Awaitable[Any], ping: bytes = KEEPALIVE,
                               interval: float | None = None) -> AsyncIterator[bytes | _Result]:
    """Run ``awaitable``; yield ``ping`` every ``interval`` seconds until it is done, then its ``_Result``."""
    finished, value = eager.start(awaitable)
    if finished:
        yield _Result(value)
        return
    task = value
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval or KEEPALIVE_INTERVAL)
            if done:
                yield _Result(task.result())
                return
            yield ping
    finally:
        if not task.done():  # the client went away: stop asking
            task.cancel()


@dataclass(frozen=True, slots=True)
class _Result:
    value: Any



@dataclass(slots=True)
class Held:
    """A tool call's events, withheld from the agent until the call is complete and decided."""

    key: Any
    events: list[SSEEvent] = field(default_factory=list)
    complete: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # what the provider module needs to decide it


class HoldQueue:
    """Keeps output in order while tool calls are withheld.

    Events that arrive while an earlier call is still incomplete wait behind it, so the agent sees
    events in the order the provider sent them, minus (or plus the replacement of) blocked calls.
    ``release(held)`` decides a complete call and returns the bytes to emit in its place; ``finish``
    rewrites a pass-through event at the moment it is emitted (e.g. a stop reason, which depends on
    every earlier call's fate).
    """

    def __init__(self, release: Callable[[Held], Awaitable[bytes]],
                 finish: Callable[[SSEEvent], bytes] | None = None,
                 keepalive_interval: float | None = None, *,
                 calls: Callable[[Held], list[Any]] | None = None,
                 decide_ahead: Callable[[list[Any]], Awaitable[Any]] | None = None) -> None:
        self._items: list[SSEEvent | Held] = []
        self._open: dict[Any, Held] = {}
        self._release = release
        self._finish = finish or (lambda ev: ev.raw)
        self._interval = keepalive_interval
        # ``calls(held)``: the tool calls ``release(held)`` will decide; ``decide_ahead(calls)``
        # decides them together (one audit transaction) before the releases ask for them.
        self._calls = calls
        self._decide_ahead = decide_ahead
        #: A decision that has had to wait: (whether it is the head's release, its task); ``drain`` awaits it.
        self._waiting: tuple[bool, Any] | None = None

    def hold(self, key: Any, event: SSEEvent, **info: Any) -> Held:
        earlier = self._open.pop(key, None)
        if earlier is not None:
            # A second call started where one is still open (a stream no provider should send): the
            # first can never be completed now, so it is decided as it stands (incomplete: blocked),
            # rather than left open ahead of everything after it, which would withhold the rest.
            earlier.complete = True
            earlier.info["incomplete"] = True
        held = Held(key, [event], info=info)
        self._items.append(held)
        self._open[key] = held
        return held

    def held(self, key: Any) -> Held | None:
        """The open (incomplete) call with this key, if any."""
        return self._open.get(key)

    def open_calls(self) -> list[Held]:
        return list(self._open.values())

    def complete(self, key: Any) -> Held | None:
        held = self._open.pop(key, None)
        if held is not None:
            held.complete = True
        return held

    def push(self, event: SSEEvent) -> None:
        self._items.append(event)

    @property
    def idle(self) -> bool:
        """Nothing is waiting: an event that needs no deciding can go out now, ahead of ``ready``."""
        return not self._items

    @property
    def deciding(self) -> bool:
        """Whether ``drain`` has a call to decide: everything else ``ready`` emits without waiting."""
        for item in self._items:
            if isinstance(item, Held):
                return item.complete
        return False

    def ready(self) -> bytes:
        """The pass-through events at the head, up to the first withheld call, as they are emitted."""
        items = self._items
        if not items or isinstance(items[0], Held):
            return b""
        outs = []
        while items and not isinstance(items[0], Held):
            out = self._finish(items.pop(0))  # type: ignore[arg-type]
            if out:
                outs.append(out)
        return b"".join(outs)

    def drain_now(self, passed: list[bytes] | None = None) -> tuple[bytes, bool]:
        """What ``drain`` emits, as far as it gets without waiting: (bytes, whether it got to the end). Each
        decision runs at once (``eager.start``): one that needs no person never waits, and then no
        generator or task is made at all. One that has to wait is kept, and ``drain`` goes on from it.
        ``passed``: what the rewriter let through ahead of everything held, emitted first (and emptied)."""
        outs: list[bytes] = []
        if passed:
            outs += passed
            passed.clear()
        items = self._items
        while items and self._waiting is None:
            head = items[0]
            if not isinstance(head, Held):
                out = self.ready()
                if out:
                    outs.append(out)
                continue
            if not head.complete:
                break
            if self._decide_ahead is not None and len(calls := self._ahead()) > 1:
                finished, task = eager.start(self._decide_ahead(calls))
                if not finished:
                    self._waiting = (False, task)
                    break
            finished, value = eager.start(self._release(head))
            if not finished:
                self._waiting = (True, value)
                break
            items.pop(0)
            if value:
                outs.append(value)
        return b"".join(outs), self._waiting is None

    async def drain(self) -> AsyncIterator[bytes]:
        """Emit everything up to the first call that is still incomplete, waiting (with keepalives) on the
        decisions that have to wait."""
        while True:
            if self._waiting is not None:
                released, task = self._waiting
                value = None
                async for out in await_with_keepalive(task, interval=self._interval):
                    if isinstance(out, _Result):
                        value = out.value
                    else:
                        yield out
                self._waiting = None
                if released:  # the head's own release, done: its bytes in its place
                    self._items.pop(0)
                    if value:
                        yield value
            out, done = self.drain_now()
            if out:
                yield out
            if done:
                return

    def _ahead(self) -> list[Any]:
        """Every complete call not decided yet, to be decided together."""
        calls: list[Any] = []
        for item in self._items:
            if isinstance(item, Held) and item.complete and not item.info.get("ahead"):
                item.info["ahead"] = True
                calls += self._calls(item) if self._calls is not None else []
        return calls

    def end(self) -> None:
        """The upstream ended: calls never completed are to be dropped (they cannot be decided); ``drain``
        (or ``drain_now``) then emits the rest."""
        for held in self._open.values():
            held.complete = True
            held.info["incomplete"] = True
        self._open.clear()

    async def close(self) -> AsyncIterator[bytes]:
        """``end``, then ``drain``."""
        self.end()
        async for out in self.drain():
            yield out
