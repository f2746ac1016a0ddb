"""A minimal agent for the deployment example: one Messages API call with one tool.

It knows nothing of aegis. It talks to ANTHROPIC_BASE_URL, which `aegis wrap` points at its proxy;
a blocked tool call never reaches it, and it reads aegis's note in the reply instead.
"""

import json
import os
import urllib.request

base = os.environ.get("ANTHROPIC_BASE_URL", "https://api.anthropic.com").rstrip("/")
body = {
    "model": os.environ.get("AGENT_MODEL", "claude-sonnet-4-5"),
    "max_tokens": 512,
    "tools": [{"name": "delete_file", "description": "Delete a file",
               "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
    "messages": [{"role": "user", "content": os.environ.get("AGENT_TASK", "Delete /tmp/scratch.txt")}],
}
request = urllib.request.Request(
    f"{base}/v1/messages", data=json.dumps(body).encode(), method="POST",
    headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
             "x-api-key": os.environ.get("ANTHROPIC_API_KEY", "")})
with urllib.request.urlopen(request, timeout=600) as response:
    reply = json.load(response)
for block in reply.get("content", []):
    if block.get("type") == "tool_use":
        print(f"agent: would run {block['name']}({json.dumps(block['input'])})")
    elif block.get("type") == "text":
        print(f"agent: {block['text']}")
