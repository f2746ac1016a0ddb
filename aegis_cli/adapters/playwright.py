"""Playwright: ``govern(page, runtime)`` decides what a ``Page`` is made to do (sync and async APIs).

    from aegis_cli.adapters.playwright import govern
    page = govern(browser.new_page(), runtime)
    page.goto("https://shop.example.com/cart")      # decided first

These ``Page`` methods are decided: ``goto``, ``click``, ``fill``, ``type``, ``press``, ``check``,
``select_option``, ``set_input_files`` and ``evaluate``. Each becomes an action:

- type = the method name;
- target = the host (``:port`` when not the scheme's default) of the URL being opened (``goto``;
  a relative URL against the context's ``base_url``) or of the page's current URL (the rest);
  a URL without a host (``about:blank``, ``data:``, ``file:``) gives its scheme;
- params = ``url`` (``goto``), ``selector``, and ``value``: what is typed, pressed, selected or
  uploaded (file names and MIME types, not contents), or the script ``evaluate`` runs.

A refused call raises ``aegis_cli.adapters.ActionRefused`` before Playwright is asked to do
anything, so the page stays where it was. Playwright's own errors (timeouts, a missing element)
reach the caller as without aegis. ``govern`` patches those methods on this page object and returns
it. Not covered: locators (``page.locator(...).click()``, ``get_by_*``), frames, ``page.keyboard``
and ``page.mouse``; an agent that must be fully contained should be handed only the governed page's
decided methods (or ``PlaywrightExecutor``).

``PlaywrightExecutor`` goes the other way, for ``Runtime(executor=...)`` with an async ``Page``:
an allowed action becomes the page call, only on the host the action names.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from aegis_cli.adapters import ActionRefused, require, source
from aegis_cli.adapters._sync_call import call_sync
from aegis_cli.engine.models import Action

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.runtime.core import Result, Runtime

VIA = "playwright"
METHODS = ("goto", "click", "fill", "type", "press", "check", "select_option", "set_input_files", "evaluate")
# where each method's "value" comes from, in the order looked at
_VALUE_ARGS = ("value", "text", "key", "files", "expression", "index", "label")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def govern(page: Any, runtime: Runtime, *, agent: str = "", session: str = "") -> Any:
    """Decide ``page``'s acting methods through ``runtime``; returns ``page`` itself."""
    require("playwright", "playwright")
    from playwright.async_api import Page as AsyncPage
    from playwright.sync_api import Page as SyncPage

    if isinstance(page, AsyncPage):
        make: Callable[..., Any] = _async_method
    elif isinstance(page, SyncPage):
        make = _sync_method
    else:
        raise TypeError(f"govern() takes a playwright Page (sync or async), not {type(page).__name__}")
    if page.__dict__.get("_aegis_runtime") is runtime:
        return page  # governed already: one decision per call, not two
    originals = {name: getattr(page, name) for name in METHODS}
    for name, original in originals.items():
        page.__dict__[name] = make(page, runtime, name, original, _Binder(original), agent, session)
    page.__dict__.update(_aegis_runtime=runtime, _aegis_originals=originals)
    return page


def url_target(url: str) -> str:
    """``host`` or ``host:port`` (port only when not the scheme's default); the scheme when no host."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return parts.scheme or "unknown"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Binder:
    """Reads a call's arguments by the method's own parameter names (``fill(selector, value)``,
    ``type(selector, text)``, ``press(selector, key)``, ...); the signature is read once."""

    def __init__(self, method: Any) -> None:
        self.signature = inspect.signature(method)

    def params(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind_partial(*args, **kwargs).arguments
        out: dict[str, Any] = {}
        if "url" in bound:
            out["url"] = str(bound["url"])
        if "selector" in bound:
            out["selector"] = str(bound["selector"])
        for key in _VALUE_ARGS:
            if bound.get(key) is not None:
                out["value"] = _plain(bound[key])
                break
        return out


def _action(page: Any, name: str, params: dict[str, Any], agent: str, session: str) -> Action:
    if name == "goto":
        url = params.get("url", "")
        if not urlsplit(url).scheme:
            params["url"] = url = urljoin(_base_url(page), url)
        target = url_target(url)
    else:
        target = url_target(page.url)
    return Action(name, target, params, agent, session)


def _sync_method(page: Any, runtime: Runtime, name: str, original: Any, binder: _Binder,
                 agent: str, session: str) -> Any:
    def wait(pending: Any) -> None:
        # Playwright's sync API runs its event loop in another greenlet; _sync() switches to it
        # until the awaitable is done, which lets an approval being asked make progress.
        page._sync(_settle(pending))

    def governed(*args: Any, **kwargs: Any) -> Any:
        action = _action(page, name, binder.params(args, kwargs), agent, session)
        return _outcome(call_sync(runtime, action, original, *args, source=source(VIA, name), wait=wait, **kwargs))

    governed.__name__ = governed.__qualname__ = name
    governed.__doc__ = original.__doc__
    return governed


def _async_method(page: Any, runtime: Runtime, name: str, original: Any, binder: _Binder,
                  agent: str, session: str) -> Any:
    async def governed(*args: Any, **kwargs: Any) -> Any:
        action = _action(page, name, binder.params(args, kwargs), agent, session)
        return _outcome(await runtime.call(action, original, *args, source=source(VIA, name), **kwargs))

    governed.__name__ = governed.__qualname__ = name
    governed.__doc__ = original.__doc__
    return governed


async def _settle(pending: Any) -> None:
    if pending is None:
        await asyncio.sleep(0)
    else:
        await asyncio.wait({pending})


def _outcome(result: Result) -> Any:
    if result.ok:
        return result.value
    if result.ran and isinstance(result.exception, Exception):
        raise result.exception  # Playwright's own error, as the caller would get it without aegis
    raise ActionRefused(result)


def _base_url(page: Any) -> str:
    # Playwright resolves a relative goto() against the context's base_url, which it does not
    # expose; without it the URL stays relative and Playwright refuses it itself.
    try:
        base = page.context._impl_obj._options.get("baseURL")
    except Exception:
        return ""
    return base if isinstance(base, str) else ""


def _plain(value: Any) -> Any:
    """A JSON-safe view of an argument for the audit trail: file payloads without their bytes."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if k != "buffer"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


class PlaywrightExecutor:
    """An executor that carries out each allowed action on an async ``Page``.

    ``type`` is one of the decided method names; ``params`` as ``govern`` writes them (``url``,
    ``selector``, ``value``). ``goto`` must lead to the action's target, and every other method runs
    only while the page is on that host: a page that has wandered elsewhere fails the action rather
    than act on a site the policy did not decide for.
    """

    def __init__(self, page: Any) -> None:
        require("playwright", "playwright")
        from playwright.async_api import Page as AsyncPage

        if not isinstance(page, AsyncPage):
            raise TypeError(f"PlaywrightExecutor needs an async playwright Page, not {type(page).__name__}")
        self.page = page

    async def execute(self, action: Action) -> Any:
        name, params = action.type, action.params
        if name not in METHODS:
            raise ValueError(f"{name!r} is not a page action aegis runs (one of {', '.join(METHODS)})")
        method = self.page.__dict__.get("_aegis_originals", {}).get(name) or getattr(self.page, name)
        if name == "goto":
            url = str(params.get("url", ""))
            if url_target(url).casefold() != action.target.casefold():
                raise ValueError(f"url {url!r} is not on target {action.target!r}; not opened")
            return await method(url)
        here = url_target(self.page.url)
        if here.casefold() != action.target.casefold():
            raise ValueError(f"the page is on {here!r}, not {action.target!r}; {name} not run")
        if name == "evaluate":
            return await method(params["value"])
        if name in ("click", "check"):
            return await method(params["selector"])
        return await method(params["selector"], params["value"])


__all__ = ["METHODS", "PlaywrightExecutor", "govern", "url_target"]
