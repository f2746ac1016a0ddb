"""The Playwright adapter, async API: the same governed surface as the sync API (locators, frames,
keyboard and mouse, popups, page.request), and ``PlaywrightExecutor``. One Chromium for the module,
driven from one event loop that every test runs on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from local_site import Approver, decisions, events_for, verify_cli
from playwright_site import ARGS, CHROMIUM, POLICY, Site, shop_and_pay

from aegis_cli import Action, Policy, Runtime, SQLiteAuditLogger
from aegis_cli.adapters import ActionRefused
from aegis_cli.adapters.playwright import PlaywrightExecutor, govern

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


@dataclass
class Browser:
    loop: asyncio.AbstractEventLoop
    browser: Any

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def chromium() -> Any:
    from playwright.async_api import async_playwright

    loop = asyncio.new_event_loop()
    playwright = loop.run_until_complete(async_playwright().start())
    try:
        browser = loop.run_until_complete(playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS))
        try:
            yield Browser(loop, browser)
        finally:
            loop.run_until_complete(browser.close())
    finally:
        loop.run_until_complete(playwright.stop())
        loop.close()


@pytest.fixture
def sites() -> Any:
    with shop_and_pay() as s:
        yield s


async def until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def runtime_for(tmp_path: Path, pay: Site, approver: Any = None) -> tuple[Runtime, Path]:
    db = tmp_path / "audit.db"
    policy = Policy.from_string(POLICY.replace("PAY_HOST", pay.host))
    return Runtime(policy=policy, approval_handler=approver, audit=SQLiteAuditLogger(db)), db


def test_async_page_locators_frames_keyboard_popups_request(tmp_path: Path, chromium: Browser,
                                                            sites: tuple[Site, Site]) -> None:
    from playwright.async_api import Locator, expect

    shop, pay = sites
    runtime, db = runtime_for(tmp_path, pay, Approver(True))

    async def main() -> None:
        context = await chromium.browser.new_context()
        try:
            page = govern(await context.new_page(), runtime)
            await page.goto(shop.url + "/")
            await page.frame_locator("#pay").locator("#paybtn").wait_for()

            # locators: the Delete button never fires; go does, once a person says yes
            delete = page.get_by_role("button", name="Delete")
            assert isinstance(delete, Locator)
            with pytest.raises(ActionRefused, match="no-deletes"):
                await delete.click()
            with pytest.raises(ActionRefused, match="no-deletes"):
                await page.locator("body").locator("button").filter(has_text="Delete").first.click()
            with pytest.raises(ActionRefused, match="no-deletes"):
                await (await page.query_selector("#delete")).click()
            await page.get_by_role("button", name="go").click()
            await expect(page.locator("#count")).to_have_text("1")
            with pytest.raises(ActionRefused, match="no-scripts"):
                await page.locator("#go").evaluate("b => b.click()")

            # a frame's element is decided on the frame's host: paying needs a person, who is silent
            runtime.approval_handler = Approver(None, timeout=0.3)
            with pytest.raises(ActionRefused, match="no answer in time"):
                await page.frame_locator("#pay").get_by_role("button", name="Pay").click()
            pay_frame = page.frame(url=pay.url + "/pay")
            with pytest.raises(ActionRefused, match="no answer in time"):
                await pay_frame.click("#paybtn")
            assert await page.frame_locator("#pay").locator("#paid").text_content() == "0"

            # keyboard and mouse
            await page.locator("#name").focus()
            await page.keyboard.type("hello")
            with pytest.raises(ActionRefused, match="no-passwords"):
                await page.keyboard.type("password")
            assert await page.input_value("#name") == "hello"
            box = await page.locator("#go").bounding_box()
            with pytest.raises(ActionRefused, match="no answer in time"):
                await page.mouse.click(box["x"] + 5, box["y"] + 5)

            # reading passes undecided
            before = len(decisions(db))
            assert await page.locator("button").count() >= 3 and await delete.is_visible()
            assert await page.locator("#count").text_content() == "1"
            assert len(decisions(db)) == before

            # a popup is governed; so is what it can reach
            async with page.expect_popup() as info:
                await page.click("#open")
            popup = await info.value
            await popup.wait_for_load_state()
            with pytest.raises(ActionRefused, match="no-deletes"):
                await popup.get_by_role("button", name="Delete").click()
            with pytest.raises(ActionRefused, match="no-admin"):
                await page.context.pages[-1].goto(shop.url + "/admin")
            with pytest.raises(AttributeError, match="refused on a governed Page"):
                page.route  # noqa: B018

            # page.request: each hop decided
            assert (await page.request.get(shop.url + "/api/items")).ok
            with pytest.raises(ActionRefused, match="no-admin-api"):
                await page.request.get(shop.url + "/redirect?to=/admin/users")
            await until(lambda: shop.clicks() == ["go"])
        finally:
            await context.close()

    chromium.run(main())
    assert shop.clicks() == ["go"] and pay.clicks() == []
    assert "/admin" not in shop.paths() and "/admin/users" not in shop.paths()
    rows = decisions(db)
    assert [(r["origin"]["tool"], r["action"]["type"], r["decision"]["rule"]) for r in rows] == [
        ("goto", "goto", None),
        ("locator.click", "click", "no-deletes"),
        ("locator.click", "click", "no-deletes"),
        ("element_handle.click", "click", "no-deletes"),
        ("locator.click", "click", None),
        ("locator.evaluate", "evaluate", "no-scripts"),
        ("locator.click", "click", "paying-needs-a-human"),
        ("frame.click", "click", "paying-needs-a-human"),
        ("locator.focus", "focus", None),
        ("keyboard.type", "keyboard_type", None),
        ("keyboard.type", "keyboard_type", "no-passwords"),
        ("mouse.click", "mouse_click", "mouse-needs-a-human"),
        ("click", "click", None),
        ("locator.click", "click", "no-deletes"),
        ("goto", "goto", "no-admin"),
        ("request.get", "get", None),
        ("request.get", "get", None),
        ("request.get", "get", "no-admin-api")]
    assert [r["action"]["target"] for r in rows[6:8]] == [pay.host, pay.host]
    assert [e["data"]["status"] for r in rows[6:8] for e in events_for(db, r["id"], "approval")] == [
        "timed_out", "timed_out"]
    assert verify_cli(db).returncode == 0


def test_async_page_and_executor(tmp_path: Path, chromium: Browser, sites: tuple[Site, Site]) -> None:
    shop, pay = sites
    runtime, db = runtime_for(tmp_path, pay, Approver(True))

    async def main() -> tuple[Any, ...]:
        context = await chromium.browser.new_context()
        try:
            page = govern(await context.new_page(), runtime)
            await page.goto(shop.url + "/")
            with pytest.raises(ActionRefused, match="no-admin"):
                await page.goto(shop.url + "/admin")
            await page.click("#go")
            await until(lambda: shop.clicks() == ["go"])
            governed_url = page.url

            # the executor: the runtime carries out proposed actions on the (same) page, undecided
            # by the page itself (the runtime has decided)
            rt = Runtime(PlaywrightExecutor(page), policy=runtime.policy, audit=SQLiteAuditLogger(db),
                         approval_handler=Approver(True))
            results = [await rt.run_one(Action("goto", shop.host, {"url": shop.url + "/next"})),
                       await rt.run_one(Action("goto", shop.host, {"url": shop.url + "/admin"})),
                       await rt.run_one(Action("click", "elsewhere.example", {"selector": "p"})),
                       await rt.run_one(Action("evaluate", shop.host, {"value": "1 + 1"}))]
            return governed_url, page.url, results
        finally:
            await context.close()

    governed_url, final_url, (next_, admin, elsewhere, script) = chromium.run(main())
    assert governed_url == shop.url + "/" and final_url == shop.url + "/next"
    assert next_.ok and admin.status.value == "blocked" and script.status.value == "blocked"
    assert elsewhere.status.value == "failed" and "not 'elsewhere.example'" in elsewhere.error
    assert "/admin" not in shop.paths() and shop.clicks() == ["go"]
    assert len(decisions(db)) == 3 + 4  # the page's own three, the executor's four: none twice
    assert verify_cli(db).returncode == 0
