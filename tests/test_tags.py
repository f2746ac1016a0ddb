"""Data tags on rules: validated with located errors, carried by decisions into the CLI, the REST API,
the audit trail (both stores) and exports, without changing a byte of untagged records."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from test_serve_helpers import ServeProcess, aegis
from typer.testing import CliRunner

from aegis_cli import Action, Policy
from aegis_cli.audit import verify
from aegis_cli.audit.trail import open_audit, open_reader
from aegis_cli.cli import app
from aegis_cli.engine import schemas
from aegis_cli.engine.errors import PolicyError

TAGGED = """\
version: "1"
defaults:
  approval: approve
  risk_level: medium
  tags: [general]
rules:
  - name: read-chart
    match: {type: read, target: "chart:*"}
    approval: auto
    risk_level: low
    tags: [phi, pii]
  - name: billing
    match: {type: charge}
    approval: approve
    tags: [payments]
  - name: untagged
    match: {type: ping}
    approval: auto
"""


def write_policy(tmp_path: Path, text: str = TAGGED) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_decisions_carry_the_rule_or_default_tags() -> None:
    policy = Policy.from_string(TAGGED)
    assert policy.evaluate(Action("read", "chart:7")).tags == ("phi", "pii")
    assert policy.evaluate(Action("charge", "card")).tags == ("payments",)
    assert policy.evaluate(Action("ping", "x")).tags == ()
    assert policy.evaluate(Action("zzz", "x")).tags == ("general",)
    explained = policy.evaluate(Action("read", "chart:7"), explain=True)
    assert explained.tags == ("phi", "pii") and "tags: phi, pii" in explained.explain()
    d = policy.evaluate(Action("read", "chart:7")).to_dict()
    assert d["tags"] == ["phi", "pii"]
    assert "tags" not in policy.evaluate(Action("ping", "x")).to_dict()
    # the tags are part of the policy (and so of its hash), and survive a round trip
    again = Policy.from_dict(policy.to_dict())
    assert again.hash == policy.hash and again.evaluate(Action("zzz", "x")).tags == ("general",)


def test_a_condition_that_raises_keeps_the_rules_tags() -> None:
    policy = Policy.from_string(TAGGED.replace("    match: {type: charge}\n",
                                               "    match: {type: charge}\n    conditions: {param_gt: {amount: 5}}\n"))
    d = policy.evaluate(Action("charge", "card", {"amount": "lots"}))
    assert d.approval.value == "block" and d.tags == ("payments",)


def test_untagged_policies_hash_as_before() -> None:
    plain = TAGGED.replace("  tags: [general]\n", "").replace("    tags: [phi, pii]\n", "").replace(
        "    tags: [payments]\n", "")
    empty = plain.replace("    approval: auto\n    risk_level: low\n", "    approval: auto\n    risk_level: low\n"
                          "    tags: []\n", 1)
    assert Policy.from_string(plain).hash == Policy.from_string(empty).hash
    assert Policy.from_string(plain).hash != Policy.from_string(TAGGED).hash
    assert "tags" not in json.dumps(Policy.from_string(plain).to_dict())


@pytest.mark.parametrize(("snippet", "line", "words"), [
    ("    tags: [PHI]\n", 8, "lowercase word"),
    ("    tags: [phi, phi]\n", 8, "names a tag twice"),
    ("    tags: phi\n", 8, "must be a list"),
    ("    tags: [1]\n", 8, "must be a string"),
    ("    tags: ['a b']\n", 8, "lowercase word"),
    ("    tags: ['" + "x" * 65 + "']\n", 8, "at most 64"),
])
def test_bad_tags_are_located(tmp_path: Path, snippet: str, line: int, words: str) -> None:
    text = "version: '1'\nrules:\n  - name: r\n    match: {type: read}\n    approval: auto\n    risk_level: low\n" \
           "    reason: x\n" + snippet
    with pytest.raises(PolicyError) as exc:
        Policy.from_string(text, "p.yaml")
    issue = exc.value.issues[0]
    assert issue.line == line and words in issue.message and "rules" in issue.path
    r = aegis("validate", str(write_policy(tmp_path, text)))
    assert r.returncode == 2 and f"policy.yaml:{line}:" in r.stderr and words in r.stderr


def test_defaults_tags_are_validated(tmp_path: Path) -> None:
    r = aegis("validate", str(write_policy(tmp_path, "version: '1'\ndefaults:\n  tags: [Nope]\n")))
    assert r.returncode == 2 and "policy.yaml:3:" in r.stderr and "'defaults.tags[0]'" in r.stderr


def test_cli_evaluate_json_and_text_show_tags(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    r = aegis("evaluate", "-p", str(policy), "--type", "read", "--target", "chart:1", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tags"] == ["phi", "pii"]
    assert not list(schemas.validator("decision").iter_errors(out))
    r = aegis("evaluate", "-p", str(policy), "--type", "read", "--target", "chart:1")
    assert "tags: phi, pii" in r.stdout
    lines = "".join(json.dumps(a) + "\n" for a in [{"type": "ping", "target": "x"}, {"type": "zzz", "target": "y"}])
    r = aegis("evaluate", "-", "-p", str(policy), "--fail-on", "never", input=lines)
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert "tags" not in got[0] and got[1]["tags"] == ["general"]


def test_audit_records_carry_tags_and_old_records_are_unchanged(audit_target: str, tmp_path: Path) -> None:
    policy = Policy.from_string(TAGGED)
    with open_audit(audit_target) as log:
        # an untagged decision as aegis has always written it ...
        first = log.record_decision(Action("ping", "x"), policy.evaluate(Action("ping", "x")))
    with open_reader(audit_target) as reader:
        before = list(reader.rows())
    with open_audit(audit_target) as log:
        # ... then tagged ones appended to the same chain
        tagged = log.record_decision(Action("read", "chart:1", agent="a"), policy.evaluate(Action("read", "chart:1")))
        log.record_decisions([(Action("zzz", "y"), policy.evaluate(Action("zzz", "y")))])
        log.record_event("approval", tagged, {"status": "approved", "by": "bob"})
    with open_reader(audit_target) as reader:
        rows = list(reader.rows())
        assert reader.verify().ok
    assert rows[0] == before[0] and '"tags"' not in rows[0][2]
    assert '"tags":["phi","pii"]' in rows[1][2]
    recs = [json.loads(body) | {"hash": h} for _, h, body in rows]
    assert recs[0]["id"] == first and "tags" not in recs[0]["decision"]
    assert recs[1]["decision"]["tags"] == ["phi", "pii"] and recs[2]["decision"]["tags"] == ["general"]
    for rec in recs:
        assert not list(schemas.validator("audit-record").iter_errors(rec)), rec
    assert verify.verify_records(recs).ok

    r = CliRunner().invoke(app, ["export", "--jsonl", "--audit-db", audit_target])
    assert r.exit_code == 0, r.output
    exported = [json.loads(line) for line in r.stdout.splitlines()]
    assert exported == recs
    r = CliRunner().invoke(app, ["export", "--csv", "--audit-db", audit_target])
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["tags"] for row in table] == ["", '["phi","pii"]', '["general"]', ""]


def test_a_trail_written_before_tags_still_verifies(tmp_path: Path) -> None:
    # A record body exactly as aegis wrote it before tags existed, chained by hand.
    from aegis_cli.audit.canonical import GENESIS, record_hash

    db = tmp_path / "old.db"
    open_audit(db).close()
    body = ('{"action":{"agent":"","params":{},"session":"","target":"x","type":"ping"},"data":null,'
            '"decision":{"approval":"auto","reason":"r","risk_level":"low","rule":"untagged"},"decision_id":1,'
            f'"id":1,"kind":"decision","origin":null,"policy_hash":"sha256:x","prev_hash":"{GENESIS}",'
            '"ts":"2026-01-01T00:00:00.000000Z"}')
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO audit (id, hash, body) VALUES (1, ?, ?)", (record_hash(body), body))
    conn.execute("UPDATE audit_head SET last_id = 1, last_hash = ?", (record_hash(body),))
    conn.commit()
    conn.close()
    policy = Policy.from_string(TAGGED)
    with open_audit(db) as log:
        log.record_decision(Action("read", "chart:2"), policy.evaluate(Action("read", "chart:2")))
    r = aegis("audit", "verify", "--audit-db", str(db))
    assert r.returncode == 0 and "2 records" in r.stdout, r.stderr


def test_rest_api_answers_and_audits_tags(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    with ServeProcess(tmp_path, policy=policy, args=["--no-watch"]) as server, server.client() as http:
        one = http.post("/api/v1/evaluate", json={"type": "read", "target": "chart:9"}).json()
        batch = http.post("/api/v1/evaluate", json={"actions": [{"type": "ping", "target": "x"},
                                                                {"type": "charge", "target": "c"}]}).json()
        spec = http.get("/openapi.json").json()
    assert one["tags"] == ["phi", "pii"]
    assert "tags" not in batch["decisions"][0] and batch["decisions"][1]["tags"] == ["payments"]
    assert "tags" in spec["components"]["schemas"]["Decision"]["properties"]
    with open_reader(server.audit_db) as reader:
        recs = {row[0]: json.loads(row[2]) for row in reader.rows()}
    assert recs[one["audit_id"]]["decision"]["tags"] == ["phi", "pii"]
    assert recs[batch["decisions"][1]["audit_id"]]["decision"]["tags"] == ["payments"]
