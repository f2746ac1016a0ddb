"""A small keep-alive HTTP/1.1 client on asyncio streams, for the one hot path of ``--url``.

Every relayed ``tools/call`` is a POST to the same URL. httpx's async client spends about a
millisecond of CPU per request on its layers (measured by ``bench/bench_wrap_mcp.py --http``);
this one writes the request head by hand and reads the status line, headers and body (length,
chunked, or to the end) straight off the stream. Everything else (the GET stream, resumption,
DELETE, the HTTP+SSE transport, OAuth) still goes through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


class HTTPProtocolError(Exception):
    """The server's answer is not HTTP/1.1 we can read."""


class Response:
    """Status, lower-cased headers, and the body as a stream of bytes (read once)."""

    def __init__(self, pool: Http1Pool, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], status: int,
                 headers: dict[str, str], keep: bool, bodyless: bool) -> None:
        self.status_code = status
        self.headers = headers
        self._pool, self._conn, self._keep = pool, conn, keep
        self._left: int | None = None
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if bodyless:
            self._left = 0
        elif not self._chunked and "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise HTTPProtocolError("bad content-length") from None
        elif not self._chunked:
            self._keep = False  # the body ends when the connection does
        self._done = self._left == 0
        self._closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        reader = self._conn[0]
        if self._chunked:
            while not self._done:
                size_line = await reader.readline()
                if not size_line:
                    raise HTTPProtocolError("the connection closed inside a chunked body")
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HTTPProtocolError("bad chunk size") from None
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    return
                data = await reader.readexactly(size + 2)
                yield data[:-2]
        elif self._left is not None:
            while self._left > 0:
                data = await reader.read(min(self._left, 65536))
                if not data:
                    raise HTTPProtocolError("the connection closed before the body ended")
                self._left -= len(data)
                yield data
            self._done = True
        else:
            while data := await reader.read(65536):
                yield data
            self._done = True

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._done and self._keep:
            self._pool._release(self._conn)
        else:
            self._conn[1].close()


class Http1Pool:
    """Connections to one origin, reused while the server keeps them alive."""

    def __init__(self, url: str, connect_timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                    server_hostname=self.host if self.ssl else None, limit=MAX_HEAD * 16),
            self.connect_timeout)

    def _release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        if len(self._idle) < 8 and not conn[1].is_closing() and not conn[0].at_eof():
            self._idle.append(conn)
        else:
            conn[1].close()

    async def request(self, method: str, headers: dict[str, str], body: bytes) -> Response:
        """Send one request; a reused connection the server had already closed is retried once."""
        while self._idle:
            conn = self._idle.pop()
            try:
                return await self._exchange(conn, method, headers, body)
            except (ConnectionError, asyncio.IncompleteReadError, _Stale):
                conn[1].close()  # nothing came back on it: the server had closed it; try another
        return await self._exchange(await self._connect(), method, headers, body, fresh=True)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], method: str,
                        headers: dict[str, str], body: bytes, fresh: bool = False) -> Response:
        reader, writer = conn
        lines = [f"{method} {self.target} HTTP/1.1", f"host: {self.netloc}", f"content-length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        try:
            await writer.drain()
            while True:
                status_line = await reader.readline()
                if not status_line:
                    if fresh:
                        raise HTTPProtocolError("the server closed the connection without answering")
                    raise _Stale
                parts = status_line.decode("latin-1").split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                    raise HTTPProtocolError("the answer is not HTTP/1.1")
                status = int(parts[1])
                found: dict[str, str] = {}
                size = 0
                while True:
                    line = await reader.readline()
                    size += len(line)
                    if size > MAX_HEAD:
                        raise HTTPProtocolError("the answer's headers are too large")
                    if line in (b"\r\n", b"\n"):
                        break
                    if not line:
                        raise HTTPProtocolError("the connection closed inside the headers")
                    name, _, value = line.decode("latin-1").partition(":")
                    key = name.strip().lower()
                    found[key] = f"{found[key]}, {value.strip()}" if key in found else value.strip()
                if status >= 200 or status == 101:
                    break  # 1xx answers (100 Continue) come before the real one
        except BaseException:
            writer.close()
            raise
        keep = "close" not in found.get("connection", "").lower()
        return Response(self, conn, status, found, keep, method == "HEAD" or status in (204, 304))

    async def aclose(self) -> None:
        for _reader, writer in self._idle:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._idle.clear()


class _Stale(Exception):
    pass


__all__: list[Any] = ["HTTPProtocolError", "Http1Pool", "Response"]
