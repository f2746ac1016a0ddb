"""aegis's own records: actions JSONL (what ``aegis evaluate -`` reads) and decision records.

Decision records are anything holding an ``action`` object next to a decision: the JSONL that
``aegis evaluate`` and ``aegis simulate`` write, and audit exports (``aegis export``), whose
records carry a ``kind``; only ``kind == "decision"`` records are actions, the rest (approval,
execution and policy-change events) are read and passed over.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import Any, ClassVar

from aegis_cli.engine.errors import InputError
from aegis_cli.engine.models import Action
from aegis_cli.traces.base import Item, Location, MalformedRecord, ToolCall, call_id, timestamp_or_none


def _is_action(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("type"), str)
            and isinstance(record.get("target"), str) and "role" not in record and "message" not in record)


class ActionsReader:
    name: ClassVar[str] = "aegis"
    description: ClassVar[str] = 'aegis actions, one {"type", "target", "params", "agent", "timestamp"} per line'

    @staticmethod
    def detect(record: Any) -> bool:
        return _is_action(record) or (isinstance(record, list) and bool(record) and all(map(_is_action, record)))

    def read(self, record: Any, where: Location) -> list[Item]:
        if isinstance(record, list):
            return [_action_call(item, where.at(i), None) for i, item in enumerate(record)]
        return [_action_call(record, where, None)]


_PLAIN_KEYS = frozenset({"type", "target", "params", "agent", "session", "timestamp"})


def _action_call(data: Any, where: Location, ident: Any) -> ToolCall:
    action = _fast_action(data)
    if action is None:  # anything unusual goes through the full check, for its error message
        try:
            action = Action.from_dict(data)
        except InputError as exc:
            raise MalformedRecord(str(exc)) from None
    # agent/session/timestamp are read from ``action`` by to_action(); only what reports show is copied.
    return ToolCall(action.type, action.params, where, timestamp=action.timestamp,
                    call_id=None if ident is None else call_id(ident), agent=action.agent, action=action)


def _fast_action(data: Any) -> Action | None:
    """The action for a plain, well-formed record, or None to take the careful path.

    Replaying millions of actions is mostly this function; it accepts only what
    ``Action.from_dict`` would accept, and builds the same action.
    """
    if type(data) is not dict or not _PLAIN_KEYS.issuperset(data):
        return None
    get = data.get
    type_, target, params, ts = get("type"), get("target"), get("params"), get("timestamp")
    if type(type_) is not str or type(target) is not str:
        return None
    if params is None:
        params = {}
    elif type(params) is not dict:
        return None
    agent, session = get("agent") or "", get("session") or ""
    if type(agent) is not str or type(session) is not str:
        return None
    timestamp = None
    if ts is not None:
        if type(ts) is not str:
            return None
        try:
            timestamp = _dt.datetime.fromisoformat(ts)
        except ValueError:
            return None
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=_dt.UTC)
    return Action(type_, target, params, agent, session, timestamp)


class DecisionsReader:
    name: ClassVar[str] = "aegis-audit"
    description: ClassVar[str] = ('aegis decision records (audit export, evaluate/simulate JSONL): '
                                  '{"action": {...}, ...}')

    @staticmethod
    def detect(record: Any) -> bool:
        return isinstance(record, dict) and _is_action(record.get("action")) and (
            "kind" in record or "approval" in record or "decision" in record)

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        if not isinstance(record, dict):
            raise MalformedRecord("a decision record must be a JSON object")
        kind = record.get("kind", "decision")
        if kind != "decision":
            return  # an approval/execution/policy-change event: no action to replay
        action = record.get("action")
        if not isinstance(action, dict):
            raise MalformedRecord("decision record has no 'action' object")
        if action.get("timestamp") is None:
            # Audit records keep the time on the record; time conditions need it on the action.
            ts = next((record[k] for k in ("timestamp", "ts", "at", "created_at") if record.get(k)), None)
            if ts is not None and timestamp_or_none(ts) is not None:
                action = {**action, "timestamp": ts}
        yield _action_call(action, where.at("action"), record.get("id"))
