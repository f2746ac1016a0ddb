"""The server side of ``aegis wrap --mcp --url``: a remote MCP server over Streamable HTTP.

``HttpServer`` is a server link for ``McpWrapper`` like ``StdioServer``: it takes whole JSON-RPC
lines from the relay and hands back whole lines, so the deciding is the same code for both. Here
each message is POSTed; the answer comes as JSON or as an SSE stream (which may carry the server's
own requests and notifications first), the session id from ``initialize`` rides on every later
request, a GET stream carries what the server sends unprompted, a stream cut before its answer is
resumed with ``Last-Event-ID``, and the session is DELETEd at the end. A server that offers only the
older HTTP+SSE transport (2024-11-05) is spoken to that way instead.

A request written on a kept-alive connection (every ``tools/call`` but the first few) is answered
from that connection's own callbacks (``_Exchange``): no task, no future, no turn of the event loop
between the bytes arriving and the answer going to the host. Anything out of the ordinary (another
status, encoding or content type, a stream cut before its answer) is handed on to the coroutines
that handle every case.

A proxy named by the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, less ``NO_PROXY``:
``http_proxy.proxy_for``; HTTP(S) or SOCKS5) carries everything sent to the server, POSTs and httpx's
requests alike; it is chosen once, when the link starts.

Fail closed: a request the server (or the proxy) cannot be reached for, whose reply cannot be read or whose
stream ends without an answer is handed to ``on_undelivered`` with the reason, and the relay answers
it (``isError`` for a tool call). Header values are secrets (tokens): they are never logged,
audited or put in an error message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from aegis_cli.wrap import eager
from aegis_cli.wrap import messages as m
from aegis_cli.wrap.http1 import ClosedUnanswered, Http1Pool, HTTPProtocolError, Response, parse_head
from aegis_cli.wrap.http_proxy import Proxy, ProxyError, proxy_for

#: Reconnection: attempts in a row, and the delay when the server names none (SSE ``retry:``).
RECONNECT_ATTEMPTS = 3
RECONNECT_DELAY = 1.0
#: How long (seconds) an HTTP+SSE server's stream may take to name its endpoint.
LEGACY_ENDPOINT_WAIT = 30.0
#: A reply bigger than this is not read (and the request fails closed).
MAX_BODY = 64 * 1024 * 1024
#: A tool call goes on a kept-alive connection only if it has been idle less than this (seconds), well
#: inside servers' keep-alive timeouts (5 s in uvicorn and Node), so the server does not close it as the
#: call goes: a call that goes and gets nothing back is never sent again (it may have run).
FRESH_FOR = 4.0

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class HeaderError(ValueError):
    """A ``--header`` that cannot be used; the message never holds the value."""


def parse_header(spec: str, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """``'Name: value'`` with ``${VAR}`` references expanded from the environment."""
    env = os.environ if environ is None else environ
    name, sep, value = spec.partition(":")
    name = name.strip()
    if not sep or not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise HeaderError("a header must look like 'Name: value'")

    def expand(match: re.Match[str]) -> str:
        var = match.group(1)
        if var not in env:
            raise HeaderError(f"header {name}: environment variable {var} is not set")
        return env[var]

    value = _ENV_REF.sub(expand, value.strip())
    if "\r" in value or "\n" in value:
        raise HeaderError(f"header {name}: the value holds a line break")
    return name, value


@dataclass(slots=True)
class SSE:
    id: str | None
    event: str
    data: str
    retry: float | None


class SSESplitter:
    """Cuts a ``text/event-stream`` fed in pieces into events (id, event, data, retry); comments and
    empty events skipped. Line endings (CRLF, CR, LF) are made LF as each piece comes in, so events
    are cut at LF LF with one ``split``, and each is decoded in one go."""

    __slots__ = ("_buf", "_cr")

    def __init__(self) -> None:
        self._buf = b""  # the unfinished event, its line endings already LF
        self._cr = False  # the last piece ended with CR: an LF first in the next is that CRLF's end

    def feed(self, chunk: bytes) -> list[SSE]:
        if self._cr:
            self._cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        events = []
        for block in blocks:
            event = _parse(block) if block else None
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[SSE]:
        """The last event, when the stream ended without the blank line after it."""
        buf, self._buf = self._buf, b""
        event = _parse(buf) if buf.strip() else None
        return [event] if event is not None else []


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSE]:
    """Events of a ``text/event-stream`` (id, event, data, retry); comments and empty events skipped."""
    splitter = SSESplitter()
    async for chunk in chunks:
        for event in splitter.feed(chunk):
            yield event
    for event in splitter.end():
        yield event


def _parse(block: bytes) -> SSE | None:
    """One event's lines, LF-separated (``SSESplitter`` made them so)."""
    ident: str | None = None
    event, data, retry = "message", [], None
    # Decoded whole: an LF byte is never inside a UTF-8 sequence, so this is the lines decoded each.
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line or line[0] == ":":
            continue
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            ident = value
        elif name == "retry" and value.isdigit():
            retry = int(value) / 1000
    if not data and ident is None:
        return None
    return SSE(ident, event, "\n".join(data), retry)


_loads = m.json_loader()  # json.loads by the C scanner directly, for an event's data


def _requests(msg: Any) -> list[dict[str, Any]]:
    """The requests (method and id) in a message or batch: what must be answered."""
    items = msg if isinstance(msg, list) else [msg]
    return [i for i in items if isinstance(i, dict) and isinstance(i.get("method"), str) and "id" in i]


def _stray(answer: dict[str, Any]) -> None:
    print(f"aegis: the MCP server sent an answer (id {json.dumps(answer.get('id'))[:40]}) to no request "
          "waiting for it on that stream; dropped", file=sys.stderr)


def _calls(requests: list[dict[str, Any]]) -> bool:
    """Whether any of the requests is a tool call: what must never run twice."""
    return any(r["method"] == "tools/call" for r in requests)


def _id_key(msg_id: Any) -> Any:
    """A request id as a dict key: 1 and "1" are different requests (JSON-RPC ids are strings or
    numbers); an integer, the usual id, stands for itself and costs no encoding."""
    return msg_id if type(msg_id) is int else json.dumps(msg_id)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


Undelivered = Callable[[Any, str], None]


class HttpServer:
    """A remote MCP server at ``url``, as a line-in/line-out link for the relay.

    ``headers`` go on every request (already expanded). ``oauth`` (``mcp_oauth.OAuthBearer``)
    authorizes on a 401. ``host_authorization`` (``--listen``) returns the host's own
    ``Authorization`` header for the request being relayed, which goes on untouched in place of
    aegis's own; ``on_http_error`` lets ``--listen`` hand a 401/403 (with ``WWW-Authenticate``)
    back to the host as it came, when the credential refused was the host's, or the host's to get
    (aegis has none of its own: no ``oauth``, no ``Authorization`` in ``headers``).
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, *, oauth: Any = None,
                 host_authorization: Callable[[], str | None] | None = None,
                 on_http_error: Callable[[Any, int, dict[str, str], bytes], bool] | None = None,
                 connect_timeout: float = 30.0) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.oauth = oauth
        self.host_authorization = host_authorization
        self.on_http_error = on_http_error
        self._own_credential = oauth is not None or any(k.lower() == "authorization" for k in self.headers)
        self.name_hint = urlsplit(url).hostname or "mcp"
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.legacy_endpoint: str | None = None  # set once the server turned out to be HTTP+SSE only
        self._connect_timeout = connect_timeout
        self.proxy: Proxy | None = None  # the proxy in between, chosen at start
        self._client: Any = None
        self._pool: Any = None
        self._on_line: Callable[[bytes], None] = lambda _line: None
        self._on_undelivered: Undelivered = lambda _msg, _why: None
        self._backlog: collections.deque[tuple[bytes, Any, contextvars.Context]] = collections.deque()
        self._serial: asyncio.Task[None] | None = None  # the message the next ones wait for
        self._tasks: set[asyncio.Task[Any]] = set()
        self._exchanges: set[_Exchange] = set()  # POSTs being answered on their connection's callbacks
        self._head_key: tuple[Any, ...] | None = None  # what the cached request head was made from
        self._head = b""
        self._listener: asyncio.Task[None] | None = None
        self._legacy_pending: dict[str, dict[str, Any]] = {}
        self._legacy_dead: str | None = None
        self._done: asyncio.Future[int] | None = None
        self._closing = False
        self._seen_version: str | None = None
        self._initialize: dict[str, Any] | None = None  # the host's initialize, sent again for a new session
        self._renewing: asyncio.Task[str | None] | None = None
        self._renewals = 0

    # -- link interface (as StdioServer) ---------------------------------------------------

    async def start(self, on_line: Callable[[bytes], None], on_undelivered: Undelivered) -> None:
        import httpx

        self._on_line, self._on_undelivered = on_line, on_undelivered
        self.proxy = proxy_for(self.url)
        # The POSTs (every relayed message) take the lean path; httpx serves the rest.
        self._pool = Http1Pool(self.url, self._connect_timeout, proxy=self.proxy)
        # No read timeout: SSE streams stay open, and a tool may take long; the connect timeout
        # is what catches an unreachable server. The certificates trusted and the proxy are the
        # POSTs' (httpx's own choice: certifi, or $SSL_CERT_FILE / $SSL_CERT_DIR; the proxy as
        # httpx reads the environment), and nothing else of the environment is read.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self._connect_timeout, read=None),
                                         follow_redirects=False, trust_env=False,
                                         proxy=self.proxy.url if self.proxy is not None else None,
                                         verify=self._pool.ssl if self._pool.ssl is not None else True)
        self._done = asyncio.get_running_loop().create_future()

    def send(self, line: bytes) -> None:
        self.send_parsed(line, None)

    def send_parsed(self, line: bytes, msg: dict[str, Any] | None) -> None:
        """``send`` for a caller that has already parsed ``line`` (``msg``), so it is not parsed again."""
        # The caller's context goes with the message: ``--listen`` routes what the server sends
        # while answering it to the host request it belongs to.
        if self._closing:
            return  # the host is gone; nothing more goes to the server
        if self._serial is not None or self._backlog:
            self._backlog.append((line, msg, contextvars.copy_context()))
        else:
            self._dispatch(line, msg, contextvars.copy_context())

    def signal(self, sig: int) -> None:
        self.close_input(128 + sig if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) else 0)

    def close_input(self, code: int = 0) -> None:
        """The host is gone: end the session (DELETE) and let ``wait()`` return."""
        if self._done is not None and not self._done.done() and not self._closing:
            self._closing = True
            task = asyncio.ensure_future(self._close(code))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait(self) -> int:
        assert self._done is not None
        return await self._done

    # -- sending ----------------------------------------------------------------------------

    def _dispatch(self, line: bytes, msg: Any, ctx: contextvars.Context) -> None:
        """POST one message now (this is the path of every tools/call): written to the connection
        from this very callback, and answered from the connection's callbacks (``_Exchange``) when a
        kept-alive one is open, else by a task once it has to wait (``eager.start``). The handshake,
        notifications and responses are finished before the next message goes, so the server sees
        "initialized" before the requests after it."""
        if msg is None:
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                return  # the relay forwards only what it read; nothing else is the server's
        requests = _requests(msg)
        # What httpx does (the old transport, an OAuth refresh) needs a task of its own to run in.
        now = self.legacy_endpoint is None and (self.oauth is None or not self.oauth.stale)
        if now and requests and not any(r["method"] == "initialize" for r in requests):
            conn = self._pool.idle(FRESH_FOR if _calls(requests) else None)
            if conn is not None:
                exchange = _Exchange(self, conn, ctx, line, msg, requests)
                try:
                    ctx.run(exchange.send)
                except Exception as exc:  # fail closed: the request is answered, never left hanging
                    exchange.drop()
                    self._fail(exchange.pending, f"aegis could not send it ({_describe(exc)})")
                return
        if self.legacy_endpoint is not None:
            coro = self._legacy_post(line, msg, requests)
            serial = True
        else:
            coro = self._post(line, msg, requests)
            serial = not requests or any(r["method"] == "initialize" for r in requests)
        try:
            finished, task = ctx.run(eager.start if now else _scheduled, coro)
        except Exception as exc:  # fail closed: the request is answered, never left hanging
            self._fail({_id_key(r["id"]): r for r in requests}, f"aegis could not send it ({_describe(exc)})")
            return
        if finished:
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if serial:
            self._serial = task
            task.add_done_callback(self._serial_done)

    def _serial_done(self, task: asyncio.Task[None]) -> None:
        if self._serial is task:
            self._serial = None
        while self._backlog and self._serial is None:
            line, msg, ctx = self._backlog.popleft()
            self._dispatch(line, msg, ctx)

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task the session's end waits for (what an exchange hands on)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _headers(self, msg: Any = None) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        if self.headers:
            headers.update(self.headers)
        if self.session_id:
            headers["mcp-session-id"] = self.session_id
        version = m.request_meta(msg).get(m.PROTOCOL_VERSION_KEY) if isinstance(msg, dict) else None
        if isinstance(version, str):
            headers["mcp-protocol-version"] = version
        elif self.protocol_version:
            headers["mcp-protocol-version"] = self.protocol_version
        auth = self.host_authorization() if self.host_authorization is not None else None
        if auth:
            headers["authorization"] = auth
        elif self.oauth is not None and self.oauth.access_token:
            headers["authorization"] = f"Bearer {self.oauth.access_token}"
        return headers

    def _request_head(self, msg: Any, length: int) -> bytes:
        """The head of a POST of ``msg`` (``length`` bytes): ``_headers`` as ``Http1Pool.request`` writes
        them, made again only when what they depend on changed (the session, the protocol version, the
        credential), not for every call."""
        version = m.request_meta(msg).get(m.PROTOCOL_VERSION_KEY) if isinstance(msg, dict) else None
        auth = self.host_authorization() if self.host_authorization is not None else None
        key = (self.session_id, version if isinstance(version, str) else self.protocol_version, auth,
               self.oauth.access_token if self.oauth is not None else None)
        if key != self._head_key:
            pool = self._pool
            lines = [f"POST {pool.target} HTTP/1.1", f"host: {pool.netloc}"]
            lines += [f"{k}: {v}" for k, v in self._headers(msg).items() if k.lower() not in ("host", "content-length")]
            lines += pool.proxy_lines
            self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")  # as http1 spells it
            self._head_key = key
        return b"%s%d\r\n\r\n" % (self._head, length)

    async def _post(self, line: bytes, msg: Any, requests: list[dict[str, Any]], *, retried: bool = False,
                    renewed: bool = False) -> None:
        pending = {_id_key(r["id"]): r for r in requests}
        initialize = any(r["method"] == "initialize" for r in requests)
        if initialize:
            self.session_id = None
            if isinstance(msg, dict):
                self._initialize = msg
        if self.oauth is not None and self.oauth.stale and not retried and not self._hosts_own():
            try:
                await self.oauth.ensure_fresh()
            except Exception as exc:
                self._fail(pending, f"authorization failed ({_describe(exc)})")
                return
        session = self.session_id
        calls = _calls(requests)
        try:
            response = await self._pool.request("POST", self._headers(msg), line, replay=not calls,
                                                 max_idle=FRESH_FOR if calls else None)
        except ClosedUnanswered as exc:
            self._fail(pending, self._may_have_run() if calls else self._unreachable(exc))
            return
        except Exception as exc:
            self._fail(pending, self._unreachable(exc))
            return
        await self._answer(response, line, msg, requests, pending, initialize=initialize, retried=retried,
                           session=session, renewed=renewed)

    async def _answer(self, response: Any, line: bytes, msg: Any, requests: list[dict[str, Any]],
                      pending: dict[Any, dict[str, Any]], *, initialize: bool = False, retried: bool = False,
                      session: str | None = None, renewed: bool = False) -> None:
        """Read the server's answer to a POST (sent in ``session``) and deliver it (or say why not)."""
        try:
            status = response.status_code
            if status == 407 and self.proxy is not None and not self.proxy.socks:
                self._fail(pending, f"{self.proxy.named} refused the request "
                                    "(HTTP 407 Proxy Authentication Required)")
                return
            if status in (401, 403) and not retried:
                if await self._authorize(response, msg, pending):
                    await response.aclose()
                    await self._post(line, msg, requests, retried=True)
                return
            if initialize and status in (400, 404, 405) and self.session_id is None:
                await response.aclose()
                if await self._legacy_connect():
                    await self._legacy_post(line, msg, requests)
                else:
                    self._fail(pending, f"the server answered HTTP {status} to initialize, and offers no "
                                        "HTTP+SSE stream either")
                return
            if status == 202:
                self._fail(pending, "the server accepted the request but sent no answer")
                if isinstance(msg, dict) and msg.get("method") == "notifications/initialized":
                    self._start_listening()  # 202 is how the spec answers it: the session is ready
                return
            if status == 404 and session is not None and pending and not renewed and self._initialize is not None:
                # The server ended the session (a restart, an idle timeout): the spec's remedy is a new
                # one, started as the host started the first. The request never ran (its session was
                # unknown), so once that is done it is sent again, once. The host keeps its own session.
                await response.aclose()
                why = await self._renew(session)
                if why is None:
                    await self._post(line, msg, requests, renewed=True)
                else:
                    self._fail(pending, f"the server ended the session (HTTP 404) and a new one could not be "
                                        f"started ({why})")
                return
            if status >= 400:
                body = await _read_limited(response)
                if self._deliver_body(body, pending, quiet=True) and not pending:
                    return
                why = "its session ended (HTTP 404)" if status == 404 and self.session_id else f"HTTP {status}"
                self._fail(pending, f"the server refused the request ({why}){self._through()}")
                return
            if initialize:
                self.session_id = response.headers.get("mcp-session-id") or None
            kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind == "text/event-stream":
                last = await self._read_stream(response, pending)
                await self._resume(last, pending)
            elif kind == "application/json":
                self._deliver_body(await _read_limited(response), pending)
            elif pending:
                self._fail(pending, f"the server's reply has content type {kind or 'none'}, not JSON or SSE")
                return
            if pending:
                self._fail(pending, "the server's reply did not answer the request")
            if initialize:
                self._learn_version()
            elif isinstance(msg, dict) and msg.get("method") == "notifications/initialized":
                self._start_listening()
        except Exception as exc:  # fail closed: whatever went wrong, the request is answered
            self._fail(pending, f"the server's reply could not be read ({_describe(exc)})")
        finally:
            await response.aclose()

    async def _renew(self, stale: str) -> str | None:
        """A new session in place of ``stale``, which the server no longer knows: None once it is ready
        (or another request has already renewed it), else why not. Requests that find the session
        gone together share one renewal; one that fails leaves the next request to try again."""
        if self.session_id != stale:
            return None
        if self._renewing is None:
            # in a context of its own: not the request's, which --listen routes what the server sends by
            task = self._renewing = asyncio.get_running_loop().create_task(self._reinitialize(),
                                                                           context=contextvars.Context())
            task.add_done_callback(lambda _t: setattr(self, "_renewing", None))
        return await asyncio.shield(self._renewing)  # a host that hangs up does not cut it short

    async def _reinitialize(self) -> str | None:
        """Send the host's ``initialize`` again (an id of aegis's own: the answer stays here) without a
        session id, take the new session, say ``initialized`` in it, and listen on it."""
        assert self._initialize is not None
        self._renewals += 1
        ident = f"aegis-session-{self._renewals}"
        request = {**self._initialize, "id": ident}
        headers = self._headers(request)
        for name in ("mcp-session-id", "mcp-protocol-version"):  # as the first initialize went
            headers.pop(name, None)
        try:
            response = await self._pool.request("POST", headers, m.dumps(request))
        except Exception as exc:
            return self._unreachable(exc)
        answer: Any = None
        try:
            if response.status_code != 200:
                return f"HTTP {response.status_code} to initialize"
            session = response.headers.get("mcp-session-id") or None
            kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind == "text/event-stream":
                events = sse_events(response.aiter_bytes())
                async for event in events:  # the answer, not what the server may send before it
                    if event.event == "message" and event.data and ident in event.data:
                        found = json.loads(event.data)
                        if isinstance(found, dict) and found.get("id") == ident:
                            answer = found
                            break
                await events.aclose()
            else:
                answer = json.loads(await _read_limited(response))
        except Exception as exc:
            return f"its answer to initialize could not be read ({_describe(exc)})"
        finally:
            await response.aclose()
        result = answer.get("result") if isinstance(answer, dict) and answer.get("id") == ident else None
        if not isinstance(result, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            return f"it answered initialize with {error.get('message') if isinstance(error, dict) else 'no result'}"
        self.session_id = session
        if isinstance(result.get("protocolVersion"), str):
            self._seen_version = result["protocolVersion"]
            self._learn_version()
        try:
            done = await self._pool.request("POST", self._headers(), m.dumps(_INITIALIZED))
            await done.aclose()
        except Exception as exc:
            return self._unreachable(exc)
        if done.status_code >= 300:
            return f"HTTP {done.status_code} to notifications/initialized"
        if self._listener is not None:  # the old session's GET stream (ended, or retrying in vain)
            self._listener.cancel()
            self._listener = None
        self._start_listening()
        print("aegis: the MCP server had ended the session; a new one was started", file=sys.stderr)
        return None

    def _unreachable(self, exc: BaseException) -> str:
        if isinstance(exc, ProxyError):  # it names the proxy and what it answered
            return f"the server at {self.url} could not be reached: {exc}"
        return f"the server at {self.url} could not be reached{self._through()} ({_describe(exc)})"

    def _may_have_run(self) -> str:
        """Why a tool call the server may have taken is answered by aegis rather than sent again."""
        return (f"the server at {self.url} closed the connection without answering{self._through()}; "
                "not sent again, as it may have run")

    def _through(self) -> str:
        """Where an answer came through, for a refusal's reason: the proxy may be who refused."""
        return f" through {self.proxy.named}" if self.proxy is not None else ""

    def _hosts_own(self) -> str | None:
        """The host's own ``Authorization`` for the request at hand (``--listen``), if it sent one."""
        return self.host_authorization() if self.host_authorization is not None else None

    def _learn_version(self) -> None:
        self.protocol_version = self._seen_version or self.protocol_version

    async def _authorize(self, response: Any, msg: Any, pending: dict[str, dict[str, Any]]) -> bool:
        """A 401/403: True when a fresh token was obtained and the request should be sent again."""
        body = await _read_limited(response)
        headers = {k.lower(): v for k, v in response.headers.items()
                   if k.lower() in ("www-authenticate", "content-type")}
        if self.host_authorization is not None and (self._hosts_own() or not self._own_credential):
            # --listen, and the credential refused is the host's (or the host's to get): it gets
            # the server's answer as it came, and does its own OAuth.
            if self.on_http_error is not None and pending and self.on_http_error(msg, response.status_code,
                                                                                 headers, body):
                return False
            self._fail(pending, f"the server refused the request (HTTP {response.status_code}){self._through()}")
            return False
        if self.oauth is not None and response.status_code == 401:
            try:
                await self.oauth.authorize(headers.get("www-authenticate"))
                return True
            except Exception as exc:
                self._fail(pending, f"the server requires authorization, which failed ({_describe(exc)})")
                return False
        hint = "" if self._own_credential else "; pass --header 'Authorization: Bearer ${TOKEN}'"
        self._fail(pending, f"the server requires authorization (HTTP {response.status_code}){self._through()}{hint}")
        return False

    # -- reading ----------------------------------------------------------------------------

    def _deliver(self, msg: Any, raw: bytes | None, pending: dict[str, dict[str, Any]]) -> None:
        """Hand a message from the server to the relay. An answer is taken only for a request ``pending``
        on the stream it came on (the spec's rule): one to another request, already answered, or to
        none (the GET stream's) is dropped, so no request is answered twice or with another's answer."""
        if isinstance(msg, dict) and "method" not in msg and "id" in msg:
            if msg["id"] is None and "error" in msg and len(pending) == 1:
                # Refused before its id was read (the SDK's servers answer so): it goes to the host with the
                # id of the one request it can answer, or the host would wait for that request for ever.
                msg, raw = {**msg, "id": next(iter(pending.values()))["id"]}, None
            request = pending.pop(_id_key(msg["id"]), None)
            if request is None:
                _stray(msg)
                return
            if request["method"] == "initialize":
                result = msg.get("result")
                if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                    self._seen_version = result["protocolVersion"]
        elif isinstance(msg, list):
            kept = []
            for item in msg:
                answer = isinstance(item, dict) and "method" not in item and "id" in item
                if answer and pending.pop(_id_key(item["id"]), None) is None:
                    _stray(item)
                    continue
                kept.append(item)
            if not kept:
                return
            if len(kept) < len(msg):
                msg, raw = kept, None
        line = raw + b"\n" if raw is not None and b"\n" not in raw and b"\r" not in raw else m.dumps(msg)
        self._on_line(m.read_line(line, msg))

    def _deliver_body(self, body: bytes, pending: dict[str, dict[str, Any]], *, quiet: bool = False) -> bool:
        try:
            msg = json.loads(body)
        except (ValueError, RecursionError):
            if not quiet:
                self._fail(pending, "the server's reply could not be parsed (not JSON)")
            return False
        if not isinstance(msg, (dict, list)):
            if not quiet:
                self._fail(pending, "the server's reply is not a JSON-RPC message")
            return False
        if quiet and not (isinstance(msg, dict) and "error" in msg):
            return False
        self._deliver(msg, body.strip(), pending)
        return True

    async def _read_stream(self, response: Any, pending: dict[str, dict[str, Any]]) -> tuple[str | None, float]:
        """Deliver a stream's messages until every pending request is answered or it ends."""
        last_id, delay, unreadable = None, RECONNECT_DELAY, False
        answering = bool(pending)
        body = response.aiter_bytes()
        events = sse_events(body)
        try:
            async for event in events:
                if event.retry is not None:
                    delay = event.retry
                if event.id is not None:
                    last_id = event.id
                if not event.data or event.event != "message":
                    continue
                try:
                    msg = json.loads(event.data)
                except (ValueError, RecursionError):
                    unreadable = True
                    print("aegis: an event from the MCP server is not JSON; dropped", file=sys.stderr)
                    continue
                self._deliver(msg, event.data.encode(), pending)
                if answering and not pending:
                    # Answered. The server ends the stream next; reading to that end (briefly) lets
                    # the connection go back to the pool instead of being closed and reopened.
                    if not getattr(response, "complete", False):  # else the end came with the answer
                        with contextlib.suppress(Exception):
                            async with asyncio.timeout(0.5):  # no task of its own, unlike wait_for
                                await _drain(events)
                    break
        except Exception as exc:
            if not pending:
                raise
            print(f"aegis: the MCP server's stream broke ({_describe(exc)})", file=sys.stderr)
        finally:
            # Closed here, not left to the garbage collector: asyncio would close each through the
            # loop's self-pipe and a task of its own, two wakeups per call for nothing.
            await events.aclose()
            await body.aclose()
        if unreadable and pending:
            self._fail(pending, "the server's reply could not be parsed")
        return last_id, delay

    async def _resume(self, last: tuple[str | None, float], pending: dict[str, dict[str, Any]]) -> None:
        """A stream ended before its answer: GET it again from after the last event seen."""
        last_id, delay = last
        attempts = 0
        while pending and last_id is not None and attempts < RECONNECT_ATTEMPTS:
            attempts += 1
            await asyncio.sleep(delay)
            headers = self._headers()
            headers["accept"] = "text/event-stream"
            headers["last-event-id"] = last_id
            try:
                async with self._client.stream("GET", self.url, headers=headers) as response:
                    if response.status_code != 200:
                        continue
                    new_id, delay = await self._read_stream(response, pending)
                    if new_id is not None and new_id != last_id:
                        last_id, attempts = new_id, 0
            except Exception:
                continue
        if pending:
            self._fail(pending, "the server's stream ended before it answered"
                       + (" and could not be resumed" if last_id is not None else ""))

    def _start_listening(self) -> None:
        if self._listener is None and self.session_id is not None:
            self._listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        """The GET stream: what the server sends unprompted (requests, notifications), resumed when cut."""
        last_id: str | None = None
        failures = 0
        delay = RECONNECT_DELAY
        while failures < RECONNECT_ATTEMPTS:
            headers = self._headers()
            headers["accept"] = "text/event-stream"
            headers.pop("content-type", None)
            if last_id is not None:
                headers["last-event-id"] = last_id
            try:
                async with self._client.stream("GET", self.url, headers=headers) as response:
                    if 400 <= response.status_code < 500:
                        return  # this server offers no such stream (405), or no longer this session
                    if response.status_code != 200:
                        failures += 1
                    else:
                        failures = 0
                        new_id, delay = await self._read_stream(response, {})
                        last_id = new_id or last_id
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
            await asyncio.sleep(delay)

    def _fail(self, pending: dict[str, dict[str, Any]], reason: str) -> None:
        for request in list(pending.values()):
            self._on_undelivered(request, reason)
        pending.clear()

    # -- the HTTP+SSE transport of 2024-11-05 -------------------------------------------------

    async def _legacy_connect(self) -> bool:
        """GET the URL as an SSE stream whose first event names the endpoint to POST to."""
        headers = {**self.headers, "accept": "text/event-stream"}
        ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        async def reader() -> None:
            reason = "the server's stream ended"
            try:
                async with self._client.stream("GET", self.url, headers=headers) as response:
                    kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                    if response.status_code != 200 or kind != "text/event-stream":
                        ready.set_result(None)
                        return
                    async for event in sse_events(response.aiter_bytes()):
                        if event.event == "endpoint" and not ready.done():
                            ready.set_result(urljoin(self.url, event.data.strip()))
                            continue
                        if event.event != "message" or not event.data:
                            continue
                        try:
                            msg = json.loads(event.data)
                        except (ValueError, RecursionError):
                            print("aegis: an event from the MCP server is not JSON; dropped", file=sys.stderr)
                            continue
                        self._deliver(msg, event.data.encode(), self._legacy_pending)
            except asyncio.CancelledError:
                reason = "the session ended"
                raise
            except Exception as exc:
                reason = f"the server's stream broke ({_describe(exc)})"
            finally:
                if not ready.done():
                    ready.set_result(None)
                self._legacy_dead = reason
                self._fail(self._legacy_pending, reason)

        self._listener = asyncio.ensure_future(reader())
        try:  # a stream that never names its endpoint is no HTTP+SSE server
            endpoint = await asyncio.wait_for(asyncio.shield(ready), LEGACY_ENDPOINT_WAIT)
        except TimeoutError:
            endpoint = None
        if endpoint is None:
            self._listener.cancel()
            return False
        if urlsplit(endpoint)[:2] != urlsplit(self.url)[:2]:
            print("aegis: the MCP server named an endpoint on another origin; refused", file=sys.stderr)
            self._listener.cancel()
            return False
        self.legacy_endpoint = endpoint
        return True

    async def _legacy_post(self, line: bytes, msg: Any, requests: list[dict[str, Any]]) -> None:
        pending = {_id_key(r["id"]): r for r in requests}
        if self._legacy_dead is not None:
            self._fail(pending, self._legacy_dead)
            return
        self._legacy_pending.update(pending)
        headers = {**self.headers, "content-type": "application/json"}
        try:
            response = await self._client.post(self.legacy_endpoint, content=line, headers=headers)
        except Exception as exc:
            reason = f"the server could not be reached{self._through()} ({_describe(exc)})"
        else:
            if response.status_code < 300:
                return
            reason = f"the server refused the request (HTTP {response.status_code}){self._through()}"
        for key in pending:
            self._legacy_pending.pop(key, None)
        self._fail(pending, reason)

    # -- ending ------------------------------------------------------------------------------

    async def _close(self, code: int) -> None:
        try:
            me = asyncio.current_task()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            # Requests still being answered get a moment, then are cut.
            while (self._exchanges or any(t is not me for t in self._tasks)) and loop.time() < deadline:
                await asyncio.sleep(0.01)
            for exchange in list(self._exchanges):
                exchange.drop()
            for task in [t for t in self._tasks if t is not me]:
                task.cancel()
            if self._listener is not None:
                self._listener.cancel()
                with contextlib.suppress(BaseException):
                    await self._listener
            if self.session_id and self.legacy_endpoint is None and self._client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._client.request("DELETE", self.url, headers=self._headers()), 5.0)
            if self._client is not None:
                await self._client.aclose()
                await self._pool.aclose()
        finally:
            if self._done is not None and not self._done.done():
                self._done.set_result(code)


class _Exchange:
    """One POST written on a kept-alive connection and answered from that connection's callbacks
    (``_Conn.on_data``), in the sending message's context: the head and body are parsed as they
    arrive, each message of an SSE answer is delivered at once, and the connection goes back to the
    pool when the stream ends. No task and no future are made, and nothing waits for the event
    loop's next turn. What this does not handle itself it hands on, before reading any of the body,
    to the coroutines that handle every case (``HttpServer._answer``: another status, a 401, another
    content type or encoding), or after it (``_resume``: a stream that ended before its answer;
    ``_post``: a connection the server had closed, which is tried again on another). Fail closed as
    they do: each request is answered, by the server or with the reason it was not."""

    __slots__ = ("answered", "conn", "ctx", "delay", "events", "heard", "last_id", "line", "msg", "parts", "pending",
                 "requests", "response", "server", "session", "size", "timer", "unreadable")

    def __init__(self, server: HttpServer, conn: Any, ctx: contextvars.Context, line: bytes, msg: Any,
                 requests: list[dict[str, Any]]) -> None:
        self.server, self.conn, self.ctx = server, conn, ctx
        self.line, self.msg, self.requests = line, msg, requests
        self.pending: dict[Any, dict[str, Any]] = {_id_key(r["id"]): r for r in requests}
        self.response: Response | None = None
        self.events: SSESplitter | None = None  # an SSE answer; else a JSON one gathers in ``parts``
        self.parts: list[bytes] = []
        self.size = 0
        self.last_id: str | None = None
        self.delay = RECONNECT_DELAY
        self.unreadable = False
        self.answered = False  # every request answered; reading on to the stream's end
        self.heard = False  # an interim (1xx) answer came: the server did see the request
        self.timer: asyncio.TimerHandle | None = None
        self.session = server.session_id  # the session the request is sent in

    def send(self) -> None:
        server = self.server
        server._exchanges.add(self)
        self.conn.on_data = self._on_data
        self.conn.transport.write(server._request_head(self.msg, len(self.line)) + self.line)

    def _on_data(self) -> None:
        self.ctx.run(self._step)

    def _step(self) -> None:
        try:
            if self.response is None and not self._head():
                return
            self._body()
        except Exception as exc:
            self._broke(exc)

    def _head(self) -> bool:
        """Read the head once it has all arrived; True when the body is this exchange's to read."""
        conn, server = self.conn, self.server
        head = parse_head(conn.buf)
        while head is not None and head[0] < 200 and head[0] != 101:
            self.heard = True
            head = parse_head(conn.buf)  # 1xx answers (100 Continue) come before the real one
        if head is None:
            if conn.eof:
                if conn.buf:
                    raise HTTPProtocolError("the connection closed inside the headers")
                if self.heard:
                    raise HTTPProtocolError("the server closed the connection without answering")
                # Nothing came back on it: the server had closed the kept-alive connection before it
                # saw the request, and it is sent again on another, as Http1Pool.request does; unless
                # it holds a tool call, which the server may have taken (and run) before it closed.
                self.drop()
                if _calls(self.requests):
                    server._fail(self.pending, server._may_have_run())
                else:
                    server._spawn(server._post(self.line, self.msg, self.requests))
            return False
        status, found, items = head
        keep = "close" not in found.get("connection", "").lower()
        response = self.response = Response(server._pool, conn, status, found, keep, status in (204, 304), items)
        kind = found.get("content-type", "").partition(";")[0].strip().lower()
        if (status != 200 or kind not in ("text/event-stream", "application/json")
                or found.get("content-encoding", "").strip().lower() not in ("", "identity")):
            conn.on_data = None  # the coroutine reads the rest through the connection's waiter
            self._done()
            server._spawn(server._answer(response, self.line, self.msg, self.requests, self.pending,
                                         session=self.session))
            return False
        if kind == "text/event-stream":
            self.events = SSESplitter()
        return True

    def _body(self) -> None:
        response = self.response
        assert response is not None
        data = response.read_ready()
        if self.events is None:  # JSON
            if data:
                self.size += len(data)
                if self.size > MAX_BODY:
                    raise ValueError(f"the reply is larger than {MAX_BODY} bytes")
                self.parts.append(data)
            if response.complete:
                self._finish()
                body = b"".join(self.parts)
                self.server._deliver_body(body, self.pending)
                if self.pending:
                    self.server._fail(self.pending, "the server's reply did not answer the request")
            return
        if data:
            for event in self.events.feed(data):
                self._event(event)
        if response.complete:
            for event in self.events.end():
                self._event(event)
            self._finish()
            self._unanswered()
        elif self.answered and self.timer is None:
            # Answered. The server ends the stream next; reading to that end (briefly) lets the
            # connection go back to the pool instead of being closed and reopened.
            self.timer = asyncio.get_running_loop().call_later(0.5, self._give_up)

    def _event(self, event: SSE) -> None:
        if self.answered:
            return
        if event.retry is not None:
            self.delay = event.retry
        if event.id is not None:
            self.last_id = event.id
        if not event.data or event.event != "message":
            return
        try:
            msg = _loads(event.data)
        except (ValueError, RecursionError):
            self.unreadable = True
            print("aegis: an event from the MCP server is not JSON; dropped", file=sys.stderr)
            return
        self.server._deliver(msg, event.data.encode(), self.pending)
        if not self.pending:
            self.answered = True

    def _unanswered(self) -> None:
        """The stream ended: requests it did not answer are resumed from its last event, or refused."""
        if not self.pending:
            return
        if self.unreadable:
            self.server._fail(self.pending, "the server's reply could not be parsed")
            return
        self.server._spawn(self.server._resume((self.last_id, self.delay), self.pending))

    def _broke(self, exc: Exception) -> None:
        self.drop()
        if not self.pending:
            return
        if self.response is None:
            self.server._fail(self.pending, self.server._unreachable(exc))
        elif self.events is None:
            self.server._fail(self.pending, f"the server's reply could not be read ({_describe(exc)})")
        else:
            print(f"aegis: the MCP server's stream broke ({_describe(exc)})", file=sys.stderr)
            self._unanswered()

    def _give_up(self) -> None:
        self.timer = None
        self.drop()

    def _finish(self) -> None:
        """The answer has been read to its end: the connection goes back to the pool."""
        self._done()
        self.conn.on_data = None
        assert self.response is not None
        self.response.close()

    def drop(self) -> None:
        """Done with the connection without reading on: it is closed."""
        self._done()
        self.conn.on_data = None
        self.conn.close()

    def _done(self) -> None:
        self.server._exchanges.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


_INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def _scheduled(coro: Any) -> tuple[bool, Any]:
    return False, asyncio.ensure_future(coro)


async def _drain(events: AsyncIterator[SSE]) -> None:
    async for _event in events:
        pass


async def _read_limited(response: Any) -> bytes:
    parts, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError(f"the reply is larger than {MAX_BODY} bytes")
        parts.append(chunk)
    return b"".join(parts)

