"""``aegis wrap -p POLICY -- COMMAND``: a local proxy for the model APIs that decides every tool call.

The wrapped command gets ``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL`` and ``GOOGLE_GEMINI_BASE_URL``
pointing at the proxy. Each
request is forwarded upstream untouched (body and headers, API keys included, never logged); in
each reply from a tool-calling endpoint every tool call is decided before the agent sees it:
allowed calls pass unchanged, blocked ones (and unapproved ones) are replaced by a note. Text
streams through as it arrives; a tool call is held until complete.

    Anthropic Messages          POST {proxy}/anthropic[/v1]/messages   -> anthropic_messages
    OpenAI Chat Completions     POST {proxy}/openai/v1/chat/completions -> openai_chat
    OpenAI Responses            POST {proxy}/openai/v1/responses        -> openai_responses
    Gemini                      POST {proxy}/gemini/v1beta/models/{model}:generateContent
                                     and :streamGenerateContent (alt=sse or a JSON array) -> gemini_generate
    Vertex AI                   POST {proxy}/vertex/.../models/{model}:generateContent ...  -> gemini_generate
    Code Assist (Gemini CLI     POST {proxy}/code-assist/v1internal:generateContent
      signed in with Google)         and :streamGenerateContent?alt=sse                  -> code_assist

Gemini CLI also gets ``CODE_ASSIST_ENDPOINT`` and ``GOOGLE_VERTEX_BASE_URL`` (``gemini_cli``).

The endpoint is read from the upstream path after normalising it as a server would (``routing``),
so no spelling of a path (``//``, ``/./``, ``%6D``, a trailing ``/``) reaches a tool-calling endpoint
undecided. Everything else (model lists, token counting, files) is passed on once it is known to
carry no tool call (``undecided``); a reply that does is refused (502).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aegis_cli.engine.policy import Policy
from aegis_cli.wrap import agents, eager, gemini_cli, undecided
from aegis_cli.wrap.http_serve import Request, Response
from aegis_cli.wrap.routing import child_bases, route
from aegis_cli.wrap.sse import KEEPALIVE_INTERVAL, await_with_keepalive, loads
from aegis_cli.wrap.tool_gate import Decide, ToolCall, ToolGate, decide_each

log = logging.getLogger("aegis.wrap")

ANTHROPIC_PREFIX = "/anthropic"
OPENAI_PREFIX = "/openai/v1"
GEMINI_PREFIX = "/gemini"
#: A reply on a path aegis does not decide is read whole to be checked; beyond this it is refused.
UNDECIDED_MAX_BYTES = 64 * 1024 * 1024
#: Providers whose errors are written in Google's shape.
GOOGLE_PROVIDERS = frozenset({"gemini", "code_assist", "vertex"})
DEFAULT_UPSTREAMS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1",
                     "gemini": "https://generativelanguage.googleapis.com"}

#: Connection-level headers are the proxy's own business on each hop (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
_HOP_BY_HOP_DECODED = _HOP_BY_HOP | {"content-encoding"}  # a decoded body loses its encoding too
#: A JSON reply is sent once its calls are decided; meanwhile a space (valid leading JSON whitespace)
#: keeps the client's read timeout from firing.
_JSON_KEEPALIVE = b" "


@dataclass(frozen=True, slots=True)
class Upstreams:
    """Where requests go: the base URLs the agent would have used without aegis."""

    anthropic: str = DEFAULT_UPSTREAMS["anthropic"]
    openai: str = DEFAULT_UPSTREAMS["openai"]
    gemini: str = DEFAULT_UPSTREAMS["gemini"]
    code_assist: str = gemini_cli.CODE_ASSIST
    vertex: str = gemini_cli.VERTEX_GLOBAL

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Upstreams:
        return cls(environ.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAMS["anthropic"],
                   environ.get("OPENAI_BASE_URL") or DEFAULT_UPSTREAMS["openai"],
                   environ.get("GOOGLE_GEMINI_BASE_URL") or DEFAULT_UPSTREAMS["gemini"],
                   gemini_cli.code_assist_upstream(environ), gemini_cli.vertex_upstream(environ))

    def bases(self) -> dict[str, str]:
        """provider -> base URL, as ``routing`` looks them up."""
        return {"anthropic": self.anthropic, "openai": self.openai, "gemini": self.gemini,
                "code_assist": self.code_assist, "vertex": self.vertex}


@dataclass(slots=True)
class ProxyStats:
    """What went through the proxy; ``model_requests`` counts requests whose replies were decided."""

    model_requests: int = 0


def _error_body(provider: str, message: str, status: int = 502) -> bytes:
    if provider in GOOGLE_PROVIDERS:
        from aegis_cli.wrap.gemini_generate import error_body

        return error_body(status, message)
    if provider == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": "api_error", "message": message}}
    else:
        body = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
    return json.dumps(body).encode()


class _Proxy:
    """The proxy's request handler (for ``http_serve``); ``decide`` rules on each tool call.

    Upstream requests go out on aegis's lean HTTP/1.1 client (``http1``), one keep-alive pool per
    origin, through the proxy the environment names for that origin (``HTTPS_PROXY`` and the
    like, less ``NO_PROXY``, read as httpx reads them: ``http_proxy``; HTTP, HTTPS or SOCKS5), decided
    once per origin; one of another kind is refused (a 502 naming it), never gone around.
    """

    def __init__(self, decide: Decide, upstreams: Upstreams, stats: ProxyStats | None = None) -> None:
        self.decide = decide
        self.upstreams = upstreams
        self.bases = upstreams.bases()
        self.stats = stats
        self._pools: dict[str, Any] = {}
        self._routes: dict[tuple[str, str, str], Any] = {}
        self._headers: dict[tuple[bytes, bytes], tuple[()] | tuple[str, str, str | None]] = {}  # ``_header``
        self._agents: dict[tuple[tuple[str, str], ...], Any] = {}  # User-Agent and originator -> coding agent
        self._deciders: dict[Any, Decide] = {}  # coding agent (or None) -> ``_as_agent``: a few, made once

    async def aclose(self) -> None:
        for pool in self._pools.values():
            with contextlib.suppress(Exception):
                await pool.aclose()

    async def _send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> Any:
        """The upstream's reply, its body not read yet (``aiter_bytes`` decoded, ``aiter_raw`` as sent)."""
        scheme, _, rest = url.partition("://")
        netloc, slash, target = rest.partition("/")
        origin = f"{scheme}://{netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            from aegis_cli.wrap.http1 import Http1Pool
            from aegis_cli.wrap.http_proxy import proxy_for

            pool = self._pools[origin] = Http1Pool(origin + "/", connect_timeout=30.0, proxy=proxy_for(origin + "/"))
        return await pool.request(method, headers, body, target=slash + target)

    async def handle(self, request: Request) -> Response:
        # The path as sent, so percent-encoding is normalised here, once, by rule.
        key = (request.method, request.path, request.query)
        found = self._routes.get(key, _UNROUTED)
        if found is _UNROUTED:  # an agent asks for the same few paths again and again: normalise each once
            found = route(request.method, request.path, request.query, self.bases)
            if len(self._routes) >= 256:
                self._routes.clear()
            self._routes[key] = found
        if found is None:
            path = request.path
            return Response(404, _JSON, json.dumps({"error": {"message": f"aegis proxy: no route for {path}; "
                                                              f"use {ANTHROPIC_PREFIX}, {OPENAI_PREFIX} or "
                                                              f"{GEMINI_PREFIX}"}}).encode())
        provider, url, rewriter = found.provider, found.url, found.rewriter
        # One pass over the headers: the hop-by-hop ones dropped; Accept-Encoding narrowed to what decodes
        # (every reply may have to be read: decided, or checked for calls); who is asking noted. An agent
        # sends the same headers on every request (all but its content-length): each raw pair is read
        # once and looked up after that.
        headers = []
        who: dict[str, str] | None = None
        seen = self._headers
        for pair in request.headers:
            known = seen.get(pair)
            if known is None:
                known = _header(*pair)
                if len(seen) >= 512:  # values that change per request (a request id) must not pile up
                    seen.clear()
                seen[pair] = known
            if not known:  # hop-by-hop
                continue
            headers.append(known[:2])
            if known[2] is not None:  # User-Agent or originator: the last one, as a dict of them all keeps
                if who is None:
                    who = {}
                who[known[2]] = known[1]
        if rewriter is not None and self.stats is not None:
            self.stats.model_requests += 1
        # Claude Code, Codex, Gemini CLI say who they are: their tools get the target their hooks give them
        coding_agent = None
        if who:
            said = tuple(who.items())
            coding_agent = self._agents.get(said, _UNROUTED)
            if coding_agent is _UNROUTED:
                coding_agent = agents.from_headers(who)
                if len(self._agents) >= 64:
                    self._agents.clear()
                self._agents[said] = coding_agent
        decide_here = self._deciders.get(coding_agent)
        if decide_here is None:
            decide_here = self._deciders[coding_agent] = _as_agent(self.decide, coding_agent)
        try:
            upstream = await self._send(request.method, url, headers, request.body)
        except Exception as exc:  # unreachable, refused, TLS, a reply that is not HTTP, the HTTP proxy
            base = "/".join(url.split("/", 3)[:3])  # scheme://host
            # the proxy's own refusal (a 407, a tunnel refused) says so, naming the proxy without its password
            why = str(exc) if type(exc).__name__ == "ProxyError" or isinstance(exc, ValueError) else type(exc).__name__
            return _error(provider, 502, f"upstream {base} unreachable ({why})")
        try:
            return await self._reply(upstream, found, rewriter, decide_here)
        except BaseException:
            await upstream.aclose()
            raise

    async def _reply(self, upstream: Any, found: Any, rewriter: Any, decide: Decide) -> Response:
        provider = found.provider
        ctype = upstream.headers.get("content-type", "").split(";")[0].strip().lower()
        if upstream.status_code >= 400:  # an error reply holds no call to run: passed on as it came
            try:
                raw = await _read_limited(upstream.aiter_raw())
            except Exception as exc:
                return _error(provider, 502, f"the upstream's error reply could not be read ({type(exc).__name__})")
            finally:
                await upstream.aclose()
            return Response(upstream.status_code, _response_headers(upstream, decoded=False), raw)
        if rewriter is None:
            return await _checked(upstream, ctype, provider, found.path)
        if upstream.status_code >= 300:
            # The SDK would follow a redirect itself, and read the next reply without aegis.
            await upstream.aclose()
            return _error(provider, 502, f"the upstream answered {upstream.status_code} (a redirect); "
                                         "withheld (fail closed)")
        # Any other content type is read as JSON, as the SDKs do: an unreadable one is withheld below.
        out_headers = _response_headers(upstream, decoded=True)
        if ctype == "text/event-stream":
            return Response(upstream.status_code, out_headers, rewriter.rewrite_stream(upstream.aiter_bytes(), decide),
                            upstream.aclose)
        if getattr(rewriter, "streams_json", None) and rewriter.streams_json(found.path):
            # Gemini's streamGenerateContent without alt=sse: one JSON array, sent element by element
            chunks = rewriter.rewrite_json_stream(upstream.aiter_bytes(), decide)
            return Response(upstream.status_code, out_headers, chunks, upstream.aclose)
        try:
            raw = await _read_body(upstream)
        except Exception as exc:
            return _error(provider, 502, f"the upstream reply could not be read ({type(exc).__name__}); "
                                         "withheld (fail closed)")
        finally:
            await upstream.aclose()
        try:
            body = _loads(raw)
        except ValueError:  # unreadable, so undecidable: do not hand it on
            return _error(provider, 502, "the upstream reply is not valid JSON; withheld (fail closed)")
        if not isinstance(body, dict):
            return _error(provider, 502, "the upstream reply is not a JSON object; withheld (fail closed)")
        return await _json_reply(upstream.status_code, out_headers, raw, body, rewriter, decide)


_JSON = [("content-type", "application/json")]
#: ``json.dumps(value, ensure_ascii=False)``, its encoder made once rather than per reply
_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _loads(raw: bytes) -> Any:
    """``json.loads`` of a reply: a UTF-8 object read without the wrapper's encoding detection and two
    whitespace scans; anything else (another encoding, whitespace around it) goes to ``json.loads``."""
    if raw[:1] == b"{" and raw[1:2] != b"\x00":  # json.detect_encoding's UTF-8 (UTF-16 and -32 hold zeros)
        return loads(raw.decode("utf-8", "surrogatepass"))  # as json.loads decodes UTF-8
    return json.loads(raw)


def _error(provider: str, status: int, message: str) -> Response:
    return Response(status, _JSON, _error_body(provider, f"aegis: {message}", status))


async def _read_body(upstream: Any) -> bytes:
    """A reply's body, decoded, as ``_read_limited(upstream.aiter_bytes())`` reads it. On aegis's own client
    a body that needs no decoding is first taken as it has arrived (usually whole, with the head), so
    no generator is made for it; only what is still to come is awaited."""
    read_ready = getattr(upstream, "read_ready", None)
    if read_ready is None or upstream.headers.get("content-encoding", "").strip().lower() not in ("", "identity"):
        return await _read_limited(upstream.aiter_bytes())
    data = read_ready()
    if len(data) > UNDECIDED_MAX_BYTES:
        raise ValueError(f"the reply is larger than {UNDECIDED_MAX_BYTES} bytes")
    if upstream.complete:
        return data
    return data + await _read_limited(upstream.aiter_raw(), UNDECIDED_MAX_BYTES - len(data))


async def _read_limited(chunks: AsyncIterator[bytes], limit: int = UNDECIDED_MAX_BYTES) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the reply is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _as_agent(decide: Decide, coding_agent: agents.CodingAgent | None) -> Decide:
    """``decide`` for the calls in replies to one request, which ``coding_agent`` sent (if known)."""
    if coding_agent is None:
        return decide

    async def decide_as(call: ToolCall) -> Any:
        return await decide(dataclasses.replace(call, coding_agent=coding_agent))

    async def batch(calls: list[ToolCall]) -> list[Any]:  # the calls of one reply in one audit transaction
        return await decide_each(decide, [dataclasses.replace(call, coding_agent=coding_agent) for call in calls])

    decide_as.batch = batch  # type: ignore[attr-defined]
    return decide_as


async def _checked(upstream: Any, ctype: str, provider: str, path: str) -> Response:
    """A reply on a path aegis does not decide, passed on only if it carries no tool call (else 502)."""
    out_headers = _response_headers(upstream, decoded=True)
    if ctype == "text/event-stream":
        return Response(upstream.status_code, out_headers,
                        undecided.checked_stream(upstream.aiter_bytes(), path, provider), upstream.aclose)
    try:
        raw = await _read_limited(upstream.aiter_bytes())
    except ValueError:
        return _error(provider, 502, f"the reply to {path} is too large to check for tool calls; "
                                     "withheld (fail closed)")
    except Exception as exc:
        return _error(provider, 502, f"the reply to {path} could not be read ({type(exc).__name__}); "
                                     "withheld (fail closed)")
    finally:
        await upstream.aclose()
    found = undecided.tool_call_in_body(raw)
    if found:
        log.error("aegis: %s", undecided.refusal(found, path))
        return _error(provider, 502, undecided.refusal(found, path))
    return Response(upstream.status_code, out_headers, raw)


def _header(key: bytes, value: bytes) -> tuple[()] | tuple[str, str, str | None]:
    """A request header as it goes upstream: (name, value, its lower-cased name if ``agents.from_headers``
    reads it, else None), Accept-Encoding narrowed; ``()`` for a hop-by-hop header, which is dropped."""
    name, text = key.decode("latin-1"), value.decode("latin-1")
    lowered = name.lower()
    if lowered in _HOP_BY_HOP:
        return ()
    if lowered == "accept-encoding":
        return name, _decodable_encodings(text), None
    return name, text, lowered if lowered in _WHO else None


def _decodable_encodings(value: str) -> str:
    """An Accept-Encoding value narrowed to what the proxy can decode.

    A Node agent asks for ``br``; without the brotli package the reply would be unreadable here.
    A value naming only what the proxy can decode is left as it is.
    """
    offered = [part.strip() for part in value.split(",") if part.strip()]
    usable = [p for p in offered if p.split(";")[0].strip().lower() in _decoders()]
    return value if usable == offered else ", ".join(usable or ["identity"])


def _decoders() -> Any:
    global _SUPPORTED
    if _SUPPORTED is None:  # looked up once: an import statement per header costs more than the check
        try:
            from httpx._decoders import SUPPORTED_DECODERS  # follows which optional decoders are installed
        except ImportError:  # pragma: no cover - a future httpx
            SUPPORTED_DECODERS = dict.fromkeys(("identity", "gzip", "deflate"))
        _SUPPORTED = SUPPORTED_DECODERS
    return _SUPPORTED


_SUPPORTED: Any = None
_UNROUTED = object()
_WHO = frozenset({"user-agent", "originator"})  # the headers agents.from_headers reads


async def _json_reply(status: int, headers: list[tuple[str, str]], raw: bytes, body: dict[str, Any],
                      rewriter: Any, decide: Decide) -> Response:
    """The decided JSON reply: whole, with its length, when the decisions come within the keep-alive
    interval (as they do unless a person is asked); else streamed, a space at each interval
    (leading JSON whitespace) keeping the client's read timeout from firing, then the reply."""
    finished, value = eager.start(rewriter.rewrite_json(body, decide))
    if finished:
        return Response(status, headers, raw if value is body else _dumps(value).encode())
    task = value
    try:
        await asyncio.wait({task}, timeout=KEEPALIVE_INTERVAL)
    except BaseException:
        task.cancel()
        raise
    if task.done():
        out = task.result()
        return Response(status, headers, raw if out is body else _dumps(out).encode())

    async def pings() -> AsyncIterator[bytes]:
        yield _JSON_KEEPALIVE
        async for out in await_with_keepalive(task, _JSON_KEEPALIVE):
            if isinstance(out, bytes):
                yield out
            else:
                yield raw if out.value is body else _dumps(out.value).encode()

    return Response(status, headers, pings())


def _response_headers(upstream: Any, *, decoded: bool) -> list[tuple[str, str]]:
    """The upstream's headers for the client, repeated ones kept; a decoded body loses its encoding."""
    drop = _HOP_BY_HOP_DECODED if decoded else _HOP_BY_HOP
    items = getattr(upstream, "header_items", None)  # http1's; httpx's reply has multi_items
    if items is None:
        items = upstream.headers.multi_items()
    return [(k, v) for k, v in items if k.lower() not in drop]


class ModelProxy:
    """The proxy on 127.0.0.1, on a free port, served from a background thread.

        with ModelProxy(gate.decide, Upstreams.from_env(os.environ)) as proxy:
            subprocess.run(cmd, env={**os.environ, **proxy.child_env()})
    """

    def __init__(self, decide: Decide, upstreams: Upstreams | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.decide = decide
        self.upstreams = upstreams or Upstreams.from_env(os.environ)
        self.host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self.stats = ProxyStats()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def child_env(self) -> dict[str, str]:
        """The variables that point an SDK at this proxy.

        The Anthropic base ends in /v1 when the user's does (AI SDK clients append /messages to it);
        without one it serves both conventions (``/v1/messages`` and ``/messages``).
        """
        bases = child_bases(self.url, self.upstreams.bases())
        return {"ANTHROPIC_BASE_URL": bases["anthropic"], "OPENAI_BASE_URL": bases["openai"],
                "GOOGLE_GEMINI_BASE_URL": bases["gemini"], "CODE_ASSIST_ENDPOINT": bases["code_assist"],
                "GOOGLE_VERTEX_BASE_URL": bases["vertex"]}

    def start(self) -> ModelProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        started = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(sock, started, failed),
                                        name="aegis-model-proxy", daemon=True)
        self._thread.start()
        started.wait()
        if failed:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"the aegis model proxy failed to start ({failed[0]})")
        return self

    def _run(self, sock: socket.socket, started: threading.Event, failed: list[BaseException]) -> None:
        """The proxy's event loop (uvloop when installed, as uvicorn chose it before), on this thread."""
        from aegis_cli.wrap.http_serve import HttpServer

        async def serve() -> None:
            proxy = _Proxy(self.decide, self.upstreams, self.stats)
            server = HttpServer(proxy.handle, eager_start=True)
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            try:
                await server.start(sock)
            except BaseException as exc:
                failed.append(exc)
                started.set()
                raise
            started.set()
            try:
                await self._stop.wait()
            finally:
                await server.close(grace=3.0)
                await proxy.aclose()

        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(serve())
        except BaseException as exc:
            if not started.is_set():
                failed.append(exc)
                started.set()
            elif not isinstance(exc, Exception):
                raise
            else:
                log.exception("aegis: the model proxy stopped")
        finally:
            sock.close()

    def stop(self) -> None:
        if self._thread is not None:
            loop, stop = getattr(self, "_loop", None), getattr(self, "_stop", None)
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(stop.set)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> ModelProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def approval_handler(approvals: str, audit_db: str | os.PathLike[str], timeout: float,
                     redact: Sequence[str] = ()) -> tuple[Any, bool]:
    """(handler, whether it audits its own answers) for ``--approvals queue|tty|deny``."""
    from aegis_cli import approvals as handlers

    if approvals == "queue":
        # the stored request is redacted as the audit trail is: the queue lives in the same database
        return handlers.QueueApprovalHandler(audit_db, timeout=timeout, requested_by="aegis wrap",
                                             redact=redact), True
    if approvals == "tty":
        return handlers.CLIApprovalHandler(timeout), False
    if approvals == "deny":
        return handlers.DenyAllApprovalHandler(), False
    raise ValueError(f"approvals must be queue, tty or deny, not {approvals!r}")


def run_wrapped_agent(policy_paths: Sequence[str | os.PathLike[str]], command: Sequence[str],
                      audit_db: str | os.PathLike[str], approval_timeout: float = 300.0,
                      approvals: str = "queue", *, policy: Policy | None = None,
                      upstreams: Upstreams | None = None, agent: str = "") -> int:
    """Run ``command`` with its model APIs behind the proxy; returns its exit status (128+N if killed by signal N).

    Raises ``PolicyError`` for a bad policy, ``AuditError`` for an unusable audit database and
    ``CodexRefused`` for a Codex provider the proxy cannot stand in front of, all before the command
    starts. ``upstreams`` defaults to this process's ``*_BASE_URL`` variables; for Codex, which reads
    none of them, the OpenAI upstream is the base URL its own configuration names.
    """
    from aegis_cli.audit import open_audit  # an SQLite path or a PostgreSQL URL
    from aegis_cli.wrap import codex

    if not command:
        raise ValueError("no command to run")
    upstreams = upstreams or Upstreams.from_env(os.environ)
    codex_plan = codex.plan(command, os.environ)
    if codex_plan is not None:
        upstreams = dataclasses.replace(upstreams, openai=codex_plan.upstream)
    policy = policy if policy is not None else Policy.from_yaml_files(*policy_paths)
    handler, records_approvals = approval_handler(approvals, audit_db, approval_timeout, policy.redact)
    gate = ToolGate(policy, audit_factory=lambda: open_audit(audit_db, redact=policy.redact),
                    approvals=handler, records_approvals=records_approvals, session=uuid.uuid4().hex, agent=agent,
                    coding_agent=agents.from_command(command))
    try:
        with ModelProxy(gate.decide, upstreams) as proxy:
            env = {**os.environ, **proxy.child_env()}
            if codex_plan is not None:  # Codex takes its base URL from its configuration, set on its command line
                command = codex_plan.pointed_at(env["OPENAI_BASE_URL"])
            if any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in env):
                # The SDK must reach the local proxy directly, never through the user's HTTP proxy.
                for key in ("NO_PROXY", "no_proxy"):
                    env[key] = ",".join(x for x in (env.get(key, ""), "127.0.0.1", "localhost") if x)
            code = run_child(list(command), env)
            if proxy.stats.model_requests == 0:
                # An agent that ignores the base URLs talks to its provider directly: say so, never imply cover.
                sys.stderr.write(f"aegis: {os.path.basename(command[0])} made no model request through aegis's "
                                 "proxy, so its tool calls (if any) were not governed\n")
            return code
    finally:
        gate.close()


_FORWARDED = ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGINT")


def run_child(command: list[str], env: Mapping[str, str]) -> int:
    """Run the command, forwarding signals, and return its exit status the way a shell reports it."""
    child: subprocess.Popen[bytes] | None = None
    early: list[int] = []  # signals that arrived before the child existed
    previous: dict[int, Any] = {}

    def forward(signum: int, frame: object) -> None:
        # A Ctrl-C typed at the terminal already reached the child (same process group); send it
        # again only when it came from elsewhere (kill, a CI runner), or the child sees it twice.
        if signum in (signal.SIGINT, signal.SIGQUIT) and _terminal_foreground():
            return
        if child is None:
            early.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for name in _FORWARDED:
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[signum] = signal.signal(signum, forward)
    try:
        try:
            child = subprocess.Popen(command, env=dict(env))
        except FileNotFoundError:
            sys.stderr.write(f"aegis: {command[0]}: command not found\n")
            return 127
        except PermissionError:
            sys.stderr.write(f"aegis: {command[0]}: permission denied\n")
            return 126
        for signum in early:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)
        code = child.wait()
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    return 128 - code if code < 0 else code


def _terminal_foreground() -> bool:
    """True when this process group owns the terminal, so the terminal signals the child directly."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)

