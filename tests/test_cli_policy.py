"""validate, evaluate, init and schema through the CLI runner, and once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis_cli.cli import app

runner = CliRunner()

GOOD = """\
version: "1"
defaults: {risk_level: medium, approval: approve}
rules:
  - name: no_prod_deletes
    match: {type: "delete*", target: "prod*"}
    conditions:
      param_gt: {count: 100}
    risk_level: critical
    approval: block
    reason: "Deleting production data is never automated"
  - name: reads
    match: {type: read}
    risk_level: low
    approval: auto
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    return path


def invoke(*args: str, input: str | None = None) -> object:
    return runner.invoke(app, list(args), input=input)


def test_validate_ok(policy_file: Path) -> None:
    result = invoke("validate", str(policy_file))
    assert result.exit_code == 0, result.output
    assert "ok:" in result.stdout and "2 rules" in result.stdout


def test_validate_reports_located_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('version: "1"\nrules:\n  - name: a\n    approvel: auto\n')
    result = invoke("validate", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:4:5: error: unknown key 'approvel'" in result.stderr
    assert "did you mean 'approval'" in result.stderr
    assert result.stdout == ""


def test_validate_collects_errors_from_every_file(tmp_path: Path, policy_file: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("rules:\n  - match: {type: 5}\n")
    b = tmp_path / "b.yaml"
    b.write_text("rules:\n  - conditions: {time_after: '7pm'}\n")
    result = invoke("validate", str(a), str(policy_file), str(b))
    assert result.exit_code == 2
    assert f"{a}:2:" in result.stderr and f"{b}:2:" in result.stderr


def test_validate_json_format(tmp_path: Path, policy_file: Path) -> None:
    result = invoke("validate", "--format", "json", str(policy_file))
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["rules"] == 2 and data["policy_hash"].startswith("sha256:")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: {}\n")
    result = invoke("validate", "--format", "json", str(bad))
    data = json.loads(result.stdout)
    assert result.exit_code == 2 and data["valid"] is False
    assert data["errors"][0]["line"] == 1 and "must be a list" in data["errors"][0]["message"]


def test_validate_warns_about_shadowed_rules_and_strict_fails(tmp_path: Path) -> None:
    path = tmp_path / "shadow.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: all_deletes, match: {type: 'delete*'}, approval: block}\n"
        "  - {name: prod_deletes, match: {type: delete, target: prod}, approval: approve}\n"
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert "warning: rule 'prod_deletes' can never match: rule 'all_deletes'" in result.stderr
    assert invoke("validate", "--strict", str(path)).exit_code == 1


def test_validate_reads_stdin() -> None:
    result = invoke("validate", "-", input=GOOD)
    assert result.exit_code == 0
    result = invoke("validate", "-", input="rules: [}")
    assert result.exit_code == 2 and "<stdin>:1:" in result.stderr


def test_validate_missing_file() -> None:
    result = invoke("validate", "/nonexistent/policy.yaml")
    assert result.exit_code == 2
    assert "/nonexistent/policy.yaml: error: no such file" in result.stderr


def test_evaluate_block_exits_1(policy_file: Path) -> None:
    result = invoke("evaluate", "-p", str(policy_file), "--type", "delete", "--target", "production",
                    "--param", "count=500")
    assert result.exit_code == 1
    assert "BLOCK" in result.stdout and "no_prod_deletes" in result.stdout
    assert "never automated" in result.stdout


def test_evaluate_json_and_fail_on(policy_file: Path) -> None:
    args = ["evaluate", "-p", str(policy_file), "--type", "delete", "--target", "production",
            "--param", "count=3", "--format", "json"]
    result = invoke(*args)
    data = json.loads(result.stdout)
    assert data["approval"] == "approve" and data["rule"] is None
    assert data["action"] == {"type": "delete", "target": "production", "params": {"count": 3}}
    assert result.exit_code == 0  # default --fail-on block
    assert invoke(*args, "--fail-on", "approve").exit_code == 1
    blocked = [*args[:-4], "--param", "count=500", "--format", "json", "--fail-on", "never"]
    assert invoke(*blocked).exit_code == 0


def test_evaluate_param_values_are_json_when_they_parse(policy_file: Path) -> None:
    result = invoke("evaluate", "-p", str(policy_file), "-t", "x", "--target", "y", "--param", "count=500",
                    "--param", "tags=[\"a\"]", "--param", "name=bob", "--param", "n=007x", "--format", "json")
    params = json.loads(result.stdout)["action"]["params"]
    assert params == {"count": 500, "tags": ["a"], "name": "bob", "n": "007x"}
    bad = invoke("evaluate", "-p", str(policy_file), "-t", "x", "--target", "y", "--param", "novalue")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.stderr


def test_evaluate_explain_lists_rules(policy_file: Path) -> None:
    result = invoke("evaluate", "-p", str(policy_file), "-t", "read", "--target", "crm", "--explain")
    assert result.exit_code == 0
    assert "✗ no_prod_deletes: type 'read' does not match 'delete*'" in result.stdout
    assert "✓ reads" in result.stdout


def test_evaluate_now_drives_time_conditions(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - name: night\n    match: {type: deploy}\n"
                    "    conditions: {time_after: 18:00, time_before: '08:00'}\n    approval: block\n"
                    "  - {name: day, match: {type: deploy}, approval: auto}\n")
    base = ["evaluate", "-p", str(path), "-t", "deploy", "--target", "prod", "--format", "json", "--now"]
    assert json.loads(invoke(*base, "2025-03-01T23:30:00Z").stdout)["rule"] == "night"
    assert json.loads(invoke(*base, "2025-03-01T07:59:00+00:00").stdout)["rule"] == "night"
    assert json.loads(invoke(*base, "2025-03-01T12:00:00Z").stdout)["rule"] == "day"
    assert invoke(*base, "yesterday").exit_code == 2


def test_evaluate_policy_from_environment(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_POLICY", str(policy_file))
    result = invoke("evaluate", "-t", "read", "--target", "crm", "--format", "json")
    assert json.loads(result.stdout)["rule"] == "reads"


def test_evaluate_without_policy_is_usage_error() -> None:
    result = invoke("evaluate", "-t", "read", "--target", "crm")
    assert result.exit_code == 2


def test_evaluate_invalid_policy_exits_2_with_location(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - name: a\n    approval: sometimes\n")
    result = invoke("evaluate", "-p", str(path), "-t", "read", "--target", "crm")
    assert result.exit_code == 2
    assert f"{path}:3:15: error:" in result.stderr


def test_evaluate_stream(policy_file: Path) -> None:
    lines = [
        {"type": "read", "target": "crm"},
        {"type": "delete", "target": "production", "params": {"count": 1000}, "agent": "bot"},
        {"type": "write", "target": "crm"},
    ]
    result = invoke("evaluate", "-p", str(policy_file), "-", input="".join(json.dumps(x) + "\n" for x in lines))
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert [o["approval"] for o in out] == ["auto", "block", "approve"]
    assert out[1]["action"]["agent"] == "bot" and out[1]["rule"] == "no_prod_deletes"
    assert result.exit_code == 1


def test_evaluate_stream_reports_bad_lines_and_keeps_going(policy_file: Path) -> None:
    text = '{"type": "read", "target": "crm"}\n{"type": "read", \n{"target": "x"}\n\n{"type":"read","target":"c"}\n'
    result = invoke("evaluate", "-p", str(policy_file), "-", input=text)
    assert result.exit_code == 2
    assert "<stdin>:2:" in result.stderr and "<stdin>:3: action field 'type' must be a string" in result.stderr
    out = [json.loads(x) for x in result.stdout.splitlines()]
    # one output line per input action, bad ones answered with a block, nothing lost
    assert [o["approval"] for o in out] == ["auto", "block", "block", "auto"]
    assert out[1]["line"] == 2 and out[1]["rule"] is None


def test_evaluate_stream_from_file(policy_file: Path, tmp_path: Path) -> None:
    src = tmp_path / "actions.jsonl"
    src.write_text("".join(json.dumps({"type": "read", "target": f"t{i}"}) + "\n" for i in range(2500)))
    result = invoke("evaluate", "-p", str(policy_file), "--input", str(src))
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2500
    assert invoke("evaluate", "-p", str(policy_file), "--input", str(tmp_path / "nope")).exit_code == 2


def test_init_writes_valid_starter_and_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "policy.yaml"
    result = invoke("init", str(target))
    assert result.exit_code == 0 and target.exists()
    assert "#" in target.read_text()  # commented
    # the editor hint points at the file `aegis schema` writes, not at a URL nobody serves
    assert target.read_text().startswith("# yaml-language-server: $schema=./policy.schema.json\n")
    assert invoke("validate", "--strict", str(target)).exit_code == 0
    target.write_text("mine")
    assert invoke("init", str(target)).exit_code == 2
    assert target.read_text() == "mine"
    assert invoke("init", "--force", str(target)).exit_code == 0
    assert target.read_text() != "mine"


def test_schema_prints_the_packaged_policy_schema() -> None:
    result = invoke("schema")
    schema = json.loads(result.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    root = Path(__file__).resolve().parent.parent
    assert schema == json.loads((root / "schemas" / "policy.schema.json").read_text())
    assert json.loads(invoke("schema", "action").stdout)["title"] == "aegis action"
    assert invoke("schema", "nonsense").exit_code == 2


def test_real_process_pipeline(policy_file: Path) -> None:
    """`aegis evaluate -` as a co-process: answers each line before the next is written."""
    env = {**os.environ, "AEGIS_POLICY": str(policy_file)}
    proc = subprocess.Popen([sys.executable, "-m", "aegis_cli", "evaluate", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps({"type": "read", "target": "crm"}) + "\n")
    proc.stdin.flush()
    first = json.loads(proc.stdout.readline())  # would hang if output were buffered
    assert first["approval"] == "auto"
    proc.stdin.write(json.dumps({"type": "delete", "target": "prod", "params": {"count": 101}}) + "\n")
    proc.stdin.close()
    second = json.loads(proc.stdout.readline())
    assert second["approval"] == "block"
    assert proc.wait(timeout=30) == 1


def test_bad_policy_in_real_process_has_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"rules:\n  - name: \xff\xfe\n")
    proc = subprocess.run([sys.executable, "-m", "aegis_cli", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"{path}:2:11: error: not UTF-8: byte 0xff cannot be decoded"


def test_help_mentions_environment_variables() -> None:
    result = invoke("evaluate", "--help")
    assert "AEGIS_POLICY" in result.stdout and "AEGIS_AUDIT_DB" in result.stdout


def test_evaluate_record_writes_every_decision_before_printing_it(policy_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    lines = "".join(json.dumps({"type": "read", "target": f"t{i}", "params": {"i": i}}) + "\n" for i in range(1500))
    result = invoke("evaluate", "-p", str(policy_file), "--record", "--audit-db", str(db), "-", input=lines)
    assert result.exit_code == 0, result.stderr
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert [o["audit_id"] for o in out] == sorted({o["audit_id"] for o in out})
    single = invoke("evaluate", "-p", str(policy_file), "-t", "delete", "--target", "prod", "--param", "count=500",
                    "--record", "--audit-db", str(db), "--format", "json")
    assert single.exit_code == 1 and json.loads(single.stdout)["audit_id"] == out[-1]["audit_id"] + 1
    exported = invoke("export", "--jsonl", "--audit-db", str(db))
    records = [json.loads(x) for x in exported.stdout.splitlines()]
    assert len(records) == 1501
    assert records[0]["action"]["params"] == {"i": 0} and records[-1]["decision"]["approval"] == "block"
    assert invoke("audit", "verify", "--audit-db", str(db)).exit_code == 0


def test_evaluate_record_to_unusable_database_exits_2(policy_file: Path, tmp_path: Path) -> None:
    result = invoke("evaluate", "-p", str(policy_file), "-t", "read", "--target", "x", "--record",
                    "--audit-db", str(tmp_path))
    assert result.exit_code == 2 and "audit" in result.stderr and result.stdout == ""


def test_version() -> None:
    from aegis_cli import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"aegis {__version__}"
