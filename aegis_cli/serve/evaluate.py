"""``POST /api/v1/evaluate``: decide one action or a batch, audit every decision, then answer.

The work is split in steps that do no I/O (``admit`` before the body, ``decide`` after it,
``answer`` once the audit ids are known) so that two front ends share them: the ASGI app
(``Evaluate.__call__``, used by tests' in-process clients and by servers without httptools) and
the server's own HTTP protocol (``serve.protocol``), which answers this route without building
uvicorn's per-request objects. Both give the same answers, byte for byte.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from aegis_cli.serve.auth import Principal, Role
from aegis_cli.serve.decisions import decision_out, parse_actions, record
from aegis_cli.serve.http import RESPONSE_HEADERS, HTTPProblem, authenticate, dumps, parse_json, receive_body
from aegis_cli.serve.state import ServerState

log = logging.getLogger("aegis.serve")

PATH = "/api/v1/evaluate"
Entries = list[tuple[Any, Any, dict[str, Any]]]

_FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _explain(query_string: bytes) -> bool:
    if not query_string:
        return False
    params = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    unknown = sorted(set(params) - {"explain"})
    if unknown:
        raise HTTPProblem(422, "invalid_parameter", f"unknown query parameter(s): {', '.join(unknown)[:200]}")
    values = params.get("explain")
    if not values:
        return False
    if values[-1] not in _FLAGS:
        raise HTTPProblem(422, "invalid_parameter", "query parameter 'explain' must be true, false, 1 or 0")
    return _FLAGS[values[-1]]


class Evaluate:
    """The endpoint, as a plain ASGI app and as the steps ``serve.protocol`` runs itself."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._sources: dict[str, dict[str, str]] = {}  # one origin per client name, not one per request

    # -- the steps ------------------------------------------------------------------------------

    def admit(self, headers: list[tuple[bytes, bytes]]) -> tuple[Principal, bytes | None]:
        """Before the body: who is asking (401/403 otherwise), and the Content-Length it declared."""
        authorization = declared = None
        for key, value in headers:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
        return authenticate(self.state.tokens, authorization, Role.EVALUATE), declared

    def decide(self, principal: Principal, body: bytes, query_string: bytes) -> tuple[Entries, bool]:
        """The decisions for a body, ready for the audit writer (and whether it was a batch)."""
        actions, batch = parse_actions(parse_json(body))
        explain = _explain(query_string)
        policy = self.state.policy  # one policy for the whole request
        source = self._sources.get(principal.name)
        if source is None:
            if len(self._sources) > 1024:
                self._sources.clear()
            source = self._sources[principal.name] = {"via": "serve", "client": principal.name}
        return [(a, policy.evaluate(a, explain=explain), source) for a in actions], batch

    # -- the ASGI app ---------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            status, body = 200, await self._answer(scope, receive)
        except HTTPProblem as exc:
            status, body = exc.status, problem_body(exc)
            if exc.headers:
                scope = {**scope, "aegis.headers": exc.headers}
        except Exception:
            log.exception("internal error on POST /api/v1/evaluate")
            status, body = 500, INTERNAL_ERROR
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *RESPONSE_HEADERS]
        for key, value in scope.get("aegis.headers", {}).items():
            headers.append((key.lower().encode(), value.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: dict[str, Any], receive: Any) -> bytes:
        principal, declared = self.admit(scope["headers"])
        entries, batch = self.decide(principal, await receive_body(receive, declared), scope.get("query_string", b""))
        return answer(entries, await record(self.state, entries), batch)


def problem_body(exc: HTTPProblem) -> bytes:
    return dumps({"error": exc.code, "message": exc.message, **exc.extra})


INTERNAL_ERROR = dumps({"error": "internal_error", "message": "internal server error; see the log"})


# -- the answer ----------------------------------------------------------------------------------
#
# ``dumps(decision_out(...))`` for each decision, built from parts: a policy hands out the same few
# Decision objects again and again (one per rule), so each one's JSON is made once and spliced
# between the action's and the audit id. Keys and separators as dumps writes them.

_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Built once (json.JSONEncoder.encode builds a C encoder per call). markers=None: no cycle check,
# which parsed JSON cannot need.
_encode_tree = (_c_make_encoder(None, _no_default, json.encoder.encode_basestring, None, ":", ",", False, False,
                                False) if _c_make_encoder is not None else None)

_decision_parts: dict[int, tuple[Any, str]] = {}  # id(decision) -> (decision, its JSON without braces)


def _tree(value: Any) -> str:
    if _encode_tree is None:
        return dumps(value).decode()
    return "".join(_encode_tree(value, 0))


def _one(action: Any, decision: Any, audit_id: int) -> str:
    if decision.trace is not None or type(audit_id) is not int:
        return dumps(decision_out(action, decision, audit_id)).decode()
    hit = _decision_parts.get(id(decision))
    if hit is None or hit[0] is not decision:
        if len(_decision_parts) > 4096:
            _decision_parts.clear()
        hit = _decision_parts[id(decision)] = (decision, dumps(decision.to_dict()).decode()[1:-1])
    return f'{{"action":{_tree(action.to_dict())},{hit[1]},"audit_id":{audit_id}}}'


def answer(entries: Entries, ids: list[int], batch: bool) -> bytes:
    """The response body: the decision (or ``{"decisions": [...]}``) with each one's audit id."""
    parts = [_one(a, d, i) for (a, d, _), i in zip(entries, ids, strict=True)]
    return ('{"decisions":[' + ",".join(parts) + "]}" if batch else parts[0]).encode()
