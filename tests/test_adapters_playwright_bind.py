"""The governed Playwright methods bind their arguments without ``inspect`` on the usual calls: the
result must be exactly ``inspect.signature(...).bind_partial(...)``'s, errors included, for every
public method of Playwright's own API classes (no browser needed)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from aegis_cli.adapters._playwright_govern import _binder

CLASSES = ["Page", "Frame", "Locator", "FrameLocator", "ElementHandle", "JSHandle", "Keyboard", "Mouse",
           "Touchscreen", "BrowserContext", "APIRequestContext", "Dialog", "FileChooser", "Worker"]


def _methods() -> list[tuple[str, Any]]:
    import playwright.async_api as async_api
    import playwright.sync_api as sync_api

    out = []
    for api in (sync_api, async_api):
        for kind in CLASSES:
            cls = getattr(api, kind)
            for name in dir(cls):
                fn = inspect.getattr_static(cls, name)
                if not name.startswith("_") and inspect.isfunction(fn):
                    out.append((f"{api.__name__}.{kind}.{name}", fn))
    return out


def _outcome(bind: Any, /, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any] | None]:
    try:
        return "bound", dict(bind(*args, **kwargs))
    except TypeError:
        return "TypeError", None


def _inspect_binds(signature: inspect.Signature, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return signature.bind_partial(*args, **kwargs).arguments


def test_the_fast_binder_binds_as_inspect_does() -> None:
    methods = _methods()
    assert len(methods) > 300  # the classes are there: the test compares something
    for label, fn in methods:
        signature, bind = inspect.signature(fn), _binder(fn)
        names = list(signature.parameters)[1:]
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [(tuple(range(k)), {}) for k in range(len(names) + 2)]
        for name in [*names, "self", "no_such_argument"]:
            calls += [((), {name: "v"}), ((0,), {name: "v"}), ((0, 1), {name: "v", "timeout": 5})]
        for args, kwargs in calls:
            want = _outcome(_inspect_binds, signature, "SELF", *args, **kwargs)
            got = _outcome(bind, "SELF", args, kwargs)
            assert got == want, f"{label}{args}{kwargs}: {got} != {want}"


@pytest.mark.parametrize("kwargs", [{}, {"arg": 2}])
def test_keywords_given_out_of_order_bind_the_same_names(kwargs: dict[str, Any]) -> None:
    from playwright.sync_api import Page

    bind = _binder(Page.evaluate)
    assert bind("SELF", (), {**kwargs, "expression": "1"}) == {"self": "SELF", "expression": "1", **kwargs}
