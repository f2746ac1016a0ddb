"""The Playwright adapter, sync API: Debian's Chromium (one browser for the module) against two
local sites on 127.0.0.1, a shop whose page counts its clicks and the pay site it embeds in an
iframe. Everything reached through a governed page is decided or refused: locators, frames, the
keyboard and mouse, popups, dialogs, page.request."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from local_site import Approver, decisions, events_for, verify_cli
from playwright_site import ARGS, CHROMIUM, POLICY, Site, shop_and_pay

from aegis_cli import Policy, Runtime, SQLiteAuditLogger
from aegis_cli.adapters import ActionRefused
from aegis_cli.adapters.playwright import govern, url_target

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def sites() -> Any:
    with shop_and_pay() as s:
        yield s


class Setup:
    """A governed page on the shop's home page, its runtime and audit database."""

    def __init__(self, tmp_path: Path, browser: Any, shop: Site, pay: Site, approver: Any = None) -> None:
        self.db = tmp_path / "audit.db"
        policy = Policy.from_string(POLICY.replace("PAY_HOST", pay.host))
        self.runtime = Runtime(policy=policy, approval_handler=approver, audit=SQLiteAuditLogger(self.db))
        self.page = govern(browser.new_context().new_page(), self.runtime)
        self.page.goto(shop.url + "/")
        self.page.frame_locator("#pay").locator("#paybtn").wait_for()

    def rows(self) -> list[dict[str, Any]]:
        return decisions(self.db)

    def count(self) -> str:
        return self.page.locator("#count").text_content() or ""


@pytest.fixture
def setup(tmp_path: Path, browser: Any, sites: tuple[Site, Site]) -> Any:
    s = Setup(tmp_path, browser, *sites)
    try:
        yield s
    finally:
        s.page.context.close()


def until(page: Any, check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """``check()`` became true within ``timeout`` seconds; meanwhile Playwright's loop runs, so
    events (popups, dialogs) are dispatched."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(20)
    return True


def test_url_target() -> None:
    assert url_target("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert url_target("https://Shop.Example.com:443/cart") == "shop.example.com"
    assert url_target("http://[::1]:81/") == "[::1]:81"
    assert url_target("about:blank") == "about"


def test_page_methods(tmp_path: Path, browser: Any, sites: tuple[Site, Site]) -> None:
    shop, pay = sites
    asked_with_clicks: list[list[str]] = []  # what the shop had seen when the person was asked
    approver = Approver(True, on_ask=lambda a: asked_with_clicks.append(shop.clicks()))
    s = Setup(tmp_path, browser, shop, pay, approver)
    page = s.page
    try:
        assert page.title() == "home"
        # a blocked goto: the page stays, the server sees nothing
        hits = len(shop.hits)
        with pytest.raises(ActionRefused, match="no-admin") as info:
            page.goto(shop.url + "/admin")
        assert info.value.result.status.value == "blocked"
        assert page.url == shop.url + "/" and len(shop.hits) == hits

        page.fill("#name", "Ada")
        page.type("#name", " L.")
        page.press("#name", "End")
        page.check("#agree")
        assert page.select_option("#colour", "blue") == ["blue"]
        upload = tmp_path / "note.txt"
        upload.write_text("hi")
        page.set_input_files("#upload", str(upload))
        assert page.input_value("#name") == "Ada L." and page.is_checked("#agree")
        with pytest.raises(ActionRefused, match="no-passwords"):
            page.fill("#name", "my password is hunter2")
        assert page.input_value("#name") == "Ada L."
        with pytest.raises(ActionRefused, match="no-scripts"):
            page.evaluate("document.title = 'pwned'")
        with pytest.raises(ActionRefused, match="no-scripts"):
            page.wait_for_function("document.title = 'pwned'")
        assert page.title() == "home"

        # an approved click waits for the person, then fires; a denied one and a timed-out one never do
        page.click("#go")
        assert until(page, lambda: shop.clicks() == ["go"])
        assert asked_with_clicks == [[]]
        s.runtime.approval_handler = Approver(False)
        with pytest.raises(ActionRefused, match="not today"):
            page.click("#go")
        s.runtime.approval_handler = Approver(None, timeout=0.3)
        with pytest.raises(ActionRefused, match="no answer in time"):
            page.click("#go")
        page.wait_for_timeout(200)
        assert shop.clicks() == ["go"] and s.count() == "1"

        page.click("#next")  # a link: decided on the host of the page it is on, then it navigates
        page.wait_for_url(shop.url + "/next")
    finally:
        page.context.close()

    rows = s.rows()
    assert all(r["origin"]["via"] == "playwright" for r in rows)
    assert [r["action"]["type"] for r in rows] == [
        "goto", "goto", "fill", "type", "press", "check", "select_option", "set_input_files", "fill", "evaluate",
        "evaluate", "click", "click", "click", "click"]
    assert {r["action"]["target"] for r in rows} == {shop.host}
    assert rows[1]["action"]["params"] == {"url": shop.url + "/admin"}
    assert rows[3]["action"]["params"] == {"selector": "#name", "value": " L."}
    assert rows[7]["action"]["params"] == {"selector": "#upload", "value": str(upload)}
    outcomes = [[e["data"]["status"] for e in events_for(s.db, r["id"], "execution")] for r in rows]
    assert outcomes == [["ok"], [], ["ok"], ["ok"], ["ok"], ["ok"], ["ok"], ["ok"], [], [], [], ["ok"], [], [],
                        ["ok"]]
    assert [events_for(s.db, r["id"], "approval")[0]["data"]["status"] for r in rows[11:14]] == [
        "approved", "denied", "timed_out"]
    assert verify_cli(s.db).returncode == 0


def test_locators_are_decided(setup: Setup, sites: tuple[Site, Site], tmp_path: Path) -> None:
    from playwright.sync_api import Locator, expect

    shop, _ = sites
    page = setup.page
    setup.runtime.approval_handler = Approver(True)

    # the Delete button, however the agent names it, never fires: the page's counter stays, the
    # shop sees no click
    for delete in (page.get_by_role("button", name="Delete"), page.locator("#delete"),
                   page.get_by_text("Delete"), page.locator("body").locator("button").filter(has_text="Delete"),
                   page.locator("button").last.locator("xpath=..").locator("#delete")):
        assert isinstance(delete, Locator)
        with pytest.raises(ActionRefused, match="no-deletes"):
            delete.click()
    with pytest.raises(ActionRefused, match="no-deletes"):
        page.get_by_role("button", name="Delete").dblclick()
    handle = page.query_selector("#delete")
    with pytest.raises(ActionRefused, match="no-deletes"):
        handle.click()  # an element handle remembers the selector it was found by
    with pytest.raises(ActionRefused, match="no-deletes"):
        page.locator("#delete").element_handle().click()
    # allowed locator actions run; go needs a person, who says yes
    page.get_by_role("button", name="go").click()
    expect(page.locator("#count")).to_have_text("1")
    page.get_by_placeholder("your name").fill("Ada")
    page.get_by_label("Name").press_sequentially(" L")
    page.get_by_test_id("agree").check()
    page.locator("#colour").select_option("blue")
    upload = tmp_path / "note.txt"
    upload.write_text("hi")
    page.locator("#upload").set_input_files(upload)
    with pytest.raises(ActionRefused, match="no-passwords"):
        page.get_by_placeholder("your name").fill("password1")
    with pytest.raises(ActionRefused, match="no-passwords"):
        page.get_by_placeholder("your name").press_sequentially("password1")
    page.locator("#name").clear()
    for run_script in (lambda: page.locator("#go").evaluate("b => b.click()"),
                       lambda: page.locator("button").evaluate_all("bs => bs.forEach(b => b.click())"),
                       lambda: page.locator("#go").evaluate_handle("b => b"),
                       lambda: handle.evaluate("b => b.click()"),
                       lambda: page.main_frame.evaluate("document.getElementById('delete').click()")):
        with pytest.raises(ActionRefused, match="no-scripts"):
            run_script()
    assert until(page, lambda: shop.clicks() == ["go"]) and setup.count() == "1"
    assert page.input_value("#name") == "" and page.is_checked("#agree")

    # reading passes undecided
    before = len(setup.rows())
    assert page.locator("button").count() >= 3 and page.get_by_role("button", name="Delete").is_visible()
    assert page.locator("#delete").inner_text() == "Delete" and page.locator("#count").text_content() == "1"
    assert page.get_by_role("button", name="go").screenshot()[:4] == b"\x89PNG"
    assert page.locator("button").all_inner_texts()[:2] == ["go", "Delete"]
    assert len(setup.rows()) == before

    rows = setup.rows()
    delete_rows = [r for r in rows if r["decision"]["rule"] == "no-deletes"]
    assert [r["action"]["params"]["selector"] for r in delete_rows] == [
        'internal:role=button[name="Delete"i]', "#delete", 'internal:text="Delete"i',
        'body >> button >> internal:has-text="Delete"i', "button >> nth=-1 >> xpath=.. >> #delete",
        'internal:role=button[name="Delete"i]', "#delete", "#delete"]
    assert {r["action"]["target"] for r in rows} == {shop.host}
    by_tool = {r["origin"]["tool"]: r["action"] for r in rows}
    assert by_tool["locator.press_sequentially"]["type"] == "type"
    assert by_tool["locator.clear"]["type"] == "fill" and by_tool["locator.clear"]["params"]["value"] == ""
    assert by_tool["locator.set_input_files"]["params"] == {"selector": "#upload", "value": str(upload)}
    assert by_tool["element_handle.click"]["params"] == {"selector": "#delete"}
    assert by_tool["frame.evaluate"]["type"] == "evaluate"
    assert verify_cli(setup.db).returncode == 0


def test_frames_are_decided_on_their_own_host(setup: Setup, sites: tuple[Site, Site]) -> None:
    shop, pay = sites
    page = setup.page
    pay_button = page.frame_locator("#pay").get_by_role("button", name="Pay")

    def paid() -> str:
        return page.frame_locator("#pay").locator("#paid").text_content() or ""

    # the pay button is in the pay site's document: its host is the target, and paying needs a person
    setup.runtime.approval_handler = Approver(False)
    with pytest.raises(ActionRefused, match="not today"):
        pay_button.click()
    setup.runtime.approval_handler = Approver(None, timeout=0.3)
    with pytest.raises(ActionRefused, match="no answer in time"):
        page.locator("#pay").content_frame.locator("#paybtn").click()
    (pay_frame,) = [f for f in page.frames if f.url.startswith(pay.url)]
    assert page.frame(url=pay.url + "/pay") is pay_frame and pay_frame.parent_frame is page.main_frame
    with pytest.raises(ActionRefused, match="no answer in time"):
        pay_frame.click("#paybtn")
    with pytest.raises(ActionRefused, match="no answer in time"):
        pay_frame.get_by_role("button", name="Pay").click()
    with pytest.raises(ActionRefused, match="no-scripts"):
        pay_frame.evaluate("document.getElementById('paybtn').click()")
    with pytest.raises(ActionRefused, match="no answer in time"):  # the page's own selector can enter it too
        page.click("#pay >> internal:control=enter-frame >> #paybtn")
    with pytest.raises(ValueError, match="reaches into 2 sites"):  # one action, two sites: not decided, not run
        page.locator("#go").drag_to(page.frame_locator("#pay").locator("#paybtn"))
    page.wait_for_timeout(200)
    assert paid() == "0" and pay.clicks() == []

    setup.runtime.approval_handler = Approver(True)
    pay_button.click()
    assert until(page, lambda: pay.clicks() == ["pay"]) and paid() == "1"
    assert shop.clicks() == []

    rows = setup.rows()[1:]  # after the goto
    assert [r["action"]["target"] for r in rows] == [pay.host] * 7
    assert [r["origin"]["tool"] for r in rows] == ["locator.click", "locator.click", "frame.click", "locator.click",
                                                   "frame.evaluate", "click", "locator.click"]
    assert rows[0]["action"]["params"] == {
        "selector": '#pay >> internal:control=enter-frame >> internal:role=button[name="Pay"i]'}
    statuses = [[e["data"]["status"] for e in events_for(setup.db, r["id"], "approval")] for r in rows]
    assert statuses == [["denied"], ["timed_out"], ["timed_out"], ["timed_out"], [], ["timed_out"], ["approved"]]
    assert verify_cli(setup.db).returncode == 0


def test_keyboard_and_mouse_are_decided(setup: Setup, sites: tuple[Site, Site]) -> None:
    shop, _ = sites
    page = setup.page
    page.locator("#name").focus()
    page.keyboard.type("hello")
    page.keyboard.press("Backspace")
    page.keyboard.insert_text("!")
    page.keyboard.down("Shift")
    page.keyboard.up("Shift")
    with pytest.raises(ActionRefused, match="no-passwords"):
        page.keyboard.type("password")
    with pytest.raises(ActionRefused, match="no-passwords"):
        page.keyboard.insert_text("my password")
    assert page.input_value("#name") == "hell!"

    box = page.locator("#go").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    setup.runtime.approval_handler = Approver(None, timeout=0.3)
    with pytest.raises(ActionRefused, match="no answer in time"):
        page.mouse.click(x, y)
    page.wait_for_timeout(200)
    assert setup.count() == "0" and shop.clicks() == []
    setup.runtime.approval_handler = Approver(True)
    page.mouse.click(x, y)
    assert until(page, lambda: shop.clicks() == ["go"]) and setup.count() == "1"

    rows = setup.rows()[2:]  # after the goto and the focus
    assert [r["action"]["type"] for r in rows] == [
        "keyboard_type", "keyboard_press", "keyboard_insert_text", "keyboard_down", "keyboard_up", "keyboard_type",
        "keyboard_insert_text", "mouse_move", "mouse_click", "mouse_click"]
    assert rows[0]["action"]["params"] == {"value": "hello"} and rows[0]["origin"]["tool"] == "keyboard.type"
    assert rows[-1]["action"]["params"] == {"x": x, "y": y} and rows[-1]["action"]["target"] == shop.host
    assert verify_cli(setup.db).returncode == 0


def test_popups_context_and_dialogs(setup: Setup, sites: tuple[Site, Site]) -> None:
    shop, _ = sites
    page = setup.page
    with page.expect_popup() as info:
        page.click("#open")
    popup = info.value
    popup.wait_for_load_state()
    with pytest.raises(ActionRefused, match="no-deletes"):
        popup.get_by_role("button", name="Delete").click()
    assert popup in page.context.pages and page in page.context.pages
    for p in page.context.pages:
        with pytest.raises(ActionRefused, match="no-admin"):
            p.goto(shop.url + "/admin")
    other = page.context.new_page()
    with pytest.raises(ActionRefused, match="no-admin"):
        other.goto(shop.url + "/admin")
    seen: list[Any] = []
    page.on("popup", seen.append)
    page.click("#open")
    assert until(page, lambda: bool(seen))
    with pytest.raises(ActionRefused, match="no-deletes"):
        seen[0].locator("#delete").click()
    assert "/admin" not in shop.paths() and "delete" not in shop.clicks()

    # a dialog accepted through the governed page is decided; this one is refused and dismissed
    answers: list[str] = []

    def on_dialog(dialog: Any) -> None:
        try:
            dialog.accept()
            answers.append("accepted")
        except ActionRefused:
            dialog.dismiss()
            answers.append("dismissed")

    page.on("dialog", on_dialog)
    page.click("#ask")
    assert until(page, lambda: "/confirmed?answer=false" in shop.paths("POST"))
    assert answers == ["dismissed"]
    page.remove_listener("dialog", on_dialog)

    # what aegis does not govern is refused, not handed out
    for reach in (lambda: page.route, lambda: page.context.route, lambda: page.context.browser,
                  lambda: page.expose_function, lambda: page.add_init_script, lambda: page.context.add_cookies,
                  lambda: page.context.new_cdp_session, lambda: page.clock, lambda: page.context.tracing,
                  lambda: page.set_extra_http_headers, lambda: popup.unroute_all):
        with pytest.raises(AttributeError, match=r"aegis: \w+\.\w+ is refused on a governed"):
            reach()
    assert not hasattr(page, "route") and hasattr(page, "goto")

    rows = setup.rows()
    dialog_row = next(r for r in rows if r["action"]["type"] == "dialog_accept")
    assert dialog_row["action"]["params"] == {"dialog": "confirm", "message": "Delete everything?"}
    assert dialog_row["decision"]["rule"] == "no-deleting-dialogs" and dialog_row["action"]["target"] == shop.host
    assert verify_cli(setup.db).returncode == 0


def test_page_request_is_decided_per_hop(setup: Setup, sites: tuple[Site, Site]) -> None:
    from playwright.sync_api import APIRequestContext, APIResponse

    shop, _ = sites
    request = setup.page.request
    assert request is setup.page.context.request and isinstance(request, APIRequestContext)
    response = request.get(shop.url + "/api/items", params={"page": 2})
    assert isinstance(response, APIResponse) and response.json() == {"method": "GET", "path": "/api/items?page=2"}
    assert request.post(shop.url + "/api/orders", data={"amount": 5}).ok
    with pytest.raises(ActionRefused, match="big-orders-are-blocked"):
        request.post(shop.url + "/api/orders", data={"amount": 500})
    with pytest.raises(ActionRefused, match="no-admin-api"):
        request.get(shop.url + "/admin/users")
    # a redirect is the next hop, decided before it is followed
    with pytest.raises(ActionRefused, match="no-admin-api"):
        request.get(shop.url + "/redirect?to=/admin/users")
    followed = request.get(shop.url + "/redirect?to=/next")
    assert followed.status == 200 and followed.url == shop.url + "/next"
    assert request.get(shop.url + "/redirect?to=/next", max_redirects=0).status == 302
    assert [p for p in shop.paths() if p.startswith(("/api", "/admin", "/redirect", "/next"))] == [
        "/api/items?page=2", "/api/orders", "/redirect?to=/admin/users", "/redirect?to=/next", "/next",
        "/redirect?to=/next"]

    rows = [r for r in setup.rows() if r["origin"]["tool"].startswith("request.")]
    assert [(r["action"]["type"], r["action"]["params"]["path"]) for r in rows] == [
        ("get", "/api/items"), ("post", "/api/orders"), ("post", "/api/orders"), ("get", "/admin/users"),
        ("get", "/redirect"), ("get", "/admin/users"), ("get", "/redirect"), ("get", "/next"), ("get", "/redirect")]
    assert rows[0]["action"]["params"]["query"] == {"page": "2"} and rows[2]["action"]["params"]["json"] == {
        "amount": 500}
    assert {r["action"]["target"] for r in rows} == {shop.host}
    assert verify_cli(setup.db).returncode == 0


def test_a_page_that_cannot_be_reached_raises_playwrights_own_error(tmp_path: Path, browser: Any) -> None:
    from playwright.sync_api import Error

    with shop_and_pay() as (gone, _):
        url = gone.url
    runtime = Runtime(policy=Policy.from_string(POLICY), audit=SQLiteAuditLogger(tmp_path / "audit.db"))
    page = govern(browser.new_page(), runtime)
    try:
        with pytest.raises(Error):
            page.goto(url + "/")
    finally:
        page.context.close()
    (row,) = decisions(tmp_path / "audit.db")
    assert events_for(tmp_path / "audit.db", row["id"], "execution")[0]["data"]["status"] == "error"


def test_governing_twice(tmp_path: Path, browser: Any) -> None:
    runtime = Runtime(policy=Policy.from_string(POLICY), audit=SQLiteAuditLogger(tmp_path / "audit.db"))
    page = browser.new_page()
    try:
        assert govern(page, runtime) is page and govern(page, runtime) is page
        with pytest.raises(ValueError, match="governed already"):
            govern(page, Runtime(policy=runtime.policy))
        with pytest.raises(TypeError, match="playwright Page"):
            govern(page.context, runtime)
    finally:
        page.context.close()


def test_every_rule_names_a_playwright_method() -> None:
    """A misspelt name in the rules would leave the real method refused (fail closed), but unnoticed."""
    import playwright.sync_api as api

    from aegis_cli.adapters._playwright_rules import FRAME, RULES

    for kind, rules in RULES.items():
        extra = set(FRAME) if kind == "Page" else set()  # the page shares the frame's rules
        assert set(rules) - extra <= set(dir(getattr(api, kind))), kind


def test_what_the_rules_do_not_name_is_refused() -> None:
    from playwright._impl._sync_base import SyncBase
    from playwright.sync_api import Page

    from aegis_cli.adapters._playwright_govern import governed_class

    class Gadget(SyncBase):  # a class a newer Playwright might add, and something it might return
        def launch(self) -> str:
            return "launched"

        @property
        def remote(self) -> Any:
            return self

    gadget = object.__new__(governed_class(Gadget))
    for reach in (lambda: gadget.launch, lambda: gadget.remote):
        with pytest.raises(AttributeError, match=r"Gadget\.\w+ is refused on a governed Gadget: aegis does not "):
            reach()
    page = object.__new__(governed_class(Page))
    with pytest.raises(AttributeError, match=r"Page\.pause is refused"):
        page.pause  # noqa: B018
    assert isinstance(page, Page) and governed_class(Page) is type(page)
