"""``POST /api/v1/hooks/claude-code | codex | gemini``: the agents' hook protocols over HTTP.

A developer's agent runs ``curl ... --data-binary @- URL || exit 2`` as its hook (``aegis hook
<agent> --print-settings --server URL``), so every machine decides with the server's policy and
writes one audit trail. The event is read, decided and answered by the same code as the local
hook (``aegis_cli.hooks.common.plan``); the records go through the server's audit writer, and the
answer is only sent once they are durable.

How the answers map, since curl cannot turn a body into exit status 2:

- the local hook exits 0 (allow, ask, deny, or nothing to say): 200 with exactly its stdout, the
  agent's own JSON, so a policy block is the agent's own deny with the rule and reason the model
  sees; 204 when the local hook prints nothing (Codex on an allowed call, an after-call event);
- the local hook exits 2 (an event it cannot read, an audit write that failed, a crash): a non-2xx
  status (422 ``refused`` with the local hook's stderr line as the message, 503
  ``audit_unavailable``, 500), which makes ``curl -f``
  fail, and the ``|| exit 2`` of the hook command then blocks the call. So does a server that is
  down, slow (``--max-time``) or refuses the token (401/403).

Same roles and checks as ``/api/v1/evaluate`` (role ``evaluate``); the caller's token name is
kept in each record's origin as ``client``.
"""

from __future__ import annotations

import logging
from typing import Any

from aegis_cli.hooks import AGENTS, agent_module
from aegis_cli.hooks.common import Decided, Record, plan
from aegis_cli.serve.auth import Role
from aegis_cli.serve.http import RESPONSE_HEADERS, HTTPProblem, authenticate, dumps, receive_body
from aegis_cli.serve.state import ServerState
from aegis_cli.serve.writer import WriterClosed

log = logging.getLogger("aegis.serve")
PREFIX = "/api/v1/hooks/"


class HookEndpoint:
    """One agent's hook endpoint, as a plain ASGI app (like ``/api/v1/evaluate``: no per-request framework)."""

    def __init__(self, state: ServerState, agent: str) -> None:
        self.state = state
        self.agent = agent_module(agent).AGENT
        self.path = PREFIX + agent

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers: list[tuple[bytes, bytes]] = []
        try:
            status, body = await self._answer(scope, receive)
        except HTTPProblem as exc:
            status, body = exc.status, dumps({"error": exc.code, "message": exc.message, **exc.extra})
            headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        except Exception:
            log.exception("internal error on POST %s", self.path)
            status, body = 500, dumps({"error": "internal_error", "message": "internal server error; see the log"})
        if status != 204:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": [*headers, *RESPONSE_HEADERS]})
        await send({"type": "http.response.body", "body": body if status != 204 else b""})

    async def _answer(self, scope: dict[str, Any], receive: Any) -> tuple[int, bytes]:
        authorization = declared = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
        state = self.state
        principal = authenticate(state.tokens, authorization, Role.EVALUATE)
        if scope.get("query_string"):
            raise HTTPProblem(422, "invalid_parameter", "this endpoint takes no query parameters")
        raw = (await receive_body(receive, declared)).decode("utf-8", "replace")  # as the local hook reads stdin
        policy = state.policy  # one policy for the whole request
        step = plan(self.agent, raw, lambda: policy, client=principal.name)
        if step.record is not None:
            try:
                await self._write(step.record)
            except WriterClosed:
                raise HTTPProblem(503, "shutting_down", "the server is shutting down; nothing was decided") from None
            except Exception as exc:
                if step.failure is not None:  # never answered unaudited
                    log.error("hook record not written: %s", exc)
                    raise HTTPProblem(503, "audit_unavailable",
                                      f"aegis: {step.failure}; blocked (fail closed)") from None
        answer = step.answer
        if answer.exit_code != 0:
            raise HTTPProblem(422, "refused", answer.stderr.strip())
        if not answer.stdout:
            return 204, b""
        return 200, answer.stdout.encode()

    async def _write(self, record: Record) -> None:
        if isinstance(record, Decided):  # group commit with the other decisions in flight
            await self.state.writer.record(record.items)
            return
        from aegis_cli.hooks.common import apply

        # Finding the decision and linking the execution to it run together on the writer thread.
        await self.state.writer.call(lambda logger: apply(logger, record))


def endpoints(state: ServerState) -> dict[str, HookEndpoint]:
    return {PREFIX + name: HookEndpoint(state, name) for name in AGENTS}
