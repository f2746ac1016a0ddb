"""OAuth for ``aegis wrap --mcp --url``: aegis is the MCP client that authorizes.

The flow is the official SDK's (``mcp.client.auth.OAuthClientProvider``): protected-resource and
authorization-server discovery, dynamic client registration, PKCE, the authorization URL opened in
the browser (``webbrowser``, so ``$BROWSER`` chooses it), the code taken on a loopback callback,
token exchange and refresh. aegis runs that flow on a side request (a GET of the MCP URL without a
session, which changes nothing on the server) whenever it needs a token (``--listen``: as soon as it
starts, see ``authorize_now``), and puts the token on its own requests. Tokens and the registration
are stored per server in the user's config directory (``$AEGIS_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/aegis``, else ``~/.config/aegis``), mode 0600, and never logged or audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: How long a person has to finish authorizing in the browser.
AUTHORIZE_TIMEOUT = 300.0


def config_dir() -> Path:
    if os.environ.get("AEGIS_CONFIG_DIR"):
        return Path(os.environ["AEGIS_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aegis"


class FileTokenStorage:
    """The SDK's ``TokenStorage`` as one JSON file per server, readable by its owner only."""

    def __init__(self, path: Path, server_url: str) -> None:
        self.path = path
        self.server_url = server_url

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("server") == self.server_url else {}

    def write(self, **changes: Any) -> None:
        data = {**self.read(), **changes, "server": self.server_url}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    async def get_tokens(self) -> Any:
        from mcp.shared.auth import OAuthToken

        raw = self.read().get("tokens")
        return OAuthToken.model_validate(raw) if raw else None

    async def set_tokens(self, tokens: Any) -> None:
        expires = time.time() + tokens.expires_in if tokens.expires_in else None
        self.write(tokens=tokens.model_dump(mode="json", exclude_none=True), expires_at=expires)

    async def get_client_info(self) -> Any:
        from mcp.shared.auth import OAuthClientInformationFull

        raw = self.read().get("client")
        return OAuthClientInformationFull.model_validate(raw) if raw else None

    async def set_client_info(self, client_info: Any) -> None:
        self.write(client=client_info.model_dump(mode="json", exclude_none=True))


class OAuthBearer:
    """Bearer tokens for one server, obtained and refreshed through the SDK's OAuth client."""

    def __init__(self, server_url: str, directory: Path | None = None) -> None:
        self.url = server_url
        name = hashlib.sha256(server_url.encode()).hexdigest()[:16]
        self.storage = FileTokenStorage((directory or config_dir()) / "mcp-oauth" / f"{name}.json", server_url)
        stored = self.storage.read()
        self.access_token: str | None = (stored.get("tokens") or {}).get("access_token")
        self._expires_at: float | None = stored.get("expires_at")
        self._provider: Any = None
        self._port: int | None = stored.get("callback_port")
        self._lock = asyncio.Lock()
        self._asked = False  # whether the person was sent to the browser

    @property
    def stale(self) -> bool:
        """Whether the token is about to expire, so ``ensure_fresh`` would refresh it."""
        return bool(self.access_token and self._expires_at is not None and time.time() > self._expires_at - 5)

    async def ensure_fresh(self) -> None:
        """Refresh a token that is about to expire before it is used."""
        if self.stale:
            await self.authorize(None)

    async def authorize(self, www_authenticate: str | None) -> None:
        """Get a (new) token: refresh it, or run the whole flow with the person in the browser."""
        before = self.access_token
        async with self._lock:
            if self.access_token != before:
                return  # another request already got one
            await self._probe(refresh=www_authenticate is None)
        if not self.access_token or (self.access_token == before and www_authenticate is not None):
            raise RuntimeError("the authorization server gave no new token")

    async def authorize_now(self) -> str | None:
        """``--listen`` start-up: have a token before the first host connects, so no host waits for a
        person in the browser. One cheap request first (a GET of the MCP URL, with the token held if it
        is not about to expire; the SDK is not even imported): a server that does not answer 401 needs
        nothing. Otherwise the flow runs now, under the lock a host's request waits on. Returns the
        line to tell the person (authorized, or failed), or None when there is nothing to say."""
        try:
            import httpx2
        except ImportError:
            return None  # no OAuth without the SDK; a host's first request says so
        before = self.access_token
        if not self.stale:
            headers = {"accept": "text/event-stream"}
            if before:
                headers["authorization"] = f"Bearer {before}"
            try:
                async with httpx2.AsyncClient(timeout=30.0) as client, \
                        client.stream("GET", self.url, headers=headers) as response:
                    if response.status_code != 401:
                        return None  # no authorization needed, or the token held is good
            except Exception:
                return None  # unreachable: a host's request will say so
        host = urlsplit(self.url).netloc
        self._asked = False
        try:
            async with self._lock:
                if self.access_token != before:
                    return None  # a host's request got one meanwhile
                await self._probe(refresh=self.stale)
            if not self.access_token or self.access_token == before:
                raise RuntimeError("the authorization server gave no token")
        except Exception as exc:
            why = f"no answer within {AUTHORIZE_TIMEOUT:.0f} s" if isinstance(exc, TimeoutError) else (
                str(exc).removeprefix("aegis: ") or type(exc).__name__)
            return (f"aegis: authorizing with the MCP server at {host} failed ({why}); the next host to "
                    "connect tries again")
        return f"aegis: authorized with the MCP server at {host}" if self._asked else None

    def _make_provider(self) -> Any:
        import logging

        from mcp.client.auth import OAuthClientProvider
        from mcp.shared.auth import OAuthClientMetadata

        # The SDK logs a failed flow with its traceback, which Python would print on stderr (no
        # logging is configured); aegis says why in one line instead.
        logging.getLogger("mcp.client.auth").addHandler(logging.NullHandler())
        if self._port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self._port = s.getsockname()[1]
            self.storage.write(callback_port=self._port)
        metadata = OAuthClientMetadata(
            client_name="aegis", redirect_uris=[f"http://127.0.0.1:{self._port}/callback"],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"], response_types=["code"],
            token_endpoint_auth_method="none")
        self._code: asyncio.Future[Any] | None = None
        provider = OAuthClientProvider(self.url, metadata, self.storage, redirect_handler=self._open,
                                       callback_handler=self._wait_for_code)
        return provider

    async def _probe(self, *, refresh: bool = False) -> None:
        try:
            import httpx2
            import mcp.client.auth  # noqa: F401
        except ImportError:
            raise RuntimeError("OAuth needs the mcp package, 2.x: pip install 'aegis-cli[wrap]', or pass "
                               "--header 'Authorization: Bearer ${TOKEN}'") from None

        if self._provider is None:
            self._provider = self._make_provider()
            with contextlib.suppress(Exception):
                await self._provider._initialize()
                if self._expires_at:
                    # The SDK learns a token's expiry only when it is issued; restore it, so a
                    # stored token that has expired is refreshed rather than sent and refused.
                    self._provider.context.token_expiry_time = self._expires_at
        if refresh and self._provider.context.can_refresh_token():
            self._provider.context.token_expiry_time = time.time() - 1  # refresh ahead of expiry
        server = await asyncio.start_server(self._on_callback, "127.0.0.1", self._port)
        try:
            async with httpx2.AsyncClient(auth=self._provider, timeout=30.0) as client, \
                    client.stream("GET", self.url, headers={"accept": "text/event-stream"}):
                pass
        finally:
            server.close()
        tokens = await self.storage.get_tokens()
        self.access_token = tokens.access_token if tokens else None
        self._expires_at = self.storage.read().get("expires_at")

    async def _open(self, url: str) -> None:
        host = urlsplit(self.url).netloc
        print(f"aegis: authorize access to the MCP server at {host} in your browser: {url}", file=sys.stderr,
              flush=True)
        self._code = asyncio.get_running_loop().create_future()
        self._asked = True
        await asyncio.get_running_loop().run_in_executor(None, webbrowser.open, url)

    async def _wait_for_code(self) -> Any:
        assert self._code is not None
        return await asyncio.wait_for(self._code, AUTHORIZE_TIMEOUT)

    async def _on_callback(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from mcp.shared.auth import AuthorizationCodeResult

        try:
            request_line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
            query = parse_qs(urlsplit(target).query)
            ok = urlsplit(target).path == "/callback" and "code" in query
            text = ("aegis: authorized. You can close this tab." if ok else
                    "aegis: authorization failed: " + (query.get("error", ["no code"])[0]))
            body = text.encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            await writer.drain()
            if self._code is not None and not self._code.done():
                if ok:
                    self._code.set_result(AuthorizationCodeResult(
                        code=query["code"][0], state=(query.get("state") or [None])[0],
                        iss=(query.get("iss") or [None])[0]))
                else:
                    self._code.set_exception(RuntimeError(text))
        except Exception:
            pass
        finally:
            writer.close()
