"""Where a proxied request goes upstream, and whether its reply is decided: one table, paths normalised first.

The rewriter is chosen from the *upstream* path, normalised as a server would read it, never from
the path the client typed: ``/anthropic/messages``, ``/anthropic/v1//messages`` and
``/anthropic//v1/./messages`` all reach the provider's ``/v1/messages``, so all are decided. The
request is forwarded to the normalised path, so what the upstream serves is what was decided.

A provider plugs in with one ``Prefix`` (proxy path -> upstream base) and, if it has an endpoint
whose replies carry tool calls, one ``Endpoint`` (normalised upstream path -> rewriter module).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Prefix:
    """A proxy path prefix and the provider it leads to.

    ``v1_endpoints``: first path segments that an AI-SDK-style client sends relative to a ``/v1``
    base (``<base>/messages``); when the client's base lacks ``/v1`` they are put under it, so one
    base works for clients that append ``/v1/messages`` and for those that append ``/messages``.
    """

    path: str  # "/anthropic"
    provider: str  # "anthropic": also the Upstreams field holding its base URL
    v1_endpoints: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Replies to ``method`` on an upstream path matching ``pattern`` are decided by ``module``."""

    pattern: re.Pattern[str]  # searched in the normalised, lower-cased upstream path
    module: str  # "aegis_cli.wrap.anthropic_messages": has rewrite_json and rewrite_stream
    method: str = "POST"
    provider: str = ""  # only for this provider's prefix; "" for any


PREFIXES: tuple[Prefix, ...] = (
    Prefix("/anthropic", "anthropic", frozenset({"messages", "models"})),
    Prefix("/openai/v1", "openai"),
    Prefix("/gemini", "gemini"),
    # Gemini CLI signed in with Google: CODE_ASSIST_ENDPOINT; on Vertex AI: GOOGLE_VERTEX_BASE_URL
    Prefix("/code-assist", "code_assist"),
    Prefix("/vertex", "vertex"),
)
#: Matched against the end of the path, so any prefix (a gateway's /proxy/v1, a doubled /v1/v1) still counts.
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(re.compile(r"/messages$"), "aegis_cli.wrap.anthropic_messages"),
    Endpoint(re.compile(r"/chat/completions$"), "aegis_cli.wrap.openai_chat"),
    Endpoint(re.compile(r"/responses$"), "aegis_cli.wrap.openai_responses"),
    # The Code Assist API (/v1internal:generateContent) wraps a Gemini reply in {"response": ...}
    Endpoint(re.compile(r":(stream)?generatecontent$"), "aegis_cli.wrap.code_assist", provider="code_assist"),
    # Gemini names the method after the resource: .../models/{model}:generateContent (Vertex AI too)
    Endpoint(re.compile(r":(stream)?generatecontent$"), "aegis_cli.wrap.gemini_generate"),
)


@dataclass(frozen=True, slots=True)
class Route:
    """One request's way upstream. ``rewriter`` is None for a path aegis does not decide (its replies
    are still checked for tool calls, see ``undecided``)."""

    provider: str
    url: str  # upstream URL, normalised path, query kept
    path: str  # normalised upstream path, as matched
    rewriter: Any


def segments(raw_path: str) -> list[str]:
    """A path's segments as a server would resolve them: percent-decoded, empty and dot segments gone.

    Decoding repeats (``%252F`` -> ``%2F`` -> ``/``) and backslashes count as slashes, so no spelling
    of a path reaches an endpoint that this reading would not; ``;params`` are dropped, as Java and
    some gateways do.
    """
    path = raw_path
    for _ in range(4):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    out: list[str] = []
    for part in path.replace("\\", "/").split("/"):
        part = part.split(";", 1)[0]
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


def join(parts: list[str]) -> str:
    return "/" + "/".join(quote(p, safe="!$&'()*+,:=@~-._") for p in parts)


def route(method: str, raw_path: str, query: str, bases: Mapping[str, str],
          prefixes: tuple[Prefix, ...] = PREFIXES, endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> Route | None:
    """The upstream for a proxy request; None when the path is under no provider prefix."""
    parts = segments(raw_path)
    for prefix in prefixes:
        head = segments(prefix.path)
        if parts[:len(head)] != head:
            continue
        rest = parts[len(head):]
        base = urlsplit(bases[prefix.provider].rstrip("/"))
        base_parts = segments(base.path)
        if prefix.v1_endpoints:
            # The base is kept without its /v1; the client's path says whether it wants one.
            if base_parts[-1:] == ["v1"]:
                base_parts = base_parts[:-1]
            if rest[:1] != ["v1"] and rest[:1] and rest[0] in prefix.v1_endpoints:
                rest = ["v1", *rest]
        upstream_parts = base_parts + rest
        path = join(upstream_parts)
        url = f"{base.scheme}://{base.netloc}{path}" + (f"?{query}" if query else "")
        return Route(prefix.provider, url, path, rewriter_for(method, upstream_parts, endpoints, prefix.provider))
    return None


def rewriter_for(method: str, upstream_parts: list[str], endpoints: tuple[Endpoint, ...] = ENDPOINTS,
                 provider: str = "") -> Any:
    """The module deciding replies to this request, or None. Matched case-blind: some servers are."""
    lowered = "/" + "/".join(upstream_parts).lower()
    for endpoint in endpoints:
        if endpoint.provider and endpoint.provider != provider:
            continue
        if method.upper() == endpoint.method and endpoint.pattern.search(lowered):
            return importlib.import_module(endpoint.module)
    return None


def child_bases(proxy_url: str, bases: Mapping[str, str]) -> dict[str, str]:
    """provider -> the base URL the child is given. The Anthropic base keeps a /v1 when the user's had
    one (the AI SDK convention: it appends /messages), and works for both conventions without one."""
    out = {"anthropic": proxy_url + "/anthropic", "openai": proxy_url + "/openai/v1", "gemini": proxy_url + "/gemini",
           "code_assist": proxy_url + "/code-assist", "vertex": proxy_url + "/vertex"}
    if segments(urlsplit(bases.get("anthropic", "")).path)[-1:] == ["v1"]:
        out["anthropic"] += "/v1"
    return out

