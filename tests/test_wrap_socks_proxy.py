"""`aegis wrap` through a SOCKS5 proxy the environment names (ALL_PROXY=socks5h://user:pass@host:port, as an
`ssh -D` tunnel into a company network is named): a real SOCKS5 server (pproxy from PyPI, user name and
password, started on a free port) between aegis and the official SDK's MCP server, an HTTPS stand-in, and a
model-API upstream.

`--url` over both transports and to an https server, and the model-API proxy with the Anthropic SDK as the
agent, on aegis's own client (no httpx on the request path): pproxy's log shows it carried them, allowed
calls run and blocked ones do not; with a wrong password the call is refused naming the proxy, nothing
reaches the server, and the password appears nowhere (what the host or agent saw, stderr, the audit trail).
"""

from __future__ import annotations

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
from mcp.client.stdio import stdio_client
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
from test_wrap_mcp_proxy import ALLOWED_AND_BLOCKED, proxy_env, run_session, running_proxy
from test_wrap_proxy_via_http_proxy import no_proxy_vars, run, serve, tool_names  # noqa: F401  (a fixture)

pytest.importorskip("pproxy")

USER, PASSWORD = "aegis", "s0cks-s3cret"

# pproxy 2.7 asks for the current event loop the way uvloop 0.21 refuses: it runs on asyncio's own.
# --auth 0: ask every connection for the password (by default pproxy trusts an address for 30 days
# once it has given the right one, which would hide a wrong one).
_RUN_PPROXY = ("import asyncio, sys; sys.modules['uvloop'] = None; asyncio.set_event_loop(asyncio.new_event_loop());"
               "from pproxy.server import main; sys.argv[0] = 'pproxy'; main()")


@dataclass
class Socks:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    def url(self, password: str = PASSWORD, scheme: str = "socks5h") -> str:
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}"

    def carried(self, port: int, since: int, count: int = 1) -> list[str]:
        """pproxy's lines (after the first ``since``) for tunnels to port ``port``, waited for until there
        are ``count`` (a few seconds at most)."""
        deadline = time.monotonic() + 5
        while True:
            lines = [x for x in self.lines()[since:] if re.search(rf"^socks5 \S+ -> \S+:{port}$", x)]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@contextlib.contextmanager
def running_socks(tmp: Path) -> Iterator[Socks]:
    port, log = free_port(), tmp / "pproxy.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", _RUN_PPROXY, "-l", f"socks5://127.0.0.1:{port}#{USER}:{PASSWORD}",
                                 "--auth", "0", "-v"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 30
    while "Serving on" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, f"pproxy did not start: {log.read_text()}"
        time.sleep(0.05)
    try:
        yield Socks(port, log, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def socks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Socks]:
    with running_socks(tmp_path_factory.mktemp("socks")) as started:
        yield started


def secret_nowhere(tmp: Path, *texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
    for path in (tmp / "stderr", tmp / "audit.db", tmp / "audit.db-wal"):
        if path.exists():
            assert PASSWORD.encode() not in path.read_bytes(), path


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def remote_ports(marker: str) -> set[int]:
    """The remote ports of the open TCP connections of the aegis process whose command line holds ``marker``
    (from /proc: which servers it is connected to, right now)."""
    pids = [d.name for d in Path("/proc").iterdir() if d.name.isdigit()
            and marker in (d / "cmdline").read_bytes().decode(errors="replace") and "aegis_cli" in
            (d / "cmdline").read_bytes().decode(errors="replace")]
    assert len(pids) == 1, pids
    fds = Path("/proc", pids[0], "fd")
    inodes = {os.readlink(fd)[8:-1] for fd in fds.iterdir() if os.readlink(fd).startswith("socket:[")}
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path("/proc", pids[0], "net", table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[9] in inodes and cols[3] == "01":  # ESTABLISHED
                ports.add(int(cols[2].rsplit(":", 1)[1], 16))
    return ports


def connected_through(tmp: Path, url: str, env: dict[str, str], calls: list[tuple[str, dict[str, Any]]]
                      ) -> tuple[list[mt.CallToolResult], set[int]]:
    """A host's session with `aegis wrap --mcp --url` (``calls`` in turn), and the ports aegis is connected
    to before the host hangs up."""
    params = aegis_params(tmp, url, env=env)

    async def session() -> tuple[list[mt.CallToolResult], set[int]]:
        with (tmp / "stderr").open("w") as err:
            async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                results = [await s.call_tool(name, args) for name, args in calls]
                return results, remote_ports(str(tmp / "policy.yaml"))

    return anyio.run(session)


@pytest.mark.parametrize("transport", ["streamable", "sse"])
def test_url_goes_through_the_socks_proxy_allowed_calls_run_and_blocked_ones_do_not(
        tmp_path: Path, socks: Socks, http_server: Server, sse_server: Server, transport: str) -> None:  # noqa: F811
    server = http_server if transport == "streamable" else sse_server
    # by name: socks5h hands "localhost" to the proxy to resolve
    url = server.url.replace("127.0.0.1", "localhost")
    since, before = len(socks.lines()), server.count()
    (ok, blocked), ports = connected_through(tmp_path, url, proxy_env(ALL_PROXY=socks.url()), ALLOWED_AND_BLOCKED)
    assert not ok.is_error and ok.structured_content == {"result": before + 1}
    assert blocked.is_error and "no-big-jumps" in text_of(blocked)
    assert server.count() == before + 1  # the blocked call never reached the server
    # every connection aegis holds is to the proxy (the POSTs' and httpx's: the event stream, the
    # legacy transport's GET), none to the server itself, and the proxy tunnelled them there by name
    assert socks.port in ports and port_of(url) not in ports, ports
    assert socks.carried(port_of(url), since) and all("localhost" in x for x in socks.carried(port_of(url), since))
    decisions = [r["decision"]["approval"] for r in audit_rows(tmp_path / "audit.db") if r["kind"] == "decision"]
    assert decisions == ["auto", "block"]
    secret_nowhere(tmp_path, text_of(ok), text_of(blocked))


def test_https_server_through_the_socks_proxy_resolved_here(tmp_path: Path, socks: Socks) -> None:
    cert, key = self_signed(tmp_path)
    server, url, _seen, _ended = scripted_server((cert, key))
    since = len(socks.lines())
    try:  # socks5://: the name is resolved by aegis, the proxy is handed an address
        env = {**proxy_env(HTTPS_PROXY=socks.url(scheme="socks5")), "SSL_CERT_FILE": str(cert)}
        results, ports = connected_through(tmp_path, url, env, [("plain", {}), ("gzip", {})])
    finally:
        server.shutdown()
    assert [text_of(r) for r in results] == ["plain ok", "gzip ok"]
    assert socks.port in ports and port_of(url) not in ports, ports  # TLS inside the tunnels, none direct
    carried = socks.carried(port_of(url), since)  # the POSTs' tunnel at least (httpx's come when they come)
    assert carried and all("-> 127.0.0.1:" in x for x in carried), carried
    secret_nowhere(tmp_path, *(text_of(r) for r in results))


def test_a_wrong_socks_password_is_refused_naming_the_proxy_and_not_shown(tmp_path: Path, socks: Socks,
                                                                          http_server: Server) -> None:  # noqa: F811
    wrong = "not-" + PASSWORD
    before = http_server.count()
    params = aegis_params(tmp_path, http_server.url, "--target", "counter-server",
                          env=proxy_env(ALL_PROXY=socks.url(wrong)))
    initialized, (result,) = run_session(params, tmp_path / "stderr", [("increment", {"by": 1})])
    named = f"SOCKS proxy socks5h://127.0.0.1:{socks.port}"
    assert named in initialized and "user name and password" in initialized
    assert result.is_error and named in text_of(result)
    assert http_server.count() == before  # nothing reached the server
    for text in (initialized, text_of(result)):
        assert wrong not in text and PASSWORD not in text
    for path in (tmp_path / "stderr", tmp_path / "audit.db"):
        assert wrong.encode() not in path.read_bytes()


def test_oauth_and_listen_go_through_the_socks_proxy(tmp_path: Path, socks: Socks, http_server: Server,  # noqa: F811
                                                    listen_stop: list[Listening]) -> None:  # noqa: F811
    # OAuth with ALL_PROXY=socks5h://: the SDK's httpx2 client reads the same variables and needs socksio
    # (in [wrap]) to speak SOCKS at all; without it the authorization fails and so does this
    (tmp_path / "oauth").mkdir()
    (tmp_path / "listen").mkdir()
    upstream = start_server(tmp_path / "oauth", "--oauth")
    since = len(socks.lines())
    try:
        params = aegis_params(tmp_path, upstream.url, env={**browser(tmp_path), **proxy_env(ALL_PROXY=socks.url())})
        initialized, (ok,) = run_session(params, tmp_path / "stderr", [("whoami", {})])
        grants = upstream.log.read_text().split()
    finally:
        stop(upstream)
    assert initialized == "yes" and not ok.is_error and text_of(ok) != "anonymous"
    assert grants[:2] == ["register", "code"]
    assert len(socks.carried(port_of(upstream.url), since, count=2)) >= 2  # tunnelled (the proxy saw them)
    # --listen, the host connecting to aegis directly, aegis to the server through the proxy
    listening = start_listen(tmp_path / "listen", "--url", http_server.url, env=proxy_env(ALL_PROXY=socks.url()))
    listen_stop.append(listening)
    before, since = http_server.count(), len(socks.lines())

    async def session() -> list[mt.CallToolResult]:
        async with Client(listening.url, mode="legacy") as client:
            return [await client.call_tool(name, args) for name, args in ALLOWED_AND_BLOCKED]

    allowed, blocked = anyio.run(session)
    assert not allowed.is_error and allowed.structured_content == {"result": before + 1}
    assert blocked.is_error and "no-big-jumps" in text_of(blocked) and http_server.count() == before + 1
    assert socks.carried(port_of(http_server.url), since)
    secret_nowhere(tmp_path, text_of(ok), text_of(allowed))


# -- the model-API proxy (`aegis wrap -- COMMAND`) --------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["https", "http"])
def test_model_api_upstream_requests_go_through_the_socks_proxy_on_the_lean_client(
        scheme: str, tmp_path: Path, socks: Socks, no_proxy_vars: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch = no_proxy_vars
    tls = self_signed(tmp_path) if scheme == "https" else None
    server, handler, url = serve(tls)
    if tls is not None:
        monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    monkeypatch.setenv("all_proxy", socks.url())
    since = len(socks.lines())
    try:
        reply = run(url)
        monkeypatch.setenv("all_proxy", socks.url("not-" + PASSWORD))
        refused = run(url)
    finally:
        server.shutdown()
        server.server_close()
    assert tool_names(reply) == ["get_weather"]  # the blocked call replaced by the note
    assert len(handler.bodies) == 1  # the refused one never reached the upstream
    assert socks.carried(int(url.rsplit(":", 1)[1]), since)
    assert refused.status_code == 502
    assert f"SOCKS proxy socks5h://127.0.0.1:{socks.port}" in refused.response.text
    assert PASSWORD not in refused.response.text


def test_a_socks_url_naming_an_http_proxy_is_refused_saying_it_does_not_speak_socks5(
        tmp_path: Path, no_proxy_vars: pytest.MonkeyPatch) -> None:  # noqa: F811
    # A common slip: ALL_PROXY=socks5h://... at the port of the company's HTTP proxy.
    monkeypatch = no_proxy_vars
    server, handler, url = serve(None)
    try:
        with running_proxy(tmp_path) as http_proxy:
            monkeypatch.setenv("all_proxy", f"socks5h://127.0.0.1:{http_proxy.port}")
            refused = run(url)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.status_code == 502
    assert f"the SOCKS proxy socks5h://127.0.0.1:{http_proxy.port} " in refused.response.text
    # proxy.py hangs up on what is not HTTP; a server that answered would be told apart by its first byte
    assert "closed the connection at the greeting (is it a SOCKS5 proxy?)" in refused.response.text
    assert handler.bodies == []


def test_a_server_the_socks_proxy_cannot_reach_refuses_the_call(tmp_path: Path, socks: Socks) -> None:
    # pproxy answers the CONNECT before it connects on, then hangs up: the tunnel ends at once
    dead = free_port()
    params = aegis_params(tmp_path, f"http://127.0.0.1:{dead}/mcp", "--target", "counter-server",
                          env=proxy_env(ALL_PROXY=socks.url()))
    initialized, (result,) = run_session(params, tmp_path / "stderr", [("increment", {"by": 1})])
    assert f"127.0.0.1:{dead}" in initialized and "could not be reached" in initialized
    # (the tunnel ends with nothing back: to aegis as a server that took the call and hung up, so the call
    # is not sent again)
    assert result.is_error and "closed the connection without answering" in text_of(result)
    assert f"SOCKS proxy socks5h://127.0.0.1:{socks.port}" in text_of(result)
    secret_nowhere(tmp_path, initialized, text_of(result))


def test_url_through_socks_without_socksio_names_the_extra_in_one_line(tmp_path: Path,
                                                                     no_proxy_vars: pytest.MonkeyPatch) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from aegis_cli.cli import app

    (tmp_path / "policy.yaml").write_text("version: '1'\n")
    no_proxy_vars.setenv("ALL_PROXY", f"socks5h://{USER}:{PASSWORD}@127.0.0.1:1080")
    no_proxy_vars.setitem(sys.modules, "socksio", None)  # as if not installed: importing it fails
    result = CliRunner().invoke(app, ["wrap", "--mcp", "-p", str(tmp_path / "policy.yaml"), "--url",
                                      "https://mcp.example.com/mcp"])
    assert result.exit_code == 2
    assert result.stderr == ("aegis: --url through the SOCKS proxy socks5h://127.0.0.1:1080 needs socksio: "
                             "pip install 'aegis-cli[wrap]'\n")
