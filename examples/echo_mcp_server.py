"""A tiny stdio MCP server for trying `aegis wrap --mcp` (standard library only).

Every tool it is asked to call succeeds and says what it was asked, so what you see is what aegis
let through:  aegis wrap --mcp -p policy.yaml -- python examples/echo_mcp_server.py
"""

import json
import sys

TOOLS = [{"name": name, "description": f"Pretend to {name.replace('_', ' ')}",
          "inputSchema": {"type": "object"}} for name in ("read_file", "delete_rows", "send_email")]


def answer(message: dict) -> dict | None:
    method, id_ = message.get("method"), message.get("id")
    if id_ is None:  # a notification: nothing to answer
        return None
    if method == "initialize":
        version = message.get("params", {}).get("protocolVersion", "2025-06-18")
        result = {"protocolVersion": version, "capabilities": {"tools": {}},
                  "serverInfo": {"name": "echo", "version": "1.0"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        params = message.get("params", {})
        text = f"echo: {params.get('name')}({json.dumps(params.get('arguments', {}), sort_keys=True)}) done"
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": id_, "error": {"code": -32601, "message": f"no method {method}"}}
    return {"jsonrpc": "2.0", "id": id_, "result": result}


for line in sys.stdin:
    if line.strip():
        reply = answer(json.loads(line))
        if reply is not None:
            print(json.dumps(reply), flush=True)
