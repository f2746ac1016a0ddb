"""A real MCP server over HTTP for the wrap tests: the official SDK's MCPServer (FastMCP).

    python tests/mcp_http_server.py --port P --counter FILE [--transport streamable-http|sse]
                                    [--json-response] [--oauth --token-ttl SECONDS --log FILE]

Tools: ``increment`` (adds to a counter kept in FILE, so a test can see whether a call ran),
``progress`` (sends progress and log notifications before answering), ``ask_name`` (asks the
client through elicitation), ``close_stream`` (cuts its own SSE stream, then answers on the
resumed one), ``whoami`` (the OAuth client whose token the call came with, or "anonymous").
With ``--oauth`` the server is its own OAuth authorization server (the SDK's auth routes:
discovery, dynamic registration, PKCE, refresh) and approves every authorization at once; access
tokens live ``--token-ttl`` seconds, and each grant is written to ``--log``.
"""

import argparse
import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

# No `from __future__ import annotations`: the SDK reads the tools' annotations at run time.


def build(args: argparse.Namespace) -> Any:
    counter = Path(args.counter)
    counter.write_text("0")
    kwargs: dict[str, Any] = {}
    if args.oauth:
        from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions

        base = f"http://127.0.0.1:{args.port}"
        kwargs = {"auth_server_provider": AutoApprove(args.token_ttl, Path(args.log)),
                  "auth": AuthSettings(issuer_url=base, resource_server_url=f"{base}/mcp",
                                       client_registration_options=ClientRegistrationOptions(enabled=True))}
    server = MCPServer("counter-server", **kwargs)

    @server.tool()
    def increment(by: int = 1) -> int:
        """Add to the counter and return it."""
        value = int(counter.read_text()) + by
        counter.write_text(str(value))
        return value

    @server.tool()
    async def progress(steps: int, ctx: Context) -> str:
        """Report progress, log, then answer."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await ctx.info(f"did step {i + 1}")
        return f"{steps} steps done"

    @server.tool()
    async def ask_name(ctx: Context) -> str:
        """Ask the user for a name through elicitation."""
        answer = await ctx.elicit("What is your name?", Name)
        return f"hello {answer.data.name}" if answer.action == "accept" and answer.data else answer.action

    @server.tool()
    async def close_stream(ctx: Context) -> str:
        """Cut this request's SSE stream (the client resumes it with Last-Event-ID), then answer."""
        await ctx.info("before the cut")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.3)
        return "answered after the cut"

    @server.tool()
    def whoami() -> str:
        """The OAuth client id of the access token this call carried."""
        from mcp.server.auth.middleware.auth_context import get_access_token

        token = get_access_token()
        return token.client_id if token is not None else "anonymous"

    return server


class Name(BaseModel):
    name: str


class AutoApprove:
    """An in-memory authorization server that approves at once; tokens expire after ``ttl`` seconds."""

    def __init__(self, ttl: float, log: Path) -> None:
        self.ttl, self.log = ttl, log
        self.clients: dict[str, Any] = {}
        self.codes: dict[str, Any] = {}
        self.access: dict[str, Any] = {}
        self.refresh: dict[str, Any] = {}

    def _note(self, what: str) -> None:
        with self.log.open("a") as f:
            f.write(what + "\n")

    async def get_client(self, client_id: str) -> Any:
        return self.clients.get(client_id)

    async def register_client(self, client_info: Any) -> None:
        self.clients[client_info.client_id] = client_info
        self._note("register")

    async def authorize(self, client: Any, params: Any) -> str:
        from mcp.server.auth.provider import AuthorizationCode, construct_redirect_uri

        code = secrets.token_urlsafe(24)
        self.codes[code] = AuthorizationCode(
            code=code, scopes=params.scopes or [], expires_at=time.time() + 300, client_id=client.client_id,
            code_challenge=params.code_challenge, redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly, resource=params.resource)
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client: Any, authorization_code: str) -> Any:
        return self.codes.get(authorization_code)

    def _grant(self, client_id: str, scopes: list[str], resource: str | None, how: str) -> Any:
        from mcp.server.auth.provider import AccessToken, RefreshToken
        from mcp.shared.auth import OAuthToken

        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access[access] = AccessToken(token=access, client_id=client_id, scopes=scopes,
                                          expires_at=int(time.time() + self.ttl), resource=resource)
        self.refresh[refresh] = RefreshToken(token=refresh, client_id=client_id, scopes=scopes, resource=resource)
        self._note(how)
        return OAuthToken(access_token=access, token_type="Bearer", expires_in=int(self.ttl),
                          refresh_token=refresh, scope=" ".join(scopes) or None)

    async def exchange_authorization_code(self, client: Any, authorization_code: Any) -> Any:
        self.codes.pop(authorization_code.code, None)
        return self._grant(client.client_id, authorization_code.scopes, authorization_code.resource, "code")

    async def load_refresh_token(self, client: Any, refresh_token: str) -> Any:
        return self.refresh.get(refresh_token)

    async def exchange_refresh_token(self, client: Any, refresh_token: Any, scopes: list[str]) -> Any:
        self.refresh.pop(refresh_token.token, None)
        return self._grant(client.client_id, scopes or refresh_token.scopes, refresh_token.resource, "refresh")

    async def load_access_token(self, token: str) -> Any:
        found = self.access.get(token)
        if found is not None and found.expires_at is not None and found.expires_at < time.time():
            return None
        return found

    async def revoke_token(self, token: Any) -> None:
        self.access.pop(getattr(token, "token", ""), None)


def memory_event_store() -> Any:
    """Events kept in memory, so a cut stream can be resumed with Last-Event-ID."""
    from mcp.server.streamable_http import EventMessage, EventStore

    class MemoryEvents(EventStore):
        def __init__(self) -> None:
            self.events: list[tuple[str, str, Any]] = []  # (event id, stream id, message)

        async def store_event(self, stream_id: str, message: Any) -> str:
            event_id = str(len(self.events) + 1)
            self.events.append((event_id, stream_id, message))
            return event_id

        async def replay_events_after(self, last_event_id: str, send_callback: Any) -> str | None:
            found = [e for e in self.events if e[0] == last_event_id]
            if not found:
                return None
            stream = found[0][1]
            for event_id, stream_id, message in self.events[int(last_event_id):]:
                if stream_id == stream and message is not None:
                    await send_callback(EventMessage(message, event_id))
            return stream

    return MemoryEvents()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--counter", required=True)
    parser.add_argument("--transport", default="streamable-http")
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--oauth", action="store_true")
    parser.add_argument("--token-ttl", type=float, default=3600)
    parser.add_argument("--log", default="/dev/null")
    args = parser.parse_args()
    server = build(args)
    if args.transport == "stdio":
        server.run()
    elif args.transport == "sse":
        server.run(transport="sse", host="127.0.0.1", port=args.port)
    else:
        server.run(transport="streamable-http", host="127.0.0.1", port=args.port, json_response=args.json_response,
                   event_store=memory_event_store(), retry_interval=100)


if __name__ == "__main__":
    main()
