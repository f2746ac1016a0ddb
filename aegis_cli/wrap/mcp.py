"""``aegis wrap --mcp``: a policy-enforcing relay between an MCP host and a stdio MCP server.

aegis relays JSON-RPC between the host (aegis's own stdin/stdout, or HTTP with ``--listen``:
``mcp_listen``) and the server, which is either its child over stdio (``StdioServer`` here) or a
remote server over Streamable HTTP (``mcp_http.HttpServer``). The deciding below never knows which:
it hands the server whole lines and gets whole lines back. Everything passes through as the exact bytes that
arrived, except ``tools/call`` requests, which are decided, audited and then forwarded, answered
by aegis with ``isError: true`` (block, denial, anything that could not be decided or audited),
or held while a person is asked. aegis reads only what it must: every host message (cheap, and
it leaves a tool call no way to slip past by spelling), and server messages only while it waits
for a particular answer (the server's name, a ``tools/list`` to filter, a held call's result).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aegis_cli.approvals.base import ApprovalAnswer, ApprovalHandler, ask
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.engine.policy import Policy
from aegis_cli.wrap import messages as m
from aegis_cli.wrap.elicit import ID_PREFIX, ApprovalTokens, HostElicitation, answer_from_reply, call_digest
from aegis_cli.wrap.pipes import Writer, read_lines
from aegis_cli.wrap.trace import TraceRecorder

#: After the host closes stdin, how long the server gets to exit before SIGTERM, then SIGKILL.
SHUTDOWN_GRACE = (10.0, 5.0)
#: While a call is held for a person, how often the host hears that it is still being worked on:
#: ``notifications/progress`` for the call's ``progressToken`` (hosts that reset their request
#: timeout on progress keep waiting) and, with ``--listen``, an SSE comment on its stream (so a proxy
#: does not cut an idle connection). Module-level so tests can shorten it.
KEEPALIVE_INTERVAL = 15.0


@dataclass
class McpWrapOptions:
    """How to wrap one server. ``open_audit`` opens the audit trail (called once, on the event
    loop's thread); ``approval_handler`` asks when the host cannot."""

    policy: Policy
    command: list[str]
    open_audit: Callable[[], Any] | None = None
    approval_handler: ApprovalHandler | None = None
    approval_timeout: float = 120.0
    target: str | None = None
    elicitation: bool = True
    hide_blocked: bool = False
    record_trace: str | None = None
    handler_records_answers: bool = False  # the approval queue writes its own "approval" events


class RefuseApprovals:
    """``--approvals deny``: nobody is asked; calls that need approval are refused."""

    timeout = 1.0

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        return ApprovalAnswer.deny("aegis", "no approver (--approvals deny and the host cannot be asked)")


class _ChildProtocol(asyncio.SubprocessProtocol):
    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:  # process exited and its stdin closed
        if not self.done.done():
            self.done.set_result(None)


#: The server in a process group of its own, so a terminal's Ctrl-C reaches aegis, which passes it on,
#: and not the server directly: asyncio's loop can put it in a new group; uvloop's cannot, and
#: starts a new session instead (a group of its own, and no controlling terminal).
_OWN_GROUP: dict[bool, dict[str, Any]] = {True: {"process_group": 0}, False: {"start_new_session": True}}


class StdioServer:
    """The server as aegis's child process: one JSON-RPC message per line on its stdin and stdout.

    Its stdout is a pipe aegis reads itself (``pipes.read_lines``), not one asyncio's subprocess
    transport reads: that one hands each read to the protocol through ``call_soon``, one more turn
    of the event loop for every answer."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.name_hint = os.path.basename(command[0]) if command else "mcp"
        self._child: asyncio.SubprocessTransport | None = None
        self._in: asyncio.WriteTransport | None = None
        self._proto: _ChildProtocol | None = None
        self._out_done: asyncio.Future[None] | None = None

    async def start(self, on_line: Callable[[bytes], None], on_undelivered: Any = None) -> None:
        loop = asyncio.get_running_loop()
        out_done = self._out_done = loop.create_future()

        def out_ended() -> None:
            if not out_done.done():
                out_done.set_result(None)

        read_end, write_end = os.pipe()
        try:
            try:
                transport, proto = await loop.subprocess_exec(
                    _ChildProtocol, *self.command,
                    stdin=asyncio.subprocess.PIPE, stdout=write_end, stderr=None, **_OWN_GROUP[
                        isinstance(loop, asyncio.BaseEventLoop)])
            finally:
                os.close(write_end)  # the child has its copy: its exit (and its children's) is our EOF
            self._child, self._proto = transport, proto
            self._in = transport.get_pipe_transport(0)  # type: ignore[assignment]
            await read_lines(read_end, on_line, out_ended)  # it closes itself at the end
        finally:
            os.close(read_end)  # read_lines reads a duplicate of it

    def send(self, line: bytes) -> None:
        if self._in is not None and not self._in.is_closing():
            self._in.write(line)

    def signal(self, sig: int) -> None:
        if self._child is not None and self._child.get_returncode() is None:
            self._child.send_signal(sig)

    def close_input(self) -> None:
        """The host is gone: close the server's stdin, then TERM and KILL it if it lingers."""
        if self._in is not None and not self._in.is_closing():
            self._in.close()
        loop = asyncio.get_running_loop()
        term, kill = SHUTDOWN_GRACE
        loop.call_later(term, self.signal, signal.SIGTERM)
        loop.call_later(term + kill, self.signal, signal.SIGKILL)

    async def wait(self) -> int:
        """The server's exit status (128+N when killed by signal N) once it has exited."""
        assert self._proto is not None and self._child is not None and self._out_done is not None
        await self._proto.done
        await self._out_done  # every line it wrote has been relayed
        code = self._child.get_returncode()
        self._child.close()
        if code is None:
            return 1
        return 128 - code if code < 0 else code


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers disagree on which duplicate wins: aegis must read what the server will run.
        raise ValueError("duplicate key in a JSON object")
    return obj


# By json's C scanner directly (messages.json_loader); duplicate keys refused.
_loads_host = m.json_loader(_unique_pairs)


def parse_host_line(line: bytes) -> Any:
    """A host's message as the relay reads it: UTF-8 JSON, no key twice in an object. Raises
    ``ValueError`` (``UnicodeDecodeError`` too) or ``RecursionError`` for anything else."""
    return _loads_host(line.decode("utf-8"))


#: Envelope and ``params`` keys no two of which fold to the same: an object whose keys are all among
#: them needs no folding to know that none differ only in case.
_UNREAD = object()  # no ``msg`` came with a line: it is parsed here
_PLAIN_KEYS = frozenset({"jsonrpc", "id", "method", "params", "result", "error", "name", "arguments", "_meta",
                         "requestState", "inputResponses", "task", "cursor", "uri", "requestId", "reason"})


def _ambiguous(msg: dict[str, Any]) -> bool:
    """Envelope keys that differ only in case ("method" and "Method", or "paramſ" and "params"): some
    decoders (Go's encoding/json) match field names case-insensitively (Unicode simple folding), and
    would read a different request."""
    params = msg.get("params")
    if msg.keys() <= _PLAIN_KEYS and (not isinstance(params, dict) or params.keys() <= _PLAIN_KEYS):
        return False
    return any(len({k.casefold() for k in obj}) != len(obj) for obj in (msg, params) if isinstance(obj, dict))


def _key(msg_id: Any) -> str:
    """A JSON-RPC id as a dict key: 1 and "1" are different requests, so they get different keys
    (an int's digits, a string behind a quote that no other kind of id starts with). mcp_listen keys
    its POSTs, and looks up ``_held``, with this same function."""
    kind = type(msg_id)
    if kind is int:
        return str(msg_id)
    if kind is str:
        return '"' + msg_id
    return json.dumps(msg_id)


class McpWrapper:
    def __init__(self, opts: McpWrapOptions, server: Any = None) -> None:
        self.opts = opts
        self.policy = opts.policy
        self.server_name: str | None = None
        # The link to the server: StdioServer, or mcp_http.HttpServer for a remote one.
        self._server: Any = server if server is not None else StdioServer(opts.command)
        self._fallback_name = self._server.name_hint
        # A link that can take a message already parsed (HttpServer) is spared parsing it again.
        self._send_parsed: Callable[[bytes, dict[str, Any]], None] | None = getattr(self._server, "send_parsed", None)
        self._client_caps: Any = None
        self._client_name = "mcp-host"
        self._protocol_version = ""
        self._watch: dict[str, str] = {}  # request id key -> what its response tells us
        self._held: dict[str, asyncio.Task[None]] = {}
        self._asks: dict[str, asyncio.Future[Any]] = {}  # aegis's own requests to the host
        self._tokens = ApprovalTokens()
        self._token_timers: dict[str, asyncio.TimerHandle] = {}
        self._audit: Any = None
        self._trace = TraceRecorder(opts.record_trace) if opts.record_trace else None
        self._out: Any = None  # the host: a pipes.Writer on stdout, or an mcp_listen session
        self._owns_audit = True
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def target(self) -> str:
        return self.opts.target or self.server_name or self._fallback_name

    # -- lifecycle ---------------------------------------------------------------------------

    async def open_audit(self) -> None:
        """Open the audit trail. Raises what the opener raises: no audit, no relay."""
        if self.opts.open_audit is not None and self._audit is None:
            self._audit = self.opts.open_audit()

    async def run(self) -> int:
        """Relay between stdin/stdout and the server until the server ends; returns its exit
        status (128+N when killed by signal N)."""
        loop = asyncio.get_running_loop()
        if self._audit is None:
            await self.open_audit()
        out = await Writer(1).start()
        out.on_broken = self._host_gone
        await self.attach(out)
        forwarded = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, self._server.signal, sig)
                forwarded.append(sig)
            except (ValueError, RuntimeError):  # not the main thread
                pass
        stop_reading = await read_lines(0, self._on_host_line, self._host_gone)
        try:
            return await self._server.wait()
        finally:
            for sig in forwarded:
                loop.remove_signal_handler(sig)
            stop_reading()
            await self._shutdown()

    async def attach(self, out: Any) -> None:
        """Start the server link, with ``out`` (``write(line)``, ``drain_and_close()``) as the host."""
        self._out = out
        await self._server.start(self._on_server_line, self._undelivered)

    def _host_gone(self) -> None:
        """The host closed our stdin (or stdout), or ended its session: end held calls, let the server go."""
        for task in list(self._held.values()):
            task.cancel()
        self._server.close_input()

    async def _shutdown(self) -> None:
        held = list(self._held.values())
        for task in held:
            task.cancel()
        if held:
            await asyncio.gather(*held, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for timer in self._token_timers.values():
            timer.cancel()
        if self._out is not None:
            await self._out.drain_and_close()
        if self._trace is not None:
            self._trace.close(self.target)
        if self._owns_audit and self._audit is not None and hasattr(self._audit, "close"):
            self._audit.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _to_server(self, line: bytes) -> None:
        self._server.send(line)

    def _undelivered(self, msg: Any, reason: str) -> None:
        """The server link could not deliver ``msg`` or bring back its answer: answer each request
        in it ourselves, so no call is left hanging (a tool call gets ``isError`` naming why)."""
        for item in msg if isinstance(msg, list) else [msg]:
            if not (isinstance(item, dict) and isinstance(item.get("method"), str) and "id" in item):
                continue
            key = _key(item["id"])
            self._watch.pop(key, None)
            if item["method"] == "tools/call":
                params = item.get("params")
                name = params.get("name") if isinstance(params, dict) else None
                text = (f"aegis: tool '{name}' got no answer from the server: {reason}. "
                        "Treat it as failed; it may not have run.")
                self._to_host(m.tool_result(item["id"], text, is_error=True, modern=m.is_modern(item)))
            else:
                self._to_host(m.error_response(item["id"], m.INTERNAL_ERROR, f"aegis: {reason}"))

    def _to_host(self, line: bytes) -> None:
        if self._trace is not None:
            self._trace.record_line("s2c", line)
        if self._out is not None:
            self._out.write(line)

    def _in_background(self, fut: asyncio.Future[Any]) -> None:
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    # -- host -> server ----------------------------------------------------------------------

    def _on_host_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = parse_host_line(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to read
            # What aegis cannot read could still be a tool call to a laxer parser: answer it as
            # the server would, and do not pass it on.
            if self._trace is not None:
                self._trace.record_line("c2s", line)
            self._to_host(m.error_response(None, m.PARSE_ERROR, "Parse error (aegis: not JSON)"))
            return
        self._on_host_parsed(msg, line)

    def _on_host_parsed(self, msg: Any, line: bytes) -> None:
        """A host's message (or batch), ``line`` read by ``parse_host_line`` (mcp_listen reads each
        POST so before it is governed here: one parse, not two)."""
        if self._trace is not None:
            self._trace.record("c2s", msg)
        if isinstance(msg, list):  # a JSON-RPC batch (protocol 2025-03-26): govern each member
            for item in msg:
                if isinstance(item, list):  # a batch inside a batch is no request aegis can govern
                    self._to_host(m.error_response(None, m.INVALID_REQUEST, "Invalid Request (aegis: nested batch)"))
                    continue
                self._on_host_message(item, m.dumps(item))
            return
        self._on_host_message(msg, line)

    def _on_host_message(self, msg: Any, line: bytes) -> None:
        if not isinstance(msg, dict):
            self._to_server(line)
            return
        if _ambiguous(msg):
            msg_id = msg.get("id") if isinstance(msg.get("id"), (str, int)) else None
            self._to_host(m.error_response(msg_id, m.INVALID_REQUEST,
                                           "Invalid Request (aegis: keys that differ only in case)"))
            return
        method = msg.get("method")
        if method is None:
            msg_id = msg.get("id")
            if isinstance(msg_id, str) and msg_id.startswith(ID_PREFIX):
                future = self._asks.get(msg_id)
                if future is not None and not future.done():
                    future.set_result(msg)
                return  # an answer to aegis's own question: never the server's business
            self._to_server(line)
            return
        if method == "tools/call":
            if "id" not in msg:
                return  # a tool call sent as a notification cannot be answered, so it is not run
            if self._held and _key(msg["id"]) in self._held:
                self._to_host(m.error_response(msg["id"], m.INVALID_REQUEST,
                                               "aegis: a request with this id is already in progress"))
                return
            held = self._govern(msg, line)
            if held is None:
                return
            key = _key(msg["id"])
            task = asyncio.ensure_future(held)
            self._held[key] = task
            task.add_done_callback(lambda _t, k=key: self._held.pop(k, None))
            return
        if method == "notifications/cancelled":
            params = msg.get("params")
            if isinstance(params, dict) and "requestId" in params:
                task = self._held.get(_key(params["requestId"]))
                if task is not None:
                    task.cancel()  # the server never saw that call: nothing to tell it
                    return
        elif method == "initialize" and "id" in msg:
            params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
            self._client_caps = params.get("capabilities")
            info = params.get("clientInfo")
            if isinstance(info, dict) and isinstance(info.get("name"), str):
                self._client_name = info["name"]
            self._protocol_version = str(params.get("protocolVersion", ""))
            self._watch[_key(msg["id"])] = "initialize"
        elif method == "server/discover" and "id" in msg:
            self._watch[_key(msg["id"])] = "discover"
        elif method == "tools/list" and "id" in msg and self.opts.hide_blocked:
            self._watch[_key(msg["id"])] = "tools/list"
        self._to_server(line)

    # -- server -> host ----------------------------------------------------------------------

    def _on_server_line(self, line: bytes) -> None:
        if not (self._watch or self._trace is not None or
                (self.server_name is None and self.opts.target is None)):
            if self._out is not None:
                self._out.write(line)
            return
        msg = getattr(line, "msg", _UNREAD)  # read already by the link it came from (mcp_http)
        if msg is _UNREAD:
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                self._to_host(line)
                return
        if isinstance(msg, dict) and "method" not in msg and "id" in msg:
            result = msg.get("result")
            if self.server_name is None:
                name = m.server_name_from_result(result)
                if name:
                    self._learn_name(name)
            kind = self._watch.pop(_key(msg["id"]), None)
            if kind is not None and isinstance(result, dict):
                changed = self._read_result(kind, msg, result)
                if changed:
                    line = m.dumps(msg)
        self._to_host(line)

    def _learn_name(self, name: str) -> None:
        self.server_name = name
        if self._trace is not None:
            self._trace.name_server(self.opts.target or name)

    def _read_result(self, kind: str, msg: dict[str, Any], result: dict[str, Any]) -> bool:
        """Note what a watched response says; True when aegis changed it."""
        if kind == "initialize":
            self._protocol_version = str(result.get("protocolVersion", self._protocol_version))
            return False
        if kind == "tools/list":
            tools = result.get("tools")
            if not isinstance(tools, list):
                return False
            kept = [t for t in tools if not (isinstance(t, dict) and isinstance(t.get("name"), str)
                                             and m.always_blocked(self.policy, self._action(t["name"], None)))]
            if len(kept) == len(tools):
                return False
            result["tools"] = kept
            return True
        if kind.startswith("approved:") and result.get("resultType") == "input_required":
            # The server wants input for a call a person already approved: wrap its state so the
            # host's retry is recognised as that approved call rather than asked about again.
            _, decision_id, digest = kind.split(":", 2)
            token, _nonce = self._tokens.issue(int(decision_id) if decision_id.isdigit() else None, digest,
                                               approved=True, inner=result.get("requestState"))
            result["requestState"] = token
            return True
        return False

    # -- governing a tool call ---------------------------------------------------------------

    def _action(self, name: str, arguments: Any) -> Action:
        return m.tool_call_action(self.policy, name, arguments, self.target)

    def _govern(self, msg: dict[str, Any], line: bytes) -> Coroutine[Any, Any, None] | None:
        """Decide, audit, then forward or refuse, all before the next message is read. A call
        that must wait (for a person) comes back as a coroutine to run as a task."""
        msg_id = msg["id"]
        params = msg.get("params")
        modern = m.is_modern(msg)
        name = params.get("name") if isinstance(params, dict) else None
        tool = name if isinstance(name, str) else "?"
        arguments = params.get("arguments") if isinstance(params, dict) else None
        try:
            if not isinstance(name, str):
                raise ValueError("tools/call has no tool name")
            action = self._action(name, arguments)
            if self.opts.target is None and self.server_name is None:
                # Rules on the server's name cannot be applied before it is known; guessing it
                # from the command would let such rules be bypassed by calling early.
                decision = m.unnamed_server_decision(self.policy, "Pass --target to name it in advance.")
            else:
                decision = self.policy.evaluate(action)
        except Exception as exc:  # fail closed: what cannot be decided is refused
            action = Action(tool, self.target, {})
            decision = Decision(Approval.BLOCK, RiskLevel.CRITICAL, None,
                                f"the call could not be decided ({exc}); refused (fail closed)", self.policy.hash)
        state = params.get("requestState") if isinstance(params, dict) else None
        if ApprovalTokens.is_ours(state):
            return self._resume(msg, action, decision, tool, arguments, state)
        source = {"server": self.target, "jsonrpc_id": msg_id}
        extra = {"via": "wrap-mcp", "tool": tool}
        try:
            rid = self._record(action, decision, source, extra)
        except Exception as exc:
            self._to_host(m.tool_result(msg_id, m.unaudited_text(tool, exc), is_error=True, modern=modern))
            return None
        if decision.approval is Approval.AUTO:
            if self._send_parsed is not None:
                self._send_parsed(line, msg)
            else:
                self._to_server(line)
        elif decision.approval is Approval.BLOCK:
            self._to_host(m.tool_result(msg_id, m.refusal_text(action, decision, tool), is_error=True, modern=modern))
        else:
            return self._hold(msg, line, action, decision, rid, tool, arguments, modern)
        return None

    def _record(self, action: Action, decision: Decision, source: dict[str, Any],
                      extra: dict[str, Any]) -> int | None:
        # Written on the loop's own thread, before the call is forwarded. A thread hop per call
        # cost more than the write itself (bench/bench_wrap_mcp.py); the price is that other
        # messages wait while a record reaches the disk, which is a few milliseconds at worst.
        if self._audit is None:
            return None
        return self._audit.record_decision(action, decision, source=source, extra=extra)

    async def _record_answer(self, rid: int | None, answer: ApprovalAnswer, *, by_handler: bool) -> None:
        if self._audit is None or rid is None or (by_handler and self.opts.handler_records_answers):
            return
        self._audit.record_event("approval", rid, answer.to_dict())

    async def _hold(self, msg: dict[str, Any], line: bytes, action: Action, decision: Decision,
                    rid: int | None, tool: str, arguments: Any, modern: bool) -> None:
        msg_id = msg["id"]
        caps = m.request_meta(msg).get(m.CLIENT_CAPABILITIES_KEY) if modern else self._client_caps
        prompt = m.approval_prompt(tool, arguments, action, decision)
        use_host = self.opts.elicitation and m.supports_form_elicitation(caps)
        if use_host and modern:
            self._ask_by_input_required(msg, rid, tool, arguments, prompt)
            return
        handler: ApprovalHandler | None = self.opts.approval_handler
        if use_host:
            host = f"mcp-host:{self._client_name}"
            with_mode = self._protocol_version >= "2025-11-25"
            handler = HostElicitation(self._to_host, self._asks, m.elicitation_params(prompt, with_mode=with_mode),
                                      self.opts.approval_timeout, host)
        keeper = self._keep_alive(msg, tool)
        try:
            answer = await ask(handler, action, decision, decision_id=rid)
        except asyncio.CancelledError:
            cancelled = ApprovalAnswer.deny("aegis", "the host cancelled the call", status="cancelled")
            self._in_background(asyncio.ensure_future(self._record_answer_quietly(rid, cancelled)))
            raise
        finally:
            if keeper is not None:
                keeper.cancel()  # before the answer is written: nothing of the hold comes after it
        try:
            await self._record_answer(rid, answer, by_handler=not use_host)
        except Exception as exc:
            answer = ApprovalAnswer.deny("aegis", f"the answer could not be audited ({exc})", status="error")
        if answer.approved:
            if modern and rid is not None:
                self._watch[_key(msg_id)] = f"approved:{rid}:{call_digest(tool, arguments)}"
            self._to_server(line)
        else:
            self._to_host(m.tool_result(msg_id, m.denial_text(tool, decision, answer.describe()),
                                        is_error=True, modern=modern))

    def _keep_alive(self, msg: dict[str, Any], tool: str) -> asyncio.Task[None] | None:
        """While ``msg`` is held, tell the host now and then that it is not forgotten (None when
        there is no way to: a stdio host that asked for no progress)."""
        token = m.request_meta(msg).get("progressToken")
        if isinstance(token, bool) or not isinstance(token, (str, int)):
            token = None
        ping = getattr(self._out, "keepalive", None)  # --listen's SSE comment; stdio has none
        if ping is None and token is None:
            return None
        return asyncio.ensure_future(self._beat(msg["id"], token, ping, tool))

    async def _beat(self, msg_id: Any, token: str | int | None, ping: Callable[[Any], None] | None,
                    tool: str) -> None:
        # Only ever progress and comments: the call itself goes nowhere until it is decided.
        beats = 0
        while True:
            if ping is not None:
                ping(msg_id)
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            beats += 1
            if token is not None:
                # Counts up, as progress must; no total, since nobody knows when a person answers.
                self._to_host(m.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                    "progressToken": token, "progress": beats,
                    "message": f"aegis: '{tool}' is waiting for approval"}}))

    async def _record_answer_quietly(self, rid: int | None, answer: ApprovalAnswer) -> None:
        # The call was not run; if this note cannot be written, the note is all that is lost.
        with contextlib.suppress(Exception):
            await self._record_answer(rid, answer, by_handler=False)

    # -- per-request era: approval through input_required ------------------------------------

    def _ask_by_input_required(self, msg: dict[str, Any], rid: int | None, tool: str, arguments: Any,
                               prompt: str) -> None:
        token, nonce = self._tokens.issue(rid, call_digest(tool, arguments),
                                          inner=(msg.get("params") or {}).get("requestState"))
        self._token_timers[nonce] = asyncio.get_running_loop().call_later(
            self.opts.approval_timeout, self._token_expired, nonce, rid)
        result = {"resultType": "input_required", "requestState": token, "inputRequests": {
            m.INPUT_KEY: {"method": "elicitation/create",
                          "params": m.elicitation_params(prompt, with_mode=True)}}}
        self._to_host(m.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}))

    def _token_expired(self, nonce: str, rid: int | None) -> None:
        self._token_timers.pop(nonce, None)
        if self._tokens.forget(nonce):
            answer = ApprovalAnswer.deny("aegis", f"no answer within {self.opts.approval_timeout:g}s",
                                         status="timed_out")
            self._in_background(asyncio.ensure_future(self._record_answer_quietly(rid, answer)))

    async def _resume(self, msg: dict[str, Any], action: Action, decision: Decision, tool: str,
                      arguments: Any, token: str) -> None:
        """The host retried a call with aegis's ``requestState``: read the answer, then run or refuse."""
        msg_id = msg["id"]
        params: dict[str, Any] = dict(msg["params"])
        state = self._tokens.redeem(token, call_digest(tool, arguments))
        responses = params.get("inputResponses")
        responses = dict(responses) if isinstance(responses, dict) else {}
        reply = responses.pop(m.INPUT_KEY, None)
        if isinstance(state, str):
            self._to_host(m.tool_result(msg_id, f"aegis refused tool '{tool}': {state}; not approved. "
                                                "The call was not run.", is_error=True, modern=True))
            return
        if not state.approved:
            timer = self._token_timers.pop(state.nonce, None)
            if timer is not None:
                timer.cancel()
            host = f"mcp-host:{(m.request_meta(msg).get(m.CLIENT_INFO_KEY) or {}).get('name', 'host')}"
            if time.time() - state.issued > self.opts.approval_timeout:
                answer = ApprovalAnswer.deny(host, f"answered after {self.opts.approval_timeout:g}s",
                                             status="timed_out")
            else:
                answer = answer_from_reply({"result": reply}, host)
            try:
                await self._record_answer(state.decision_id, answer, by_handler=False)
            except Exception as exc:
                answer = ApprovalAnswer.deny("aegis", f"the answer could not be audited ({exc})", status="error")
            if not answer.approved:
                self._to_host(m.tool_result(msg_id, m.denial_text(tool, decision, answer.describe()),
                                            is_error=True, modern=True))
                return
        if responses:
            params["inputResponses"] = responses
        else:
            params.pop("inputResponses", None)
        if state.inner is not None:
            params["requestState"] = state.inner
        else:
            params.pop("requestState", None)
        forwarded = {**msg, "params": params}
        if state.decision_id is not None:
            self._watch[_key(msg_id)] = f"approved:{state.decision_id}:{state.digest}"
        self._to_server(m.dumps(forwarded))


async def wrap_mcp(opts: McpWrapOptions) -> int:
    return await McpWrapper(opts).run()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The relay's event loop: uvloop's when installed (``serve`` and the model proxy choose it too).
    Every answer is one or more turns of the loop, and asyncio's own costs a good part of a relayed
    call's instructions in Python (``bench/bench_wrap_mcp.py --instructions``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_mcp_wrapper(opts: McpWrapOptions) -> int:
    """Run the relay to completion on a fresh event loop; returns the server's exit status."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(wrap_mcp(opts))
