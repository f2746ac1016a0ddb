"""`aegis wrap --mcp --url` through the HTTP proxy the environment names (HTTPS_PROXY, HTTP_PROXY,
NO_PROXY), as curl and httpx go: a real proxy (proxy.py from PyPI, with basic auth, started on a free
port) in front of the official SDK's MCP server and of an HTTPS stand-in, the official client as host.

The proxy's access log shows it carried the traffic; the same calls with the proxy gone, or with a
wrong password, are refused with `isError` naming the proxy and its answer, and the password shows
up nowhere: not in what the host saw, not on aegis's stderr, not in the audit database.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mt
import pytest
from mcp.client import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from test_wrap_mcp_http import (
    Listening,
    Server,
    aegis_params,
    audit_rows,
    browser,
    free_port,
    http_server,  # noqa: F401  (a fixture)
    listen_stop,  # noqa: F401  (a fixture)
    scripted_server,
    self_signed,
    sse_server,  # noqa: F401  (a fixture)
    start_listen,
    start_server,
    stop,
    text_of,
)

pytest.importorskip("proxy")

USER, PASSWORD = "aegis", "pr0xy-s3cret"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass
class Proxy:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    tls: bool = False  # served over TLS: an https:// proxy

    def url(self, password: str = PASSWORD) -> str:
        return f"{'https' if self.tls else 'http'}://{USER}:{password}@127.0.0.1:{self.port}"

    def carried(self, port: int, since: int, *wanted: str, count: int = 1) -> list[str]:
        """The access-log lines (after the first ``since``) for 127.0.0.1:``port``: a request forwarded
        (proxy.py logs a connection's first request, when the connection ends) or a CONNECT tunnel.
        Waited for (a few seconds at most) until there are ``count`` and each of ``wanted`` is in one."""
        deadline = time.monotonic() + 5
        while True:
            lines = [x for x in self.lines()[since:] if re.search(rf" - [A-Z]+ 127\.0\.0\.1:{port}\b", x)]
            if len(lines) >= count and all(any(w in x for x in lines) for w in wanted):
                return lines
            if time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def lines(self) -> list[str]:
        return [x for x in self.log.read_text().splitlines() if "access_log" in x]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with running_proxy(tmp_path_factory.mktemp("proxy")) as started:
        yield started


@contextlib.contextmanager
def running_proxy(tmp: Path, tls: tuple[Path, Path] | None = None) -> Iterator[Proxy]:
    """proxy.py with basic auth on a free port (it writes the port it bound); its HOME is ``tmp``,
    where it keeps its own files. With ``tls`` (certificate, key) it is an https:// proxy."""
    tmp.mkdir(parents=True, exist_ok=True)
    port_file, log = tmp / "port", tmp / "access.log"
    served = ["--cert-file", str(tls[0]), "--key-file", str(tls[1])] if tls else []
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
                             "--port-file", str(port_file), "--basic-auth", f"{USER}:{PASSWORD}", *served,
                             "--num-acceptors", "1", "--num-workers", "1", "--log-file", str(log)],
                            env={**os.environ, "HOME": str(tmp)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "proxy.py did not start"
        time.sleep(0.05)
    yield Proxy(int(port_file.read_text()), log, proc, tls is not None)
    proc.terminate()
    proc.wait(timeout=10)


def proxy_env(**values: str) -> dict[str, str]:
    """Proxy variables as given (both spellings of each), every other one emptied."""
    env = {name: "" for var in PROXY_VARS for name in (var, var.upper())}
    for var, value in values.items():
        env[var.lower()] = env[var.upper()] = value
    return env


def run_session(params: StdioServerParameters, errlog: Path, calls: list[tuple[str, dict[str, Any]]]
                ) -> tuple[str, list[mt.CallToolResult]]:
    """Initialize (what it raised, if it did) and the calls in turn, as a host would; aegis's stderr to ``errlog``."""
    async def session() -> tuple[str, list[mt.CallToolResult]]:
        with errlog.open("w") as err:
            async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as s:
                try:
                    await s.initialize()
                    initialized = "yes"
                except Exception as exc:
                    initialized = str(exc)
                return initialized, [await s.call_tool(name, args) for name, args in calls]

    return anyio.run(session)


def secret_nowhere(tmp: Path, *texts: str) -> None:
    """The proxy's password is in none of ``texts``, aegis's stderr, the audit database or the trace."""
    for text in texts:
        assert PASSWORD not in text
    for path in (tmp / "stderr", tmp / "audit.db", tmp / "audit.db-wal", tmp / "trace.jsonl"):
        if path.exists():
            assert PASSWORD.encode() not in path.read_bytes(), path


ALLOWED_AND_BLOCKED = [("increment", {"by": 1}), ("increment", {"by": 50})]


@pytest.mark.parametrize("transport", ["streamable", "sse"])
def test_url_goes_through_the_proxy_allowed_calls_run_and_blocked_ones_do_not(
        tmp_path: Path, proxy: Proxy, http_server: Server, sse_server: Server, transport: str) -> None:  # noqa: F811
    server = http_server if transport == "streamable" else sse_server
    port = int(server.url.split(":")[2].split("/")[0])
    since = len(proxy.lines())
    before = server.count()
    params = aegis_params(tmp_path, server.url, "--record-trace", str(tmp_path / "trace.jsonl"),
                          env=proxy_env(HTTP_PROXY=proxy.url()))
    initialized, (ok, blocked) = run_session(params, tmp_path / "stderr", ALLOWED_AND_BLOCKED)
    assert initialized == "yes"
    assert not ok.is_error and ok.structured_content == {"result": before + 1}
    assert blocked.is_error and "no-big-jumps" in text_of(blocked)
    assert server.count() == before + 1  # the blocked call never reached the server
    carried = proxy.carried(port, since, " POST ", *([" GET "] if transport == "sse" else []))
    assert any(" POST " in x for x in carried), carried  # the relayed messages went through the proxy
    if transport == "sse":
        assert any(" GET " in x for x in carried), carried  # and so did the transport's event stream
    decisions = [r["decision"]["approval"] for r in audit_rows(tmp_path / "audit.db") if r["kind"] == "decision"]
    assert decisions == ["auto", "block"]
    secret_nowhere(tmp_path, text_of(ok), text_of(blocked))


@pytest.mark.parametrize(("variable", "scheme", "kind"), [("HTTP_PROXY", "http", "HTTP"),
                                                        ("ALL_PROXY", "socks5h", "SOCKS")])
def test_a_proxy_that_is_gone_refuses_the_call_naming_it(tmp_path: Path, http_server: Server,  # noqa: F811
                                                         variable: str, scheme: str, kind: str) -> None:
    dead = free_port()
    before = http_server.count()
    params = aegis_params(tmp_path, http_server.url, "--target", "counter-server",
                          env=proxy_env(**{variable: f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{dead}"}))
    initialized, (result,) = run_session(params, tmp_path / "stderr", [("increment", {"by": 1})])
    assert f"the {kind} proxy {scheme}://127.0.0.1:{dead} could not be reached" in initialized
    assert result.is_error and f"{kind} proxy {scheme}://127.0.0.1:{dead} could not be reached" in text_of(result)
    assert http_server.count() == before
    secret_nowhere(tmp_path, initialized, text_of(result))


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "localhost, 127.0.0.0/8", "example.com,127.0.0.1:{port}"])
def test_no_proxy_hosts_are_reached_directly(tmp_path: Path, http_server: Server, no_proxy: str) -> None:  # noqa: F811
    # The proxy named is not there: a call that runs went around it.
    before = http_server.count()
    port = http_server.url.split(":")[2].split("/")[0]
    params = aegis_params(tmp_path, http_server.url, env=proxy_env(
        HTTP_PROXY=f"http://127.0.0.1:{free_port()}", ALL_PROXY=f"http://127.0.0.1:{free_port()}",
        NO_PROXY=no_proxy.format(port=port)))
    initialized, (ok,) = run_session(params, tmp_path / "stderr", [("increment", {"by": 1})])
    assert initialized == "yes" and not ok.is_error and http_server.count() == before + 1


def test_https_server_through_a_connect_tunnel_trusts_ssl_cert_file(tmp_path: Path, proxy: Proxy) -> None:
    cert, key = self_signed(tmp_path)
    server, url, seen, _ended = scripted_server((cert, key))
    port = int(url.split(":")[2].split("/")[0])
    since = len(proxy.lines())
    names = ["plain", "pieces", "gzip", "plain"]
    try:
        # HTTPS_PROXY for an https URL (HTTP_PROXY names a proxy that is not there: not the one to use)
        env = {**proxy_env(HTTPS_PROXY=proxy.url(), HTTP_PROXY=f"http://127.0.0.1:{free_port()}"),
               "SSL_CERT_FILE": str(cert)}
        initialized, results = run_session(aegis_params(tmp_path, url, env=env), tmp_path / "stderr",
                                           [(name, {}) for name in names])
    finally:
        server.shutdown()
    assert initialized == "yes"
    assert [text_of(r) for r in results] == [f"{name} ok" for name in names]
    assert seen["DELETE"] == 1 and seen["GET"] >= 1  # httpx's requests (GET stream, DELETE) went too
    tunnels = [x for x in proxy.carried(port, since, count=2) if " CONNECT " in x]
    assert len(tunnels) >= 2, tunnels  # the POSTs' connection, and httpx's
    secret_nowhere(tmp_path, *(text_of(r) for r in results))


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_wrong_proxy_password_is_refused_with_407_and_not_shown(tmp_path: Path, proxy: Proxy,
                                                                   http_server: Server, scheme: str) -> None:  # noqa: F811
    wrong = "not-" + PASSWORD
    if scheme == "https":
        cert, key = self_signed(tmp_path)
        server, url, seen, _ended = scripted_server((cert, key))
        env = {**proxy_env(HTTPS_PROXY=proxy.url(wrong)), "SSL_CERT_FILE": str(cert)}
    else:
        url, env, seen = http_server.url, proxy_env(HTTP_PROXY=proxy.url(wrong)), {}
        before = http_server.count()
    try:
        params = aegis_params(tmp_path, url, "--target", "counter-server", env=env)
        initialized, (result,) = run_session(params, tmp_path / "stderr", [("increment", {"by": 1})])
    finally:
        if scheme == "https":
            server.shutdown()
    shown = f"http://127.0.0.1:{proxy.port}"
    assert f"HTTP proxy {shown}" in initialized and "407" in initialized
    assert result.is_error and f"HTTP proxy {shown}" in text_of(result) and "407" in text_of(result)
    if scheme == "http":
        assert http_server.count() == before
    else:
        assert not seen  # nothing reached the server
    for text in (initialized, text_of(result)):
        assert wrong not in text and PASSWORD not in text
    for path in (tmp_path / "stderr", tmp_path / "audit.db"):
        assert wrong.encode() not in path.read_bytes()


@pytest.mark.parametrize("server_scheme", ["http", "https"])
def test_an_https_proxy_is_reached_over_tls(tmp_path: Path, http_server: Server,  # noqa: F811
                                            server_scheme: str) -> None:
    # One certificate (for 127.0.0.1) serves the proxy and the https server; $SSL_CERT_FILE trusts it for both.
    cert, key = self_signed(tmp_path)
    with running_proxy(tmp_path / "proxy-home", (cert, key)) as tls_proxy:
        if server_scheme == "https":  # a CONNECT tunnel inside the TLS to the proxy, TLS inside that
            server, url, seen, _ended = scripted_server((cert, key))
            calls: list[tuple[str, dict[str, Any]]] = [("plain", {}), ("gzip", {})]
        else:  # requests in absolute form, over the TLS to the proxy
            url, calls, before = http_server.url, ALLOWED_AND_BLOCKED, http_server.count()
        env = {**proxy_env(ALL_PROXY=tls_proxy.url()), "SSL_CERT_FILE": str(cert)}
        try:
            initialized, results = run_session(aegis_params(tmp_path, url, env=env), tmp_path / "stderr", calls)
        finally:
            if server_scheme == "https":
                server.shutdown()
        carried = tls_proxy.carried(int(url.split(":")[2].split("/")[0]), 0)
    assert initialized == "yes", initialized
    if server_scheme == "https":
        assert [text_of(r) for r in results] == ["plain ok", "gzip ok"] and seen["plain"] == 1
        # the POSTs' tunnel (httpx's GET stream and DELETE come when they come: not counted on here)
        assert any(" CONNECT " in x for x in carried), carried
    else:
        ok, blocked = results
        assert not ok.is_error and ok.structured_content == {"result": before + 1}
        assert blocked.is_error and "no-big-jumps" in text_of(blocked) and http_server.count() == before + 1
        assert any(" POST " in x for x in carried), carried
    secret_nowhere(tmp_path, *(text_of(r) for r in results))


def test_an_https_proxy_whose_certificate_is_not_trusted_is_refused_naming_it(
        tmp_path: Path, http_server: Server) -> None:  # noqa: F811
    cert, key = self_signed(tmp_path)
    before = http_server.count()
    with running_proxy(tmp_path / "proxy-home", (cert, key)) as tls_proxy:  # $SSL_CERT_FILE not set: certifi's
        params = aegis_params(tmp_path, http_server.url, "--target", "counter-server",
                              env=proxy_env(HTTP_PROXY=tls_proxy.url()))
        initialized, (result,) = run_session(params, tmp_path / "stderr", [("increment", {"by": 1})])
    named = f"HTTP proxy https://127.0.0.1:{tls_proxy.port}"
    assert named in initialized and "certificate" in initialized.lower()
    assert result.is_error and named in text_of(result)
    assert http_server.count() == before
    secret_nowhere(tmp_path, initialized, text_of(result))


def test_listen_goes_through_the_proxy(tmp_path: Path, proxy: Proxy, http_server: Server,  # noqa: F811
                                       listen_stop: list[Listening]) -> None:  # noqa: F811
    port = int(http_server.url.split(":")[2].split("/")[0])
    since = len(proxy.lines())
    # --host-oauth: the OAuth discovery documents are fetched from the server for the host, by proxy too
    listening = start_listen(tmp_path, "--url", http_server.url, "--host-oauth", env=proxy_env(HTTP_PROXY=proxy.url()))
    listen_stop.append(listening)
    before = http_server.count()

    async def session() -> list[mt.CallToolResult]:
        async with Client(listening.url, mode="legacy") as client:  # the host reaches aegis directly
            return [await client.call_tool(name, args) for name, args in ALLOWED_AND_BLOCKED]

    ok, blocked = anyio.run(session)
    assert not ok.is_error and ok.structured_content == {"result": before + 1}
    assert blocked.is_error and "no-big-jumps" in text_of(blocked)
    assert http_server.count() == before + 1
    assert any(" POST " in x for x in proxy.carried(port, since, " POST "))
    since = len(proxy.lines())
    import httpx

    with httpx.Client(timeout=10, trust_env=False) as raw:  # this server offers none: its 404, passed on
        discovery = raw.get(listening.url.removesuffix("/mcp") + "/.well-known/oauth-protected-resource/mcp")
    assert discovery.status_code == 404
    found = f"GET 127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp - 404"
    assert any(found in x for x in proxy.carried(port, since, found))
    assert PASSWORD.encode() not in Path(listening.db).read_bytes()


@pytest.mark.parametrize("over", ["http", "tls"])
def test_oauth_goes_through_the_proxy(tmp_path: Path, proxy: Proxy, over: str) -> None:
    """Discovery, registration and the token request go through the proxy too (the SDK's httpx
    client, which reads the same variables the same way), an https:// one as well."""
    upstream = start_server(tmp_path, "--oauth")
    port = int(upstream.url.split(":")[2].split("/")[0])
    with contextlib.ExitStack() as stack:
        env = {**browser(tmp_path)}
        if over == "tls":  # the proxy's certificate trusted by $SSL_CERT_FILE, for aegis and the SDK alike
            cert, key = self_signed(tmp_path)
            proxy = stack.enter_context(running_proxy(tmp_path / "proxy-home", (cert, key)))
            env["SSL_CERT_FILE"] = str(cert)
        since = len(proxy.lines())
        try:
            params = aegis_params(tmp_path, upstream.url, env={**env, **proxy_env(HTTP_PROXY=proxy.url())})
            initialized, (ok,) = run_session(params, tmp_path / "stderr", [("whoami", {})])
            grants = upstream.log.read_text().split()
        finally:
            stop(upstream)
        # proxy.py logs a connection (its first request) when it ends. The SDK's OAuth client opens its
        # own, with a GET of the MCP URL that is refused (401) and then carries the discovery, the
        # registration and the token request; aegis's own GETs come with the token, after initialize.
        carried = proxy.carried(port, since, f"GET 127.0.0.1:{port}/mcp - 401")
    assert initialized == "yes" and not ok.is_error and text_of(ok) != "anonymous"
    assert grants[:2] == ["register", "code"]
    assert any(f"GET 127.0.0.1:{port}/mcp - 401" in x for x in carried), carried
    secret_nowhere(tmp_path, text_of(ok))


def test_which_proxy_for_which_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from aegis_cli.wrap.http_proxy import proxy_for

    for name in (*PROXY_VARS, *(v.upper() for v in PROXY_VARS)):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://mcp.example.com/mcp") is None  # nothing named: direct
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:1")
    monkeypatch.setenv("https_proxy", "http://me:p%40ss%3Aword@secure.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "plain.corp:8080")  # no scheme: http://, as httpx reads it
    monkeypatch.setenv("NO_PROXY", ".internal.corp,10.0.0.0/8")
    tls = proxy_for("https://mcp.example.com/mcp")
    assert tls is not None and (tls.shown, tls.host, tls.port) == ("http://secure.corp:3128", "secure.corp", 3128)
    assert tls.authorization == "Basic " + base64.b64encode(b"me:p@ss:word").decode()
    assert "p%40ss" not in repr(tls) and "me:" not in repr(tls)  # never shown, never logged by accident
    plain = proxy_for("http://mcp.example.com/mcp")
    assert plain is not None and plain.shown == "http://plain.corp:8080" and plain.authorization is None
    assert proxy_for("https://mcp.internal.corp/mcp") is None and proxy_for("http://10.2.3.4/mcp") is None
    monkeypatch.delenv("https_proxy")
    via_all = proxy_for("https://mcp.example.com/mcp")
    assert via_all is not None and via_all.shown == "http://all.corp:1"
    monkeypatch.setenv("ALL_PROXY", "socks5h://me:p%40ss@socks.corp")
    socks = proxy_for("https://mcp.example.com/mcp")
    assert socks is not None and socks.socks and (socks.shown, socks.port) == ("socks5h://socks.corp:1080", 1080)
    assert (socks.username, socks.password, socks.authorization) == ("me", "p@ss", None)
    assert "p@ss" not in repr(socks) and socks.named == "the SOCKS proxy socks5h://socks.corp:1080"
    monkeypatch.setenv("ALL_PROXY", "https://me:secret@tls-proxy.corp")
    tls_proxy = proxy_for("https://mcp.example.com/mcp")
    assert tls_proxy is not None and not tls_proxy.socks and (tls_proxy.shown, tls_proxy.port) == \
        ("https://tls-proxy.corp:443", 443)
    monkeypatch.setenv("ALL_PROXY", "socks4://me:secret@old.corp:1080")
    with pytest.raises(ValueError, match="socks5h:// proxies only") as refused:
        proxy_for("https://mcp.example.com/mcp")
    assert "secret" not in str(refused.value)
