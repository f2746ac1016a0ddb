"""uvicorn's httptools protocol, answering ``POST /api/v1/evaluate`` where the request is parsed.

Through ASGI, each request costs uvicorn a scope, an asyncio Event, a RequestResponseCycle and a
Task, two messages whose headers are checked one by one, and two socket writes (head, then body);
under load that is more than deciding the action. For this one route the protocol below skips all
of it: the guard's checks (``Guard.problem``), ``Evaluate``'s steps, the decisions handed to the
audit writer with a callback (``AuditWriter.submit``), and once they are committed the answer in
one write: the same status, headers and body as the ASGI route gives. A decision is still only
answered after its record is committed, and never if it could not be (503).

Every other request (other routes, a URL that is not exactly the route's, upgrades, a server with
``limit_concurrency``) goes through uvicorn and the ASGI app as before. Pipelined requests keep
their order: a request here takes its turn in uvicorn's own queue (``pipeline``) like any other.

This leans on uvicorn internals (``cycle``, ``pipeline``, ``flow``, ``_start_asgi_task``,
``on_response_complete``); ``protocol_for`` returns None when they are missing, and the server then
runs uvicorn's protocol with the ASGI route alone.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from aegis_cli.serve.decisions import unrecorded
from aegis_cli.serve.evaluate import INTERNAL_ERROR, PATH, Evaluate, answer, problem_body
from aegis_cli.serve.guard import Guard, refusal
from aegis_cli.serve.http import MAX_BODY, RESPONSE_HEADERS, HTTPProblem, check_declared, too_large

log = logging.getLogger("aegis.serve")

_URL = PATH.encode()
_URL_QUERY = _URL + b"?"
_NEEDS = ("on_headers_complete", "on_body", "on_message_complete", "_start_asgi_task", "on_response_complete",
          "shutdown", "connection_lost")
_FIXED = b"".join(k + b": " + v + b"\r\n" for k, v in RESPONSE_HEADERS)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _NoEvent:
    """uvicorn sets its cycle's ``message_event`` when the connection is lost; nobody waits here."""

    def set(self) -> None:
        pass


class _Request:
    """One ``POST /api/v1/evaluate``: what uvicorn reads of a cycle (``response_complete``,
    ``keep_alive``, ``disconnected``, ``message_event``) and the request's own progress.

    ``begin`` runs when it is this request's turn on the connection, ``feed``/``finish`` as its body
    arrives; it is decided once both happened, and answered by ``respond``, exactly once.
    """

    __slots__ = ("admitted", "chunks", "complete", "decided", "disconnected", "expect_100", "headers", "keep_alive",
                 "proto", "query", "response_complete", "size", "started_at", "too_large", "turn")

    message_event = _NoEvent()

    def __init__(self, proto: Any, headers: list[tuple[bytes, bytes]], query: bytes, keep_alive: bool,
                 expect_100: bool) -> None:
        self.proto = proto
        self.headers = headers
        self.query = query
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.started_at = perf_counter()
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.complete = False  # the whole body has arrived
        self.turn = False  # the requests before it on the connection are answered
        self.admitted: Any = None  # the principal, once the head passed every check
        self.decided: Any = None  # (entries, batch) handed to the audit writer
        self.response_complete = False
        self.disconnected = False

    # -- progress -------------------------------------------------------------------------------

    def begin(self) -> None:
        self.turn = True
        route = self.proto.route
        try:
            problem = route.guard.problem("POST", self.headers)
            if problem is not None:
                self.respond(403, refusal(problem))
                return
            principal, declared = route.evaluate.admit(self.headers)
            check_declared(declared)
        except HTTPProblem as exc:
            self.fail(exc)
            return
        except Exception:
            self.crashed()
            return
        if self.too_large:
            self.fail(too_large())
            return
        self.admitted = principal
        if self.complete:
            self.decide()
        elif self.expect_100:
            self.proto.transport.write(_CONTINUE)

    def feed(self, chunk: bytes) -> None:
        if self.response_complete or self.too_large:
            return  # answered already (an error): the rest of the body is read and dropped
        self.size += len(chunk)
        if self.size > MAX_BODY:
            self.too_large = True
            self.chunks = []
            if self.turn:
                self.fail(too_large())
            return
        self.chunks.append(chunk)

    def finish(self) -> None:
        self.complete = True
        if self.admitted is not None and not self.response_complete:
            self.decide()

    def decide(self) -> None:
        route = self.proto.route
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        try:
            self.decided = route.evaluate.decide(self.admitted, body, self.query)
            route.writer.submit(self.decided[0], self.recorded)
        except HTTPProblem as exc:
            self.fail(exc)
        except Exception as exc:
            if self.decided is None:
                self.crashed()
            else:
                self.fail(unrecorded(exc))  # the writer is closed: nothing was written, nothing decided

    def recorded(self, ids: Any, exc: BaseException | None) -> None:
        """The writer's callback, on the loop: the decisions are committed (or could not be)."""
        if exc is not None:
            self.fail(unrecorded(exc))  # type: ignore[arg-type]  (the writer passes on Exceptions only)
            return
        entries, batch = self.decided
        try:
            body = answer(entries, ids, batch)
        except Exception:
            self.crashed()
            return
        self.respond(200, body)

    # -- answers --------------------------------------------------------------------------------

    def fail(self, exc: HTTPProblem) -> None:
        self.respond(exc.status, problem_body(exc), exc.headers)

    def crashed(self) -> None:
        log.exception("internal error on POST /api/v1/evaluate")
        self.respond(500, INTERNAL_ERROR)

    def respond(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Write the whole answer at once, as uvicorn would write it, then let the connection go on."""
        if self.response_complete:
            return
        self.response_complete = True
        proto = self.proto
        metrics = proto.route.metrics
        if metrics is not None:
            metrics.request(PATH, perf_counter() - self.started_at)
        transport = proto.transport
        if self.disconnected or transport.is_closing():
            return  # the client went away; any record written stands
        defaults = proto.server_state.default_headers  # uvicorn's (none, as aegis serve configures it)
        if headers or defaults or not self.keep_alive:
            head = _head(status, defaults, headers, self.keep_alive)
        else:
            head = _HEADS.get(status) or _head(status, (), None, True)
        transport.write(b"".join((head[0], str(len(body)).encode(), head[1], body)))
        if not self.keep_alive:
            transport.close()
        if proto.flow.write_paused:
            # The client is not reading: take the next request only once this answer has drained
            # (uvicorn's send waits the same way), so answers cannot pile up in memory.
            proto.drain_then_continue()
        else:
            proto.on_response_complete()


def _head(status: int, defaults: Any, headers: dict[str, str] | None, keep_alive: bool) -> tuple[bytes, bytes]:
    """The response head around the Content-Length value, in uvicorn's order and spelling."""
    before = [STATUS_LINE[status]]
    for name, value in defaults:
        before += (name.lower(), b": ", value, b"\r\n")
    before.append(b"content-type: application/json\r\ncontent-length: ")
    after = [b"\r\n", _FIXED]
    for name, value in (headers or {}).items():
        after += (name.lower().encode(), b": ", value.encode(), b"\r\n")
    if not keep_alive:
        after.append(b"connection: close\r\n")
    after.append(b"\r\n")
    return b"".join(before), b"".join(after)


_HEADS = {status: _head(status, (), None, True) for status in (200, 400, 403, 413, 422, 500, 503)}


class _Route:
    __slots__ = ("evaluate", "guard", "metrics", "writer")

    def __init__(self, guard: Guard, evaluate: Evaluate) -> None:
        self.guard = guard
        self.evaluate = evaluate
        self.metrics = guard.metrics
        self.writer = evaluate.state.writer


class EvaluateProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with ``POST /api/v1/evaluate`` answered in place (see the module)."""

    route: _Route  # set on the subclass protocol_for makes

    def on_headers_complete(self) -> None:
        url = self.url
        parser = self.parser
        if ((url != _URL and not url.startswith(_URL_QUERY)) or b"#" in url or parser.get_method() != b"POST"
                or self.limit_concurrency is not None or parser.should_upgrade()):
            super().on_headers_complete()
            return
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        request = _Request(self, self.headers, url[len(_URL_QUERY):], keep_alive, self.expect_100_continue)
        previous = self.cycle
        self.cycle = request  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            request.begin()
        else:  # pipelined behind an unanswered request: wait for its turn, as uvicorn does
            self.flow.pause_reading()
            self.pipeline.appendleft((request, None))  # type: ignore[arg-type]

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if type(cycle) is _Request:
            cycle.begin()
        else:
            super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _Request:
            cycle.feed(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is _Request:
            cycle.finish()
        else:
            super().on_message_complete()

    def drain_then_continue(self) -> None:
        async def wait() -> None:
            await self.flow.drain()
            self.on_response_complete()

        task = self.loop.create_task(wait())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def protocol_for(app: Any) -> type[EvaluateProtocol] | None:
    """The protocol class for ``app`` (``create_app``'s Guard), or None if it cannot be used here."""
    evaluate = getattr(app, "fast", {}).get(("POST", PATH))
    if not isinstance(app, Guard) or not isinstance(evaluate, Evaluate):
        return None
    if not all(callable(getattr(HttpToolsProtocol, name, None)) for name in _NEEDS):
        return None  # a uvicorn whose protocol is built differently: its own, with the ASGI route
    return type("EvaluateProtocol", (EvaluateProtocol,), {"route": _Route(app, evaluate)})

