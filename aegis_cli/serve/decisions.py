"""What every decision endpoint shares: reading actions from a body, auditing, the reply shape.

Its own module so that ``app`` (evaluate) and ``approvals_api`` (evaluate-and-wait) both import it,
and neither imports the other.
"""

from __future__ import annotations

import logging
from typing import Any

from aegis_cli.engine.errors import InputError
from aegis_cli.engine.models import Action
from aegis_cli.serve.http import HTTPProblem
from aegis_cli.serve.state import ServerState
from aegis_cli.serve.writer import WriterClosed

log = logging.getLogger("aegis.serve")

MAX_BATCH = 1000


def parse_actions(body: Any) -> tuple[list[Action], bool]:
    """One action object, or ``{"actions": [...]}``; 422 with the offending index otherwise."""
    if isinstance(body, dict) and "actions" in body:
        extra = sorted(set(body) - {"actions"})
        if extra:
            raise HTTPProblem(422, "invalid_request", f"unknown field(s) beside 'actions': {', '.join(extra)}")
        items = body["actions"]
        if not isinstance(items, list) or not items:
            raise HTTPProblem(422, "invalid_request", "'actions' must be a non-empty array of actions")
        if len(items) > MAX_BATCH:
            raise HTTPProblem(422, "invalid_request", f"at most {MAX_BATCH} actions per request, not {len(items)}")
        return [_action(item, f"actions[{i}]") for i, item in enumerate(items)], True
    return [_action(body, "body")], False


def _action(data: Any, where: str) -> Action:
    if isinstance(data, dict):
        # Stricter than the engine, which reads a null or empty value as "absent": the API holds
        # callers to action.schema.json, so a mistyped field is reported rather than dropped.
        for key in ("agent", "agent_id", "session"):
            if key in data and not isinstance(data[key], str):
                raise HTTPProblem(422, "invalid_action", f"{where}: action field '{key}' must be a string", at=where)
        ts = data.get("timestamp", "")
        if not isinstance(ts, (str, int, float)) or isinstance(ts, bool):
            raise HTTPProblem(422, "invalid_action", f"{where}: action field 'timestamp' must be an ISO 8601 "
                              "string or a number", at=where)
    try:
        return Action.from_dict(data)
    except InputError as exc:
        raise HTTPProblem(422, "invalid_action", f"{where}: {exc}", at=where) from None


async def record(state: ServerState, entries: list[tuple[Action, Any, dict[str, Any]]]) -> list[int]:
    """Write decisions to the audit trail and wait until they are durable; 503 if they cannot be."""
    try:
        return await state.writer.record(entries)
    except Exception as exc:
        raise unrecorded(exc) from None


def unrecorded(exc: Exception) -> HTTPProblem:
    """The answer when decisions could not be written: 503, never the decision."""
    if isinstance(exc, WriterClosed):
        return HTTPProblem(503, "shutting_down", "the server is shutting down; no decision was given")
    log.error("audit write failed: %s", exc)
    return HTTPProblem(503, "audit_unavailable", "the decision could not be written to the audit trail, so "
                       "none is given (treat this as a block)")


def decision_out(action: Action, decision: Any, audit_id: int | None) -> dict[str, Any]:
    # The same shape as `aegis evaluate --format json`.
    return {"action": action.to_dict(), **decision.to_dict(), "audit_id": audit_id}
