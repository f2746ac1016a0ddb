"""Newline-framed byte pipes on asyncio: the host's stdin/stdout and the wrapped child's pipes.

MCP's stdio transport is one JSON-RPC message per line. These protocols cut the byte stream into
lines and hand each one, newline included, to a plain callback; nothing is decoded here, so a
message nobody needs to read passes through as the exact bytes that arrived. Pipes and sockets
use asyncio transports (non-blocking, no thread hop); a terminal or regular file, which asyncio
cannot watch, gets a reader thread or blocking writes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from collections.abc import Callable

LineHandler = Callable[[bytes], None]


class LineSplitter:
    """Accumulates bytes and calls ``on_line`` for every complete line (newline kept)."""

    __slots__ = ("_buf", "_on_line", "_parts")

    def __init__(self, on_line: LineHandler) -> None:
        self._buf = b""
        self._parts: list[bytes] = []  # earlier pieces of the unfinished line, joined once it ends
        self._on_line = on_line

    def feed(self, data: bytes) -> None:
        if self._buf:
            if b"\n" not in data:  # a long line arriving read by read: keep pieces, copy once at the end
                self._parts.append(data)
                return
            if self._parts:
                self._parts.insert(0, self._buf)
                self._parts.append(data)
                data = b"".join(self._parts)
                self._parts = []
            else:
                data = self._buf + data
            self._buf = b""
        buf = data
        start = 0
        find = buf.find
        on_line = self._on_line
        while (nl := find(b"\n", start)) >= 0:
            on_line(buf[start:nl + 1])
            start = nl + 1
        self._buf = buf[start:] if start < len(buf) else b""

    def flush(self) -> None:
        """Deliver a last line that had no newline (the peer closed mid-line)."""
        rest = b"".join([self._buf, *self._parts])
        self._buf, self._parts = b"", []
        if rest.strip():
            self._on_line(rest + b"\n")


class _ReadProtocol(asyncio.Protocol):
    def __init__(self, on_line: LineHandler, on_eof: Callable[[], None]) -> None:
        self._lines = LineSplitter(on_line)
        self._on_eof = on_eof
        self._done = False

    def data_received(self, data: bytes) -> None:
        self._lines.feed(data)

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._lines.flush()
            self._on_eof()


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _is_pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def read_lines(fd: int, on_line: LineHandler, on_eof: Callable[[], None]) -> Callable[[], None]:
    """Start delivering ``fd``'s lines on the running loop; returns a function that stops reading."""
    loop = asyncio.get_running_loop()
    if _is_pollable(fd):
        pipe = open(os.dup(fd), "rb", buffering=0)  # noqa: SIM115 - owned by the transport
        transport, _ = await loop.connect_read_pipe(lambda: _ReadProtocol(on_line, on_eof), pipe)
        return transport.close
    # A tty or a regular file: read it on a thread and hop each chunk onto the loop.
    proto = _ReadProtocol(on_line, on_eof)
    stop = threading.Event()

    def pump() -> None:
        try:
            while not stop.is_set():
                data = os.read(fd, 65536)
                if not data:
                    break
                loop.call_soon_threadsafe(proto.data_received, data)
        except (OSError, RuntimeError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(proto.eof_received)

    threading.Thread(target=pump, name="aegis-stdin", daemon=True).start()
    return stop.set


class Writer:
    """Writes whole messages to an fd: a non-blocking transport for pipes, plain writes otherwise."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._transport: asyncio.WriteTransport | None = None
        self.closed = False
        self.on_broken: Callable[[], None] | None = None

    async def start(self) -> Writer:
        # A non-blocking transport sets O_NONBLOCK on the open file it writes to; when stderr is
        # that same file (`2>&1` into a pipe), the child's stderr writes would start failing.
        if _is_pollable(self._fd) and not _same_file(self._fd, 2):
            loop = asyncio.get_running_loop()
            pipe = open(os.dup(self._fd), "wb", buffering=0)  # noqa: SIM115 - owned by the transport
            writer = self

            class _Proto(asyncio.BaseProtocol):
                def connection_lost(self, exc: Exception | None) -> None:
                    writer._broken()

            self._transport, _ = await loop.connect_write_pipe(_Proto, pipe)
        return self

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self._transport is not None:
            self._transport.write(data)
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            self._broken()

    def _broken(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_broken is not None:
                self.on_broken()

    async def drain_and_close(self, timeout: float = 5.0) -> None:
        """Let buffered bytes reach the reader before the process exits."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while transport.get_write_buffer_size() and loop.time() < deadline and not self.closed:
            await asyncio.sleep(0.005)
        self.closed = True
        transport.close()
