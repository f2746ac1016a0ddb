"""aegis simulate: decisions per call, the summary, baseline diffs, exit codes, --record."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from aegis_cli.cli import app
from aegis_cli.engine import schemas
from aegis_cli.engine.policy import Policy
from aegis_cli.traces import read_traces
from aegis_cli.traces.simulate import replay, simulate
from tests.conftest import ROOT, SHARED

DATA = ROOT / "tests" / "data" / "simulate"
POLICY = str(DATA / "policy.yaml")
BASELINE = str(DATA / "baseline.yaml")
ACTIONS = str(DATA / "actions.jsonl")
TRACES = SHARED / "traces"
runner = CliRunner()


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_jsonl_decisions_have_evaluates_shape_plus_source() -> None:
    code, out, _ = run("simulate", "-p", POLICY, ACTIONS, "--format", "jsonl")
    assert code == 1  # two calls are blocked and --fail-on defaults to block
    rows = jsonl(out)
    assert len(rows) == 6
    validator = schemas.validator("decision")
    for row in rows:
        validator.validate(row)
        assert set(row) == {"action", "approval", "risk_level", "rule", "reason", "policy_hash", "source"}
    # the same line through `aegis evaluate -` gives the same decision
    first_line = Path(ACTIONS).read_text().splitlines()[1]
    _, evaluated, _ = run("evaluate", "-p", POLICY, "-", input=first_line + "\n")
    ev = json.loads(evaluated)
    assert {k: rows[1][k] for k in ev} == ev
    assert rows[1]["source"] == {"file": ACTIONS, "line": 2, "call_id": None, "format": "aegis"}


def test_time_conditions_use_the_recorded_timestamp() -> None:
    _, out, _ = run("simulate", "-p", POLICY, ACTIONS, "--format", "jsonl")
    deploys = [r for r in jsonl(out) if r["action"]["type"] == "deploy"]
    assert [(r["action"]["timestamp"][11:16], r["approval"], r["rule"]) for r in deploys] == [
        ("11:00", "auto", "deploys"), ("23:30", "block", "no-deploys-overnight")]


def test_untimed_calls_use_now_option(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"type": "deploy", "target": "web"}\n')
    for now, approval in (("2026-01-01T03:00:00Z", "block"), ("2026-01-01T12:00:00Z", "auto")):
        _, out, _ = run("simulate", "-p", POLICY, str(trace), "--now", now, "--format", "jsonl")
        assert jsonl(out)[0]["approval"] == approval
    code, _, err = run("simulate", "-p", POLICY, str(trace), "--now", "tomorrow")
    assert code == 2 and "--now" in err


def test_tools_mapping_applies_to_tool_calls(tmp_path: Path) -> None:
    trace = tmp_path / "chat.json"
    trace.write_text(json.dumps([{"role": "assistant", "tool_calls": [
        {"id": "1", "function": {"name": "send_email", "arguments": json.dumps({"to": "ann@example.com"})}}]}],
        indent=2))
    _, out, _ = run("simulate", "-p", POLICY, str(trace), "--format", "jsonl")
    row = jsonl(out)[0]
    assert (row["action"]["type"], row["action"]["target"], row["rule"]) == ("send", "email", "internal-email")
    assert row["source"] == {"file": str(trace), "index": 0, "pointer": "/0/tool_calls/0", "call_id": "1",
                             "format": "openai"}


def test_exit_codes_follow_fail_on(tmp_path: Path) -> None:
    assert run("simulate", "-p", POLICY, ACTIONS)[0] == 1
    assert run("simulate", "-p", POLICY, ACTIONS, "--fail-on", "never")[0] == 0
    reads = tmp_path / "reads.jsonl"
    reads.write_text('{"type": "read", "target": "fs"}\n{"type": "write", "target": "fs"}\n')
    assert run("simulate", "-p", POLICY, str(reads))[0] == 0  # approve does not fail --fail-on block
    assert run("simulate", "-p", POLICY, str(reads), "--fail-on", "approve")[0] == 1
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("version: '1'\nrules:\n  - match: {type: x}\n    approval: maybe\n")
    code, _, err = run("simulate", "-p", str(bad_policy), ACTIONS)
    assert code == 2 and f"{bad_policy}:4:" in err
    code, _, err = run("simulate", "-p", POLICY, str(tmp_path / "missing.jsonl"))
    assert code == 2 and err.startswith("aegis: ") and "missing.jsonl" in err
    code, _, err = run("simulate", "-p", POLICY, ACTIONS, "--trace-format", "xml")
    assert code == 2 and "unknown format 'xml'" in err


def test_malformed_input_is_reported_and_strict_makes_it_fatal(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"type": "read", "target": "fs"}\nnot json\n{"type": 3, "target": "x"}\n'
                     '{"type": "read", "target": "db"}\n')
    code, out, err = run("simulate", "-p", POLICY, str(trace), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["calls"] == 2 and report["problems_total"] == 2
    assert [p["line"] for p in report["problems"]] == [2, 3]
    assert report["files"] == [{"file": str(trace), "format": "aegis", "records": 4, "calls": 2, "problems": 2}]
    assert f"aegis: warning: {trace}:2: invalid JSON" in err
    assert f"{trace}:3: action field 'type' must be a string" in err
    code, out, err = run("simulate", "-p", POLICY, str(trace), "--strict", "--format", "jsonl")
    assert code == 2
    assert len(jsonl(out)) == 1  # what came before the bad record was already streamed
    assert err.strip().endswith("(--strict)") and f"{trace}:2" in err


def test_directory_lists_skipped_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hello\n")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "a.jsonl").write_text(Path(ACTIONS).read_text())
    code, out, _ = run("simulate", "-p", POLICY, str(tmp_path), "--format", "json", "--fail-on", "never")
    assert code == 0
    files = {Path(f["file"]).name: f for f in json.loads(out)["files"]}
    assert files["a.jsonl"]["calls"] == 6
    assert files["README.md"]["skipped"].startswith("not JSON")
    code, _, err = run("simulate", "-p", POLICY, str(tmp_path / "README.md"))
    assert code == 2 and "README.md: not JSON or JSON Lines" in err
    only_junk = tmp_path / "junk"
    only_junk.mkdir()
    (only_junk / "x.txt").write_text("x\n")
    code, _, err = run("simulate", "-p", POLICY, str(only_junk))
    assert code == 2 and "no trace found" in err


def test_baseline_diff_groups_changes_by_rule() -> None:
    code, out, _ = run("simulate", "-p", POLICY, ACTIONS, "--baseline", BASELINE, "--format", "json")
    assert code == 1
    base = json.loads(out)["baseline"]
    assert base["changed"] == 2
    groups = {(g["old_rule"], g["new_rule"]): g for g in base["groups"]}
    assert set(groups) == {("prod-deletes-approve", "no-prod-deletes"), ("deploys", "no-deploys-overnight")}
    g = groups["prod-deletes-approve", "no-prod-deletes"]
    assert g["count"] == 1 and g["transitions"] == {"approve -> block (high -> critical risk)": 1}
    assert g["examples"][0]["source"]["line"] == 2
    assert base["approval"] == {"auto": 3, "approve": 3, "block": 0}
    # JSONL carries the baseline's decision next to the new one
    _, out, _ = run("simulate", "-p", POLICY, ACTIONS, "--baseline", BASELINE, "--format", "jsonl")
    changed = [r for r in jsonl(out) if r["changed"]]
    assert [(r["baseline"]["approval"], r["approval"]) for r in changed] == [("approve", "block"), ("auto", "block")]
    # exit follows the new policy, not the old: the old one blocks nothing, the new one does
    assert run("simulate", "-p", BASELINE, ACTIONS, "--baseline", POLICY)[0] == 0


def test_text_report_lists_what_a_reviewer_needs() -> None:
    code, out, _ = run("simulate", "-p", POLICY, ACTIONS, "--baseline", BASELINE)
    assert code == 1
    for needle in ("6 calls from 1 file(s)", "Decisions by approval and risk", "By rule", "By tool",
                   "Blocked: 2", f"{ACTIONS}:2  delete", "Needing approval: 2", "2 of 6 calls change decision",
                   "rule prod-deletes-approve → no-prod-deletes: 1"):
        assert needle in out, needle


def test_record_writes_decisions_to_the_audit_trail(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    code, out, _ = run("simulate", "-p", POLICY, ACTIONS, "--record", "--audit-db", str(db), "--format", "jsonl")
    assert code == 1
    rows = jsonl(out)
    assert [r["audit_id"] for r in rows] == list(range(1, 7))
    with sqlite3.connect(db) as conn:
        bodies = [json.loads(b) for (b,) in conn.execute("SELECT body FROM audit ORDER BY id")]
    assert [b["kind"] for b in bodies] == ["decision"] * 6
    assert bodies[1]["origin"] == {"via": "simulate", "file": ACTIONS, "line": 2, "call_id": None,
                                   "format": "aegis"}
    assert bodies[1]["decision"]["approval"] == "block"
    # an unusable audit database fails closed, before any decision is reported
    code, out, err = run("simulate", "-p", POLICY, ACTIONS, "--record", "--audit-db", str(tmp_path))
    assert code == 2 and out == "" and "cannot open audit database" in err


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces is not beside the checkout")
def test_real_traces_through_the_cli_as_a_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "aegis_cli", "simulate", "-p", str(ROOT / "examples" / "policy.yaml"),
                           str(TRACES), "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr  # the example policy blocks `rm -rf` in the Claude Code sessions
    report = json.loads(proc.stdout)
    assert report["calls"] == 5522 and report["problems_total"] == 0
    assert report["formats"] == {"agentdojo": 2460, "tau-bench": 1164, "bfcl": 1142, "claude-code": 466,
                                 "swe-agent": 231, "atif": 24, "openai": 23, "mcp": 12}
    blocked = report["blocked"]
    assert blocked and all(b["rule"] == "destructive_shell" for b in blocked)
    assert all(b["tool"] == "Bash" and "rm -rf" in b["action"]["params"]["command"] for b in blocked)
    skipped = [f for f in report["files"] if "skipped" in f]
    assert any(f["file"].endswith("SOURCE.md") for f in skipped)


def test_stdin_through_a_subprocess_streams_jsonl() -> None:
    lines = Path(ACTIONS).read_text()
    proc = subprocess.run([sys.executable, "-m", "aegis_cli", "simulate", "-p", POLICY, "-", "--format", "jsonl",
                           "--fail-on", "never"], input=lines, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = jsonl(proc.stdout)
    assert [r["source"]["file"] for r in rows] == ["<stdin>"] * 6


def test_library_replay_matches_evaluate_and_keeps_one_clock() -> None:
    policy = Policy.from_yaml(POLICY)
    now = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.UTC)
    outcomes = list(replay(policy, read_traces([ACTIONS]), now=now))
    for o in outcomes:
        assert o.decision == policy.evaluate(o.action, o.action.timestamp or now)
    summary = simulate(policy, read_traces([ACTIONS]), baseline=Policy.from_yaml(BASELINE), now=now)
    data = summary.to_dict()
    assert data["calls"] == 6 and data["approval"] == {"auto": 2, "approve": 2, "block": 2}
    assert sum(data["risk_level"].values()) == 6
    assert {r["rule"]: r["count"] for r in data["rules"]}[None] == 2
    jsonschema.Draft202012Validator.check_schema(schemas.load_schema("decision"))


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces is not beside the checkout")
def test_fast_json_lines_equal_plain_json_dumps() -> None:
    from aegis_cli.traces.simulate import to_json_line

    policy = Policy.from_yaml(POLICY)
    outcomes = list(replay(policy, read_traces([ACTIONS, str(TRACES / "claude-code-entire"),
                                                str(TRACES / "mcp-jsonrpc"), str(TRACES / "agentdojo")])))
    assert len(outcomes) > 2000
    for o in outcomes:
        assert to_json_line(o) == json.dumps(o.to_dict(), ensure_ascii=False) + "\n"
