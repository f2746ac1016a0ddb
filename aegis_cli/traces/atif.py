"""ATIF, the Agent Trajectory Interchange Format (Harbor), and the non-conformant variant in the wild.

Conformant: ``{"schema_version": "ATIF-v1.x", "session_id", "agent": {"name"}, "steps": [{"step_id",
"timestamp"?, "source": "agent", "tool_calls": [{"tool_call_id", "function_name", "arguments"}]}]}``.
OpenAgents writes ``{"id", "name", "arguments"}`` calls and ``agent.model``; both are read. A
trajectory whose agent is ``claude-code`` gets that namespace, so Claude Code's tools map exactly
as they do from its own transcripts and hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from aegis_cli.traces.anthropic import CLAUDE_CODE
from aegis_cli.traces.base import (
    Item,
    Location,
    MalformedRecord,
    Problem,
    ToolCall,
    as_str,
    call_id,
    timestamp_or_none,
)


class ATIFReader:
    name: ClassVar[str] = "atif"
    description: ClassVar[str] = "ATIF trajectories ({schema_version, steps: [{step_id, tool_calls}]})"

    @staticmethod
    def detect(record: Any) -> bool:
        steps = record.get("steps") if isinstance(record, dict) else None
        return (isinstance(steps, list) and ("schema_version" in record or "session_id" in record)
                and all(isinstance(s, dict) and "step_id" in s for s in steps[:20]))

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        if not isinstance(record, dict) or not isinstance(record.get("steps"), list):
            raise MalformedRecord("ATIF trajectory without a 'steps' list")
        agent_info = record.get("agent") if isinstance(record.get("agent"), dict) else {}
        agent = as_str(agent_info.get("name"))
        namespace = CLAUDE_CODE if agent == CLAUDE_CODE else None
        session = as_str(record.get("session_id"))
        for i, step in enumerate(record["steps"]):
            if not isinstance(step, dict):
                yield Problem(where.at("steps", i), "an ATIF step must be a JSON object")
                continue
            calls = step.get("tool_calls")
            if calls is None:
                continue
            if not isinstance(calls, list):
                yield Problem(where.at("steps", i, "tool_calls"), "'tool_calls' must be a list")
                continue
            ts = timestamp_or_none(step.get("timestamp"))
            for j, call in enumerate(calls):
                at = where.at("steps", i, "tool_calls", j)
                if not isinstance(call, dict):
                    yield Problem(at, "a tool call must be a JSON object")
                    continue
                name = call.get("function_name", call.get("name"))
                if not isinstance(name, str) or not name:
                    yield Problem(at, "tool call has no 'function_name'")
                    continue
                yield ToolCall(name, call.get("arguments"), at, namespace=namespace, timestamp=ts,
                               call_id=call_id(call.get("tool_call_id", call.get("id"))), agent=agent,
                               session=session)
