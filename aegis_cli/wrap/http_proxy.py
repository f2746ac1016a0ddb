"""Which proxy carries aegis's requests to a URL: the one the environment names, read as httpx reads it.

``HTTPS_PROXY`` / ``https_proxy`` for https URLs, ``HTTP_PROXY`` / ``http_proxy`` for http ones,
``ALL_PROXY`` for either, and ``NO_PROXY`` / ``no_proxy`` (host names, domain suffixes, ``*``, IP
addresses and ranges) excluding hosts. This is httpx's own parsing (what ``trust_env`` does), the
mcp SDK's httpx2 when installed, so aegis's lean client (``http1``), httpx and the SDK's OAuth
client, which all talk to the same server, go the same way, as curl does. It is decided once per
URL, never per request: with no proxy set, nothing on the request path changes.

An HTTP proxy (``http://``, or ``https://`` for one reached over TLS, its certificate checked as a
server's is) or a SOCKS5 one (``socks5://``, the name resolved here, as curl does;
``socks5h://``, the name resolved by the proxy, as for an ``ssh -D`` tunnel into a network whose
names only it knows). The proxy's credentials (``http://user:pass@proxy:3128``) go to the proxy
alone: in ``Proxy-Authorization`` (on the CONNECT for an https server, never inside the tunnel),
or in SOCKS5's username/password exchange (RFC 1929). Messages name the proxy by ``shown``, which
holds none of them. Any other scheme is refused at once rather than anything sent another way.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

SCHEMES = ("http", "https", "socks5", "socks5h")


class ProxyError(Exception):
    """The proxy could not be reached or refused; the message names it without its credentials."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy: ``url`` as configured (credentials and all, for httpx), ``shown`` without them;
    ``scheme`` one of ``SCHEMES``."""

    url: str = field(repr=False)
    shown: str
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # the Proxy-Authorization value
    scheme: str = "http"
    username: str = field(default="", repr=False)  # SOCKS5's, raw
    password: str = field(default="", repr=False)

    @property
    def socks(self) -> bool:
        return self.scheme.startswith("socks")

    @property
    def named(self) -> str:
        """How messages name it: ``the HTTP proxy http://...`` or ``the SOCKS proxy socks5h://...``."""
        return f"the {'SOCKS' if self.socks else 'HTTP'} proxy {self.shown}"


def proxy_for(url: str) -> Proxy | None:
    """The proxy for requests to ``url``, or None to connect directly. Raises ``ValueError`` (naming
    no credentials) for a proxy aegis cannot use: ``SCHEMES`` are spoken to."""
    if not _named():
        return None  # the usual case, decided without importing anything
    try:  # the mcp SDK's httpx (its OAuth client's): so both agree on every NO_PROXY entry
        import httpx2 as httpx
        from httpx2._utils import URLPattern, get_environment_proxies
    except ImportError:
        import httpx  # type: ignore[no-redef]
        from httpx._utils import URLPattern, get_environment_proxies  # type: ignore[no-redef]

    target = httpx.URL(url)
    patterns = []
    for key, value in get_environment_proxies().items():
        try:
            patterns.append((URLPattern(key), value))
        except Exception:  # an entry that cannot be parsed is skipped, as curl and httpx2 do
            continue
    patterns.sort(key=lambda kv: kv[0])  # the most specific first, as httpx orders its mounts
    chosen = next((value for pattern, value in patterns if pattern.matches(target)), None)
    if chosen is None:
        return None
    try:
        proxy = httpx.URL(chosen)
    except Exception:
        raise ValueError(f"the proxy named for {target.host} is not a URL") from None
    host = proxy.host
    port = proxy.port or {"https": 443, "http": 80}.get(proxy.scheme, 1080)  # as httpx
    shown = f"{proxy.scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    if proxy.scheme not in SCHEMES:
        raise ValueError(f"the proxy for {target.host} is {shown}: aegis speaks to http://, https://, socks5:// "
                         "and socks5h:// proxies only")
    if not host:
        raise ValueError(f"the proxy for {target.host} names no host")
    authorization = None
    if proxy.scheme.startswith("socks"):
        user, password = proxy.username, proxy.password
        if len(user.encode()) > 255 or len(password.encode()) > 255:  # RFC 1929: a byte of length each
            raise ValueError(f"the SOCKS proxy {shown}: a user name or password longer than 255 bytes")
        return Proxy(str(proxy), shown, host, port, None, proxy.scheme, user, password)
    if proxy.username or proxy.password:
        credentials = f"{proxy.username}:{proxy.password}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return Proxy(str(proxy), shown, host, port, authorization, proxy.scheme)


def _named() -> bool:
    """Whether the environment names any proxy at all (as ``urllib.request.getproxies`` reads it)."""
    return any(v and k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k, v in os.environ.items())


__all__ = ["Proxy", "ProxyError", "proxy_for"]
