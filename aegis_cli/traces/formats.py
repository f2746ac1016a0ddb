"""The trace formats aegis reads, in the order detection tries them (most specific first)."""

from __future__ import annotations

from aegis_cli.traces.aegis import ActionsReader, DecisionsReader
from aegis_cli.traces.anthropic import ClaudeCodeReader, MessagesReader
from aegis_cli.traces.atif import ATIFReader
from aegis_cli.traces.base import TraceReader
from aegis_cli.traces.bfcl import BFCLReader
from aegis_cli.traces.mcp import MCPReader
from aegis_cli.traces.openai import AgentDojoReader, ChatReader, ResponsesReader, TauBenchReader
from aegis_cli.traces.swe_agent import SWEAgentReader

READERS: tuple[type[TraceReader], ...] = (
    DecisionsReader,
    ActionsReader,
    ClaudeCodeReader,
    MCPReader,
    ATIFReader,
    AgentDojoReader,
    TauBenchReader,
    SWEAgentReader,
    BFCLReader,
    ResponsesReader,
    MessagesReader,
    ChatReader,
)

FORMATS: dict[str, type[TraceReader]] = {r.name: r for r in READERS}
