"""Bugs found while integrating, each pinned by a test."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis_cli import Action, InputError, Policy, PolicyError
from aegis_cli.cli import app

runner = CliRunner()


def test_json_style_surrogate_pair_escapes_load_as_one_character() -> None:
    policy = Policy.from_string('rules:\n  - name: "rocket \\ud83d\\ude80"\n    approval: auto\n')
    assert policy.rules[0].name == "rocket 🚀"
    assert policy.hash.startswith("sha256:")


def test_unpaired_surrogate_escape_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('rules:\n  - name: "bad \\ud83d"\n')
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:11: error: unpaired UTF-16 surrogate" in result.stderr


def test_bad_redaction_glob_is_refused_at_load() -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_string('audit: {redact: [password, "a[b"]}\n', "p.yaml")
    assert str(err.value).startswith("p.yaml:1:28: error: audit.redact: bad glob 'a[b'")


@pytest.mark.parametrize("value", [0, [], {}, False])
def test_action_agent_and_session_must_be_strings_even_when_falsy(value: object) -> None:
    with pytest.raises(InputError):
        Action.from_dict({"type": "a", "target": "b", "agent": value})
    with pytest.raises(InputError):
        Action.from_dict({"type": "a", "target": "b", "session": value})
    assert Action.from_dict({"type": "a", "target": "b", "agent_id": "x"}).agent == "x"


def test_huge_duration_is_bad_input_not_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    policy = str(Path(__file__).parent.parent / "examples" / "policy.yaml")
    runner.invoke(app, ["evaluate", "-p", policy, "-t", "read", "--target", "x", "--record", "--audit-db", str(db)])
    result = runner.invoke(app, ["tail-audit", "--audit-db", str(db), "--since", "891145w"])
    assert result.exit_code == 2
    assert "duration too long" in result.stderr


def test_unnamed_rules_from_merged_files_keep_distinct_names(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("rules:\n  - {match: {type: read}, approval: auto}\n")
    team = tmp_path / "team.yaml"
    team.write_text("rules:\n  - {match: {type: delete}, approval: block}\n")
    policy = Policy.from_yaml_files(base, team)
    assert [r.name for r in policy.rules] == ["rule_0", "base.yaml:rule_0"]
    assert policy.evaluate(Action("read", "x")).rule == "base.yaml:rule_0"
    assert policy.evaluate(Action("delete", "x")).rule == "rule_0"
