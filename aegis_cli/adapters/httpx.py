"""httpx: ``govern(client, runtime)`` decides every request an ``httpx.Client`` or ``AsyncClient`` sends.

    from aegis_cli.adapters.httpx import govern
    client = govern(httpx.Client(base_url="https://api.example.com"), runtime)

The client's own transports (its pool and any mounts) are wrapped in a governing transport, so
base_url, headers, auth, timeouts, event hooks and redirects all stay the client's; ``govern``
returns the same client. Each request (each redirect hop and auth retry too) becomes an action:

- type = the HTTP method, lower case (``get``, ``post``, ...);
- target = the host, with ``:port`` when the port is not the scheme's default (``api.example.com``,
  ``127.0.0.1:8080``);
- params = ``path``, ``query`` (a dict; a repeated key holds a list) and ``json`` (the body, when
  the request says it is JSON).

A refused request raises ``aegis_cli.adapters.ActionRefused`` before any byte leaves. A JSON body
aegis cannot read (not JSON, a duplicated key) is not sent either: the call is decided without
``json`` and fails with ``ValueError``, both in the audit trail. Transport errors (``ConnectError``,
timeouts) reach the caller as they would without aegis.

``HttpxExecutor`` goes the other way, for ``Runtime(executor=...)``: it turns an allowed action
back into a request. It lives here, not in ``aegis_cli.runtime``, so httpx is imported only by
code that uses it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aegis_cli.adapters import ActionRefused, query_dict, require, source, unique_pairs
from aegis_cli.adapters._sync_call import call_sync
from aegis_cli.engine.models import Action

if TYPE_CHECKING:  # pragma: no cover
    import httpx as _httpx

    from aegis_cli.runtime.core import Result, Runtime

VIA = "httpx"


def govern(client: Any, runtime: Runtime, *, agent: str = "", session: str = "") -> Any:
    """Wrap ``client``'s transports so every request goes through ``runtime`` first; returns ``client``."""
    httpx = require("httpx", "httpx")
    if isinstance(client, httpx.AsyncClient):
        wrap: Any = _AsyncGoverned
    elif isinstance(client, httpx.Client):
        wrap = _Governed
    else:
        raise TypeError(f"govern() takes an httpx.Client or httpx.AsyncClient, not {type(client).__name__}")
    # httpx picks a transport per request from these two attributes (Client._transport_for_url);
    # a mount of None means "the default transport", which is governed through _transport.
    client._transport = wrap.around(client._transport, runtime, agent, session)
    client._mounts = {pattern: None if t is None else wrap.around(t, runtime, agent, session)
                      for pattern, t in client._mounts.items()}
    return client


def request_action(request: _httpx.Request, body: bytes | None, *, agent: str = "",
                   session: str = "") -> tuple[Action, str]:
    """The action for a request, and why its JSON body could not be read ("" when it could)."""
    return _action(request, body if _is_json(request.headers.get("content-type", "")) else None, agent, session)


def _action(request: _httpx.Request, json_body: bytes | None, agent: str, session: str) -> tuple[Action, str]:
    """``request_action`` once the caller knows the body is JSON (``json_body``; None when it is not)."""
    url = request.url
    params: dict[str, Any] = {"path": url.path, "query": query_dict(url.params.multi_items())}
    problem = ""
    if json_body:
        try:
            params["json"] = json.loads(json_body, object_pairs_hook=unique_pairs)
        except (ValueError, RecursionError) as exc:
            problem = f"aegis: the JSON body could not be read ({type(exc).__name__}: {exc}); not sent"
    return Action(request.method.lower(), host_of(url), params, agent, session), problem


def host_of(url: Any) -> str:
    """``host`` or ``host:port`` (port only when it is not the scheme's default); IPv6 in brackets."""
    host = url.host
    if url.port is None:
        return host
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


class _Governed:
    """A sync transport that asks the runtime before handing the request to the client's own."""

    def __init__(self, inner: Any, runtime: Runtime, agent: str, session: str) -> None:
        self.inner, self.runtime, self.agent, self.session = inner, runtime, agent, session
        self._sources: dict[str, dict[str, Any]] = {}  # per method; runtime.call copies what it records

    def _source(self, method: str) -> dict[str, Any]:
        found = self._sources.get(method)
        if found is None:
            found = self._sources[method] = source(VIA, method)
        return found

    @classmethod
    def around(cls, inner: Any, runtime: Runtime, agent: str, session: str) -> Any:
        if isinstance(inner, cls) and inner.runtime is runtime:
            return inner  # governed already: one decision per request, not two
        return cls(inner, runtime, agent, session)

    def handle_request(self, request: _httpx.Request) -> _httpx.Response:
        body = request.read() if _is_json(request.headers.get("content-type", "")) else None
        action, problem = _action(request, body, self.agent, self.session)
        fn = _refuse_to_send(problem) if problem else self.inner.handle_request
        return _outcome(call_sync(self.runtime, action, fn, request, source=self._source(request.method)))

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> _Governed:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inner.__exit__(*exc)


class _AsyncGoverned(_Governed):
    """The same for ``AsyncClient``: the request runs on the caller's event loop."""

    async def handle_async_request(self, request: _httpx.Request) -> _httpx.Response:
        body = await request.aread() if _is_json(request.headers.get("content-type", "")) else None
        action, problem = _action(request, body, self.agent, self.session)
        fn = _refuse_to_send(problem) if problem else self.inner.handle_async_request
        return _outcome(await self.runtime.call(action, fn, request, source=self._source(request.method)))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> _AsyncGoverned:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.inner.__aexit__(*exc)


def _outcome(result: Result) -> Any:
    if result.ok:
        return result.value
    if result.ran and isinstance(result.exception, Exception):
        raise result.exception  # the transport's own error, as the caller would get it without aegis
    raise ActionRefused(result)


def _refuse_to_send(problem: str) -> Any:
    def refuse(request: Any) -> Any:
        raise ValueError(problem)

    return refuse


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")




class HttpxExecutor:
    """An executor that sends each allowed action as a request (``Runtime(executor=HttpxExecutor())``).

    The inverse of ``govern``'s mapping: method = ``action.type``, URL = ``scheme://target`` +
    ``params["path"]``, ``params["query"]`` and ``params["json"]`` as given. A target that is not a
    plain ``host[:port]`` fails rather than reach another host. Responses of 4xx/5xx raise (the
    action failed) unless ``raise_for_status=False``; the value is the ``httpx.Response``.
    """

    def __init__(self, client: Any = None, *, scheme: str = "https", raise_for_status: bool = True) -> None:
        httpx = require("httpx", "httpx")
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise TypeError(f"HttpxExecutor needs an httpx.AsyncClient, not {type(client).__name__}")
        self._owned = client is None
        self.client = client if client is not None else httpx.AsyncClient()
        self.scheme = scheme
        self.raise_for_status = raise_for_status

    async def execute(self, action: Action) -> Any:
        import httpx

        params = action.params
        path = params.get("path", "/")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"params.path must be a string starting with '/', not {path!r}")
        url = httpx.URL(f"{self.scheme}://{action.target}{path}")
        if host_of(url).lower() != action.target.lower() or url.userinfo:
            raise ValueError(f"target {action.target!r} is not a plain host[:port]; not sent")
        kwargs: dict[str, Any] = {}
        if params.get("query"):
            kwargs["params"] = params["query"]
        if "json" in params:
            kwargs["json"] = params["json"]
        response = await self.client.request(action.type.upper(), url, **kwargs)
        if self.raise_for_status:
            response.raise_for_status()
        return response

    async def aclose(self) -> None:
        """Close the client if this executor made it."""
        if self._owned:
            await self.client.aclose()


__all__ = ["HttpxExecutor", "govern", "host_of", "request_action"]
