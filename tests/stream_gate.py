"""What the stream-rewriter tests share: a gate that remembers what it decided, and a byte stream
cut into reads of a given size."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aegis_cli.engine.policy import Policy
from aegis_cli.wrap.tool_gate import ToolCall, ToolGate, Verdict


class Recorder:
    """A gate without audit or approvals (those are tested end to end) that remembers what it decided."""

    def __init__(self, policy: Policy | str) -> None:
        policy = Policy.from_string(policy) if isinstance(policy, str) else policy
        self.gate = ToolGate(policy, audit_factory=None, approvals=None)
        self.calls: list[ToolCall] = []

    async def decide(self, call: ToolCall) -> Verdict:
        self.calls.append(call)
        return await self.gate.decide(call)


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    """``data`` in reads of ``size`` bytes (the last one shorter)."""
    for i in range(0, len(data), size):
        yield data[i:i + size]
