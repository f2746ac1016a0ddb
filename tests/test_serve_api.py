"""``aegis serve`` through a real uvicorn server: decisions, auditing, tokens, hostile input, policy swaps."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg import verifies
from test_serve_helpers import (
    EXAMPLE_POLICY,
    TOKENS,
    ServeProcess,
    aegis,
    records,
    stored_text,
    tokens_file,
    trail_for,
    wait_for,
)

from aegis_cli.audit import is_postgres

ACTIONS: list[dict[str, Any]] = [
    {"type": "delete", "target": "production", "params": {"count": 500}},
    {"type": "delete", "target": "production", "params": {"count": 5}},
    {"type": "delete_rows", "target": "prod-eu"},
    {"type": "read", "target": "crm", "agent": "support-bot"},
    {"type": "Bash", "target": "claude-code", "params": {"command": "rm -rf /tmp/x"}},
    {"type": "Bash", "target": "claude-code", "params": {"command": "ls -la"}},
    {"type": "transfer", "target": "payments", "params": {"amount": 5000, "currency": "USD"}},
    {"type": "transfer", "target": "payments", "params": {"amount": 5, "currency": "JPY"}},
    {"type": "transfer", "target": "payments", "params": {"amount": 5, "currency": "EUR"}},
    {"type": "send", "target": "email", "params": {"to": "a@example.com", "password": "hunter2"}},
    {"type": "query", "target": "production_db", "params": {"sql": "DROP TABLE users"}},
    {"type": "unknown_tool", "target": "anywhere"},
    {"type": "read\u0000", "target": "crm"},
    # a NUL beside non-ASCII text: PostgreSQL's text columns refuse NUL, once failing every such decision
    {"type": "l\u00f6schen\u0000", "target": "crm\u0000\u00e9", "agent": "bot\u00e9\u0000"},
    {"type": "READ", "target": "CRM", "session": "s-1"},
]

# The module's servers run once on SQLite and once on PostgreSQL (tests/pg.py).
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def open_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("serve-open")
    with ServeProcess(tmp, args=["--no-watch"], audit_db=trail_for(request, tmp)) as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def token_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("serve-tokens")
    with ServeProcess(tmp, args=["--tokens", str(tokens_file(tmp)), "--no-watch"],
                      audit_db=trail_for(request, tmp)) as server:
        yield server


# -- decisions -------------------------------------------------------------------------------------

def test_decisions_equal_the_cli_and_are_audited(open_server: ServeProcess) -> None:
    cli = aegis("evaluate", "-", "-p", str(EXAMPLE_POLICY), "--fail-on", "never",
                input="".join(json.dumps(a) + "\n" for a in ACTIONS))
    assert cli.returncode == 0, cli.stderr
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(expected) == len(ACTIONS)

    with open_server.client() as http:
        singles = [http.post("/api/v1/evaluate", json=a) for a in ACTIONS]
        batch = http.post("/api/v1/evaluate", json={"actions": ACTIONS})
    assert all(r.status_code == 200 for r in singles), [r.text for r in singles]
    assert batch.status_code == 200
    for answers in ([r.json() for r in singles], batch.json()["decisions"]):
        ids = [a.pop("audit_id") for a in answers]
        assert answers == expected
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)

    # Every answer names its audit record, and the record holds that decision (params redacted).
    recs = records(open_server.audit_db)
    for answer in [r.json() for r in singles]:
        rec = recs[answer["audit_id"]]
        assert rec["kind"] == "decision"
        assert rec["decision"]["approval"] == answer["approval"]
        assert rec["decision"]["rule"] == answer["rule"]
        assert rec["action"]["type"] == answer["action"]["type"]
        assert rec["policy_hash"] == answer["policy_hash"]
    email = next(recs[r.json()["audit_id"]] for r in singles if r.json()["action"]["type"] == "send")
    assert email["action"]["params"]["password"] != "hunter2"


def test_explain_and_health(open_server: ServeProcess) -> None:
    with open_server.client() as http:
        r = http.post("/api/v1/evaluate?explain=true", json={"type": "read", "target": "crm"})
        health = http.get("/healthz").json()
    assert r.status_code == 200
    assert r.json()["explanation"][-1]["matched"] is True
    assert health["status"] == "ok" and health["policy_hash"] == r.json()["policy_hash"]


def test_concurrent_decisions_share_commits(open_server: ServeProcess) -> None:
    with open_server.client() as http:
        before = http.get("/healthz").json()["audit"]

    def client(n: int) -> list[int]:
        with httpx.Client(base_url=open_server.url) as c:
            return [c.post("/api/v1/evaluate", json={"type": "read", "target": f"t{n}-{i}"}).json()["audit_id"]
                    for i in range(25)]

    with ThreadPoolExecutor(16) as pool:
        ids = [i for got in pool.map(client, range(16)) for i in got]
    with open_server.client() as http:
        after = http.get("/healthz").json()["audit"]
    assert len(set(ids)) == 400
    assert after["decisions"] - before["decisions"] == 400
    assert after["batches"] - before["batches"] <= 400  # never more commits than decisions
    assert aegis("audit", "verify", "--audit-db", str(open_server.audit_db)).returncode == 0


# -- tokens and roles ------------------------------------------------------------------------------

def test_token_roles(token_server: ServeProcess) -> None:
    action = {"type": "read", "target": "crm"}
    with token_server.client() as anon:
        r = anon.post("/api/v1/evaluate", json=action)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert anon.get("/api/v1/policy").status_code == 401
        assert anon.get("/healthz").status_code == 200  # liveness needs no token
        assert anon.get("/").status_code == 200  # nor does the page; its API calls do
    with token_server.client("not-a-known-token-000000000") as wrong:
        assert wrong.post("/api/v1/evaluate", json=action).status_code == 401
    with httpx.Client(base_url=token_server.url, headers={"Authorization": f"Basic {TOKENS['agent']}"}) as basic:
        assert basic.post("/api/v1/evaluate", json=action).status_code == 401

    with token_server.client(TOKENS["agent"]) as agent:
        r = agent.post("/api/v1/evaluate", json=action)
        assert r.status_code == 200
        assert agent.get("/api/v1/policy").status_code == 200
        assert agent.put("/api/v1/policy", content="version: '1'\n",
                         headers={"content-type": "application/yaml"}).status_code == 403
        assert agent.post("/api/v1/approvals/1/approve").status_code == 403
        assert agent.get("/api/v1/audit").status_code == 403
    with token_server.client(TOKENS["approver"]) as approver:
        assert approver.get("/api/v1/audit?limit=1").status_code == 200
        r = approver.put("/api/v1/policy", content="version: '1'\n", headers={"content-type": "application/yaml"})
        assert r.status_code == 403 and "admin" in r.json()["message"]

    # The caller's token name is recorded, the token itself appears nowhere.
    with token_server.client(TOKENS["agent"]) as agent:
        rid = agent.post("/api/v1/evaluate", json=action).json()["audit_id"]
    assert records(token_server.audit_db)[rid]["origin"] == {"via": "serve", "client": "agent"}
    stored = stored_text(token_server.audit_db)
    for secret in TOKENS.values():
        assert secret not in stored
        assert secret not in token_server.stderr


def test_env_token_is_admin(tmp_path: Path, audit_target: str) -> None:
    token = "env-admin-token-0123456789abcdef"
    with ServeProcess(tmp_path, args=["--no-watch"], env={"AEGIS_API_TOKEN": token}, audit_db=audit_target) as server:
        with server.client() as anon:
            assert anon.post("/api/v1/evaluate", json={"type": "a", "target": "b"}).status_code == 401
        with server.client(token) as admin:
            r = admin.put("/api/v1/policy", content="version: '1'\nrules: []\n",
                          headers={"content-type": "application/yaml"})
            assert r.status_code == 200, r.text


def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    r = aegis("serve", "-p", str(EXAMPLE_POLICY), "--host", "0.0.0.0", "--port", "0",
              "--audit-db", str(tmp_path / "a.db"), cwd=tmp_path, timeout=30)
    assert r.returncode == 2
    assert "without authentication" in r.stderr and "AEGIS_API_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_token_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens:\n  - {name: a, role: root, token: 0123456789abcdefgh}\n")
    r = aegis("serve", "-p", str(EXAMPLE_POLICY), "--tokens", str(bad), "--port", "0",
              "--audit-db", str(tmp_path / "a.db"), cwd=tmp_path, timeout=30)
    assert r.returncode == 2
    assert f"{bad}:2" in r.stderr and "role must be one of" in r.stderr


def test_no_token_server_answers_loopback_names_only(open_server: ServeProcess) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not reach a token-less server.
    with open_server.client() as http:
        r = http.post("/api/v1/evaluate", json={"type": "read", "target": "crm"}, headers={"Host": "evil.example"})
        assert r.status_code == 403
        r = http.get("/api/v1/policy", headers={"Host": f"localhost:{open_server.port}"})
        assert r.status_code == 200
        # A cross-site browser request may not change anything.
        r = http.post("/api/v1/evaluate", json={"type": "read", "target": "crm"},
                      headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = http.post("/api/v1/evaluate", json={"type": "read", "target": "crm"},
                      headers={"Origin": open_server.url})
        assert r.status_code == 200


# -- hostile input ---------------------------------------------------------------------------------

def test_hostile_input(open_server: ServeProcess) -> None:
    with open_server.client() as http:
        before = max(records(open_server.audit_db), default=0)
        cases: list[tuple[int, str, dict[str, Any]]] = [
            (413, "body_too_large", {"content": b"[" + b"1," * (600 * 1024) + b"1]"}),
            (413, "body_too_large", {"content": iter([b"{", b" " * (1 << 20), b"}"])}),  # chunked, no length
            (400, "malformed_json", {"content": b'{"type": "read", "target": '}),
            (400, "malformed_json", {"content": b""}),
            (400, "malformed_json", {"content": b'{"type": "read", "target": "x", "params": {"n": NaN}}'}),
            (400, "malformed_json", {"content": b'{"type": "read", "target": "x", "params": {"n": 1e999}}'}),
            (400, "malformed_json", {"content": b'{"type": "read", "target": "\xff\xfe"}'}),
            (400, "malformed_json", {"content": b'{"type": "read", "target": "\\ud800"}'}),
            (400, "malformed_json", {"content": b"[" * 100_000 + b"]" * 100_000}),
            (400, "malformed_json", {"content": b'{"type": "read", "type": "delete", "target": "x"}'}),
            (400, "malformed_json", {"content": b'{"type": "read", "target": "x", "params": {"a": 1, "a": 2}}'}),
            (422, "invalid_action", {"json": {"type": "read"}}),
            (422, "invalid_action", {"json": {"type": "read", "target": "x", "sudo": True}}),
            (422, "invalid_action", {"json": {"type": 1, "target": "x"}}),
            (422, "invalid_action", {"json": {"type": "read", "target": "x", "params": [1, 2]}}),
            (422, "invalid_action", {"json": ["not", "an", "object"]}),
            (422, "invalid_action", {"json": {"actions": [{"type": "read", "target": "x"}, {"type": "read"}]}}),
            (422, "invalid_request", {"json": {"actions": []}}),
            (422, "invalid_request", {"json": {"actions": [{"type": "a", "target": "b"}] * 1001}}),
            (422, "invalid_request", {"json": {"actions": [], "extra": 1}}),
        ]
        for status, code, kwargs in cases:
            r = http.post("/api/v1/evaluate", **kwargs)
            assert r.status_code == status, (kwargs, r.text)
            assert r.headers["content-type"] == "application/json"
            assert r.json()["error"] == code and r.json()["message"]
        assert http.get("/api/v1/nothing").json()["error"] == "not_found"
        assert http.get("/api/v1/evaluate").status_code == 405
        assert http.post("/api/v1/approvals/1/approve", content=b"{bad").status_code == 400
        assert http.post("/api/v1/approvals/1/approve", json={"note": 5}).status_code == 422
        assert http.post("/api/v1/approvals/1/approve", json={"note": "x", "as": "root"}).status_code == 422
        assert http.get("/api/v1/approvals/1?wait=abc").status_code == 422
        assert http.get("/api/v1/approvals?status=everything").status_code == 422
        assert http.get("/api/v1/audit?kind=bogus").status_code == 422
        assert http.get("/api/v1/audit?since=yesterday-ish").status_code == 422
        assert http.get("/api/v1/audit?limit=0").status_code == 422
        # Nothing rejected reached the audit trail, the trail is intact, and the server still decides.
        assert max(records(open_server.audit_db), default=0) == before
        assert http.post("/api/v1/evaluate", json={"type": "read", "target": "x"}).status_code == 200
    assert aegis("audit", "verify", "--audit-db", str(open_server.audit_db)).returncode == 0


# -- the policy ------------------------------------------------------------------------------------

NEW_POLICY = """\
version: "1"
defaults: {risk_level: high, approval: block}
rules:
  - name: reads_only
    match: {type: read}
    risk_level: low
    approval: auto
"""

BROKEN_POLICY = """\
version: "1"
rules:
  - name: oops
    match: {type: read}
    approval: maybe
"""


def test_policy_put_while_requests_are_in_flight(tmp_path: Path, audit_target: str) -> None:
    with ServeProcess(tmp_path, args=["--tokens", str(tokens_file(tmp_path)), "--no-watch"],
                      audit_db=audit_target) as server:
        with server.client(TOKENS["admin"]) as admin:
            old = admin.get("/api/v1/policy").json()
        assert old["changed_by"] == "startup" and old["policy"]["rules"]
        new_hash: list[str] = []
        stop = threading.Event()
        answers: list[httpx.Response] = []

        def hammer() -> None:
            with server.client(TOKENS["agent"]) as c:
                while not stop.is_set():
                    answers.append(c.post("/api/v1/evaluate", json={"type": "delete", "target": "production"}))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(answers) > 20)
            with server.client(TOKENS["admin"]) as admin:
                bad = admin.put("/api/v1/policy", content=BROKEN_POLICY, headers={"content-type": "application/yaml"})
                assert bad.status_code == 422
                issue = bad.json()["issues"][0]
                assert issue["line"] == 5 and "maybe" in issue["message"] and issue["severity"] == "error"
                assert admin.get("/api/v1/policy").json()["hash"] == old["hash"]
                bad_json = admin.put("/api/v1/policy", content=b'{"version": "1", "rules": [{"match": 3}]}',
                                     headers={"content-type": "application/json"})
                assert bad_json.status_code == 422 and bad_json.json()["issues"]
                assert admin.put("/api/v1/policy", content=b"{oops",
                                 headers={"content-type": "application/json"}).status_code == 400
                assert admin.put("/api/v1/policy", content=NEW_POLICY,
                                 headers={"content-type": "text/plain"}).status_code == 415
                wait_for(lambda: len(answers) > 60)
                good = admin.put("/api/v1/policy", content=NEW_POLICY, headers={"content-type": "application/yaml"})
                assert good.status_code == 200, good.text
                new_hash.append(good.json()["hash"])
                assert good.json()["previous_hash"] == old["hash"]
                n = len(answers)
                wait_for(lambda: len(answers) > n + 20)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert all(r.status_code == 200 for r in answers)
        hashes = [r.json()["policy_hash"] for r in answers]
        assert set(hashes) == {old["hash"], new_hash[0]}
        # Decisions under the new policy are the new policy's (delete: no rule, defaults block).
        seen_new = hashes.index(new_hash[0])
        assert all(r.json()["approval"] == "block" for r in answers[seen_new:]
                   if r.json()["policy_hash"] == new_hash[0])
        with server.client(TOKENS["admin"]) as admin:
            now = admin.get("/api/v1/policy").json()
            assert now["hash"] == new_hash[0] and now["changed_by"] == "root"
            # JSON bodies work too, and a round trip through GET is a valid PUT.
            back = admin.put("/api/v1/policy", json=old["policy"])
            assert back.status_code == 200 and back.json()["hash"] == old["hash"]
        changes = [r for r in records(server.audit_db).values() if r["kind"] == "policy_change"]
        assert [(c["data"]["by"], c["data"]["old_hash"], c["data"]["new_hash"]) for c in changes] == [
            ("root", old["hash"], new_hash[0]), ("root", new_hash[0], old["hash"])]
        assert server.stop() == 0


def test_watched_policy_file(tmp_path: Path, audit_target: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE_POLICY.read_text())
    with ServeProcess(tmp_path, policy=policy, audit_db=audit_target) as server, server.client() as http:
        first = http.get("/api/v1/policy").json()["hash"]
        policy.write_text(BROKEN_POLICY)
        wait_for(lambda: "policy change refused" in server.stderr)
        assert ":5:" in server.stderr  # located
        assert http.get("/api/v1/policy").json()["hash"] == first
        assert http.post("/api/v1/evaluate", json={"type": "read", "target": "crm"}).status_code == 200
        policy.write_text(NEW_POLICY)
        changed = wait_for(lambda: (p := http.get("/api/v1/policy").json())["hash"] != first and p)
        assert changed["changed_by"] == "watcher"
        r = http.post("/api/v1/evaluate", json={"type": "write", "target": "crm"}).json()
        assert r["approval"] == "block" and r["policy_hash"] == changed["hash"]
    changes = [r for r in records(server.audit_db).values() if r["kind"] == "policy_change"]
    assert len(changes) == 1 and changes[0]["data"]["by"] == "watcher"


# -- the audit trail over HTTP ---------------------------------------------------------------------

def test_audit_pages_and_stream(tmp_path: Path, audit_target: str) -> None:
    with ServeProcess(tmp_path, args=["--no-watch"], audit_db=audit_target) as server, server.client() as http:
        for i in range(7):
            http.post("/api/v1/evaluate", json={"type": "read" if i % 2 else "delete", "target": "production"})
        got: list[int] = []
        cursor = 0
        while cursor is not None:
            page = http.get(f"/api/v1/audit?limit=3&after={cursor}").json()
            got += [r["id"] for r in page["records"]]
            cursor = page["next_cursor"]
        assert got == list(range(1, 8))
        blocks = http.get("/api/v1/audit?approval=approve").json()["records"]
        assert [r["action"]["type"] for r in blocks] == ["delete"] * 4
        assert http.get("/api/v1/audit?type=read&kind=decision").json()["records"][0]["id"] == 2

        events: list[dict[str, Any]] = []
        opened = threading.Event()

        def listen() -> None:
            with httpx.Client(base_url=server.url, timeout=20) as c, c.stream("GET", "/api/v1/audit/stream") as s:
                assert s.headers["content-type"].startswith("text/event-stream")
                opened.set()
                for line in s.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        if len(events) == 2:
                            return

        t = threading.Thread(target=listen)
        t.start()
        assert opened.wait(10)
        http.post("/api/v1/evaluate", json={"type": "read", "target": "a"})
        # a record written by another process shows up too
        assert aegis("evaluate", "-p", str(EXAMPLE_POLICY), "--type", "read", "--target", "b", "--record",
                     "--audit-db", str(server.audit_db)).returncode == 0
        t.join(20)
        assert [e["id"] for e in events] == [8, 9]
        assert [e["action"]["target"] for e in events] == ["a", "b"]
        # A reconnecting client resumes after the last event it saw.
        with httpx.Client(base_url=server.url, timeout=20) as c, c.stream(
                "GET", "/api/v1/audit/stream?kind=decision", headers={"Last-Event-ID": "7"}) as s:
            first = next(json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: "))
        assert first["id"] == 8


# -- lifecycle -------------------------------------------------------------------------------------

def test_sigkill_loses_no_answered_decision(tmp_path: Path, audit_target: str) -> None:
    server = ServeProcess(tmp_path, args=["--no-watch"], audit_db=audit_target).start()
    answered: list[int] = []
    stop = threading.Event()

    def hammer(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/api/v1/evaluate", json={"type": "read", "target": f"{n}-{i}"})
                except httpx.HTTPError:
                    return
                answered.append(r.json()["audit_id"])
                i += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(answered) > 300)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    recs = records(server.audit_db)
    assert set(answered) <= set(recs)
    assert aegis("audit", "verify", "--audit-db", str(server.audit_db)).returncode == 0


def test_sigterm_drains_and_exits_cleanly(tmp_path: Path, audit_target: str) -> None:
    server = ServeProcess(tmp_path, args=["--no-watch"], audit_db=audit_target).start()
    results: dict[str, Any] = {}

    def long_poll() -> None:
        with server.client() as c:
            rid = c.post("/api/v1/approvals", json={"type": "delete", "target": "production"}).json()["id"]
            results["id"] = rid
            results["poll"] = c.get(f"/api/v1/approvals/{rid}?wait=50")

    t = threading.Thread(target=long_poll)
    t.start()
    wait_for(lambda: "id" in results)
    with server.client() as c:
        audit_id = c.post("/api/v1/evaluate", json={"type": "read", "target": "x"}).json()["audit_id"]
    import time

    time.sleep(0.3)  # the long poll is now waiting inside the server
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    t.join(10)
    assert time.monotonic() - started < 10
    assert results["poll"].status_code == 200 and results["poll"].json()["status"] == "pending"
    assert audit_id in records(server.audit_db)
    assert verifies(server.audit_db).ok
    if not is_postgres(server.audit_db):
        with sqlite3.connect(server.audit_db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
