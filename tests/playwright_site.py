"""Two local sites for the Playwright adapter tests, both on 127.0.0.1 (so two hosts by port): a
shop whose page counts its clicks (on the page and at the server) and embeds, in an iframe, a pay
site whose Pay button does the same. Every request either site gets is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import local_site
from local_site import serve

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# PAY_HOST: the pay site's host:port
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
  - name: no-deletes
    match: {type: "*click"}
    conditions:
      param_matches: {selector: "(?i)delete"}
    risk_level: high
    approval: block
    reason: nothing is deleted by an agent
  - name: go-needs-a-human
    match: {type: click}
    conditions:
      param_eq: {selector: "#go"}
    risk_level: medium
    approval: approve
    reason: the go button places an order
  - name: paying-needs-a-human
    match: {type: click, target: "PAY_HOST"}
    risk_level: high
    approval: approve
    reason: a person pays
  - name: mouse-needs-a-human
    match: {type: mouse_click}
    risk_level: medium
    approval: approve
    reason: clicks at coordinates cannot be told apart
  - name: no-passwords
    match: {type: "*"}
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
  - name: no-deleting-dialogs
    match: {type: dialog_accept}
    conditions:
      param_matches: {message: "(?i)delete"}
    risk_level: high
    approval: block
    reason: a person confirms deletions
  - name: no-admin-api
    match: {type: "*"}
    conditions:
      param_glob: {path: "/admin*"}
    risk_level: critical
    approval: block
    reason: the admin API is not for agents
  - name: big-orders-are-blocked
    match: {type: post}
    conditions:
      param_gt: {json.amount: 100}
    risk_level: high
    approval: block
    reason: orders over 100 are not for agents
"""

SHOP = """<!doctype html><title>home</title>
<p>clicks: <span id="count">0</span></p>
<button id="go" onclick="hit('go')">go</button>
<button id="delete" onclick="hit('delete')">Delete</button>
<label>Name <input id="name" placeholder="your name"></label>
<input id="agree" type="checkbox" data-testid="agree">
<select id="colour"><option value="red">red</option><option value="blue">blue</option></select>
<input id="upload" type="file">
<button id="ask" onclick="fetch('/confirmed?answer=' + confirm('Delete everything?'), {method: 'POST'})">ask</button>
<a id="next" href="/next">next</a> <a id="open" href="/" target="_blank">open</a>
<iframe id="pay" src="PAY/pay"></iframe>
<script>
function hit(what) {
  const c = document.getElementById('count');
  c.textContent = String(Number(c.textContent) + 1);
  fetch('/clicked?what=' + what, {method: 'POST'});
}
</script>"""

PAY = """<!doctype html><title>pay</title>
<p>paid: <span id="paid">0</span></p>
<button id="paybtn" onclick="const p = document.getElementById('paid');
  p.textContent = String(Number(p.textContent) + 1); fetch('/clicked?what=pay', {method: 'POST'})">Pay</button>"""

PAGES = {"/next": "<!doctype html><title>next</title><p>next page</p>",
         "/admin": "<!doctype html><title>admin</title><p>admin page</p>"}


@dataclass
class Site(local_site.Site):
    """A live site: ``url``, and ``hits``, every request it answered, in order."""

    url: str = ""

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def clicks(self) -> list[str]:
        return [p.removeprefix("/clicked?what=") for p in self.paths("POST") if p.startswith("/clicked")]


@contextmanager
def shop_and_pay() -> Iterator[tuple[Site, Site]]:
    """The shop (whose home page embeds the pay site's /pay) and the pay site."""
    shop, pay = Site(), Site()
    with serve(pay, lambda path: PAY if path == "/pay" else None), \
            serve(shop, lambda path: SHOP.replace("PAY", pay.url) if path == "/" else PAGES.get(path)):
        yield shop, pay
