"""Recorded agent traces in the formats found in the wild, read as located tool calls.

    from aegis_cli.traces import read_traces, ToolCall
    for item in read_traces(["session.jsonl"]):
        if isinstance(item, ToolCall):
            action = item.to_action(policy.tools)
"""

from aegis_cli.traces.base import Location, MalformedRecord, Problem, ToolCall, TraceReader
from aegis_cli.traces.files import FileStats, ReadStats, expand, read_traces
from aegis_cli.traces.formats import FORMATS, READERS

__all__ = ["FORMATS", "READERS", "FileStats", "Location", "MalformedRecord", "Problem", "ReadStats", "ToolCall",
           "TraceReader", "expand", "read_traces"]
