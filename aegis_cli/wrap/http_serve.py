"""A small HTTP/1.1 server on an asyncio protocol, for the model proxy on loopback.

The proxy's client is one local agent, and each of its requests is answered by one handler call;
uvicorn and Starlette spent more CPU per request on their layers (ASGI scope and messages, routing,
a task group per streamed reply) than the proxy spent deciding it (``bench/bench_wrap_proxy.py``).
Here a request is read off the transport (head, then a body by length or chunked), the handler
starts in that same callback (``eager.start``), and its ``Response`` is written back: a body of
bytes in one write with its length, or a stream of pieces sent chunked, where the pieces produced
before the handler next waits are joined into one write.

When the client goes away, the handler's task is cancelled (a held approval, an upstream read), so
nothing waits on an answer no one will read. Malformed requests get 400 and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from aegis_cli.wrap import eager

log = logging.getLogger("aegis.wrap")

MAX_HEAD = 64 * 1024
#: A request body beyond this is refused (413); the providers' own limits are far lower.
MAX_BODY = 256 * 1024 * 1024
#: Pipelined bytes buffered while a request is being answered, before reading pauses.
_MAX_BUFFERED = 1024 * 1024
#: Headers the server writes itself.
_OWN = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
#: Request headers that frame the body or the connection, read as the head is parsed.
_FRAMING = frozenset({b"connection", b"transfer-encoding", b"content-length", b"expect"})


@dataclass(slots=True)
class Request:
    """One request as sent: ``target`` is the raw path and query, ``headers`` the raw pairs in order."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


@dataclass(slots=True)
class Response:
    """``body``: bytes, sent with a length; or an async iterator of bytes, sent chunked (and closed
    with ``aclose`` once sent, or when the client leaves). ``on_close`` runs after that, whatever
    happened (the proxy closes its upstream reply there)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncIterator[bytes] = b""
    on_close: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:  # made once per status: an enum lookup per response costs more than the rest of its head
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        if len(_STATUS_LINES) < 256:
            _STATUS_LINES[status] = line
    return line


_STATUS_LINES: dict[int, bytes] = {}


class _Connection(asyncio.Protocol):
    """One client connection: requests answered one at a time, in order."""

    def __init__(self, handler: Handler, connections: set[_Connection], eager_start: bool = True) -> None:
        self._handler = handler
        self._eager = eager_start
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._task: asyncio.Task[None] | None = None  # the answer, once it has had to wait
        self._busy = False  # a request is being answered (requests are answered one at a time)
        self._advancing = False
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        # the request whose body is being read: method, target, headers, keep-alive, 100-continue asked
        self._head: tuple[str, str, list[tuple[bytes, bytes]], bool, bool] | None = None
        self._length = 0  # body length; -1: chunked
        self._chunk_pos = 0
        self._chunks: list[bytes] = []
        self._chunked_size = 0
        self._continue_sent = False

    # -- transport callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client is gone: stop waiting on its behalf
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def eof_received(self) -> bool:
        return False  # a client that stops sending is gone; the transport closes

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._advance()
        elif len(self._buf) > _MAX_BUFFERED and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- reading requests ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Read as much of the next request as has arrived; answer it once it is whole (and the
        requests pipelined behind it, in turn)."""
        if self._advancing:
            return  # an answer finished inside the loop below, which goes on to the next request
        self._advancing = True
        try:
            while not self._busy and not self._closed:
                try:
                    request = self._read()
                except _BadRequest as bad:
                    self._refuse(bad.status, str(bad))
                    return
                if request is None:
                    return
                self._busy = True
                # Started here rather than on the loop's next turn: the request goes upstream from
                # this callback (eager.start); a task carries it on once it has to wait.
                answer = self._answer(*request)
                finished, task = eager.start(answer) if self._eager else (False, self._loop.create_task(answer))
                if not finished:
                    self._task = task
        finally:
            self._advancing = False

    def _read(self) -> tuple[Request, bool] | None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise _BadRequest(431, "request header too large")
                return None
            if end > MAX_HEAD:
                raise _BadRequest(431, "request header too large")
            self._head, self._length = self._parse_head(bytes(buf[:end]))
            del buf[:end + 4]
            if self._length > MAX_BODY:
                raise _BadRequest(413, "request body too large")
            self._chunk_pos, self._chunks, self._chunked_size, self._continue_sent = 0, [], 0, False
        body = self._read_chunked() if self._length < 0 else self._read_sized()
        if body is None:
            if not self._continue_sent and self._head[4]:
                self._continue_sent = True
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
            return None
        method, target, headers, keep, _ = self._head
        self._head = None
        return Request(method, target, headers, body), keep

    def _parse_head(self, head: bytes) -> tuple[tuple[str, str, list[tuple[bytes, bytes]], bool, bool], int]:
        """((method, target, headers, keep-alive, 100-continue asked), body length: -1 when chunked), the
        headers that frame the body read in the same pass."""
        lines = head.split(b"\r\n")
        while lines and not lines[0]:
            lines.pop(0)  # blank lines before a request are allowed (RFC 9112 2.2)
        if not lines:
            raise _BadRequest(400, "empty request")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[0].isalpha():
            raise _BadRequest(400, "bad request line")
        headers: list[tuple[bytes, bytes]] = []
        connection = b""
        chunked = expect = False
        length = None
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                raise _BadRequest(400, "bad header line")
            value = value.strip(b" \t")
            headers.append((name, value))
            lowered = name.lower()
            if lowered not in _FRAMING:
                continue
            if lowered == b"connection":
                connection += b"," + value.lower()
            elif lowered == b"transfer-encoding":
                if value.strip().lower() != b"chunked" or chunked:
                    raise _BadRequest(501, "only chunked transfer-encoding is understood")
                chunked = True
            elif lowered == b"content-length":
                if not value.strip().isdigit() or (length is not None and int(value) != length):
                    raise _BadRequest(400, "bad content-length")
                length = int(value)
            elif value.strip().lower() == b"100-continue":  # expect
                expect = True
        if chunked and length is not None:
            raise _BadRequest(400, "both content-length and transfer-encoding")
        tokens = {t.strip() for t in connection.split(b",")}
        keep = b"close" not in tokens if parts[2] == b"HTTP/1.1" else b"keep-alive" in tokens
        return ((parts[0].decode("latin-1"), parts[1].decode("latin-1"), headers, keep, expect),
                -1 if chunked else (length or 0))

    def _read_sized(self) -> bytes | None:
        if len(self._buf) < self._length:
            return None
        body = bytes(self._buf[:self._length])
        del self._buf[:self._length]
        return body

    def _read_chunked(self) -> bytes | None:
        buf = self._buf
        while True:
            nl = buf.find(b"\r\n", self._chunk_pos)
            if nl < 0:
                if len(buf) - self._chunk_pos > 4096:
                    raise _BadRequest(400, "bad chunk size")
                return None
            size_field = bytes(buf[self._chunk_pos:nl]).split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            if size < 0:
                raise _BadRequest(400, "bad chunk size")
            if size == 0:
                end = buf.find(b"\r\n\r\n", nl)  # the trailer section, usually empty, ends at a blank line
                if end < 0:
                    return None
                del buf[:end + 4]
                body = b"".join(self._chunks)
                self._chunks, self._chunk_pos = [], 0
                return body
            self._chunked_size += size
            if self._chunked_size > MAX_BODY:
                raise _BadRequest(413, "request body too large")
            start = nl + 2
            if len(buf) < start + size + 2:
                self._chunked_size -= size
                return None
            if buf[start + size:start + size + 2] != b"\r\n":
                raise _BadRequest(400, "bad chunk")
            self._chunks.append(bytes(buf[start:start + size]))
            self._chunk_pos = start + size + 2

    def _refuse(self, status: int, why: str) -> None:
        body = f"{why}\n".encode()
        self._transport.write(_status_line(status) + b"content-type: text/plain; charset=utf-8\r\n"  # type: ignore[union-attr]
                              + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self._transport.close()  # type: ignore[union-attr]

    # -- answering ----------------------------------------------------------------------------

    async def _answer(self, request: Request, keep: bool) -> None:
        body: bytes | AsyncIterator[bytes] = b""
        on_close = None
        try:
            try:
                response = await self._handler(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("aegis: the proxy failed to answer %s %s", request.method, request.path)
                response = Response(500, [("content-type", "text/plain; charset=utf-8")], b"aegis: internal error\n")
            body, on_close = response.body, response.on_close
            # the header lines as one string, encoded once
            lines = "".join([f"{k}: {v}\r\n" for k, v in response.headers if k.lower() not in _OWN])
            if not keep:
                lines += "connection: close\r\n"
            if isinstance(body, (bytes, bytearray)):
                head = _status_line(response.status) + f"{lines}content-length: {len(body)}\r\n\r\n".encode("latin-1")
                self._write(head if request.method == "HEAD" else head + body)
            else:
                head = _status_line(response.status) + f"{lines}transfer-encoding: chunked\r\n\r\n".encode("latin-1")
                await self._stream(head, body)
        except asyncio.CancelledError:
            keep = False
        except Exception:  # the stream broke half-way: the client must see a cut body, never a whole one
            log.exception("aegis: a streamed reply to %s %s failed", request.method, request.path)
            keep = False
        finally:
            if not isinstance(body, (bytes, bytearray)):
                with contextlib.suppress(BaseException):
                    await body.aclose()  # type: ignore[union-attr]
            if on_close is not None:
                with contextlib.suppress(BaseException):
                    await on_close()
        if not keep or self._closed:
            self.close()
            return
        self._task = None
        self._busy = False
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]
        if self._buf:
            self._advance()

    def _write(self, data: bytes) -> None:
        if not self._closed:
            self._transport.write(data)  # type: ignore[union-attr]

    async def _stream(self, head: bytes, body: AsyncIterator[bytes]) -> None:
        """Send ``body`` chunked; what it yields before it next waits goes out as one write."""
        pending: list[bytes] = [head]
        parts: list[bytes] = []
        handle: asyncio.Handle | None = None

        def flush() -> None:
            nonlocal handle
            handle = None
            if parts:
                data = b"".join(parts)
                parts.clear()
                pending.append(b"%x\r\n%b\r\n" % (len(data), data))
            if pending:
                self._write(b"".join(pending))
                pending.clear()

        handle = self._loop.call_soon(flush)  # the head goes out as soon as the body first waits
        try:
            async for piece in body:
                if not piece:
                    continue  # an empty chunk would end the body
                parts.append(piece)
                if handle is None:
                    handle = self._loop.call_soon(flush)
                if self._writing_paused:
                    handle.cancel()
                    flush()
                    await self._drain()
            if handle is not None:
                handle.cancel()
            if parts:
                data = b"".join(parts)
                pending.append(b"%x\r\n%b\r\n" % (len(data), data))
            pending.append(b"0\r\n\r\n")
            self._write(b"".join(pending))
        finally:
            if handle is not None:
                handle.cancel()

    async def _drain(self) -> None:
        while self._writing_paused and not self._closed:
            self._drained = self._loop.create_future()
            await self._drained


class HttpServer:
    """Serves ``handler`` on an already bound socket until ``close()``.

    ``eager_start``: each request's handler starts in the callback that read it, and runs until it
    first waits, outside any task; pass False for a handler that needs ``asyncio.current_task()``
    before that (anything on anyio or sniffio, such as httpx)."""

    def __init__(self, handler: Handler, *, eager_start: bool = True) -> None:
        self.handler = handler
        self.eager_start = eager_start
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, sock: object) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self.handler, self._connections,
                                                                    self.eager_start),
                                                sock=sock)  # type: ignore[call-overload]

    async def close(self, grace: float = 3.0) -> None:
        """Stop accepting; give requests being answered ``grace`` seconds, then cut them."""
        if self._server is None:
            return
        self._server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c._busy for c in self._connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            conn.close()
        await asyncio.sleep(0)
