"""The `aegis wrap` model-API proxy behind the HTTP proxy the environment names (HTTPS_PROXY, HTTP_PROXY,
NO_PROXY): its upstream requests keep aegis's lean client (a CONNECT tunnel with TLS inside for an https
upstream, absolute-form requests for an http one) through a real proxy (proxy.py from PyPI, basic auth),
the Anthropic SDK as the agent. The proxy's access log shows it carried them; with a wrong password the
agent gets a 502 naming the proxy and its 407 (the proxy's own 407, for an http upstream), and the
password appears nowhere in it."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_wrap_mcp_http import self_signed, serve_threaded
from test_wrap_mcp_proxy import PASSWORD, PROXY_VARS, Proxy, running_proxy
from test_wrap_proxy_http import POLICY, Upstream

from aegis_cli.engine.policy import Policy
from aegis_cli.wrap.model_proxy import ModelProxy, Upstreams
from aegis_cli.wrap.tool_gate import ToolGate

anthropic = pytest.importorskip("anthropic")


def serve(tls: tuple[Path, Path] | None) -> tuple[ThreadingHTTPServer, type[Upstream], str]:
    """The provider stand-in (the recorded Messages reply: one allowed call, one blocked), http or https."""
    handler = type("Recorded", (Upstream,), {"bodies": []})
    server = serve_threaded(handler, tls)
    return server, handler, f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with running_proxy(tmp_path_factory.mktemp("proxy")) as started:
        yield started


@pytest.fixture
def no_proxy_vars(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    yield monkeypatch


def ask(base: str) -> Any:
    """One Messages request from the SDK, straight to aegis (its own client ignores the proxy variables,
    as `aegis wrap` makes the child's do with NO_PROXY)."""
    with anthropic.DefaultHttpxClient(trust_env=False) as http:
        client = anthropic.Anthropic(base_url=base, api_key="test", http_client=http, max_retries=0)
        return client.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                                      messages=[{"role": "user", "content": "weather, then tidy up"}])


def run(upstream_url: str) -> Any:
    gate = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    try:
        with ModelProxy(gate.decide, Upstreams(upstream_url, upstream_url + "/v1")) as mp:
            try:
                return ask(mp.child_env()["ANTHROPIC_BASE_URL"])
            except anthropic.APIStatusError as exc:
                return exc
    finally:
        gate.close()


def tool_names(message: Any) -> list[str]:
    return [block.name for block in message.content if block.type == "tool_use"]


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_upstream_requests_go_through_the_proxy_on_the_lean_client(scheme: str, tmp_path: Path, proxy: Proxy,
                                                                  no_proxy_vars: pytest.MonkeyPatch) -> None:
    tls = self_signed(tmp_path) if scheme == "https" else None
    server, handler, url = serve(tls)
    if tls is not None:
        no_proxy_vars.setenv("SSL_CERT_FILE", str(tls[0]))
    # the variable for the upstream's scheme names the proxy; the other names one that is not there
    no_proxy_vars.setenv(f"{scheme}_proxy", proxy.url())
    no_proxy_vars.setenv(f"{'http' if scheme == 'https' else 'https'}_proxy", "http://127.0.0.1:9")
    since = len(proxy.lines())
    try:
        reply = run(url)
    finally:
        server.shutdown()
        server.server_close()
    assert tool_names(reply) == ["get_weather"]  # the blocked call replaced by the note
    assert "`delete_file` was blocked" in "".join(b.text for b in reply.content if b.type == "text")
    assert len(handler.bodies) == 1
    port = int(url.rsplit(":", 1)[1])
    carried = proxy.carried(port, since, "CONNECT" if scheme == "https" else "POST")
    assert carried, f"proxy.py's log shows no {scheme} request to the upstream"


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_wrong_proxy_password_is_refused_naming_the_proxy_and_never_the_password(
        scheme: str, tmp_path: Path, proxy: Proxy, no_proxy_vars: pytest.MonkeyPatch) -> None:
    tls = self_signed(tmp_path) if scheme == "https" else None
    server, handler, url = serve(tls)
    if tls is not None:
        no_proxy_vars.setenv("SSL_CERT_FILE", str(tls[0]))
    wrong = "not-" + PASSWORD
    no_proxy_vars.setenv(f"{scheme}_proxy", proxy.url(wrong))
    try:
        refused = run(url)
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(refused, anthropic.APIStatusError)
    text = refused.response.text
    if scheme == "https":  # the tunnel refused: aegis answers, naming the proxy and what it said
        assert refused.status_code == 502 and f"127.0.0.1:{proxy.port}" in text and "407" in text
    else:  # the proxy's own answer to the forwarded request, passed on as an error reply is (httpx did the same)
        assert refused.status_code == 407
    assert wrong not in text and PASSWORD not in text
    assert handler.bodies == []  # nothing reached the upstream


def test_no_proxy_goes_direct_and_a_proxy_of_a_kind_aegis_does_not_speak_is_refused(
        proxy: Proxy, no_proxy_vars: pytest.MonkeyPatch) -> None:
    server, handler, url = serve(None)
    no_proxy_vars.setenv("http_proxy", proxy.url())
    no_proxy_vars.setenv("no_proxy", "127.0.0.1")
    since = len(proxy.lines())
    try:
        reply = run(url)
        assert tool_names(reply) == ["get_weather"]
        assert proxy.carried(int(url.rsplit(":", 1)[1]), since) == []
        # a socks4:// proxy: refused, naming it, rather than the request sent around it
        no_proxy_vars.delenv("no_proxy")
        no_proxy_vars.setenv("http_proxy", "socks4://127.0.0.1:9")
        refused = run(url)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.status_code == 502 and "socks4://127.0.0.1:9" in refused.response.text
    assert "proxies only" in refused.response.text
    assert len(handler.bodies) == 1


def test_an_https_proxy_is_reached_over_tls_with_the_tunnel_inside(tmp_path: Path,
                                                                   no_proxy_vars: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)  # for 127.0.0.1: the proxy's and the upstream's, trusted by $SSL_CERT_FILE
    server, handler, url = serve((cert, key))
    no_proxy_vars.setenv("SSL_CERT_FILE", str(cert))
    try:
        with running_proxy(tmp_path / "proxy-home", (cert, key)) as tls_proxy:
            no_proxy_vars.setenv("https_proxy", tls_proxy.url())
            reply = run(url)
            carried = tls_proxy.carried(int(url.rsplit(":", 1)[1]), 0, "CONNECT")
    finally:
        server.shutdown()
        server.server_close()
    assert tool_names(reply) == ["get_weather"] and len(handler.bodies) == 1
    assert carried, "proxy.py's log shows no tunnel to the upstream"
