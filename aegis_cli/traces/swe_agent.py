"""SWE-agent ``.traj`` files: ``{"trajectory": [...], "history": [...], "info": {...}}``.

Function-calling configurations record OpenAI-style ``tool_calls`` in ``history``; those are the
calls. Older configurations have none, only shell-like ``trajectory[k].action`` lines (``edit
1:9 ...``, ``rm -rf x``): each becomes a call named by its first word, with the whole line as
``params.command``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from aegis_cli.traces.base import Item, Location, MalformedRecord, ToolCall, timestamp_or_none
from aegis_cli.traces.openai import chat_calls


class SWEAgentReader:
    name: ClassVar[str] = "swe-agent"
    description: ClassVar[str] = "SWE-agent .traj ({trajectory: [{action}], history: [messages]})"

    @staticmethod
    def detect(record: Any) -> bool:
        if not isinstance(record, dict):
            return False
        history, trajectory = record.get("history"), record.get("trajectory")
        return ((isinstance(history, list) and any(isinstance(m, dict) and "agent" in m for m in history[:20]))
                or (isinstance(trajectory, list) and any(isinstance(s, dict) and "action" in s
                                                        for s in trajectory[:20])))

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        if not isinstance(record, dict):
            raise MalformedRecord("a SWE-agent trajectory must be a JSON object")
        found = False
        history = record.get("history")
        if isinstance(history, list):
            for item in chat_calls(history, where.at("history"), agent="swe-agent"):
                found = True
                yield item
        trajectory = record.get("trajectory")
        if found or not isinstance(trajectory, list):
            return
        for k, step in enumerate(trajectory):
            action = step.get("action") if isinstance(step, dict) else None
            if not isinstance(action, str) or not action.strip():
                continue
            command = action.strip()
            yield ToolCall(command.split(None, 1)[0], {"command": command}, where.at("trajectory", k, "action"),
                           agent="swe-agent", timestamp=timestamp_or_none(step.get("timestamp")))
