"""A small keep-alive HTTP/1.1 client on an asyncio protocol, for the hot paths of ``wrap``.

Every relayed ``tools/call`` of ``--url`` is a POST to the same URL, and every model request the
proxy forwards is a POST to its provider. httpx's async client spends about a millisecond of CPU
per request on its layers, and even asyncio's streams cost a coroutine call per header line
(measured by ``bench/bench_wrap_mcp.py --http`` and ``bench/bench_wrap_proxy.py``). Here the bytes
received wait in one buffer: the head is found and split in one go, and each read of the body hands
on everything that has arrived (for a chunked body, every complete chunk joined). A compressed body
is decoded with httpx's own decoders. Everything else (the GET stream, resumption, DELETE, the
HTTP+SSE transport, OAuth) still goes through httpx.

Through an HTTP proxy (``http_proxy.Proxy``, given when the pool is made; an ``https://`` one over
TLS): an https server is reached through a ``CONNECT`` tunnel, TLS then started inside it with the
same certificates; an http server gets each request in absolute form, with the proxy's
``Proxy-Authorization``. Through a SOCKS5 proxy (RFC 1928, with RFC 1929's user name and password
when the proxy URL has them) every connection is a tunnel, TLS inside it for an https server. A
proxy that cannot be reached or refuses the tunnel raises ``ProxyError`` naming it (never its credentials).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from aegis_cli.wrap.http_proxy import Proxy, ProxyError

MAX_HEAD = 64 * 1024
#: Bytes received and not yet read beyond which the connection stops reading (a slow consumer).
_HIGH_WATER = 1024 * 1024


class HTTPProtocolError(Exception):
    """The server's answer is not HTTP/1.1 we can read."""


class ClosedUnanswered(HTTPProtocolError):
    """The server closed the connection after the request went, with nothing back: it may have taken it."""


class _Stale(Exception):
    """A kept-alive connection the server had closed before it saw the request."""


class _Conn(asyncio.Protocol):
    """One connection: what arrives waits in ``buf``; a reader that needs more awaits ``more()``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.idle_since = 0.0  # when it went back to the pool (the loop's clock)
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        #: While set, called (instead of waking ``more()``) whenever bytes or the end arrive: for a
        #: reader driven by the connection's own callbacks, with no task to wake (``mcp_http``'s POSTs).
        self.on_data: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.on_data is not None:
            self.on_data()
        elif self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
        elif len(self.buf) > _HIGH_WATER and not self._reading_paused:
            self._reading_paused = True  # nobody is reading: hold the rest at the server
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _end(self) -> None:
        self.eof = True
        if self.on_data is not None:
            self.on_data()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def drain(self) -> None:
        while self._writing_paused and not self.eof:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable
        if self.eof and not self.buf:
            raise ConnectionResetError("the server closed the connection")

    async def more(self) -> bool:
        """Wait until more bytes arrive; False once the server has closed its side."""
        if self.eof:
            return False
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        return True

    def take(self, n: int | None = None) -> bytes:
        buf = self.buf
        if n is None or n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.eof = True


class Response:
    """Status, headers (``headers``: lower-cased names, repeated ones joined; ``header_items``: each as
    it came), and the body as a stream of bytes, read once: ``aiter_raw`` as sent, ``aiter_bytes``
    decoded as its ``content-encoding`` says."""

    def __init__(self, pool: Http1Pool, conn: _Conn, status: int, headers: dict[str, str], keep: bool,
                 bodyless: bool, header_items: list[tuple[str, str]] | None = None) -> None:
        self.status_code = status
        self.headers = headers
        self.header_items = header_items if header_items is not None else list(headers.items())
        self._pool, self._conn, self._keep = pool, conn, keep
        self._left: int | None = None
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if bodyless:
            self._left = 0
            self._chunked = False
        elif not self._chunked and "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise HTTPProtocolError("bad content-length") from None
            if self._left < 0:
                raise HTTPProtocolError("bad content-length")
        elif not self._chunked:
            self._keep = False  # the body ends when the connection does
        self._done = self._left == 0
        self._closed = False

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (and been read)."""
        return self._done

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return self.aiter_raw()
        return self._decoded(_decoder(encoding))

    async def _decoded(self, decoder: Any) -> AsyncIterator[bytes]:
        raw = self.aiter_raw()
        try:
            async for data in raw:
                out = decoder.decode(data)
                if out:
                    yield out
        finally:
            await raw.aclose()  # now, not by the garbage collector through the event loop
        out = decoder.flush()
        if out:
            yield out

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if self._chunked:
            while not self._done:
                data = self._chunks()
                if data:
                    yield data
                if not self._done and not await conn.more():
                    raise HTTPProtocolError("the connection closed inside a chunked body")
        elif self._left is not None:
            while self._left > 0:
                if not conn.buf and not await conn.more():
                    raise HTTPProtocolError("the connection closed before the body ended")
                if conn.buf:
                    data = conn.take(self._left)
                    self._left -= len(data)
                    yield data
            self._done = True
        else:
            while True:
                if conn.buf:
                    yield conn.take()
                elif not await conn.more() and not conn.buf:
                    break
            self._done = True

    def _chunks(self) -> bytes:
        """Every complete chunk now in the buffer, joined (sets ``_done`` at the last one)."""
        buf = self._conn.buf
        out = []
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > 4096:
                    raise HTTPProtocolError("bad chunk size")
                break
            try:
                size = int(bytes(buf[pos:nl]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HTTPProtocolError("bad chunk size") from None
            if size < 0:
                raise HTTPProtocolError("bad chunk size")
            if size == 0:  # then trailers, up to a blank line
                end = nl + 1
                while True:
                    line_end = buf.find(b"\n", end)
                    if line_end < 0:
                        del buf[:pos]
                        return b"".join(out)
                    line, end = buf[end:line_end + 1], line_end + 1
                    if line in (b"\r\n", b"\n"):
                        break
                pos = end
                self._done = True
                break
            if len(buf) < nl + 1 + size + 2:
                break
            out.append(bytes(buf[nl + 1:nl + 1 + size]))
            pos = nl + 1 + size + 2  # the data, then its CRLF
        del buf[:pos]
        return b"".join(out)

    def read_ready(self) -> bytes:
        """The body bytes that have arrived, as sent, without waiting (``aiter_raw`` for a reader on the
        connection's callbacks); ``complete`` once the last has. Raises if the connection ended first."""
        conn = self._conn
        if self._done:
            return b""
        if self._chunked:
            data = self._chunks()
            if not self._done and conn.eof:
                raise HTTPProtocolError("the connection closed inside a chunked body")
            return data
        if self._left is not None:
            data = conn.take(self._left) if conn.buf else b""
            self._left -= len(data)
            if self._left == 0:
                self._done = True
            elif conn.eof:
                raise HTTPProtocolError("the connection closed before the body ended")
            return data
        data = conn.take() if conn.buf else b""
        if conn.eof:
            self._done = True
        return data

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._done and self._keep and not self._conn.buf:
            self._pool._release(self._conn)
        else:
            self._conn.close()


#: RFC 1928's reply codes, for a refused tunnel's message.
_SOCKS_REPLIES = {1: "general failure", 2: "not allowed by its rules", 3: "network unreachable",
                  4: "host unreachable", 5: "connection refused", 6: "TTL expired",
                  7: "command not supported", 8: "address type not supported"}


async def socks5_connect(conn: _Conn, proxy: Proxy, host: str, port: int) -> None:
    """Open a tunnel to ``host``:``port`` on ``conn``, a fresh connection to the SOCKS5 proxy (RFC 1928;
    RFC 1929's user name and password when ``proxy`` has them). ``socks5h`` hands the proxy the name,
    ``socks5`` an address resolved here. Raises ``ProxyError`` naming the proxy, never the password."""
    import ipaddress
    import socket

    transport: asyncio.Transport = conn.transport  # type: ignore[assignment]

    async def read(n: int, during: str) -> bytes:
        while len(conn.buf) < n:
            if not await conn.more():
                raise ProxyError(f"{proxy.named} closed the connection {during}")
        return conn.take(n)

    credentials = bool(proxy.username or proxy.password)
    transport.write(b"\x05\x02\x00\x02" if credentials else b"\x05\x01\x00")
    version, method = await read(2, "at the greeting (is it a SOCKS5 proxy?)")
    if version != 5:
        raise ProxyError(f"{proxy.named} does not speak SOCKS5")
    if method == 2 and credentials:
        user, password = proxy.username.encode(), proxy.password.encode()
        transport.write(b"\x01%c%b%c%b" % (len(user), user, len(password), password))
        # a proxy may hang up rather than answer a wrong password
        _version, status = await read(2, "after the user name and password (are they right?)")
        if status != 0:
            raise ProxyError(f"{proxy.named} refused the user name and password")
    elif method != 0:
        if method == 0xFF:
            hint = "" if credentials else " (put a user name and password in its URL if it wants them)"
            raise ProxyError(f"{proxy.named} accepts none of the ways offered to authenticate{hint}")
        raise ProxyError(f"{proxy.named} chose a way to authenticate that was not offered ({method})")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None and proxy.scheme == "socks5":  # resolved here, as curl does for socks5://
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ProxyError(f"{host} could not be resolved to reach it through {proxy.named} "
                             f"({exc.strerror or exc})") from None
        address = ipaddress.ip_address(infos[0][4][0])
    if address is None:
        try:
            name = host.encode("idna")
        except UnicodeError as exc:
            raise ProxyError(f"{host!r} cannot be handed to {proxy.named} ({exc})") from None
        if len(name) > 255:  # one byte of length; DNS names stop at 253 anyway
            raise ProxyError(f"the host name is too long to hand to {proxy.named}")
        where = b"\x03%c%b" % (len(name), name)
    else:
        where = (b"\x01" if address.version == 4 else b"\x04") + address.packed
    transport.write(b"\x05\x01\x00" + where + port.to_bytes(2, "big"))
    version, reply, _reserved, kind = await read(4, "before answering the CONNECT")
    if reply != 0:
        why = _SOCKS_REPLIES.get(reply, f"reply {reply}")
        raise ProxyError(f"{proxy.named} refused the tunnel to {host}:{port} ({why})")
    size = {1: 4, 4: 16}.get(kind)
    if size is None:
        size = (await read(1, "in its answer to the CONNECT"))[0]
    await read(size + 2, "in its answer to the CONNECT")  # the address it bound: not ours to use
    if conn.buf:
        raise ProxyError(f"{proxy.named} sent bytes ahead of the tunnel")


class Http1Pool:
    """Connections to one origin, reused while the server keeps them alive."""

    def __init__(self, url: str, connect_timeout: float = 30.0, proxy: Proxy | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl = _ssl_context() if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.proxy = proxy
        #: Through a proxy to an http server: requests name the whole URL (absolute form), and carry
        #: the proxy's credentials. Header lines every request gets; empty when connecting directly.
        self.origin = "" if proxy is None or proxy.socks or self.ssl is not None else f"http://{self.netloc}"
        self.proxy_lines: list[str] = []
        if self.origin:
            self.target = self.origin + self.target
            if proxy is not None and proxy.authorization:
                self.proxy_lines.append(f"proxy-authorization: {proxy.authorization}")
        self._idle: list[_Conn] = []

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        if self.proxy is not None:
            return await asyncio.wait_for(self._through_proxy(loop, self.proxy), self.connect_timeout)
        _transport, conn = await asyncio.wait_for(
            loop.create_connection(_Conn, self.host, self.port, ssl=self.ssl,
                                   server_hostname=self.host if self.ssl else None),
            self.connect_timeout)
        return conn

    async def _through_proxy(self, loop: asyncio.AbstractEventLoop, proxy: Proxy) -> _Conn:
        """A connection to the proxy; for an https server (or any, through SOCKS), a tunnel through it,
        with TLS inside for https."""
        try:  # an https:// proxy is reached over TLS, its certificate checked as a server's
            transport, conn = await loop.create_connection(
                _Conn, proxy.host, proxy.port, ssl=_ssl_context() if proxy.scheme == "https" else None,
                server_hostname=proxy.host if proxy.scheme == "https" else None)
        except OSError as exc:
            raise ProxyError(f"{proxy.named} could not be reached ({exc.strerror or exc})") from None
        if self.ssl is None and not proxy.socks:
            return conn  # an http server through an HTTP proxy: requests in absolute form, no tunnel
        try:
            if proxy.socks:
                await socks5_connect(conn, proxy, self.host, self.port)
            else:
                await self._connect_tunnel(conn, proxy)
            if self.ssl is not None:
                conn.transport = await loop.start_tls(transport, conn, self.ssl,  # type: ignore[assignment]
                                                      server_hostname=self.host)
            return conn
        except BaseException:
            transport.close()
            raise

    async def _connect_tunnel(self, conn: _Conn, proxy: Proxy) -> None:
        """Ask the HTTP proxy for a tunnel to the server (``CONNECT``); raises ``ProxyError`` if refused."""
        authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
        if proxy.authorization:
            lines.append(f"proxy-authorization: {proxy.authorization}")
        conn.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))  # type: ignore[union-attr]
        try:
            status, _found, _items = await _read_head(conn, True)
        except HTTPProtocolError as exc:
            raise ProxyError(f"{proxy.named} did not answer the CONNECT ({exc})") from None
        if not 200 <= status < 300:
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            raise ProxyError(f"{proxy.named} refused the tunnel to {authority} "
                             f"(HTTP {status} {phrase})".replace(" )", ")"))
        if conn.buf:
            raise ProxyError(f"{proxy.named} sent bytes ahead of the tunnel")

    def idle(self, max_idle: float | None = None) -> _Conn | None:
        """A kept-alive connection to write a request on at once (None when none is open; with
        ``max_idle``, none idle longer than that). Whoever takes it reads the answer (``parse_head``,
        ``Response``) and hands it back by closing that."""
        while self._idle:
            conn = self._idle.pop()
            if self._usable(conn, max_idle):
                return conn
            conn.close()
        return None

    def _usable(self, conn: _Conn, max_idle: float | None) -> bool:
        if conn.eof or conn.buf:  # closed by the server while idle, or bytes no request asked for
            return False
        return max_idle is None or asyncio.get_running_loop().time() - conn.idle_since < max_idle

    def _release(self, conn: _Conn) -> None:
        if len(self._idle) < 8 and not conn.eof and not conn.transport.is_closing():  # type: ignore[union-attr]
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()

    async def request(self, method: str, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes,
                      target: str | None = None, *, replay: bool = True, max_idle: float | None = None) -> Response:
        """Send one request (to the pool's URL, or ``target``: a path and query on its origin). A
        reused connection that closes with nothing back had been closed by the server (its keep-alive
        ran out as the request went): the request is sent again on another, unless ``replay`` is
        False, for a request that must not run twice (the server may have taken it before it closed);
        then ``max_idle`` keeps to connections idle for less than that, well inside keep-alive timeouts."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        if target is not None and self.origin:
            target = self.origin + target
        # Content-Length spelt so: some proxies (proxy.py) miss it in lower case and add a second one.
        lines = [f"{method} {target or self.target} HTTP/1.1", f"host: {self.netloc}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in items if k.lower() not in ("host", "content-length")]
        if self.proxy_lines:
            lines += self.proxy_lines
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        while self._idle:
            conn = self._idle.pop()
            if not self._usable(conn, max_idle):
                conn.close()
                continue
            try:
                return await self._exchange(conn, method, head, body, fresh=not replay)
            except (ConnectionError, _Stale):
                conn.close()  # nothing came back on it: the server had closed it; try another
                if not replay:
                    raise
        return await self._exchange(await self._connect(), method, head, body, fresh=True)

    async def _exchange(self, conn: _Conn, method: str, head: bytes, body: bytes, fresh: bool = False) -> Response:
        try:
            conn.transport.write(head + body)  # type: ignore[union-attr]
            await conn.drain()
            while True:
                status, found, items = await _read_head(conn, fresh)
                if status >= 200 or status == 101:
                    break  # 1xx answers (100 Continue) come before the real one
                fresh = True  # something came back: a close from here on is no stale connection
            keep = "close" not in found.get("connection", "").lower()
            return Response(self, conn, status, found, keep, method == "HEAD" or status in (204, 304), items)
        except BaseException:
            conn.close()
            raise

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def _read_head(conn: _Conn, fresh: bool) -> tuple[int, dict[str, str], list[tuple[str, str]]]:
    while True:
        head = parse_head(conn.buf)
        if head is not None:
            return head
        if not await conn.more():
            if conn.buf:
                raise HTTPProtocolError("the connection closed inside the headers")
            if fresh:
                raise ClosedUnanswered("the server closed the connection without answering")
            raise _Stale


def parse_head(buf: bytearray) -> tuple[int, dict[str, str], list[tuple[str, str]]] | None:
    """Take a response head off the front of ``buf``: (status, headers, header items), or None while
    it has not all arrived."""
    while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # empty lines ahead of it, as RFC 9112 2.2 tolerates
        del buf[:2 if buf[0] == 13 else 1]
    end = buf.find(b"\r\n\r\n")
    cut = 4
    lax = buf.find(b"\n\n")  # a server that ends lines with LF alone
    if lax >= 0 and (end < 0 or lax < end):
        end, cut = lax, 2
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise HTTPProtocolError("the answer's headers are too large")
        return None
    if end > MAX_HEAD:
        raise HTTPProtocolError("the answer's headers are too large")
    head = bytes(buf[:end])
    del buf[:end + cut]
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split(" ", 2) if lines else []
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPProtocolError("the answer is not HTTP/1.1")
    found: dict[str, str] = {}
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key, value = name.strip().lower(), value.strip()
        found[key] = f"{found[key]}, {value}" if key in found else value
        items.append((key, value))
    return int(parts[1]), found, items


def _ssl_context() -> ssl.SSLContext:
    """The certificates httpx would trust (certifi, or $SSL_CERT_FILE / $SSL_CERT_DIR), so both paths agree."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - wrap's extra brings httpx
        return ssl.create_default_context()
    return httpx.create_ssl_context()


def _decoder(encoding: str) -> Any:
    """httpx's decoder for a ``content-encoding`` (one, or a list applied in order). An encoding it
    cannot decode is an error: a reply aegis cannot read is never passed on as if it were read."""
    from httpx._decoders import SUPPORTED_DECODERS, MultiDecoder

    names = [part.strip() for part in encoding.split(",") if part.strip() not in ("", "identity")]
    unknown = [name for name in names if name not in SUPPORTED_DECODERS]
    if unknown:
        raise HTTPProtocolError(f"the reply is compressed as {unknown[0]!r}, which cannot be decoded here")
    decoders = [SUPPORTED_DECODERS[name]() for name in names]
    return decoders[0] if len(decoders) == 1 else MultiDecoder(decoders)


__all__: list[Any] = ["HTTPProtocolError", "Http1Pool", "ProxyError", "Response", "parse_head"]
