"""A fleet on PostgreSQL: the roles docs/fleet.md gives, and two servers sharing one trail and queue."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_serve_helpers import TOKENS, ServeProcess, aegis, records, tokens_file

from aegis_cli.audit import AuditError, open_audit, open_reader
from aegis_cli.audit.approvals import ApprovalQueue
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel

ROOT = Path(__file__).resolve().parent.parent
BLOCK = Decision(Approval.APPROVE, RiskLevel.HIGH, "r", "needs a human", "sha256:x")
RISKY = {"type": "delete", "target": "production", "params": {"count": 3}, "agent": "cleanup-bot"}


def sql_blocks() -> list[list[str]]:
    """The ```sql blocks of docs/fleet.md, each as its statements."""
    text = (ROOT / "docs" / "fleet.md").read_text()
    out = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        lines = [line for line in block.splitlines() if not line.strip().startswith("--")]
        out.append([s.strip() for s in "\n".join(lines).split(";") if s.strip()])
    return out


def test_the_documented_roles_let_writers_insert_and_auditors_read(pg_cluster: Any, tmp_path: Path) -> None:
    import psycopg

    create, grants = sql_blocks()
    with psycopg.connect(pg_cluster.url(), autocommit=True) as su:
        for stmt in create:  # one by one: CREATE DATABASE cannot run in a transaction block
            su.execute(stmt)
    base = pg_cluster.url("aegis")
    owner, writer, auditor = (base.replace("postgres@", f"{role}@") for role in
                              ("aegis_owner", "aegis_writer", "aegis_auditor"))
    # the owner opens the trail once, which creates the schema; then grants as written
    assert aegis("approvals", "list", "--audit-db", owner).returncode == 0
    with psycopg.connect(owner, autocommit=True) as conn:
        for stmt in grants:
            conn.execute(stmt)

    # a writer appends (batched too) and uses the approval queue ...
    with open_audit(writer) as log:
        ids = log.record_decisions([(Action("read", f"t{i}", agent="w"), BLOCK, None) for i in range(5)])
        log.record_event("execution", ids[0], {"status": "ok"})
    with ApprovalQueue(writer) as q:
        req = q.submit(Action("delete", "prod"), BLOCK, decision_id=ids[0])
        assert q.answer(req.id, False, by="ops").status == "denied"
    # ... but cannot change, remove or read what was written
    with psycopg.connect(writer, autocommit=True) as conn:
        for stmt in ("UPDATE audit SET hash = 'x' WHERE id = 1", "DELETE FROM audit WHERE id = 1",
                     "SELECT body FROM audit", "TRUNCATE audit", "DROP TRIGGER audit_no_update_delete ON audit"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    assert aegis("export", "--audit-db", writer).returncode == 2

    # an auditor reads, verifies and summarises, and can write nothing
    verified = aegis("audit", "verify", "--audit-db", auditor)
    assert verified.returncode == 0 and "chain intact: 7 records" in verified.stdout
    exported = aegis("export", "--audit-db", auditor)
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 7
    assert aegis("audit", "stats", "--audit-db", auditor).returncode == 0
    with open_audit(auditor) as log, pytest.raises(AuditError, match="permission denied"):
        log.record_decision(Action("read", "x"), BLOCK)
    with ApprovalQueue(writer) as q:
        late = q.submit(Action("delete", "prod"), BLOCK)
    denied = aegis("approvals", "approve", str(late.id), "--audit-db", auditor)
    assert denied.returncode == 2 and "permission denied" in denied.stderr
    with open_reader(auditor) as r:
        assert r.verify().ok and r.head()[0] == 7

    # the servers' role keeps the fleet's policy; the agents' writer role cannot touch it
    server = base.replace("postgres@", "aegis_server@")
    with ServeProcess(tmp_path, args=["--tokens", str(tokens_file(tmp_path)), "--no-watch"], audit_db=server) as srv, \
            srv.client(TOKENS["admin"]) as admin:
        put = admin.put("/api/v1/policy", content='version: "1"\ndefaults: {risk_level: low, approval: auto}\n',
                        headers={"content-type": "application/yaml"})
        assert put.status_code == 200, put.text
    with psycopg.connect(writer, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO fleet_policy VALUES (9, 'h', '{}', 'x', 'x', 'x', NULL)")
    with open_reader(auditor) as r:
        assert r.verify().ok and r.head()[0] == 8


def test_two_servers_on_one_trail_share_requests_answers_and_records(pg_url: str, tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    with ServeProcess(a_dir, args=["--tokens", str(tokens), "--no-watch"], audit_db=pg_url) as a, \
            ServeProcess(b_dir, args=["--tokens", str(tokens), "--no-watch"], audit_db=pg_url) as b, \
            a.client(TOKENS["agent"]) as agent, b.client(TOKENS["approver"]) as approver:
        req = agent.post("/api/v1/approvals", json=RISKY).json()
        assert req["status"] == "pending"
        # replica B lists the request queued on A, and its audit API holds A's decision
        assert req["id"] in [p["id"] for p in approver.get("/api/v1/approvals?status=pending").json()["approvals"]]
        assert req["decision_id"] in [r["id"] for r in approver.get("/api/v1/audit").json()["records"]]
        result: dict[str, Any] = {}

        def poll() -> None:
            result["answer"] = agent.get(f"/api/v1/approvals/{req['id']}?wait=30").json()
            result["at"] = time.monotonic()

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)
        answered = time.monotonic()
        r = approver.post(f"/api/v1/approvals/{req['id']}/approve", json={"note": "ok from B"})
        assert r.status_code == 200, r.text
        t.join(30)
        # the long poll on A sees the answer given on B within a second
        assert result["answer"]["status"] == "approved" and result["answer"]["note"] == "ok from B"
        assert result["at"] - answered < 1.0
        # both replicas append to one chain
        for _ in range(5):
            assert agent.post("/api/v1/evaluate", json={"type": "read", "target": "x"}).status_code == 200
            assert approver.post("/api/v1/evaluate", json={"type": "read", "target": "y"}).status_code == 200
    recs = records(pg_url)
    assert sorted(recs) == list(range(1, len(recs) + 1)) and len(recs) == 1 + 1 + 10
    assert aegis("audit", "verify", "--audit-db", pg_url).returncode == 0


def test_wrap_mcp_on_postgresql_waits_for_an_answer_given_from_another_shell(pg_url: str, tmp_path: Path) -> None:
    import os
    import sys

    import anyio
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters

    policy = tmp_path / "policy.yaml"
    policy.write_text('version: "1"\ndefaults: {risk_level: low, approval: auto}\nrules:\n'
                      "  - name: ask-for-time\n    match: {type: get_current_time}\n    risk_level: high\n"
                      "    approval: approve\n    reason: someone must agree\n")
    argv = [sys.executable, "-m", "aegis_cli", "wrap", "--mcp", "-p", str(policy), "--audit-db", pg_url,
            "--approval-timeout", "60", "--", sys.executable, "-m", "mcp_server_time"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    answered: dict[str, Any] = {}

    def answer_from_another_shell() -> None:
        deadline = time.monotonic() + 30
        with ApprovalQueue(pg_url) as q:
            while time.monotonic() < deadline:
                pending = q.list()
                if pending:
                    done = aegis("approvals", "approve", str(pending[0].id), "--by", "oncall", "--audit-db", pg_url)
                    answered["code"] = done.returncode
                    return
                time.sleep(0.1)

    async def session() -> Any:
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:], env=env), mode="auto") as client:
            return await client.call_tool("get_current_time", {"timezone": "UTC"})

    t = threading.Thread(target=answer_from_another_shell)
    t.start()
    result = anyio.run(session)
    t.join(30)
    assert answered.get("code") == 0
    assert not result.is_error and result.structured_content["timezone"] == "UTC"
    recs = list(records(pg_url).values())
    assert [r["kind"] for r in recs][:2] == ["decision", "approval"]
    assert recs[1]["data"]["status"] == "approved" and recs[1]["data"]["by"] == "oncall"
    assert aegis("audit", "verify", "--audit-db", pg_url).returncode == 0


def test_evaluate_record_on_postgresql_single_and_streamed(pg_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aegis_cli.cli import app

    policy = ROOT / "examples" / "policy.yaml"
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", "-p", str(policy), "--type", "read", "--target", "docs", "--record",
                            "--format", "json"], env={"AEGIS_AUDIT_DB": pg_url})
    assert r.exit_code == 0, r.output
    actions = tmp_path / "actions.jsonl"
    actions.write_text("".join(f'{{"type": "read", "target": "t{i}", "agent": "bot"}}\n' for i in range(50)))
    r = runner.invoke(app, ["evaluate", "-p", str(policy), "-i", str(actions), "--record", "--fail-on", "never",
                            "--audit-db", pg_url])
    assert r.exit_code == 0, r.output
    with open_reader(pg_url) as trail:
        assert trail.verify().records == 51
        assert [json_of(row)["action"]["target"] for row in trail.newest(2)] == ["t48", "t49"]


def json_of(row: Any) -> dict[str, Any]:
    import json

    return json.loads(row[2])


def test_serve_fails_closed_while_the_database_is_down_and_recovers_by_itself(pg_cluster: Any, tmp_path: Path) -> None:
    url = pg_cluster.fresh_trail()
    outcomes: list[tuple[float, float, int, Any]] = []  # sent, answered, status, audit id
    stop = threading.Event()
    with ServeProcess(tmp_path, args=["--no-watch"], audit_db=url) as srv:

        def load() -> None:
            with srv.client() as http:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        r = http.post("/api/v1/evaluate", json={"type": "read", "target": "x"}, timeout=30)
                        outcomes.append((sent, time.monotonic(), r.status_code, r.json().get("audit_id")))
                    except Exception as exc:  # a dropped connection is no answer, and no decision
                        outcomes.append((sent, time.monotonic(), 0, repr(exc)))
                    time.sleep(0.02)

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1.0)
        pg_cluster.stop("fast")
        down = time.monotonic()
        time.sleep(4.0)  # longer than a write waits for a connection (postgres.CHECKOUT_TIMEOUT)
        starting = time.monotonic()  # a request that waits into the start may be decided, and rightly
        pg_cluster.start()
        up = time.monotonic()
        deadline = up + 20
        while time.monotonic() < deadline and not any(s == 200 and at > up + 0.5 for at, _, s, _ in outcomes):
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        t.join(40)
    answered = [(at, rid) for at, _, status, rid in outcomes if status == 200]
    # asked and answered wholly while the database was down: refused, every one
    refused = [status for at, done, status, _ in outcomes if down + 0.2 < at and done < starting]
    assert refused and all(s in (0, 503) for s in refused)  # no decision while the trail is gone
    assert any(at > up for at, _ in answered)  # and back by itself, no restart
    assert all(isinstance(rid, int) for _, rid in answered)
    with open_reader(url) as trail:
        result = trail.verify()
        ids = {row[0] for row in trail.rows()}
    assert result.ok and {rid for _, rid in answered} <= ids


def test_two_replicas_under_load_one_killed_lose_no_answered_decision(pg_url: str, tmp_path: Path) -> None:
    import signal

    answered: list[int] = []
    stop = threading.Event()
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    with ServeProcess(dirs[0], args=["--no-watch"], audit_db=pg_url) as a, \
            ServeProcess(dirs[1], args=["--no-watch"], audit_db=pg_url) as b:

        def load(srv: ServeProcess, n: int) -> None:
            with srv.client() as http:
                while not stop.is_set():
                    try:
                        r = http.post("/api/v1/evaluate", json={"actions": [{"type": "read", "target": f"t{i}"}
                                                                            for i in range(n)]}, timeout=10)
                    except Exception:
                        continue  # the killed replica: no answer, so nothing was promised
                    if r.status_code == 200:
                        answered.extend(d["audit_id"] for d in r.json()["decisions"])

        threads = [threading.Thread(target=load, args=(srv, n)) for srv in (a, b) for n in (1, 5)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        a.stop(signal.SIGKILL)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(20)
    assert len(answered) > 50
    with open_reader(pg_url) as trail:
        result = trail.verify()
        ids = {row[0] for row in trail.rows()}
    assert result.ok and set(answered) <= ids and len(set(answered)) == len(answered)


def test_hook_settings_keep_a_postgresql_url(pg_url: str) -> None:
    out = aegis("hook", "claude-code", "--print-settings", "-p", str(ROOT / "examples" / "policy.yaml"),
                "--audit-db", pg_url)
    assert out.returncode == 0, out.stderr
    assert pg_url.split("?")[0] in out.stdout and "/postgresql:" not in out.stdout


NEW_POLICY = ('version: "1"\ndefaults: {risk_level: low, approval: auto}\nrules:\n'
              "  - name: no-deletes\n    match: {type: delete}\n    risk_level: critical\n    approval: block\n")


def _policy_changes(url: str) -> list[dict[str, Any]]:
    return [r for r in records(url).values() if r["kind"] == "policy_change"]


def test_a_policy_put_on_one_replica_is_in_force_on_every_replica_within_a_second(pg_url: str,
                                                                                    tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path)
    dirs = [tmp_path / n for n in "abcd"]
    for d in dirs:
        d.mkdir()
    args = ["--tokens", str(tokens), "--no-watch"]
    with ServeProcess(dirs[0], args=args, audit_db=pg_url) as a, \
            ServeProcess(dirs[1], args=args, audit_db=pg_url) as b, \
            a.client(TOKENS["admin"]) as admin_a, b.client(TOKENS["agent"]) as agent_b:
        start_hash = admin_a.get("/api/v1/policy").json()["hash"]
        assert agent_b.get("/api/v1/policy").json()["hash"] == start_hash
        assert "now the fleet's (version 1" in a.stderr + b.stderr  # the first one seeded the database
        put = admin_a.put("/api/v1/policy", content=NEW_POLICY, headers={"content-type": "application/yaml"})
        assert put.status_code == 200, put.text
        put_at, new_hash = time.monotonic(), put.json()["hash"]
        assert new_hash != start_hash
        while agent_b.get("/api/v1/policy").json()["hash"] != new_hash and time.monotonic() - put_at < 5:
            time.sleep(0.02)
        assert time.monotonic() - put_at < 1.0, b.stderr
        # ... and decides with it: deletes are now blocked on B, by the new policy's hash
        d = agent_b.post("/api/v1/evaluate", json={"type": "delete", "target": "x"}).json()
        assert d["approval"] == "block" and d["policy_hash"] == new_hash
        health = agent_b.get("/healthz").json()
        assert health["policy_hash"] == new_hash and health["fleet_policy"] == {"version": 2, "origin": "database"}
        # audited once, by the replica that took the PUT
        changes = _policy_changes(pg_url)
        assert [(c["data"]["old_hash"], c["data"]["new_hash"], c["data"]["by"]) for c in changes] == \
            [(start_hash, new_hash, "root")]

        # a replica that starts later with an older file takes the database's policy, and says so
        with ServeProcess(dirs[2], args=args, audit_db=pg_url) as c, c.client(TOKENS["agent"]) as agent_c:
            assert agent_c.get("/api/v1/policy").json()["hash"] == new_hash
            assert agent_c.get("/healthz").json()["fleet_policy"] == {"version": 2, "origin": "database"}
            assert "policy from the database (version 2, by root" in c.stderr

        # one whose file changed after that publishes its file to the fleet (audited once, though
        # both of its workers start with it)
        newer = dirs[3] / "policy.yaml"
        newer.write_text(NEW_POLICY.replace("block", "approve"))
        with ServeProcess(dirs[3], policy=newer, args=[*args, "--workers", "2"], audit_db=pg_url) as d_srv, \
                d_srv.client(TOKENS["agent"]) as agent_d:
            newest = agent_d.get("/api/v1/policy").json()["hash"]
            assert newest not in (start_hash, new_hash) and "published as version 3" in d_srv.stderr
            assert wait_until_true(lambda: d_srv.stderr.count("serving on") == 2)
            assert "the same as the fleet's (version 3)" in d_srv.stderr
            assert agent_d.get("/healthz").json()["fleet_policy"] == {"version": 3, "origin": "file"}
            wait_until = time.monotonic() + 1.0
            while time.monotonic() < wait_until and admin_a.get("/api/v1/policy").json()["hash"] != newest:
                time.sleep(0.02)
            assert admin_a.get("/api/v1/policy").json()["hash"] == newest
            assert agent_b.get("/api/v1/policy").json()["hash"] == newest
    assert len(_policy_changes(pg_url)) == 2
    assert aegis("audit", "verify", "--audit-db", pg_url).returncode == 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_workers_share_one_port_survive_a_killed_worker_and_stop_together(pg_url: str, tmp_path: Path) -> None:
    import signal

    srv = ServeProcess(tmp_path, args=["--no-watch", "--workers", "2"], audit_db=pg_url).start()
    try:
        assert srv.proc is not None
        assert wait_until_true(lambda: len(_children(srv.proc.pid)) == 2 and srv.stderr.count("serving on") == 2)
        assert "worker 1/2" in srv.stderr and "worker 2/2" in srv.stderr
        workers = _children(srv.proc.pid)
        before = {pid: _cpu_ticks(pid) for pid in workers}
        answered: list[int] = []

        def load(n: int) -> None:
            import http.client
            import json

            for _ in range(n):  # a new connection each time: the kernel hands each to one worker
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                conn.request("POST", "/api/v1/evaluate", body='{"type": "read", "target": "x"}',
                             headers={"content-type": "application/json"})
                r = conn.getresponse()
                assert r.status == 200
                answered.append(json.loads(r.read())["audit_id"])
                conn.close()

        threads = [threading.Thread(target=load, args=(100,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(answered) == 400
        assert all(_cpu_ticks(pid) > before[pid] for pid in workers)  # both served
        # one worker killed: the other answers meanwhile, and the supervisor starts it again
        with srv.client() as http:
            metrics = http.get("/metrics").text
        assert 'aegis_decisions_total{approval="auto",risk_level="low"}' in metrics
        os_kill(workers[0], signal.SIGKILL)
        with srv.client() as http:
            for _ in range(20):
                r = http.post("/api/v1/evaluate", json={"type": "read", "target": "y"})
                assert r.status_code == 200
                answered.append(r.json()["audit_id"])
        assert wait_until_true(lambda: "starting it again" in srv.stderr and len(_children(srv.proc.pid)) == 2
                               and srv.stderr.count("serving on") == 3, timeout=20)
        assert workers[0] not in _children(srv.proc.pid)
        assert srv.stop(signal.SIGTERM) == 0
        assert _children(srv.proc.pid) == []
    finally:
        srv.kill()
    with open_reader(pg_url) as trail:
        result = trail.verify()
        ids = {row[0] for row in trail.rows()}
    assert result.ok and set(answered) <= ids and len(set(answered)) == len(answered)


def test_workers_stop_when_the_supervisor_is_killed(pg_url: str, tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, say) leaves no orphaned worker holding the port."""
    import signal

    srv = ServeProcess(tmp_path, args=["--no-watch", "--workers", "2"], audit_db=pg_url).start()
    try:
        assert srv.proc is not None
        assert wait_until_true(lambda: len(_children(srv.proc.pid)) == 2 and srv.stderr.count("serving on") == 2)
        workers = _children(srv.proc.pid)
        os_kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(10)
        assert wait_until_true(lambda: not any(Path(f"/proc/{pid}").exists() and
                                               "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
                                               for pid in workers), timeout=20), workers
    finally:
        srv.kill()


def test_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    out = aegis("serve", "-p", str(ROOT / "examples" / "policy.yaml"), "--workers", "2",
                "--audit-db", str(tmp_path / "audit.db"), "--port", "0")
    assert out.returncode == 2 and "needs a PostgreSQL audit store" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "audit.db").exists()


def wait_until_true(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def os_kill(pid: int, sig: int) -> None:
    import os

    os.kill(pid, sig)


def test_a_changed_policy_file_is_published_to_the_fleet_once(pg_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text((ROOT / "examples" / "policy.yaml").read_text())
    (tmp_path / "b").mkdir()
    with ServeProcess(tmp_path, policy=policy, audit_db=pg_url) as a, \
            ServeProcess(tmp_path / "b", args=["--no-watch"], audit_db=pg_url) as b, b.client() as http:
        before = http.get("/api/v1/policy").json()["hash"]
        policy.write_text(NEW_POLICY)
        assert wait_until_true(lambda: http.get("/api/v1/policy").json()["hash"] != before, timeout=10), a.stderr
        after = http.get("/api/v1/policy").json()["hash"]
        with a.client() as http_a:
            assert http_a.get("/api/v1/policy").json()["hash"] == after
    changes = _policy_changes(pg_url)
    assert [(c["data"]["by"], c["data"]["old_hash"], c["data"]["new_hash"]) for c in changes] == \
        [("watcher", before, after)]


def test_a_replica_cut_off_from_the_database_catches_up_on_the_fleet_policy(pg_cluster: Any, tmp_path: Path) -> None:
    url = pg_cluster.fresh_trail()
    (tmp_path / "b").mkdir()
    args = ["--tokens", str(tokens_file(tmp_path)), "--no-watch"]
    with ServeProcess(tmp_path, args=args, audit_db=url) as a, \
            ServeProcess(tmp_path / "b", args=args, audit_db=url) as b, \
            a.client(TOKENS["admin"]) as admin_a, b.client(TOKENS["agent"]) as agent_b:
        before = agent_b.get("/api/v1/policy").json()["hash"]
        pg_cluster.stop("fast")
        # no database: the policy cannot be changed (it could not be audited); B keeps the one it has
        put = admin_a.put("/api/v1/policy", content=NEW_POLICY, headers={"content-type": "application/yaml"})
        assert put.status_code == 503
        assert agent_b.get("/api/v1/policy").json()["hash"] == before
        assert wait_until_true(lambda: "fleet policy: lost the database" in b.stderr, timeout=10)
        pg_cluster.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            put = admin_a.put("/api/v1/policy", content=NEW_POLICY, headers={"content-type": "application/yaml"})
            if put.status_code == 200:
                break
            time.sleep(0.3)
        assert put.status_code == 200, put.text
        assert wait_until_true(lambda: agent_b.get("/api/v1/policy").json()["hash"] == put.json()["hash"],
                               timeout=5), b.stderr
    assert [c["data"]["new_hash"] for c in _policy_changes(url)] == [put.json()["hash"]]
