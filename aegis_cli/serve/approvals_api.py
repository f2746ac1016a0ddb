"""Approvals over HTTP: the same queue (in the audit database) that `aegis approvals` and the runtime use.

An agent POSTs an action; the server decides it, records the decision, and when the policy says
``approve`` queues it for a person and answers 202 with the request's id. The agent then long-polls
``GET /api/v1/approvals/{id}?wait=30`` until someone answers on the page, over the API, or with
``aegis approvals approve ID`` in any shell. A request past its expiry is ``timed_out``, which
counts as denied. Queue calls are blocking SQLite calls, so they run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aegis_cli.engine.models import Approval
from aegis_cli.serve.auth import Role
from aegis_cli.serve.decisions import decision_out, parse_actions, record
from aegis_cli.serve.http import (
    HTTPProblem,
    authorize,
    json_response,
    only_params,
    parse_json,
    query_float,
    query_int,
    read_body,
)

STATUSES = ("pending", "approved", "denied", "timed_out", "cancelled")
_LIST_FILTERS = (*STATUSES, "answered", "all")
MAX_WAIT = 60.0  # a long poll longer than this meets idle timeouts in proxies; poll again instead
POLL_INTERVAL = 0.25  # how often a long poll looks for answers given by other processes
MAX_WAITING = 256  # long polls at once; more are told to come back (429)
MAX_NOTE = 2000


def routes() -> list[Route]:
    return [
        Route("/api/v1/approvals", approvals_endpoint, methods=["GET", "POST"]),
        Route("/api/v1/approvals/{id:int}", get_approval, methods=["GET"]),
        Route("/api/v1/approvals/{id:int}/approve", approve, methods=["POST"]),
        Route("/api/v1/approvals/{id:int}/deny", deny, methods=["POST"]),
    ]


async def approvals_endpoint(request: Request) -> Response:
    # One route per path, so that a 405 names every allowed method.
    return await (submit(request) if request.method == "POST" else list_approvals(request))


MAX_ID = 2**63 - 1


def _id(request: Request) -> int:
    approval_id = request.path_params["id"]
    if approval_id > MAX_ID:  # beyond SQLite's integers: it cannot exist
        raise HTTPProblem(404, "not_found", f"no approval request {approval_id}")
    return approval_id


def _queue(request: Request) -> Any:
    queue = request.app.state.aegis.approvals
    if queue is None:
        raise HTTPProblem(503, "approvals_unavailable", "the approval queue is not available on this server")
    return queue


def _out(req: Any) -> dict[str, Any]:
    return req.to_dict()  # the shape of `aegis approvals list --format json` (approval.schema.json)


async def submit(request: Request) -> Response:

    principal = authorize(request, Role.EVALUATE)
    only_params(request, "timeout")
    body = parse_json(await read_body(request))
    actions, batch = parse_actions(body)
    if batch:
        raise HTTPProblem(422, "invalid_request", "ask for one approval per request (one action object)")
    action = actions[0]
    timeout = query_float(request, "timeout", None, 1, 7 * 24 * 3600)
    state = request.app.state.aegis
    queue = _queue(request)
    decision = state.policy.evaluate(action)
    (audit_id,) = await record(state, [(action, decision, {"via": "serve", "client": principal.name,
                                                            "endpoint": "approvals"})])
    if decision.approval is not Approval.APPROVE:
        # The policy decides on its own: auto needs nobody, and a block is final (no person can lift it).
        status = "approved" if decision.approval is Approval.AUTO else "denied"
        return json_response({"id": None, "status": status, "answered_by": "policy",
                              **decision_out(action, decision, audit_id)})
    req = await run_in_threadpool(queue.submit, action, decision, decision_id=audit_id,
                                  requested_by=principal.name, timeout=timeout or state.approval_timeout)
    return json_response(_out(req), 202,
                         headers={"Location": f"/api/v1/approvals/{req.id}"})


async def list_approvals(request: Request) -> Response:
    authorize(request, Role.APPROVE)  # every agent's pending parameters: for approvers
    only_params(request, "status", "limit")
    status = request.query_params.get("status", "pending")
    if status not in _LIST_FILTERS:
        raise HTTPProblem(422, "invalid_parameter", f"status must be one of {', '.join(_LIST_FILTERS)}")
    limit = query_int(request, "limit", 100, 1, 1000) or 100
    queue = _queue(request)
    if status == "answered":
        # Answered ones, most recently answered first (the page's "recent decisions").
        items = [r for r in await run_in_threadpool(queue.list, None, limit=max(limit * 4, 200)) if not r.pending]
        items.sort(key=lambda r: (r.answered_at is not None, r.answered_at, r.id), reverse=True)
        items = items[:limit]
    else:
        items = await run_in_threadpool(queue.list, None if status == "all" else status, limit=limit)
    return json_response({"approvals": [_out(r) for r in items]})


def _expired(req: Any) -> bool:
    return req.expires_at is not None and req.expires_at.timestamp() <= time.time()


async def get_approval(request: Request) -> Response:
    """One request; with ``?wait=S``, hold the answer until it is no longer pending (or S passed).

    An ``evaluate`` caller sees only the requests it made: the others hold other agents' parameters,
    which only approvers may read (as in the list)."""
    principal = authorize(request, Role.EVALUATE)
    only_params(request, "wait")
    approval_id = _id(request)
    wait = query_float(request, "wait", 0.0, 0.0, MAX_WAIT) or 0.0
    queue = _queue(request)
    state = request.app.state.aegis
    if wait > 0 and state.waiting >= MAX_WAITING:
        raise HTTPProblem(429, "too_many_waiting", f"{MAX_WAITING} long polls are already waiting; retry",
                          headers={"Retry-After": "1"})
    state.waiting += wait > 0
    try:
        return await _poll(request, queue, state, principal, approval_id, time.monotonic() + wait)
    finally:
        state.waiting -= wait > 0


async def _poll(request: Request, queue: Any, state: Any, principal: Any, approval_id: int,
                deadline: float) -> Response:
    while True:
        req = await run_in_threadpool(queue.get, approval_id)
        if req is None or (principal.role < Role.APPROVE and req.requested_by != principal.name):
            raise HTTPProblem(404, "not_found", f"no approval request {approval_id}")
        if req.pending and _expired(req):
            req = await run_in_threadpool(_expire, queue, approval_id)
        left = deadline - time.monotonic()
        if not req.pending or left <= 0 or state.shutdown.is_set():
            if not req.pending:
                state.answered.pop(approval_id, None)
            return json_response(_out(req))
        # Woken at once by an answer given through this server; answers from other processes
        # (a shell, another server) are seen at the next poll.
        event = state.answered.setdefault(approval_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(left, POLL_INTERVAL))


def _expire(queue: Any, approval_id: int) -> Any:
    try:
        return queue.expire(approval_id)
    except ValueError:
        return queue.get(approval_id)


async def approve(request: Request) -> Response:
    return await _answer(request, True)


async def deny(request: Request) -> Response:
    return await _answer(request, False)


async def _answer(request: Request, approved: bool) -> Response:
    principal = authorize(request, Role.APPROVE)
    only_params(request)
    approval_id = _id(request)
    body = await read_body(request)
    note = ""
    if body.strip():
        data = parse_json(body)
        if not isinstance(data, dict) or set(data) - {"note"}:
            raise HTTPProblem(422, "invalid_request", 'the body must be {"note": "..."} or empty')
        note = data.get("note") or ""
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise HTTPProblem(422, "invalid_request", f"'note' must be a string of at most {MAX_NOTE} characters")
    queue = _queue(request)
    state = request.app.state.aegis
    req = await run_in_threadpool(queue.get, approval_id)
    if req is None:
        raise HTTPProblem(404, "not_found", f"no approval request {approval_id}")
    if req.pending and _expired(req):
        req = await run_in_threadpool(_expire, queue, approval_id)
    if not req.pending:
        raise HTTPProblem(409, "already_answered", f"approval request {approval_id} is already {req.status}",
                          approval=_out(req))
    try:
        req = await run_in_threadpool(queue.answer, approval_id, approved, by=principal.name, note=note)
    except ValueError as exc:  # answered by someone else a moment ago
        current = await run_in_threadpool(queue.get, approval_id)
        raise HTTPProblem(409, "already_answered", str(exc), approval=_out(current) if current else None) from None
    state.notify_answered(approval_id)
    return json_response(_out(req))
