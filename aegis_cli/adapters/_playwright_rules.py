"""What a governed Playwright object may do, class by class: the allow-list ``playwright.govern`` builds.

Each public name of a Playwright API class is one of

- ``Act``: decided by the runtime first (type, params, and whether the target is the URL opened);
- ``Read``: runs undecided; what it returns is governed in turn (``handles``: element handles
  remember the selector they were found by);
- ``Listen``: ``on`` / ``once`` / ``remove_listener``, whose handlers get governed objects;
- ``Fetch``: an HTTP call of ``page.request``, decided per hop as the httpx adapter decides it;
- ``Refuse(why)``: refused with a reason. A name not listed at all is refused as well, so a method
  a newer Playwright adds stays out until someone decides what it is.

Action types are the method names, except where two methods do one thing, so that one rule covers
both: every way of running a script in the page is ``evaluate``, ``set_checked`` is ``check`` or
``uncheck``, ``clear`` is ``fill`` with ``""``, ``press_sequentially`` is ``type``, ``drag_to`` is
``drag_and_drop``, ``FileChooser.set_files`` is ``set_input_files``. The keyboard, mouse and
touchscreen act at no selector: ``keyboard_*``, ``mouse_*``, ``touchscreen_tap``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# where a method's "value" comes from, in the order looked at
_VALUE_ARGS = ("value", "text", "key", "files", "expression", "index", "label")


@lru_cache(maxsize=256)  # a page acts on a few URLs many times; urlsplit is most of the cost
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


def base_url(obj: Any) -> str:
    """The browser context's ``base_url``, which Playwright resolves relative URLs against and does
    not expose; "" when there is none (a relative URL then stays relative and Playwright refuses it)."""
    try:
        kind = type(obj).__name__
        while kind not in ("Page", "BrowserContext"):
            obj = obj.page if kind == "Frame" else obj.__dict__["_aegis_home"]
            kind = type(obj).__name__
        context = obj.context if kind == "Page" else obj
        base = context._impl_obj._options.get("baseURL")
    except Exception:
        return ""
    return base if isinstance(base, str) else ""


def own_selector(obj: Any) -> str | None:
    """A locator's selector (``internal:role=button[name="Delete"i]``), or the one an element handle
    was found by; None for what has none."""
    kind = type(obj).__name__
    if kind == "Locator":
        return getattr(obj._impl_obj, "_selector", None) or str(obj)
    if kind == "ElementHandle":
        return obj.__dict__.get("_aegis_selector")
    return None


def plain(value: Any) -> Any:
    """A JSON-safe view of an argument for the audit trail: file payloads without their bytes."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if k != "buffer"}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


# -- params --------------------------------------------------------------------------------------

def std_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    """``url``; ``selector`` (the argument, else the locator's or handle's own); ``value``: what is
    typed, filled, pressed, selected or uploaded (names, not contents), or the script run."""
    out: dict[str, Any] = {}
    if "url" in bound:
        out["url"] = str(bound["url"])
    selector = bound.get("selector")
    if selector is None:
        selector = own_selector(obj)
    if selector is not None:
        out["selector"] = str(selector)
    for key in _VALUE_ARGS:
        if bound.get(key) is not None:
            out["value"] = plain(bound[key])
            break
    return out


def _event_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    return {**std_params(obj, bound), "value": bound.get("type")}  # dispatch_event(selector, "click")


def _drop_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    return {**std_params(obj, bound), "value": plain(bound.get("payload"))}


def _drag_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    return {"selector": str(bound.get("source")), "value": str(bound.get("target"))}


def _drag_to_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    target = bound.get("target")
    return {"selector": own_selector(obj), "value": own_selector(target) or str(target)}


def _clear_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    return {"selector": own_selector(obj), "value": ""}


def _tag_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    for key in ("content", "url", "path"):
        if bound.get(key) is not None:
            return {"value": plain(bound[key])}
    return {}


def _content_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    return {"value": bound.get("html")}


def _xy_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    keys = ("x", "y", "delta_x", "delta_y", "button", "click_count")
    return {k: plain(bound[k]) for k in keys if bound.get(k) is not None}


def _dialog_params(obj: Any, bound: dict[str, Any]) -> dict[str, Any]:
    out = {"dialog": obj.type, "message": obj.message}
    if bound.get("prompt_text") is not None:
        out["value"] = bound["prompt_text"]
    return out


def _check_or_uncheck(bound: dict[str, Any]) -> str:
    return "check" if bound.get("checked") else "uncheck"


# -- the rules -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Act:
    """Decided: ``type`` ("" = the method name, or a function of the arguments), ``params``, and
    ``url``: the target is the host of ``params["url"]`` rather than of the page or frame."""

    type: str | Callable[[dict[str, Any]], str] = ""
    params: Callable[[Any, dict[str, Any]], dict[str, Any]] = std_params
    url: bool = False

    def type_of(self, name: str, bound: dict[str, Any]) -> str:
        if callable(self.type):
            return self.type(bound)
        return self.type or name


@dataclass(frozen=True, slots=True)
class Read:
    handles: bool = False


@dataclass(frozen=True, slots=True)
class Listen:
    pass


@dataclass(frozen=True, slots=True)
class Fetch:
    pass


@dataclass(frozen=True, slots=True)
class Refuse:
    why: str


def _read(*names: str) -> dict[str, Read]:
    return dict.fromkeys(names, Read())


EVAL = Act("evaluate")
_HANDLES = Read(handles=True)
_EVENTS = dict.fromkeys(("on", "once", "remove_listener"), Listen())
_FIRST = "set it up on the page before govern()"
_ROUTING = Refuse(f"it rewrites the page's traffic where no decision sees it; {_FIRST}")
_CODE = Refuse(f"it gives the page code, or a way into Python, that runs undecided; {_FIRST}")
_HEADERS = Refuse(f"it changes every request the page sends; {_FIRST}")
_STATE = Refuse(f"it changes the browser's cookies, permissions or storage undecided; {_FIRST}")
_BUILDERS = ("locator", "frame_locator", "get_by_alt_text", "get_by_label", "get_by_placeholder", "get_by_role",
             "get_by_test_id", "get_by_text", "get_by_title")
_STATE_READS = ("get_attribute", "inner_html", "inner_text", "input_value", "is_checked", "is_disabled",
                "is_editable", "is_enabled", "is_hidden", "is_visible", "text_content")

FRAME: dict[str, Any] = {
    **_EVENTS, **_read(*_BUILDERS, *_STATE_READS),
    **_read("child_frames", "content", "expect_navigation", "frame_element", "is_detached", "name", "page",
            "parent_frame", "title", "url", "wait_for_load_state", "wait_for_timeout", "wait_for_url"),
    "query_selector": _HANDLES, "query_selector_all": _HANDLES, "wait_for_selector": _HANDLES,
    "goto": Act(url=True),
    **dict.fromkeys(("click", "dblclick", "tap", "hover", "focus", "check", "uncheck", "fill", "type", "press",
                     "select_option", "set_input_files"), Act()),
    "set_checked": Act(_check_or_uncheck), "dispatch_event": Act(params=_event_params),
    "drag_and_drop": Act(params=_drag_params), "set_content": Act(params=_content_params),
    **dict.fromkeys(("evaluate", "evaluate_handle", "eval_on_selector", "eval_on_selector_all",
                     "wait_for_function"), EVAL),
    "add_script_tag": Act("evaluate", _tag_params), "add_style_tag": Act(params=_tag_params),
}

PAGE: dict[str, Any] = {
    **FRAME,
    **_read("aria_snapshot", "bring_to_front", "clear_console_messages", "clear_page_errors", "close",
            "console_messages", "context", "emulate_media", "expect_console_message", "expect_download",
            "expect_event", "expect_file_chooser", "expect_popup", "expect_request", "expect_request_finished",
            "expect_response", "expect_websocket", "expect_worker", "frame", "frames", "get_by_ref",
            "hide_highlight", "is_closed", "keyboard", "main_frame", "mouse", "opener", "page_errors", "pdf",
            "request", "request_gc", "requests", "screenshot", "set_default_navigation_timeout",
            "set_default_timeout", "set_viewport_size", "touchscreen", "video", "viewport_size",
            "wait_for_event", "workers"),
    **dict.fromkeys(("reload", "go_back", "go_forward"), Act()),
    **dict.fromkeys(("route", "route_from_har", "route_web_socket", "unroute", "unroute_all"), _ROUTING),
    **dict.fromkeys(("add_init_script", "expose_binding", "expose_function"), _CODE),
    "set_extra_http_headers": _HEADERS,
    **dict.fromkeys(("local_storage", "session_storage"), _STATE),
    **dict.fromkeys(("add_locator_handler", "remove_locator_handler"),
                    Refuse(f"its handler acts on the page by itself, undecided; {_FIRST}")),
    "clock": Refuse(f"it drives the page's timers undecided; {_FIRST}"),
}

LOCATOR: dict[str, Any] = {
    **_EVENTS, **_read(*_BUILDERS, *_STATE_READS),
    **_read("all", "all_inner_texts", "all_text_contents", "and_", "aria_snapshot", "bounding_box",
            "content_frame", "count", "describe", "description", "filter", "first", "hide_highlight", "highlight",
            "last", "normalize", "nth", "or_", "page", "screenshot", "visible", "wait_for", "within"),
    "element_handle": _HANDLES, "element_handles": _HANDLES,
    **dict.fromkeys(("blur", "click", "dblclick", "tap", "hover", "focus", "check", "uncheck", "fill", "type",
                     "press", "select_option", "select_text", "set_input_files"), Act()),
    "set_checked": Act(_check_or_uncheck), "clear": Act("fill", _clear_params),
    "press_sequentially": Act("type"), "dispatch_event": Act(params=_event_params),
    "drag_to": Act("drag_and_drop", _drag_to_params), "drop": Act(params=_drop_params),
    "scroll_into_view_if_needed": Act("scroll"),
    **dict.fromkeys(("evaluate", "evaluate_all", "evaluate_handle", "wait_for_function"), EVAL),
}

FRAME_LOCATOR: dict[str, Any] = {**_EVENTS, **_read(*_BUILDERS, "first", "last", "nth", "owner")}

JS_HANDLE: dict[str, Any] = {
    **_EVENTS, **_read("as_element", "dispose", "get_properties", "get_property", "json_value"),
    "evaluate": EVAL, "evaluate_handle": EVAL,
}

ELEMENT_HANDLE: dict[str, Any] = {
    **JS_HANDLE, **_read(*_STATE_READS),
    **_read("bounding_box", "content_frame", "owner_frame", "screenshot", "wait_for_element_state"),
    "query_selector": _HANDLES, "query_selector_all": _HANDLES, "wait_for_selector": _HANDLES,
    **dict.fromkeys(("click", "dblclick", "tap", "hover", "focus", "check", "uncheck", "fill", "type", "press",
                     "select_option", "select_text", "set_input_files"), Act()),
    "set_checked": Act(_check_or_uncheck), "dispatch_event": Act(params=_event_params),
    "scroll_into_view_if_needed": Act("scroll"),
    "eval_on_selector": EVAL, "eval_on_selector_all": EVAL,
}

BROWSER_CONTEXT: dict[str, Any] = {
    **_EVENTS,
    **_read("background_pages", "close", "cookies", "expect_console_message", "expect_event", "expect_page",
            "is_closed", "new_page", "pages", "request", "service_workers", "set_default_navigation_timeout",
            "set_default_timeout", "storage_state", "wait_for_event"),
    **dict.fromkeys(("route", "route_from_har", "route_web_socket", "unroute", "unroute_all"), _ROUTING),
    **dict.fromkeys(("add_init_script", "expose_binding", "expose_function"), _CODE),
    "set_extra_http_headers": _HEADERS,
    **dict.fromkeys(("add_cookies", "clear_cookies", "grant_permissions", "clear_permissions",
                     "set_geolocation", "set_offline", "set_storage_state"), _STATE),
    "browser": Refuse("it opens new contexts and pages that would not be governed"),
    "new_cdp_session": Refuse("a CDP session drives the browser underneath Playwright, undecided"),
}

API_REQUEST_CONTEXT: dict[str, Any] = {
    **_EVENTS, **_read("cookies", "dispose", "storage_state"),
    **dict.fromkeys(("fetch", "get", "post", "put", "patch", "delete", "head"), Fetch()),
    **dict.fromkeys(("add_cookies", "clear_cookies"), _STATE),
}

RULES: dict[str, dict[str, Any]] = {
    "Page": PAGE,
    "Frame": FRAME,
    "Locator": LOCATOR,
    "FrameLocator": FRAME_LOCATOR,
    "ElementHandle": ELEMENT_HANDLE,
    "JSHandle": JS_HANDLE,
    "Keyboard": {**_EVENTS, **{m: Act(f"keyboard_{m}") for m in ("down", "up", "press", "type", "insert_text")}},
    "Mouse": {**_EVENTS, **{m: Act(f"mouse_{m}", _xy_params) for m in ("click", "dblclick", "down", "up", "move",
                                                                        "wheel")}},
    "Touchscreen": {**_EVENTS, "tap": Act("touchscreen_tap", _xy_params)},
    "BrowserContext": BROWSER_CONTEXT,
    "APIRequestContext": API_REQUEST_CONTEXT,
    "APIResponse": {**_EVENTS, **_read("body", "dispose", "headers", "headers_array", "json", "ok",
                                       "security_details", "server_addr", "status", "status_text", "text",
                                       "timing", "url")},
    "Dialog": {**_EVENTS, **_read("default_value", "dismiss", "message", "page", "type"),
               "accept": Act("dialog_accept", _dialog_params)},
    "FileChooser": {**_EVENTS, **_read("element", "is_multiple", "page"), "set_files": Act("set_input_files")},
    "Worker": {**_EVENTS, **_read("expect_event", "url"), "evaluate": EVAL, "evaluate_handle": EVAL},
    "Request": {**_EVENTS, **_read("all_headers", "existing_response", "failure", "frame", "header_value",
                                   "headers", "headers_array", "is_navigation_request", "method", "post_data",
                                   "post_data_buffer", "post_data_json", "redirected_from", "redirected_to",
                                   "resource_type", "response", "service_worker", "sizes", "timing", "url")},
    "Response": {**_EVENTS, **_read("all_headers", "body", "finished", "frame", "from_service_worker",
                                    "header_value", "header_values", "headers", "headers_array", "http_version",
                                    "json", "ok", "request", "security_details", "server_addr", "status",
                                    "status_text", "text", "url")},
    "ConsoleMessage": {**_EVENTS, **_read("args", "location", "page", "text", "timestamp", "type", "worker")},
    "WebSocket": {**_EVENTS, **_read("expect_event", "is_closed", "url", "wait_for_event")},
    # files on this machine, not the site: as screenshot(path=...)
    "Download": {**_EVENTS, **_read("cancel", "delete", "failure", "page", "path", "save_as",
                                    "suggested_filename", "url")},
    "Video": {**_EVENTS, **_read("delete", "path", "save_as")},
}

# shared with code outside the agent: governed as copies, the object itself left as it was
SHARED = frozenset({"BrowserContext", "APIRequestContext"})
# how the audit source names a class's methods ("locator.click"); the page's are bare ("click")
NOUNS = {"Page": "", "Frame": "frame", "Locator": "locator", "ElementHandle": "element_handle",
         "JSHandle": "js_handle", "Keyboard": "keyboard", "Mouse": "mouse", "Touchscreen": "touchscreen",
         "Dialog": "dialog", "FileChooser": "file_chooser", "Worker": "worker", "APIRequestContext": "request"}
