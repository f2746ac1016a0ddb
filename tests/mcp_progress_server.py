"""A small MCP server that streams progress, on whichever official SDK runs it (1.x FastMCP, 2.x
MCPServer): for the MCP adapter's tests.

    python tests/mcp_progress_server.py --ran FILE [--port P]   # stdio; streamable HTTP with --port

Tool ``count(steps)``: appends a line to FILE first (so a test sees whether the tool ran at all,
from outside the client), sends ``steps`` progress notifications ("step i", i of steps), then
answers ``counted <steps>``.
"""

import argparse
from pathlib import Path
from typing import Any

try:
    from mcp.server.mcpserver import Context, MCPServer  # mcp 2.x

    V1 = False
except ImportError:
    from mcp.server.fastmcp import Context, FastMCP  # mcp 1.x

    V1 = True

# No `from __future__ import annotations`: the SDK reads the tools' annotations at run time.


def build(ran: Path, port: int) -> Any:
    ran.touch()
    # 1.x takes the HTTP address when the server is made, 2.x when it is run
    server = FastMCP("progress-server", host="127.0.0.1", port=port) if V1 else MCPServer("progress-server")

    @server.tool()
    async def count(steps: int, ctx: Context) -> str:
        """Count to ``steps``, reporting progress at each step."""
        with ran.open("a") as f:
            f.write(f"count {steps}\n")
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        return f"counted {steps}"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ran", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = build(Path(args.ran), args.port)
    if not args.port:
        server.run()
    elif V1:
        server.run(transport="streamable-http")
    else:
        server.run(transport="streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
