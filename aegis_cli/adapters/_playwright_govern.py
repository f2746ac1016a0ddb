"""How ``playwright.govern`` governs Playwright objects: each API class gets a governed subclass,
built once from the class's public names and the allow-list in ``_playwright_rules``; an object is
governed by swapping its class (the page and what belongs to it) or as a copy (the browser context
and its request context, which code outside the agent shares). Every value a governed method
returns, every argument a handler or predicate receives, is governed in turn."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from aegis_cli.adapters import ActionRefused, source
from aegis_cli.adapters._playwright_rules import (
    NOUNS,
    RULES,
    SHARED,
    Act,
    Fetch,
    Listen,
    Read,
    Refuse,
    base_url,
    own_selector,
    url_target,
)
from aegis_cli.adapters._sync_call import call_sync
from aegis_cli.engine.models import Action

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.runtime.core import Result, Runtime

VIA = "playwright"
_PLAIN = (str, bytes, int, float, bool)


@dataclass(frozen=True, slots=True)
class Gov:
    """What every object governed through one ``govern()`` call shares."""

    runtime: Runtime
    agent: str
    session: str
    copies: dict[int, Any] = field(default_factory=dict)  # id(impl) -> governed copy (contexts)


# -- governed classes ----------------------------------------------------------------------------

_CLASSES: dict[type, type] = {}


def governed_class(base: type) -> type:
    """``base`` (a Playwright API class) with every public name decided, read-through or refused.

    Built from ``dir(base)``, so a name this Playwright has and the rules do not know is refused.
    """
    cls = _CLASSES.get(base)
    if cls is not None:
        return cls
    from playwright._impl._async_base import AsyncBase

    kind = base.__name__
    rules = RULES.get(kind, {})
    is_async = issubclass(base, AsyncBase)
    ns: dict[str, Any] = {"__module__": __name__, "__doc__": base.__doc__, "_aegis_base": base}
    for name in dir(base):
        if name.startswith("_"):
            continue
        ns[name] = _member(kind, name, inspect.getattr_static(base, name), rules.get(name), is_async)
    cls = _CLASSES[base] = type(kind, (base,), ns)
    return cls


# How a Fetch rule (page.request's HTTP calls) is made, by is_async: filled in by _playwright_request,
# which builds on this module (so this one cannot import it), and which playwright.py imports first.
FETCH_MAKERS: dict[bool, Callable[..., Any]] = {}


def _member(kind: str, name: str, static: Any, rule: Any, is_async: bool) -> Any:
    if isinstance(static, property):
        if isinstance(rule, Read):
            return property(lambda self, get=static.fget: wrap(get(self), self), doc=static.__doc__)
        return _refused(kind, name, rule)
    if not inspect.isfunction(static) or rule is None or isinstance(rule, Refuse):
        return _refused(kind, name, rule)
    if isinstance(rule, Act):
        make: Any = _async_decided if is_async else _sync_decided
    elif isinstance(rule, Fetch):
        make = FETCH_MAKERS[is_async]
    elif isinstance(rule, Listen):
        make = _listen
    else:
        make = _async_read if is_async else _sync_read
    fn = make(kind, name, static, rule)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = static.__doc__
    return fn


def _refused(kind: str, name: str, rule: Refuse | None) -> property:
    why = rule.why if isinstance(rule, Refuse) else "aegis does not govern it"
    text = (f"aegis: {kind}.{name} is refused on a governed {kind}: {why} "
            "(docs/adapters/playwright.md lists what is governed)")

    def refuse(self: Any) -> Any:
        raise AttributeError(text, name=name, obj=self)

    return property(refuse)


# -- decided methods -----------------------------------------------------------------------------

def _sync_decided(kind: str, name: str, base_fn: Any, act: Act) -> Callable[..., Any]:
    bind = _binder(base_fn)
    origin = source(VIA, tool_name(kind, name))  # runtime.call records a copy

    def governed(self: Any, *args: Any, **kwargs: Any) -> Any:
        gov: Gov = self.__dict__["_aegis"]
        bound = bind(self, args, kwargs)
        params, target = _describe(self, kind, act, bound)
        if target is None:  # the element's frame must be looked up first
            target = _where_sync(self, bound)
        action = Action(act.type_of(name, bound), target, params, gov.agent, gov.session)
        run = functools.partial(base_fn, self, *args, **kwargs)
        return wrap(outcome(call_sync(gov.runtime, action, run, source=origin,
                                      wait=functools.partial(sync_wait, self))), self)

    return governed


def _async_decided(kind: str, name: str, base_fn: Any, act: Act) -> Callable[..., Any]:
    bind = _binder(base_fn)
    origin = source(VIA, tool_name(kind, name))

    async def governed(self: Any, *args: Any, **kwargs: Any) -> Any:
        gov: Gov = self.__dict__["_aegis"]
        bound = bind(self, args, kwargs)
        params, target = _describe(self, kind, act, bound)
        if target is None:
            target = await _where_async(self, bound)
        action = Action(act.type_of(name, bound), target, params, gov.agent, gov.session)
        run = functools.partial(base_fn, self, *args, **kwargs)
        return wrap(outcome(await gov.runtime.call(action, run, source=origin)), self)

    return governed


_BY_POSITION = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _binder(fn: Any) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """``inspect.signature(fn).bind_partial(self, *args, **kwargs).arguments``, without inspect's
    general binding (~12 us a call, 20-30 cold after a browser round trip) for the calls Playwright's
    methods get: arguments by position, then by name. Anything else (too many, an unknown or a
    repeated name, a signature with ``*args``/``**kwargs``) goes to ``bind_partial``, which raises
    what Python would."""
    signature = inspect.signature(fn)
    params = signature.parameters.values()
    by_position = tuple(p.name for p in params if p.kind in _BY_POSITION)
    by_name = frozenset(p.name for p in params if p.kind in _BY_NAME)
    general = any(p.kind in _VARIADIC for p in params)

    def bind(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        given = len(args) + 1
        if general or given > len(by_position) or not (
                kwargs.keys() <= by_name and kwargs.keys().isdisjoint(by_position[:given])):
            return signature.bind_partial(self, *args, **kwargs).arguments
        bound = dict(zip(by_position, (self, *args), strict=False))  # fewer arguments than names
        bound.update(kwargs)
        return bound

    return bind


def sync_wait(obj: Any, pending: Any) -> None:
    # Playwright's sync API runs its event loop in another greenlet; _sync() switches to it until
    # the awaitable is done, which lets an approval being asked make progress.
    obj._sync(_settle(pending))


async def _settle(pending: Any) -> None:
    if pending is None:
        await asyncio.sleep(0)
    else:
        await asyncio.wait({pending})


def _describe(obj: Any, kind: str, act: Act, bound: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The action's params, and its target (None: a frame must be looked up in the browser first)."""
    params = act.params(obj, bound)
    if act.url:
        url = params.get("url", "")
        if not urlsplit(url).scheme:
            params["url"] = url = urljoin(base_url(obj), url)
        return params, url_target(url)
    return params, _where_now(obj, bound)


# Where an action is: the host of the frame its element is in. A selector can enter iframes
# (frame_locator("#pay").locator("button") is "#pay >> internal:control=enter-frame >> button", and
# page.click() takes such a selector too): the element is then in the iframe's document, which may
# be another site than the page's, so the iframe is looked up. An element handle is in its owner
# frame. What has no element (keyboard, mouse, JS handles) acts where it was reached from.
_ENTER_FRAME = " >> internal:control=enter-frame"


def _spots(obj: Any, bound: dict[str, Any]) -> list[tuple[Any, str]]:
    """Where the action's elements are found: (a Frame or ElementHandle, a selector from there)."""
    kind = type(obj).__name__
    if kind == "Locator":
        spots = [_locator_spot(obj)]
        if type(bound.get("target")).__name__ == "Locator":  # drag_to(another locator)
            spots.append(_locator_spot(bound["target"]))
        return spots
    if kind == "Page":
        root = _mapping(obj).from_impl(obj._impl_obj.main_frame)
    elif kind in ("Frame", "ElementHandle"):
        root = obj
    else:
        return []
    selectors = _selectors(bound)
    return [(root, selector) for selector in selectors] or [(root, "")]


def _selectors(bound: dict[str, Any]) -> list[str]:
    return [bound[k] for k in ("selector", "source", "target") if isinstance(bound.get(k), str)]


def _locator_spot(locator: Any) -> tuple[Any, str]:
    impl = locator._impl_obj
    return _mapping(locator).from_impl(impl._frame), impl._selector


def _where_now(obj: Any, bound: dict[str, Any]) -> str | None:
    """The target when it can be told without asking the browser, else None."""
    if type(obj).__name__ in ("Page", "Frame") and not any(_ENTER_FRAME in s for s in _selectors(bound)):
        # the common case, what _spots would conclude without building them: the page's (main)
        # frame's host; a page's URL is its main frame's
        return url_target(obj._impl_obj.url)
    spots = _spots(obj, bound)
    if not spots:
        return _where_it_is(obj)
    if any(_ENTER_FRAME in selector or type(root).__name__ == "ElementHandle" for root, selector in spots):
        return None
    return _one({url_target(root._impl_obj.url) for root, _ in spots})


def _where_it_is(obj: Any) -> str | None:
    kind = type(obj).__name__
    if kind in ("Page", "Frame", "Worker"):
        return url_target(obj._impl_obj.url)
    if kind in ("Dialog", "FileChooser"):
        page = obj.page
        if page is not None:
            return url_target(page._impl_obj.url)
    return _where_now(_home(obj), {})


def _where_sync(obj: Any, bound: dict[str, Any]) -> str:
    spots = _spots(obj, bound)
    if not spots:
        home = _home(obj)
        return _where_now(home, {}) or _where_sync(home, {})
    return _one({_spot_sync(root, selector) for root, selector in spots})


async def _where_async(obj: Any, bound: dict[str, Any]) -> str:
    spots = _spots(obj, bound)
    if not spots:
        home = _home(obj)
        return _where_now(home, {}) or await _where_async(home, {})
    return _one({await _spot_async(root, selector) for root, selector in spots})


def _spot_sync(root: Any, selector: str) -> str:
    base, head, enter = base_of(root), *selector.rpartition(_ENTER_FRAME)[:2]
    is_handle = type(root).__name__ == "ElementHandle"
    if enter:
        handle = base.query_selector(root, head) if is_handle else base.locator(root, head).element_handle()
        if handle is None:
            raise ValueError(f"aegis: no frame {head!r}, so the site the action is on is unknown")
        try:
            return _inner_target(handle.content_frame(), head)
        finally:
            handle.dispose()
    if is_handle:
        frame = base.owner_frame(root)
        return url_target(frame._impl_obj.url) if frame is not None else _where_sync(_home(root), {})
    return url_target(root._impl_obj.url)


async def _spot_async(root: Any, selector: str) -> str:
    base, head, enter = base_of(root), *selector.rpartition(_ENTER_FRAME)[:2]
    is_handle = type(root).__name__ == "ElementHandle"
    if enter:
        if is_handle:
            handle = await base.query_selector(root, head)
        else:
            handle = await base.locator(root, head).element_handle()
        if handle is None:
            raise ValueError(f"aegis: no frame {head!r}, so the site the action is on is unknown")
        try:
            return _inner_target(await handle.content_frame(), head)
        finally:
            await handle.dispose()
    if is_handle:
        frame = await base.owner_frame(root)
        return url_target(frame._impl_obj.url) if frame is not None else await _where_async(_home(root), {})
    return url_target(root._impl_obj.url)


def _one(hosts: set[str]) -> str:
    if len(hosts) != 1:  # a drag from one site's frame to another's: no one target to decide on
        raise ValueError(f"aegis: this action reaches into {len(hosts)} sites ({', '.join(sorted(hosts))}); "
                         "not run")
    return hosts.pop()


def _inner_target(inner: Any, head: str) -> str:
    if inner is None:
        raise ValueError(f"aegis: {head!r} is not a frame, so the site the action is on is unknown")
    return url_target(inner._impl_obj.url)


def _mapping(obj: Any) -> Any:
    pw = _pw()
    return pw.sync_mapping if isinstance(obj, pw.SyncBase) else pw.async_mapping


def _home(obj: Any) -> Any:
    home = obj.__dict__.get("_aegis_home")
    if home is None:  # nothing to act on: fail closed rather than guess a host
        raise ValueError(f"aegis: cannot tell which site this {type(obj).__name__} acts on")
    return home


def base_of(obj: Any) -> type:
    """Playwright's own class of a (possibly governed) object: its methods run undecided."""
    return type(obj).__dict__.get("_aegis_base") or type(obj)


def tool_name(kind: str, name: str) -> str:
    noun = NOUNS.get(kind, kind)
    return f"{noun}.{name}" if noun else name


def outcome(result: Result) -> Any:
    if result.ok:
        return result.value
    if result.ran and isinstance(result.exception, Exception):
        raise result.exception  # Playwright's own error, as the caller would get it without aegis
    raise ActionRefused(result)


# -- read-through methods, events, and what they hand back ---------------------------------------

def _sync_read(kind: str, name: str, base_fn: Any, rule: Read) -> Callable[..., Any]:
    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            args, kwargs = _govern_callables(self, args, kwargs)
        value = wrap(base_fn(self, *args, **kwargs), self)
        if rule.handles:
            _mark_handles(self, value, args, kwargs)
        return value

    return read


def _async_read(kind: str, name: str, base_fn: Any, rule: Read) -> Callable[..., Any]:
    # some methods of the async API are plain functions (locator(), expect_popup()): this stays one
    async def settle(self: Any, pending: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = wrap(await pending, self)
        if rule.handles:
            _mark_handles(self, value, args, kwargs)
        return value

    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            args, kwargs = _govern_callables(self, args, kwargs)
        value = base_fn(self, *args, **kwargs)
        if inspect.isawaitable(value):
            return settle(self, value, args, kwargs)
        return wrap(value, self)

    return read


def _listen(kind: str, name: str, base_fn: Any, rule: Listen) -> Callable[..., Any]:
    # on/once/remove_listener: the handler gets governed objects; the same handler object maps to
    # the same wrapper, so remove_listener finds what on() registered
    def listen(self: Any, event: Any, f: Any) -> Any:
        if callable(f):
            handlers = self.__dict__.setdefault("_aegis_handlers", {})
            f = handlers.get(f, f) if name == "remove_listener" else handlers.setdefault(f, _governed_callable(f, self))
        return base_fn(self, event, f)

    return listen


def _govern_callables(obj: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Predicates and handlers (``expect_popup(predicate)``, ``wait_for_event(e, predicate)``) get
    governed objects, as the caller does."""
    if any(callable(a) for a in args):
        args = tuple(_governed_callable(a, obj) if callable(a) else a for a in args)
    if any(callable(v) for v in kwargs.values()):
        kwargs = {k: _governed_callable(v, obj) if callable(v) else v for k, v in kwargs.items()}
    return args, kwargs


def _governed_callable(fn: Callable[..., Any], home: Any) -> Callable[..., Any]:
    # functools.wraps keeps fn's signature visible: Playwright passes a handler as many arguments
    # as it takes
    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        return fn(*[wrap(a, home) for a in args])

    return call


def _mark_handles(obj: Any, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Element handles remember the selector they were found by: it is their actions' ``selector``."""
    selector = kwargs.get("selector", args[0] if args else None)
    own = own_selector(obj)
    if selector is None:
        selector = own
    elif own is not None:
        selector = f"{own} >> {selector}"
    for handle in value if isinstance(value, list) else [value]:
        if handle is not None and selector is not None:
            handle.__dict__.setdefault("_aegis_selector", str(selector))


def wrap(value: Any, parent: Any) -> Any:
    """``value`` with every Playwright object in it governed like ``parent``."""
    if value is None or isinstance(value, _PLAIN):
        return value
    pw = _pw()
    if isinstance(value, pw.ImplWrapper):
        return _adopt(value, parent)
    if isinstance(value, list):
        return [wrap(v, parent) for v in value]
    if isinstance(value, tuple):
        return tuple(wrap(v, parent) for v in value)
    if isinstance(value, dict):
        return {k: wrap(v, parent) for k, v in value.items()}
    if isinstance(value, pw.EventContextManager):
        return _SyncEvent(value, parent)
    if isinstance(value, pw.AsyncEventContextManager):
        return _AsyncEvent(value, parent)
    return value


def _adopt(obj: Any, parent: Any) -> Any:
    state = obj.__dict__
    if "_aegis" in state:
        return obj  # governed already (by this govern() or an earlier one): it stays so
    gov: Gov = parent.__dict__["_aegis"]
    cls = governed_class(type(obj))
    if type(obj).__name__ in SHARED:
        # the browser context is shared with code outside the agent: a governed copy, not the object
        key = id(obj._impl_obj)
        copy = gov.copies.get(key)
        if copy is None:
            copy = object.__new__(cls)
            copy.__dict__.update(state, _aegis_home=parent, _aegis=gov)
            gov.copies[key] = copy
        return copy
    obj.__class__ = cls
    state["_aegis_home"] = parent
    state["_aegis"] = gov
    return obj


class _SyncEvent:
    """``with page.expect_popup() as info:``: ``info.value`` is governed."""

    def __init__(self, inner: Any, home: Any) -> None:
        self._inner, self._home = inner, home

    def __enter__(self) -> _SyncEventInfo:
        return _SyncEventInfo(self._inner.__enter__(), self._home)

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)


class _SyncEventInfo:
    def __init__(self, inner: Any, home: Any) -> None:
        self._inner, self._home = inner, home

    @property
    def value(self) -> Any:
        return wrap(self._inner.value, self._home)

    def is_done(self) -> bool:
        return bool(self._inner.is_done())


class _AsyncEvent:
    """``async with page.expect_popup() as info:``: ``await info.value`` is governed."""

    def __init__(self, inner: Any, home: Any) -> None:
        self._inner, self._home = inner, home

    async def __aenter__(self) -> _AsyncEventInfo:
        return _AsyncEventInfo(await self._inner.__aenter__(), self._home)

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


class _AsyncEventInfo:
    def __init__(self, inner: Any, home: Any) -> None:
        self._inner, self._home = inner, home

    @property
    async def value(self) -> Any:
        return wrap(await self._inner.value, self._home)

    def is_done(self) -> bool:
        return bool(self._inner.is_done())


@functools.cache
def _pw() -> Any:
    """Playwright's base classes, imported once, on first use."""
    from types import SimpleNamespace

    from playwright._impl import _async_base, _sync_base
    from playwright._impl._impl_to_api_mapping import ImplWrapper

    return SimpleNamespace(ImplWrapper=ImplWrapper, SyncBase=_sync_base.SyncBase,
                           EventContextManager=_sync_base.EventContextManager,
                           AsyncEventContextManager=_async_base.AsyncEventContextManager,
                           sync_mapping=_sync_base.mapping, async_mapping=_async_base.mapping)
