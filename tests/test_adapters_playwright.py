"""The Playwright adapter: Debian's Chromium driven by Playwright (sync and async APIs) against a
local site on 127.0.0.1 that counts every request it gets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from local_site import Approver, Site, decisions, events_for, local_site, verify_cli

from aegis_cli import Action, Policy, Runtime, SQLiteAuditLogger
from aegis_cli.adapters import ActionRefused
from aegis_cli.adapters.playwright import PlaywrightExecutor, govern, url_target

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: no-admin
    match: {type: goto}
    conditions:
      param_glob: {url: "*/admin*"}
    risk_level: high
    approval: block
    reason: agents stay out of the admin pages
  - name: go-needs-a-human
    match: {type: click}
    conditions:
      param_eq: {selector: "#go"}
    risk_level: medium
    approval: approve
    reason: the go button places an order
  - name: no-secrets-typed
    match: {type: fill}
    conditions:
      param_matches: {value: "(?i)password"}
    risk_level: high
    approval: block
    reason: no passwords
  - name: no-scripts
    match: {type: evaluate}
    risk_level: high
    approval: block
    reason: agents do not run scripts in the page
  - name: nowhere-else
    match: {type: goto, target: "example.com"}
    risk_level: high
    approval: block
    reason: only the local site
"""


@pytest.fixture
def site() -> Any:
    with local_site() as s:
        yield s


def make_runtime(tmp_path: Path, approver: Any = None) -> tuple[Runtime, Path]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    db = tmp_path / "audit.db"
    return Runtime(policy=Policy.from_yaml(tmp_path / "policy.yaml"), approval_handler=approver,
                   audit=SQLiteAuditLogger(db)), db


@pytest.fixture
def browser() -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_url_target() -> None:
    assert url_target("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert url_target("https://Shop.Example.com:443/cart") == "shop.example.com"
    assert url_target("http://[::1]:81/") == "[::1]:81"
    assert url_target("about:blank") == "about"


def test_sync_page(tmp_path: Path, site: Site, browser: Any) -> None:
    asked_with_clicks: list[int] = []  # orders the site had seen when the person was asked
    approver = Approver(True, on_ask=lambda a: asked_with_clicks.append(len(site.paths("POST"))))
    runtime, db = make_runtime(tmp_path, approver)
    page = govern(browser.new_page(), runtime)
    try:
        page.goto(site.url + "/")
        assert page.title() == "home"
        host = site.url.removeprefix("http://")

        # a blocked goto: the page stays, the server sees nothing
        hits = len(site.hits)
        with pytest.raises(ActionRefused, match="no-admin") as info:
            page.goto(site.url + "/admin")
        assert info.value.result.status.value == "blocked"
        assert page.url == site.url + "/" and len(site.hits) == hits

        # fill / type / press / check / select_option / set_input_files: allowed ones run
        page.fill("#name", "Ada")
        page.type("#name", " L.")
        page.press("#name", "End")
        page.check("#agree")
        assert page.select_option("#colour", "blue") == ["blue"]
        upload = tmp_path / "note.txt"
        upload.write_text("hi")
        page.set_input_files("#upload", str(upload))
        assert page.input_value("#name") == "Ada L." and page.is_checked("#agree")

        with pytest.raises(ActionRefused, match="no-secrets-typed"):
            page.fill("#name", "my password is hunter2")
        assert page.input_value("#name") == "Ada L."
        with pytest.raises(ActionRefused, match="no-scripts"):
            page.evaluate("document.title = 'pwned'")
        assert page.title() == "home"

        # an approved click waits for the person, then fires; a denied one never fires
        page.click("#go")
        page.wait_for_function("window.clicked === 1")
        assert asked_with_clicks == [0] and len(approver.asked) == 1
        runtime.approval_handler = Approver(False)
        with pytest.raises(ActionRefused, match="not today"):
            page.click("#go")
        runtime.approval_handler = Approver(None, timeout=0.3)
        with pytest.raises(ActionRefused, match="no answer in time"):
            page.click("#go")
        page.wait_for_timeout(200)
        assert site.paths("POST") == ["/clicked"]  # only the approved click reached the site

        # a plain link click is decided on the host of the page it is on, then navigates
        page.click("#next")
        page.wait_for_url(site.url + "/next")
    finally:
        page.close()

    rows = decisions(db)
    assert all(r["origin"]["via"] == "playwright" for r in rows)
    assert [r["action"]["type"] for r in rows] == [
        "goto", "goto", "fill", "type", "press", "check", "select_option", "set_input_files", "fill", "evaluate",
        "click", "click", "click", "click"]
    assert {r["action"]["target"] for r in rows} == {host}
    assert rows[1]["action"]["params"] == {"url": site.url + "/admin"}
    assert rows[3]["action"]["params"] == {"selector": "#name", "value": " L."}
    assert rows[7]["action"]["params"] == {"selector": "#upload", "value": str(upload)}
    outcomes = [[e["data"]["status"] for e in events_for(db, r["id"], "execution")] for r in rows]
    assert outcomes == [["ok"], [], ["ok"], ["ok"], ["ok"], ["ok"], ["ok"], ["ok"], [], [], ["ok"], [], [], ["ok"]]
    assert [events_for(db, r["id"], "approval")[0]["data"]["status"] for r in rows[10:13]] == [
        "approved", "denied", "timed_out"]
    assert verify_cli(db).returncode == 0


def test_a_page_that_cannot_be_reached_raises_playwrights_own_error(tmp_path: Path, browser: Any) -> None:
    from playwright.sync_api import Error

    runtime, db = make_runtime(tmp_path)
    with local_site() as gone:
        url = gone.url
    page = govern(browser.new_page(), runtime)
    try:
        with pytest.raises(Error):
            page.goto(url + "/")
    finally:
        page.close()
    (row,) = decisions(db)
    assert events_for(db, row["id"], "execution")[0]["data"]["status"] == "error"


def test_async_page_and_executor(tmp_path: Path, site: Site) -> None:
    from playwright.async_api import async_playwright

    runtime, db = make_runtime(tmp_path, Approver(True))
    host = site.url.removeprefix("http://")

    async def main() -> tuple[Any, ...]:
        async with async_playwright() as p:
            b = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = govern(await b.new_page(), runtime)
                await page.goto(site.url + "/")
                with pytest.raises(ActionRefused, match="no-admin"):
                    await page.goto(site.url + "/admin")
                with pytest.raises(ActionRefused, match="nowhere-else"):
                    await page.goto("https://example.com/")
                await page.click("#go")
                await page.wait_for_function("window.clicked === 1")
                governed_url = page.url

                # the executor: the runtime carries out proposed actions on the (same) page
                rt = Runtime(PlaywrightExecutor(page), policy=runtime.policy, audit=SQLiteAuditLogger(db),
                             approval_handler=Approver(True))
                results = [await rt.run_one(Action("goto", host, {"url": site.url + "/next"})),
                           await rt.run_one(Action("goto", host, {"url": site.url + "/admin"})),
                           await rt.run_one(Action("click", "elsewhere.example", {"selector": "p"})),
                           await rt.run_one(Action("evaluate", host, {"value": "1 + 1"}))]
                return governed_url, page.url, results
            finally:
                await b.close()

    governed_url, final_url, (next_, admin, elsewhere, script) = asyncio.run(main())
    assert governed_url == site.url + "/" and final_url == site.url + "/next"
    assert next_.ok and admin.status.value == "blocked" and script.status.value == "blocked"
    assert elsewhere.status.value == "failed" and "not 'elsewhere.example'" in elsewhere.error
    assert "/admin" not in site.paths() and site.paths("POST") == ["/clicked"]
    assert verify_cli(db).returncode == 0
