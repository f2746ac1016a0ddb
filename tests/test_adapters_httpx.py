"""The httpx adapter against a real HTTP server on 127.0.0.1 that counts every request it gets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from local_site import Approver, Site, decisions, events_for, local_site, verify_cli

from aegis_cli import Action, Policy, RoutingExecutor, Runtime, SQLiteAuditLogger
from aegis_cli.adapters import ActionRefused
from aegis_cli.adapters.httpx import HttpxExecutor, govern

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
rules:
  - name: no-deletes
    match: {type: delete}
    risk_level: high
    approval: block
    reason: nothing is deleted from here
  - name: admin-is-off-limits
    match: {type: "*"}
    conditions:
      param_glob: {path: "/admin*"}
    risk_level: critical
    approval: block
    reason: the admin API is not for agents
  - name: big-orders-need-a-human
    match: {type: post}
    conditions:
      param_gt: {json.amount: 100}
    risk_level: high
    approval: approve
    reason: orders over 100 are reviewed
  - name: debug-query-blocked
    match: {type: get}
    conditions:
      param_eq: {query.debug: "1"}
    risk_level: medium
    approval: block
    reason: no debug mode
"""


@pytest.fixture
def site() -> Any:
    with local_site() as s:
        yield s


def runtime_for(tmp_path: Path, approver: Any = None) -> tuple[Runtime, Path]:
    db = tmp_path / "audit.db"
    return Runtime(policy=_policy(tmp_path), approval_handler=approver, audit=SQLiteAuditLogger(db)), db


def _policy(tmp_path: Path) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return Policy.from_yaml(path)


def test_allowed_requests_run_with_the_clients_own_settings(tmp_path: Path, site: Site) -> None:
    runtime, db = runtime_for(tmp_path)
    with govern(httpx.Client(base_url=site.url, headers={"x-team": "blue"}, timeout=5), runtime) as client:
        r = client.get("/items", params={"page": "2", "tag": ["a", "b"]})
        assert r.status_code == 200 and r.json()["path"] == "/items?page=2&tag=a&tag=b"
        r = client.post("/orders", json={"amount": 5, "item": "pen"})
        assert r.status_code == 200
    assert [(h.method, h.path) for h in site.hits] == [("GET", "/items?page=2&tag=a&tag=b"), ("POST", "/orders")]
    assert all(h.headers["x-team"] == "blue" for h in site.hits)  # the client's headers kept
    assert json.loads(site.hits[1].body) == {"amount": 5, "item": "pen"}

    get, post = decisions(db)
    port = site.url.rsplit(":", 1)[1]
    assert get["action"]["type"] == "get" and get["action"]["target"] == f"127.0.0.1:{port}"
    assert get["action"]["params"] == {"path": "/items", "query": {"page": "2", "tag": ["a", "b"]}}
    assert post["action"]["params"]["json"] == {"amount": 5, "item": "pen"}
    assert get["origin"] == {"via": "httpx", "tool": "GET"}
    for d in (get, post):
        assert [e["data"]["status"] for e in events_for(db, d["id"], "execution")] == ["ok"]
    assert verify_cli(db).returncode == 0


def test_a_blocked_request_never_leaves(tmp_path: Path, site: Site) -> None:
    runtime, db = runtime_for(tmp_path)
    client = govern(httpx.Client(base_url=site.url), runtime)
    with pytest.raises(ActionRefused) as info:
        client.delete("/items/1")
    assert "no-deletes" in str(info.value) and "nothing is deleted" in str(info.value)
    assert info.value.result.status.value == "blocked"
    with pytest.raises(ActionRefused, match="admin-is-off-limits"):
        client.get("/admin/users")
    with pytest.raises(ActionRefused, match="debug-query-blocked"):
        client.get("/items", params={"debug": "1"})
    assert site.hits == []  # not one byte reached the server
    client.get("/items")  # the client still works
    assert site.paths() == ["/items"]
    blocked = [d for d in decisions(db) if d["decision"]["approval"] == "block"]
    assert [d["decision"]["rule"] for d in blocked] == ["no-deletes", "admin-is-off-limits", "debug-query-blocked"]
    assert all(events_for(db, d["id"], "execution") == [] for d in blocked)
    assert verify_cli(db).returncode == 0


def test_a_redirect_to_a_blocked_path_is_refused_at_that_hop(tmp_path: Path, site: Site) -> None:
    runtime, _ = runtime_for(tmp_path)
    client = govern(httpx.Client(base_url=site.url, follow_redirects=True), runtime)
    with pytest.raises(ActionRefused, match="admin-is-off-limits"):
        client.get("/redirect?to=/admin/users")
    assert site.paths() == ["/redirect?to=/admin/users"]  # the first hop went; the second never left


def test_unreadable_json_is_not_sent(tmp_path: Path, site: Site) -> None:
    runtime, db = runtime_for(tmp_path)
    client = govern(httpx.Client(base_url=site.url), runtime)
    with pytest.raises(ValueError, match="JSON body could not be read"):
        client.post("/orders", content=b'{"amount": 5, "amount": 5000}', headers={"content-type": "application/json"})
    assert site.hits == []
    (d,) = decisions(db)
    assert "json" not in d["action"]["params"]
    assert events_for(db, d["id"], "execution")[0]["data"]["status"] == "error"


def test_approval_waits_for_the_person_and_a_timeout_denies(tmp_path: Path, site: Site) -> None:
    seen_before_answer: list[int] = []
    approver = Approver(True, on_ask=lambda action: seen_before_answer.append(len(site.hits)))
    runtime, db = runtime_for(tmp_path, approver)
    client = govern(httpx.Client(base_url=site.url), runtime)
    assert client.post("/orders", json={"amount": 500}).status_code == 200
    assert seen_before_answer == [0] and site.paths("POST") == ["/orders"]

    runtime.approval_handler = Approver(False)
    with pytest.raises(ActionRefused, match="not today"):
        client.post("/orders", json={"amount": 600})
    runtime.approval_handler = Approver(None, timeout=0.3)
    with pytest.raises(ActionRefused, match="no answer in time"):
        client.post("/orders", json={"amount": 700})
    assert site.paths("POST") == ["/orders"]  # only the approved one
    statuses = [events_for(db, d["id"], "approval")[0]["data"]["status"] for d in decisions(db)]
    assert statuses == ["approved", "denied", "timed_out"]
    assert verify_cli(db).returncode == 0


def test_async_client(tmp_path: Path, site: Site) -> None:
    approver = Approver(True)
    runtime, db = runtime_for(tmp_path, approver)

    async def main() -> list[int]:
        async with govern(httpx.AsyncClient(base_url=site.url), runtime) as client:
            codes = [(await client.get("/a")).status_code,
                     (await client.post("/orders", json={"amount": 101})).status_code]
            with pytest.raises(ActionRefused, match="no-deletes"):
                await client.delete("/a")
            return codes

    assert asyncio.run(main()) == [200, 200]
    assert site.paths() == ["/a", "/orders"] and len(approver.asked) == 1
    assert [d["origin"]["via"] for d in decisions(db)] == ["httpx"] * 3
    assert verify_cli(db).returncode == 0


def test_sync_client_called_from_a_coroutine(tmp_path: Path, site: Site) -> None:
    """Sync code inside a running loop (a common mistake) still gets decisions and approvals."""
    runtime, _ = runtime_for(tmp_path, Approver(True))
    client = govern(httpx.Client(base_url=site.url), runtime)

    async def main() -> None:
        assert client.post("/orders", json={"amount": 500}).status_code == 200
        with pytest.raises(ActionRefused):
            client.delete("/x")

    asyncio.run(main())
    assert site.paths() == ["/orders"]


def test_governing_twice_decides_once(tmp_path: Path, site: Site) -> None:
    runtime, db = runtime_for(tmp_path)
    client = govern(govern(httpx.Client(base_url=site.url), runtime), runtime)
    client.get("/once")
    assert len(decisions(db)) == 1


def test_transport_errors_reach_the_caller_as_without_aegis(tmp_path: Path) -> None:
    runtime, db = runtime_for(tmp_path)
    with local_site() as gone:
        url = gone.url
    client = govern(httpx.Client(base_url=url), runtime)
    with pytest.raises(httpx.ConnectError):
        client.get("/")
    (d,) = decisions(db)
    assert events_for(db, d["id"], "execution")[0]["data"]["status"] == "error"


def test_executor_sends_allowed_actions_and_routes(tmp_path: Path, site: Site) -> None:
    host = site.url.removeprefix("http://")
    db = tmp_path / "audit.db"

    async def main() -> list[Any]:
        executor = HttpxExecutor(scheme="http")
        runtime = Runtime(RoutingExecutor({"127.0.0.1*": executor}), policy=_policy(tmp_path),
                          audit=SQLiteAuditLogger(db))
        try:
            return [await runtime.run_one(Action("post", host, {"path": "/orders", "json": {"amount": 3}})),
                    await runtime.run_one(Action("get", host, {"path": "/items", "query": {"q": "x"}})),
                    await runtime.run_one(Action("delete", host, {"path": "/items/1"})),
                    await runtime.run_one(Action("get", "evil.example@" + host, {"path": "/"}))]
        finally:
            await executor.aclose()

    post, get, delete, odd = asyncio.run(main())
    assert post.ok and post.value.json()["path"] == "/orders" and get.ok
    assert delete.status.value == "blocked"
    assert odd.status.value == "failed"  # no route: not a 127.0.0.1 target
    assert [(h.method, h.path) for h in site.hits] == [("POST", "/orders"), ("GET", "/items?q=x")]
    assert json.loads(site.hits[0].body) == {"amount": 3}
    assert verify_cli(db).returncode == 0


def test_executor_refuses_a_target_that_is_not_a_host(tmp_path: Path, site: Site) -> None:
    host = site.url.removeprefix("http://")
    executor = HttpxExecutor(scheme="http")
    with pytest.raises(ValueError, match="not a plain host"):
        asyncio.run(executor.execute(Action("get", f"x@{host}", {"path": "/"})))
    assert site.hits == []
