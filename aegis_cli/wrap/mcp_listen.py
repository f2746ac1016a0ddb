"""``aegis wrap --mcp --listen HOST:PORT``: Streamable HTTP toward hosts that connect by URL.

Each host session (``initialize`` without ``Mcp-Session-Id``) gets its own ``McpWrapper`` with its
own link to the server (a new child for ``-- COMMAND``, a new upstream session for ``--url``), so
the deciding is the stdio relay's own. The host side of that wrapper is a ``HostSession``: what the
relay writes goes to the POST that is waiting for it (by JSON-RPC id), or, for the server's own
requests and notifications, to the POST being answered when they were sent (a context variable
travels with the relay's work), else to the session's GET stream.

Authorization toward a remote server: a host that sends no ``Authorization`` of its own is
served with aegis's (``mcp_oauth``, as for stdio ``--url``, or a ``--header``); the remote's 401
never reaches it, and the OAuth discovery documents under ``/.well-known/`` are not advertised
(404), since the host has nothing to authorize. A host that sends its own ``Authorization`` gets it
to the remote server untouched, and a 401/403 for it back as it came (with ``WWW-Authenticate``).
With ``--host-oauth`` aegis holds no token: hosts do their own OAuth, and the remote's discovery
documents and 401s are passed through. Without it, aegis authorizes when it starts (``--listen`` is
started by a person, at a terminal), so that no host's first request waits for the browser.

Like ``aegis serve``: loopback only (Host header checked against DNS rebinding) unless
``$AEGIS_API_TOKEN`` is set, in which case every request must carry it as ``X-Aegis-Token``;
requests from a web page on another origin are refused. That is what keeps others from using the
token aegis holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from aegis_cli.serve.guard import is_loopback_host
from aegis_cli.wrap import messages as m
from aegis_cli.wrap.http_serve import Request, Response
from aegis_cli.wrap.mcp import _key, parse_host_line

PATH = "/mcp"
MAX_BODY = 16 * 1024 * 1024
_WELL_KNOWN = ("/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server")
_PING = b": keepalive\n\n"
_UNREAD = object()  # an SSE comment: clients skip it, proxies see the connection in use

_route: contextvars.ContextVar[_Post | None] = contextvars.ContextVar("aegis_mcp_post", default=None)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen takes HOST:PORT (for example 127.0.0.1:8788), not {value!r}")
    return host.strip("[]"), int(port)


class _Post:
    """A host POST carrying requests: the lines that answer it, and what comes while it is answered."""

    def __init__(self, keys: set[str]) -> None:
        self.keys = keys
        self.progress: set[str] = set()  # progress tokens its requests carry
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.open = True
        self.started = False  # something has been taken for its answer: it can no longer be a refusal


class HostSession:
    """The host side of one session's relay (what ``McpWrapper`` writes to)."""

    def __init__(self, sid: str) -> None:
        self.id = sid
        self.wrapper: Any = None
        self.authorization: str | None = None  # the host's own, for the remote server
        self.posts: dict[str, _Post] = {}
        self.progress: dict[str, _Post] = {}  # progressToken -> the POST whose request carries it
        self.stream: asyncio.Queue[bytes] | None = None  # the GET stream, when open
        self.backlog: list[bytes] = []
        self.closed = False
        self.task: asyncio.Task[Any] | None = None

    def write(self, line: bytes) -> None:
        msg = getattr(line, "msg", _UNREAD)  # read already by the link it came from (mcp_http)
        if msg is _UNREAD:
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                return
        first = msg[0] if isinstance(msg, list) and msg else msg
        if isinstance(first, dict) and "method" not in first and "id" in first:
            post = self.posts.pop(_key(first["id"]), None)
            if post is not None and post.open:
                answer = _Answer(line)
                answer.keys = _answered(msg)  # read here once, not again where the POST is answered
                post.queue.put_nowait(answer)
            return  # an answer nobody waits for any more (the host hung up)
        post = _route.get()
        if post is None or not post.open:  # a stdio server's notification: no request context to follow
            post = self._by_progress(first)
        if post is None or not post.open:
            post = None if self.stream is not None else next((p for p in self.posts.values() if p.open), None)
        if post is not None:
            post.queue.put_nowait(line)
        elif self.stream is not None:
            self.stream.put_nowait(line)
        elif len(self.backlog) < 1000:
            self.backlog.append(line)

    def keepalive(self, msg_id: Any) -> None:
        """A call of this session is held for a person: its POST answers as a stream, with a comment now."""
        post = self.posts.get(_key(msg_id))
        if post is not None and post.open:
            post.queue.put_nowait(_PING)

    def _by_progress(self, msg: Any) -> _Post | None:
        """The POST whose request asked for this progress (its ``_meta.progressToken``): progress must
        reach the stream of the request it reports on, before that request's answer closes it."""
        if not isinstance(msg, dict) or msg.get("method") != "notifications/progress":
            return None
        params = msg.get("params")
        token = params.get("progressToken") if isinstance(params, dict) else None
        return None if token is None else self.progress.get(_key(token))

    def http_error(self, msg: Any, status: int, headers: dict[str, str], body: bytes) -> bool:
        """The remote server refused a request at the HTTP level (401/403): the host gets it as it came,
        if its POST has answered nothing yet (False otherwise: the request is then refused in a message,
        as a streaming answer cannot become an HTTP refusal)."""
        for item in msg if isinstance(msg, list) else [msg]:
            if isinstance(item, dict) and "id" in item:
                post = self.posts.get(_key(item["id"]))
                if post is not None and post.open and not post.started and post.queue.empty():
                    for key in post.keys:
                        self.posts.pop(key, None)
                    post.queue.put_nowait((status, headers, body))
                    return True
        return False

    async def drain_and_close(self) -> None:
        self.closed = True
        for post in list(self.posts.values()):
            post.open = False
            post.queue.put_nowait(None)
        if self.stream is not None:
            self.stream.put_nowait(b"")


class ListenApp:
    """``/mcp`` (POST, GET, DELETE), and with ``host_oauth`` the remote server's OAuth discovery
    documents passed through: the handler of aegis's own small HTTP server (``http_serve``), which
    cancels an answer whose client has gone."""

    def __init__(self, template: Any, make_server: Callable[..., Any] | None, url: str | None,
                 tokens: Any, host_oauth: bool = False) -> None:
        self.template = template  # the wrapper the CLI built: options, audit trail, approval handler
        self.make_server = make_server
        self.url = url
        self.host_oauth = host_oauth
        self.tokens = tokens
        self.sessions: dict[str, HostSession] = {}
        self._client: Any = None
        self.closing = False  # shutting down: the sessions are being ended, no new request is taken

    # -- checks --------------------------------------------------------------------------------

    def _problem(self, headers: dict[str, str]) -> str | None:
        if not self.tokens.enabled and not is_loopback_host(headers.get("host", "")):
            return "this endpoint answers only requests addressed to loopback"
        origin = headers.get("origin")
        if origin is not None:
            host = urlsplit(origin).hostname if "://" in origin else None
            if not host or not is_loopback_host(host):
                return "cross-origin request refused"
        if self.tokens.enabled:
            token = headers.get("x-aegis-token", "")
            if not token or self.tokens.authenticate(f"Bearer {token}") is None:
                return "a valid X-Aegis-Token header is required"
        return None

    async def handle(self, request: Request) -> Response:
        if self.closing:
            return _answer(503, {"error": "aegis is shutting down"})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        problem = self._problem(headers)
        if problem is not None:
            return _answer(403, {"error": "forbidden", "message": problem})
        path, method = request.path, request.method
        if path.startswith(_WELL_KNOWN):  # (httpx on anyio: in a task of its own, as below)
            return await asyncio.ensure_future(self._well_known(request))
        if path.rstrip("/") != PATH:
            return _answer(404, {"error": "not found", "message": f"the MCP endpoint is {PATH}"})
        if method == "POST":
            return await self._post(headers, request.body)
        if method == "GET":
            return self._get(headers)
        if method == "DELETE":
            session = self.sessions.pop(headers.get("mcp-session-id", ""), None)
            if session is None:
                return _answer(404, {"error": "unknown session"})
            await asyncio.ensure_future(self._end(session))
            return _answer(200, {})
        return _answer(405, {"error": "method not allowed"}, [("allow", "GET, POST, DELETE")])

    # -- sessions ------------------------------------------------------------------------------

    async def _new_session(self) -> HostSession:
        from aegis_cli.wrap.mcp import McpWrapper, StdioServer

        session = HostSession(secrets.token_urlsafe(24))
        if self.make_server is not None:
            server = self.make_server(host_authorization=lambda: session.authorization,
                                      on_http_error=session.http_error)
        else:
            server = StdioServer(self.template.opts.command)
        wrapper = McpWrapper(self.template.opts, server)
        wrapper._audit, wrapper._owns_audit = self.template._audit, False
        session.wrapper = wrapper
        await wrapper.attach(session)
        session.task = asyncio.ensure_future(self._run(session))
        self.sessions[session.id] = session
        return session

    async def _run(self, session: HostSession) -> None:
        try:
            await session.wrapper._server.wait()
        finally:
            self.sessions.pop(session.id, None)
            await session.wrapper._shutdown()

    async def _end(self, session: HostSession) -> None:
        session.wrapper._host_gone()
        if session.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(session.task), 20)

    async def close(self) -> None:
        await asyncio.gather(*(self._end(s) for s in list(self.sessions.values())), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # -- POST: messages from the host ------------------------------------------------------------

    async def _post(self, headers: dict[str, str], body: bytes) -> Response:
        if len(body) > MAX_BODY:
            return _answer(413, {"error": "the request body is too large"})
        try:  # read as the relay reads a host's line (a key twice is no message), once for both
            msg = parse_host_line(body)
        except (ValueError, RecursionError):
            return _raw(400, m.error_response(None, m.PARSE_ERROR, "Parse error (aegis: not JSON)"))
        items = msg if isinstance(msg, list) else [msg]
        requests = [i for i in items if isinstance(i, dict) and isinstance(i.get("method"), str) and "id" in i]
        sid = headers.get("mcp-session-id")
        if sid:
            session = self.sessions.get(sid)
            if session is None:
                return _answer(404, {"error": "unknown or ended session"})
        elif any(r["method"] == "initialize" for r in requests):
            # A task: the handler runs in the callback that read the request until it first waits, and
            # starting a session may reach the mcp SDK's OAuth (anyio), which needs one.
            session = await asyncio.ensure_future(self._new_session())
        else:
            return _raw(400, m.error_response(None, m.INVALID_REQUEST,
                                              "Bad Request: no Mcp-Session-Id (initialize first)"))
        session.authorization = headers.get("authorization")
        line = body.strip() + b"\n" if b"\n" not in body.strip() else m.dumps(msg)
        if not requests:
            session.wrapper._on_host_parsed(msg, line)
            return _raw(202, b"", session.id)
        post = _Post({_key(r["id"]) for r in requests})
        clash = next((r for r in requests if (other := session.posts.get(_key(r["id"]))) is not None and other.open),
                     None)
        if clash is not None:
            # The id of a request still in flight: its answer would go to this POST and the other wait
            # for ever. Refused, nothing forwarded; the other is answered as it would have been.
            return _raw(400, m.error_response(clash["id"], m.INVALID_REQUEST,
                                              "aegis: a request with this id is already in progress"))
        for key in post.keys:
            session.posts[key] = post
        for r in requests:
            meta = r.get("params", {}).get("_meta") if isinstance(r.get("params"), dict) else None
            if isinstance(meta, dict) and meta.get("progressToken") is not None:
                post.progress.add(_key(meta["progressToken"]))
                session.progress[_key(meta["progressToken"])] = post
        token = _route.set(post)
        try:
            session.wrapper._on_host_parsed(msg, line)
        finally:
            _route.reset(token)
        return await self._answer_post(session, post)

    async def _answer_post(self, session: HostSession, post: _Post) -> Response:
        """A single answer as JSON; anything more (the server's messages for this request, a held
        call's keepalives, several answers) as a stream. A host that hangs up first (the server
        cancels this, or the stream) withdraws what it still waits for."""
        pending = set(post.keys)
        try:
            item = await post.queue.get()
        except asyncio.CancelledError:
            self._hung_up(session, post, pending)
            _close_post(session, post)
            raise
        if item is None:  # the session ended
            _close_post(session, post)
            return _answer(404, {"error": "the session ended"})
        post.started = not isinstance(item, tuple)
        if isinstance(item, tuple):  # the server's own HTTP refusal, passed on as it came
            _close_post(session, post)
            status, headers, body = item
            return _raw(status, body, None, list(headers.items()))
        if item is not _PING:
            pending -= _answers(item)
            if not pending and len(post.keys) == 1:
                _close_post(session, post)
                return _raw(200, item, session.id, [("content-type", "application/json")])
        state = {"ended": False}

        async def closed() -> None:
            if not state["ended"]:  # cut before its last answer went out: the host is gone
                self._hung_up(session, post, pending)
            _close_post(session, post)

        return Response(200, _stream_headers(session.id), self._stream_post(post, pending, item, state), closed)

    async def _stream_post(self, post: _Post, pending: set[str], item: Any, state: dict[str, bool]
                           ) -> AsyncIterator[bytes]:
        first = True
        while True:
            if item is _PING:  # a held call: kept alive meanwhile
                yield _PING
            elif item is None:  # the session ended
                state["ended"] = True
                return
            elif not isinstance(item, tuple):  # (a refusal once streaming has nothing to say)
                if not first:
                    pending -= _answers(item)
                yield b"event: message\ndata: " + item.rstrip(b"\n") + b"\n\n"
            first = False
            if not pending:
                state["ended"] = True
                return
            item = await post.queue.get()

    def _hung_up(self, session: HostSession, post: _Post, pending: set[str]) -> None:
        """The host dropped the POST before its answer: a call still held for a person is
        withdrawn (audited as cancelled) and never forwarded."""
        post.open = False
        for key in pending:
            session.posts.pop(key, None)
            task = session.wrapper._held.get(key)
            if task is not None:
                task.cancel()

    # -- GET: the stream of what the server sends unprompted -------------------------------------

    def _get(self, headers: dict[str, str]) -> Response:
        if "text/event-stream" not in headers.get("accept", ""):
            return _answer(406, {"error": "GET needs Accept: text/event-stream"})
        session = self.sessions.get(headers.get("mcp-session-id", ""))
        if session is None:
            return _answer(404 if headers.get("mcp-session-id") else 400, {"error": "unknown session"})
        if session.stream is not None:
            return _answer(409, {"error": "this session already has a GET stream"})
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for line in session.backlog:
            queue.put_nowait(line)
        session.backlog.clear()
        session.stream = queue

        async def lines() -> AsyncIterator[bytes]:
            while line := await queue.get():
                yield b"event: message\ndata: " + line.rstrip(b"\n") + b"\n\n"

        async def closed() -> None:
            if session.stream is queue:
                session.stream = None

        return Response(200, _stream_headers(session.id), lines(), closed)

    # -- OAuth discovery, passed through with --host-oauth ----------------------------------------

    async def _well_known(self, request: Request) -> Response:
        if self.url is None or not self.host_oauth or request.method != "GET":
            # Otherwise aegis authorizes (or the server needs nothing): a host that looks finds no
            # OAuth to do here, and connects without.
            return _answer(404, {"error": "not found"})
        import httpx

        parts = urlsplit(self.url)
        target = f"{parts.scheme}://{parts.netloc}{request.target}"
        if self._client is None:
            from aegis_cli.wrap.http1 import _ssl_context
            from aegis_cli.wrap.http_proxy import proxy_for

            # The way and the certificates of every other request to the server (mcp_http): the
            # environment's HTTP proxy, and $SSL_CERT_FILE / $SSL_CERT_DIR or certifi.
            proxy = proxy_for(self.url)
            self._client = httpx.AsyncClient(timeout=30.0, follow_redirects=False, trust_env=False,
                                             proxy=proxy.url if proxy is not None else None, verify=_ssl_context())
        try:
            response = await self._client.get(target, headers={"accept": "application/json"})
        except Exception as exc:
            return _answer(502, {"error": "the MCP server could not be reached", "message": type(exc).__name__})
        kept = [(k, v) for k, v in response.headers.items()
                if k.lower() in ("content-type", "cache-control", "www-authenticate", "location")]
        return _raw(response.status_code, response.content, None, kept)


def _close_post(session: HostSession, post: _Post) -> None:
    post.open = False
    for token in post.progress:
        if session.progress.get(token) is post:
            del session.progress[token]


class _Answer(bytes):
    """An answer's line, with the ids it answers (``keys``) as ``HostSession.write`` read them."""

    keys: set[str]


def _answers(line: bytes) -> set[str]:
    keys = getattr(line, "keys", None)
    if keys is not None:
        return keys  # type: ignore[no-any-return]
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return set()
    return _answered(msg)


def _answered(msg: Any) -> set[str]:
    items = msg if isinstance(msg, list) else [msg]
    return {_key(i["id"]) for i in items if isinstance(i, dict) and "method" not in i and "id" in i}


def _stream_headers(sid: str) -> list[tuple[str, str]]:
    return [("content-type", "text/event-stream"), ("cache-control", "no-store"), ("mcp-session-id", sid)]


def _raw(status: int, body: bytes, sid: str | None = None, headers: list[tuple[str, str]] | None = None) -> Response:
    out = list(headers or [])
    if body and not any(k.lower() == "content-type" for k, _ in out):
        out.append(("content-type", "application/json"))
    if sid is not None:
        out.append(("mcp-session-id", sid))
    return Response(status, out, body)


def _answer(status: int, payload: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Response:
    return _raw(status, json.dumps(payload).encode(), None, headers)


async def _authorize_now(oauth: Any) -> None:
    """Authorize with the remote server now, while the person who started ``--listen`` is at the
    terminal, rather than when a host's first request finds no token and waits for the browser
    longer than hosts wait. A host connecting meanwhile waits for this (``OAuthBearer``'s lock)."""
    line = await oauth.authorize_now()
    if line:
        print(line, file=sys.stderr, flush=True)


async def serve_mcp(template: Any, listen: str, make_server: Callable[..., Any] | None,
                    host_oauth: bool = False) -> int:
    """Serve ``/mcp`` on ``listen`` until SIGINT/SIGTERM; every session relays through its own wrapper.
    ``host_oauth``: hosts authorize with the remote server themselves (discovery passed through)."""
    import signal
    import socket

    from aegis_cli.serve.auth import TOKEN_ENV, TokenStore
    from aegis_cli.serve.server import is_loopback_bind
    from aegis_cli.wrap.http_serve import HttpServer

    host, port = parse_listen(listen)
    tokens = TokenStore.load(os.environ.get(TOKEN_ENV) or None)
    if not tokens.enabled and not is_loopback_bind(host):
        raise ValueError(f"refusing to listen on {host} without a token: set ${TOKEN_ENV} "
                         "(with no token, --listen binds loopback only)")
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise ValueError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    link = make_server() if make_server is not None else None
    url = getattr(link, "url", None)
    oauth = None if host_oauth else getattr(link, "oauth", None)
    app = ListenApp(template, make_server, url, tokens, host_oauth)
    # Each request answered from the callback that read it until it first waits (no task or loop
    # turn for a tools/call); what needs a task (anyio: OAuth, httpx) gets one (ListenApp.handle).
    server = HttpServer(app.handle, eager_start=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            signals.append(sig)
    shown = f"[{host}]" if ":" in host else host
    signing_in: asyncio.Task[None] | None = None
    try:
        await server.start(sock)
        # said once the port is bound, so a host (or test) can connect at once
        print(f"aegis: MCP endpoint at http://{shown}:{port}{PATH}", file=sys.stderr, flush=True)
        if oauth is not None:
            signing_in = asyncio.ensure_future(_authorize_now(oauth))
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if signing_in is not None:
            signing_in.cancel()
        # The sessions first: their GET streams and waiting POSTs then end as they should (a held
        # call withdrawn, a stream closed cleanly), and the server finds its connections idle.
        app.closing = True
        await app.close()
        await server.close()
        if template._trace is not None:
            template._trace.close("mcp")
        if template._audit is not None and hasattr(template._audit, "close"):
            template._audit.close()
    return 0
