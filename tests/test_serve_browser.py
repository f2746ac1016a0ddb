"""The approvals page in a real browser (Debian's Chromium driven by Playwright).

A pending approval appears on its own (live stream), hostile parameters show as text, a click
answers it, and the agent waiting on the long poll gets the answer.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from test_serve_helpers import TOKENS, ServeProcess, records, tokens_file

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")

HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'


@pytest.fixture
def browser() -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_approve_from_the_page(tmp_path: Path, browser: Any, audit_target: str) -> None:
    with ServeProcess(tmp_path, args=["--tokens", str(tokens_file(tmp_path)), "--no-watch"],
                      audit_db=audit_target) as server:
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        response = page.goto(server.url + "/")
        assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector("#message:not([hidden])")  # no token yet: it says so
        assert "token" in page.inner_text("#message")
        page.fill("#token", TOKENS["approver"])
        page.click("#token-form button")
        page.wait_for_selector("#live.on")
        problems.clear()  # the 401s from before the token was given are expected

        # An agent asks; the page shows it without a reload.
        with server.client(TOKENS["agent"]) as agent:
            req = agent.post("/api/v1/approvals", json={
                "type": "delete", "target": "production", "agent": "cleanup-bot",
                "params": {"count": 3, "table": HOSTILE}}).json()
            card = page.wait_for_selector(f'li.card[data-id="{req["id"]}"]', timeout=10_000)
            assert card.query_selector(".what").inner_text() == "delete → production"
            assert card.query_selector(".risk").inner_text().lower() == "high"
            assert card.query_selector(".rule").inner_text() == "prod_deletes_need_approval"
            assert json.dumps(HOSTILE) in card.query_selector(".params").inner_text()  # shown as text ...
            assert page.query_selector("li.card img, li.card script") is None  # ... never as markup
            assert page.title() == "aegis approvals"

            result: dict[str, Any] = {}
            waiter = threading.Thread(target=lambda: result.update(
                answer=agent.get(f"/api/v1/approvals/{req['id']}?wait=30").json()))
            waiter.start()
            card.query_selector(".note").fill("looked fine")
            card.query_selector("button.approve").click()
            waiter.join(30)

        assert result["answer"]["status"] == "approved"
        assert result["answer"]["answered_by"] == "approver" and result["answer"]["note"] == "looked fine"
        page.wait_for_selector(f'li.card[data-id="{req["id"]}"]', state="detached")
        page.wait_for_selector("#recent tbody tr")
        assert "approved" in page.inner_text("#recent tbody tr")
        assert page.inner_text("#pending-count") == "0"
        approval = [r for r in records(server.audit_db).values() if r["kind"] == "approval"]
        assert approval[-1]["data"]["by"] == "approver"
        assert not problems, problems


def test_page_calls_need_the_right_token(tmp_path: Path, browser: Any, audit_target: str) -> None:
    with ServeProcess(tmp_path, args=["--tokens", str(tokens_file(tmp_path)), "--no-watch"],
                      audit_db=audit_target) as server:
        with server.client(TOKENS["agent"]) as agent:
            rid = agent.post("/api/v1/approvals", json={"type": "delete", "target": "production"}).json()["id"]
        page = browser.new_page()
        page.goto(server.url + "/")
        page.fill("#token", TOKENS["agent"])  # may ask, may not answer or list
        page.click("#token-form button")
        # a selector, not wait_for_function: the page's CSP forbids eval, which a string predicate
        # needs whenever it is not already true on the first check
        page.wait_for_selector("#message:has-text('403')")
        assert page.query_selector(f'li.card[data-id="{rid}"]') is None
