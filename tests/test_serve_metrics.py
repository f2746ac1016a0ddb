"""``GET /metrics`` on a real server, on SQLite and PostgreSQL: the text a Prometheus scrape gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from test_serve_helpers import TOKENS, ServeProcess, tokens_file

RISKY = {"type": "delete", "target": "production", "params": {"count": 3}, "agent": "cleanup-bot"}


def scrape(http: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {labels: value} for every sample of a scrape."""
    r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_count_decisions_requests_commits_and_pending(audit_target: str, tmp_path: Path) -> None:
    with ServeProcess(tmp_path, args=["--no-watch"], audit_db=audit_target) as srv, srv.client() as http:
        before = scrape(http)  # loopback-only server: no token needed
        assert before["aegis_approvals_pending"] == {(): 0.0}
        assert "aegis_decisions_total" not in before
        for _ in range(3):
            assert http.post("/api/v1/evaluate", json={"type": "read", "target": "docs"}).status_code == 200
        r = http.post("/api/v1/evaluate", json={"actions": [RISKY, {"type": "read", "target": "x"}]})
        assert r.status_code == 200
        assert http.post("/api/v1/approvals", json=RISKY).json()["status"] == "pending"
        policy_hash = http.get("/api/v1/policy").json()["hash"]
        m = scrape(http)
    decisions = m["aegis_decisions_total"]
    by_approval: dict[str, float] = {}
    for labels, n in decisions.items():
        by_approval[dict(labels)["approval"]] = by_approval.get(dict(labels)["approval"], 0) + n
    # 3 + 1 reads allowed, 2 deletes held (one in a batch, one queued through /approvals)
    assert by_approval == {"auto": 4, "approve": 2}
    assert {dict(labels)["risk_level"] for labels in decisions} >= {"high"}
    assert m["aegis_approvals_pending"] == {(): 1.0}
    assert m["aegis_policy_info"] == {(("hash", policy_hash),): 1.0}
    evaluate = (("path", "/api/v1/evaluate"),)
    assert m["aegis_request_duration_seconds_count"][evaluate] == 4
    assert m["aegis_request_duration_seconds_bucket"][(("le", "+Inf"), *evaluate)] == 4
    assert m["aegis_request_duration_seconds_sum"][evaluate] > 0
    # commits are batches: at most one per decision, at least one
    assert 1 <= m["aegis_audit_commit_seconds_count"][()] <= 6
    assert m["aegis_audit_commit_seconds_bucket"][(("le", "+Inf"),)] == m["aegis_audit_commit_seconds_count"][()]


def test_metrics_need_the_approve_role_when_tokens_are_set(tmp_path: Path, audit_target: str) -> None:
    with ServeProcess(tmp_path, args=["--tokens", str(tokens_file(tmp_path)), "--no-watch"],
                      audit_db=audit_target) as srv:
        with srv.client() as anon:
            assert anon.get("/metrics").status_code == 401
        with srv.client(TOKENS["agent"]) as agent:
            assert agent.get("/metrics").status_code == 403
        with srv.client(TOKENS["approver"]) as approver:
            assert "aegis_policy_info" in scrape(approver)
            assert approver.get("/metrics?x=1").status_code == 422
