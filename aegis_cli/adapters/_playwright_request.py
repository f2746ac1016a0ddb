"""``page.request`` (Playwright's ``APIRequestContext``) governed: each HTTP call decided as the httpx
adapter decides a request (type = the method, lower case; target = the host; params = ``path``,
``query``, ``json``), and sent one hop at a time, so that a redirect is the next hop, decided before
it is followed."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

from aegis_cli.adapters import query_dict, source, unique_pairs
from aegis_cli.adapters._playwright_govern import (
    FETCH_MAKERS,
    VIA,
    Gov,
    base_of,
    outcome,
    sync_wait,
    tool_name,
    wrap,
)
from aegis_cli.adapters._playwright_rules import Fetch, base_url, plain, url_target
from aegis_cli.adapters._sync_call import call_sync
from aegis_cli.engine.models import Action

_REDIRECT_LIMIT = 20  # Playwright's own default for max_redirects


def fetch_action(url: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``path``, ``query`` (the URL's and ``params=``), ``json`` (``data=`` that Playwright sends as
    JSON, or a JSON string sent as JSON), ``form``, ``multipart`` (file names, not contents); and
    why a JSON body could not be read ("" when it could: then it is not sent, as in the httpx adapter)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    extra = kwargs.get("params")
    if isinstance(extra, str):
        pairs += parse_qsl(extra.lstrip("?"), keep_blank_values=True)
    elif isinstance(extra, dict):
        pairs += [(str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in extra.items()]
    params: dict[str, Any] = {"path": parts.path or "/", "query": query_dict(pairs)}
    problem = ""
    data = kwargs.get("data")
    if isinstance(data, (str, bytes)):
        if _is_json(kwargs.get("headers")):
            try:
                params["json"] = json.loads(data, object_pairs_hook=unique_pairs)
            except (ValueError, RecursionError) as exc:
                problem = f"aegis: the JSON body could not be read ({type(exc).__name__}: {exc}); not sent"
    elif data is not None:
        params["json"] = plain(data)  # Playwright serialises anything else as JSON
    for key in ("form", "multipart"):
        if kwargs.get(key) is not None:
            params[key] = plain(kwargs[key])
    return params, problem


def next_hop(url: str, method: str, kwargs: dict[str, Any], status: int,
             headers: dict[str, str]) -> tuple[str, str, dict[str, Any]] | None:
    """The request a redirect leads to (as Playwright would send it), or None."""
    location = headers.get("location")
    if status not in (301, 302, 303, 307, 308) or not location:
        return None
    kwargs = {k: v for k, v in kwargs.items() if k != "params"}  # the location carries the query now
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
        for key in ("data", "form", "multipart"):
            kwargs.pop(key, None)
    return urljoin(url, location), method, kwargs


def _is_json(headers: Any) -> bool:
    if not isinstance(headers, dict):
        return False
    for key, value in headers.items():
        if str(key).lower() == "content-type":
            media = str(value).split(";", 1)[0].strip().lower()
            return media == "application/json" or media.endswith("+json")
    return False




def _first_hop(obj: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, int, bool]:
    kwargs = dict(kwargs)
    url = args[0] if args else kwargs.pop("url_or_request" if name == "fetch" else "url", None)
    if len(args) > 1 or not isinstance(url, str):
        raise TypeError(f"aegis: a governed APIRequestContext.{name} takes a URL string (not a Request) "
                        "and keyword arguments")
    method = (kwargs.pop("method", None) or "GET") if name == "fetch" else name.upper()
    limit = kwargs.pop("max_redirects", None)
    fail = bool(kwargs.pop("fail_on_status_code", None))
    if not urlsplit(url).scheme:
        url = urljoin(base_url(obj), url)
    return _Hop(url, str(method).upper(), kwargs), _REDIRECT_LIMIT if limit is None else limit, fail


@dataclass(frozen=True, slots=True)
class _Hop:
    url: str
    method: str
    kwargs: dict[str, Any]

    def action(self, gov: Gov) -> tuple[Action, str]:
        params, problem = fetch_action(self.url, self.kwargs)
        return Action(self.method.lower(), url_target(self.url), params, gov.agent, gov.session), problem

    def run(self, base_fetch: Any, obj: Any, problem: str) -> Any:
        if problem:
            return functools.partial(_refuse_to_send, problem)
        # one hop at a time: a redirect is the next hop, decided before it is followed
        return functools.partial(base_fetch, obj, self.url, method=self.method, max_redirects=0,
                                 fail_on_status_code=False, **self.kwargs)


def _refuse_to_send(problem: str) -> Any:
    raise ValueError(problem)


def sync_fetch(kind: str, name: str, base_fn: Any, rule: Fetch) -> Callable[..., Any]:
    tool = tool_name(kind, name)

    def governed(self: Any, *args: Any, **kwargs: Any) -> Any:
        gov: Gov = self.__dict__["_aegis"]
        hop, limit, fail = _first_hop(self, name, args, kwargs)
        base_fetch = base_of(self).fetch
        hops = 0
        while True:
            action, problem = hop.action(gov)
            result = call_sync(gov.runtime, action, hop.run(base_fetch, self, problem), source=source(VIA, tool),
                               wait=functools.partial(sync_wait, self))
            response = wrap(outcome(result), self)
            following = next_hop(hop.url, hop.method, hop.kwargs, response.status, response.headers)
            if following is None or limit == 0:
                break
            response.dispose()
            hops += 1
            _check_hops(hops, limit)
            hop = _Hop(*following)
        _check_status(response, fail)
        return response

    return governed


def async_fetch(kind: str, name: str, base_fn: Any, rule: Fetch) -> Callable[..., Any]:
    tool = tool_name(kind, name)

    async def governed(self: Any, *args: Any, **kwargs: Any) -> Any:
        gov: Gov = self.__dict__["_aegis"]
        hop, limit, fail = _first_hop(self, name, args, kwargs)
        base_fetch = base_of(self).fetch
        hops = 0
        while True:
            action, problem = hop.action(gov)
            result = await gov.runtime.call(action, hop.run(base_fetch, self, problem), source=source(VIA, tool))
            response = wrap(outcome(result), self)
            following = next_hop(hop.url, hop.method, hop.kwargs, response.status, response.headers)
            if following is None or limit == 0:
                break
            await response.dispose()
            hops += 1
            _check_hops(hops, limit)
            hop = _Hop(*following)
        _check_status(response, fail)
        return response

    return governed


def _check_hops(hops: int, limit: int) -> None:
    if hops > limit:
        from playwright.sync_api import Error

        raise Error("Max redirect count exceeded")


def _check_status(response: Any, fail: bool) -> None:
    if fail and not 200 <= response.status < 400:
        from playwright.sync_api import Error

        raise Error(f"{response.status} {response.status_text}")


FETCH_MAKERS[False] = sync_fetch
FETCH_MAKERS[True] = async_fetch
