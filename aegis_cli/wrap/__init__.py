"""``aegis wrap``: govern the tool calls of agents and MCP servers you did not write.

    from aegis_cli.wrap import McpWrapOptions, run_mcp_wrapper
    code = run_mcp_wrapper(McpWrapOptions(policy, ["mcp-server-time"], open_audit=...))

The MCP relay (``wrap.mcp``) is imported on first use; ``wrap.model_proxy`` covers any other agent.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "McpWrapOptions": "aegis_cli.wrap.mcp",
    "McpWrapper": "aegis_cli.wrap.mcp",
    "run_mcp_wrapper": "aegis_cli.wrap.mcp",
    "wrap_mcp": "aegis_cli.wrap.mcp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aegis_cli.wrap' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["McpWrapOptions", "McpWrapper", "run_mcp_wrapper", "wrap_mcp"]
