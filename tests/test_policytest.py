"""aegis test: policy test files, their schema, JUnit XML, and the pytest plugin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml
from typer.testing import CliRunner

from aegis_cli.ci.policytest import TestFileError, load_test_file, run_test_file
from aegis_cli.cli import app
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data" / "simulate"
PASSING = str(DATA / "passing.aegis-test.yaml")
FAILING = str(DATA / "failing.aegis-test.yaml")
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_passing_file_exits_0() -> None:
    code, out, _ = run("test", PASSING)
    assert code == 0
    assert "5 passed, 0 failed" in out


def test_failing_case_exits_1_with_diff_and_explanation() -> None:
    code, out, _ = run("test", PASSING, FAILING)
    assert code == 1
    assert f"FAIL {FAILING}:7  external email is automatic (wrong)" in out
    assert "approval: expected auto, got approve" in out
    assert "rule: expected internal-email, got null (defaults)" in out
    assert "✗ internal-email: condition" in out  # the decision's explanation
    assert "6 passed, 1 failed" in out


def test_json_format() -> None:
    code, out, _ = run("test", FAILING, "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["passed"] is False and report["cases"] == 2 and report["failures"] == 1
    case = report["files"][0]["cases"][1]
    assert case["mismatches"][0] == {"field": "approval", "expected": "auto", "actual": "approve"}
    assert case["line"] == 7 and "explanation" in case


def test_junit_xml_is_accepted_by_a_junit_parser(tmp_path: Path) -> None:
    out = tmp_path / "results.xml"
    code, _, _ = run("test", PASSING, FAILING, "--junit-xml", str(out))
    assert code == 1
    xml = JUnitXml.fromfile(str(out))
    suites = list(xml)
    assert [s.tests for s in suites] == [5, 2]
    assert [s.failures for s in suites] == [0, 1]
    assert suites[0].name == "simulate policy cases"
    failed = [c for s in suites for c in s if c.result]
    assert len(failed) == 1 and failed[0].name == "external email is automatic (wrong)"
    failure = failed[0].result[0]
    assert isinstance(failure, Failure)
    assert "approval: expected auto, got approve" in failure.message
    assert "decision: approve (medium risk)" in failure.text
    passed = [c for s in suites for c in s if not c.result]
    assert len(passed) == 6 and all(c.classname for c in passed)


def test_malformed_test_file_is_located_and_exits_2(tmp_path: Path) -> None:
    shutil.copy(DATA / "policy.yaml", tmp_path / "policy.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: policy.yaml\ncases:\n  - action: {type: delete, target: prod}\n"
                   "    expect: {approval: blocked}\n  - action: {type: x, target: y}\n"
                   "    expect: {aproval: auto}\n")
    code, out, err = run("test", str(bad))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert any(line.startswith(f"{bad}:4:") and "blocked" in line for line in lines), err
    assert any(line.startswith(f"{bad}:6:") and "did you mean 'approval'" in line for line in lines), err
    with pytest.raises(TestFileError):
        load_test_file(bad)


@pytest.mark.parametrize("text, message", [
    ("cases: []\n", "missing required key 'policy'"),
    ("policy: p.yaml\ncases:\n  - expect: {approval: auto}\n", "cases[0]"),
    ("policy: p.yaml\nnow: yesterday\ncases:\n  - action: {type: a, target: b}\n    expect: {rule: null}\n",
     "not an ISO 8601 timestamp"),
    ("policy: p.yaml\ncases: [\n", "invalid YAML"),
    ("- just\n- a list\n", "a test file must be a mapping"),
])
def test_test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    code, _, err = run("test", str(path))
    assert code == 2 and message in err and str(path) in err


def test_missing_or_broken_policy_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("policy: nowhere.yaml\ncases:\n  - action: {type: a, target: b}\n    expect: {approval: auto}\n")
    code, _, err = run("test", str(path))
    assert code == 2 and "nowhere.yaml: error: no such file" in err
    code, _, err = run("test", str(tmp_path / "absent.yaml"))
    assert code == 2 and "cannot read" in err


def test_library_run_and_case_time_order(tmp_path: Path) -> None:
    shutil.copy(DATA / "policy.yaml", tmp_path / "policy.yaml")
    path = tmp_path / "t.yaml"
    path.write_text(
        "policy: policy.yaml\nnow: '2026-01-01T23:00:00Z'\ncases:\n"
        "  - action: {type: deploy, target: web}\n    expect: {approval: block}\n"
        "  - action: {type: deploy, target: web, timestamp: '2026-01-01T12:00:00Z'}\n    expect: {approval: auto}\n"
        "  - action: {type: deploy, target: web, timestamp: '2026-01-01T12:00:00Z'}\n"
        "    now: '2026-01-01T02:00:00Z'\n    expect: {approval: block}\n")
    result = run_test_file(path)
    assert [c.passed for c in result.cases] == [True, True, True]
    assert result.cases[0].name == "case 1: deploy web"


PLUGIN_TEST = '''
from aegis_cli import Action, Approval

def test_prod_deletes_are_blocked(aegis_policy):
    policy = aegis_policy("policy.yaml")
    assert policy.evaluate(Action("delete", "production")).approval is Approval.BLOCK

def test_merged_layers(aegis_policy):
    policy = aegis_policy("baseline.yaml", "policy.yaml")
    assert policy.evaluate(Action("delete", "production")).rule == "no-prod-deletes"

def test_broken_policy_fails_with_location(aegis_policy):
    aegis_policy("broken.yaml")
'''


def test_pytest_plugin_fixture_and_test_file_collection(tmp_path: Path) -> None:
    for name in ("policy.yaml", "baseline.yaml", "passing.aegis-test.yaml", "failing.aegis-test.yaml"):
        shutil.copy(DATA / name, tmp_path / name)
    (tmp_path / "broken.yaml").write_text("version: '1'\nrules:\n  - approval: nope\n")
    (tmp_path / "test_policy.py").write_text(PLUGIN_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\naegis_test_files = *.aegis-test.yaml\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf"],
                          cwd=tmp_path, capture_output=True, text=True)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "2 failed, 8 passed" in out, out
    assert "broken.yaml:3:" in out  # a policy that does not load fails with its location
    assert "approval: expected auto, got approve" in out  # a failing aegis case shows the diff


def test_plugin_imports_nothing_heavy() -> None:
    code = ("import sys, aegis_cli\nbefore = set(sys.modules)\nimport aegis_cli.ci.pytest_plugin\n"
            "added = sorted(m for m in set(sys.modules) - before if m.startswith('aegis_cli'))\n"
            "heavy = [m for m in ('rich', 'httpx', 'sqlite_utils', 'jsonschema', 'typer') if m in sys.modules]\n"
            "print(added, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['aegis_cli.ci', 'aegis_cli.ci.pytest_plugin'] []"
