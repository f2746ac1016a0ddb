"""Playwright: ``govern(page, runtime)`` decides what a ``Page`` is made to do (sync and async APIs).

    from aegis_cli.adapters.playwright import govern
    page = govern(browser.new_page(), runtime)
    page.goto("https://shop.example.com/cart")                 # decided first
    page.get_by_role("button", name="Delete").click()          # so is this

``govern`` turns the page, and every Playwright object reached through it (locators, frame
locators, frames, element and JS handles, the keyboard, mouse and touchscreen, popups and other
pages of its context, dialogs, file choosers, workers, ``page.request``), into a governed object
of the same Playwright class. What each class may do is an allow-list (``_playwright_rules``):

- acting methods are decided by ``runtime.call`` before Playwright is asked to do anything: a
  locator's ``click`` is the action ``click`` with the locator's selector, on the host of the
  frame the element is in; ``page.keyboard.type`` is ``keyboard_type``; ``page.request.post`` is
  ``post`` on the URL's host, each redirect hop decided again;
- reading methods (``text_content``, ``is_visible``, ``count``, ``screenshot``, waits, ...) run
  undecided, and whatever Playwright object they return is governed in turn (event handlers and
  predicates receive governed objects too);
- anything else (``route``, ``expose_function``, ``add_init_script``, ``context.browser``, and
  every public name a newer Playwright adds) raises ``AttributeError`` saying aegis refuses it.

A refused call raises ``aegis_cli.adapters.ActionRefused``; the page stays where it was. Playwright's
own errors (timeouts, a missing element) reach the caller as without aegis. The page itself and the
objects that belong to it are governed in place (same object, its class swapped for a governed
subclass, so ``isinstance`` and ``expect()`` work); the browser context and its request context,
shared with code outside the agent, are governed as copies. Private attributes (``_impl_obj``) are
not a boundary: Python has none. docs/adapters/playwright.md has the full table.

``PlaywrightExecutor`` goes the other way, for ``Runtime(executor=...)`` with an async ``Page``:
an allowed action becomes the page call, only on the host the action names.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aegis_cli.adapters import (
    _playwright_request,  # noqa: F401 - registers how page.request's calls are made
    require,
)
from aegis_cli.adapters._playwright_govern import Gov, base_of, governed_class
from aegis_cli.adapters._playwright_rules import url_target
from aegis_cli.engine.models import Action

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.runtime.core import Runtime

# the Page methods PlaywrightExecutor carries out (the ones govern() decided before locators were)
METHODS = ("goto", "click", "fill", "type", "press", "check", "select_option", "set_input_files", "evaluate")


def govern(page: Any, runtime: Runtime, *, agent: str = "", session: str = "") -> Any:
    """Govern ``page`` and everything reached through it by ``runtime``; returns ``page`` itself."""
    require("playwright", "playwright")
    from playwright.async_api import Page as AsyncPage
    from playwright.sync_api import Page as SyncPage

    if not isinstance(page, (AsyncPage, SyncPage)):
        raise TypeError(f"govern() takes a playwright Page (sync or async), not {type(page).__name__}")
    current = page.__dict__.get("_aegis")
    if current is not None:
        if (current.runtime, current.agent, current.session) == (runtime, agent, session):
            return page  # governed already: one decision per call, not two
        raise ValueError("this page is governed already, by another runtime, agent or session; change "
                         "that runtime's policy (runtime.update_policy) instead")
    page.__class__ = governed_class(type(page))
    page.__dict__["_aegis"] = Gov(runtime, agent, session)
    return page


def _ungoverned(obj: Any, name: str) -> Any:
    """``obj.name`` as Playwright's own, without the decision (for the executor, which has decided)."""
    return functools.partial(getattr(base_of(obj), name), obj)


class PlaywrightExecutor:
    """An executor that carries out each allowed action on an async ``Page``.

    ``type`` is one of ``METHODS``; ``params`` as ``govern`` writes them (``url``, ``selector``,
    ``value``). ``goto`` must lead to the action's target, and every other method runs only while
    the page is on that host: a page that has wandered elsewhere fails the action rather than act on
    a site the policy did not decide for.
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
        method = _ungoverned(self.page, name)
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
