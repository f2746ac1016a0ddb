"""Hostile policy files: each one attack, each refused with exit 2 and a located message in words.

The corpus is tests/hostile/*.yaml (one attack per file); files too big to commit are generated here.
Every file is checked three ways: the loader (``PolicyError``), ``check_files`` (what ``aegis validate``
uses) and the CLI itself, in-process and as a real subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis_cli import Action, Approval, Policy, PolicyError
from aegis_cli.cli import app
from aegis_cli.engine.check import check_files
from aegis_cli.engine.yamlload import MAX_BYTES

HOSTILE = Path(__file__).parent / "hostile"
ROOT = Path(__file__).parent.parent

# file -> (line, column, words the message must contain)
EXPECTED: dict[str, tuple[int, int, str]] = {
    "python_object_tag.yaml": (4, 13, "YAML tag '!!python/object/apply:os.system' is not allowed"),
    "python_name_tag.yaml": (1, 8, "YAML tag '!!python/name:os.system' is not allowed"),
    "custom_tag.yaml": (3, 19, "YAML tag '!env' is not allowed"),
    "str_tag_on_key.yaml": (2, 5, "YAML tag '!!str' is not allowed"),
    "duplicate_key.yaml": (4, 5, "duplicate key 'approval'"),
    "duplicate_top_key.yaml": (3, 1, "duplicate key 'rules'"),
    "duplicate_rule_name.yaml": (4, 11, "duplicate rule name 'same' (first used by rules[0])"),
    "implicit_name_collision.yaml": (4, 5, "rules[1] has no name, so it is called 'rule_1'"),
    "unknown_top_key.yaml": (2, 1, "unknown key 'rulez' in the policy; did you mean 'rules'?"),
    "unknown_rule_key.yaml": (3, 5, "unknown key 'approve' in 'rules[0]'; did you mean 'approval'?"),
    "unknown_match_key.yaml": (3, 13, "unknown key 'tool' in 'rules[0].match'"),
    "unknown_operator.yaml": (4, 7, "unknown condition operator 'param_regex'"),
    "unknown_nested_operator.yaml": (6, 13, "operator 'param_equals' in 'rules[0].conditions.any[0].not'"),
    "param_gt_string.yaml": (4, 25, "'rules[0].conditions.param_gt.count' must be a number, not a string (\"100\")"),
    "param_gt_bool.yaml": (4, 26, "must be a number, not a boolean (true)"),
    "param_nan_bound.yaml": (4, 25, "param_gt bound for 'count' is NaN"),
    "param_in_not_list.yaml": (4, 23, "'rules[0].conditions.param_in.env' must be a list, not a string"),
    "param_exists_string.yaml": (4, 29, "must be true or false, not a string (\"yes\")"),
    "empty_param_key.yaml": (4, 17, "'rules[0].conditions.param_eq' has an empty parameter name"),
    "weekday_8.yaml": (4, 21, "'rules[0].conditions.weekdays[1]' is 8; weekdays are ISO numbers 1 (Monday) to 7"),
    "weekday_name.yaml": (4, 18, "must be an integer, not a string (\"monday\")"),
    "time_24_00.yaml": (4, 19, "'rules[0].conditions.time_after' is \"24:00\"; expected a UTC time as \"HH:MM\""),
    "time_7pm.yaml": (4, 20, "'rules[0].conditions.time_before' is \"7pm\"; expected a UTC time"),
    "time_seconds.yaml": (4, 19, "is \"18:00:00\"; expected a UTC time"),
    "time_single_digit.yaml": (4, 19, "is \"8:00\"; expected a UTC time"),
    "time_trailing_newline.yaml": (4, 19, "expected a UTC time"),
    "time_number.yaml": (4, 19, "must be a string, not a number (1800)"),
    "bad_risk.yaml": (3, 17, "'rules[0].risk_level' is \"extreme\"; expected one of \"low\", \"medium\", \"high\""),
    "bad_approval.yaml": (3, 15, "'rules[0].approval' is \"maybe\"; expected one of \"auto\", \"approve\", \"block\""),
    "bad_default.yaml": (1, 22, "'defaults.approval' is \"allow\""),
    "bad_version.yaml": (1, 10, "the only policy version is \"1\""),
    "glob_unclosed.yaml": (3, 19, "bad glob 'del[ete': '[' at position 4 is never closed"),
    "glob_reversed_range.yaml": (3, 21, "bad glob 'db_[9-0]': range 9-0 is reversed"),
    "glob_empty.yaml": (3, 20, "'rules[0].match.agent' must not be empty"),
    "glob_fullwidth_brackets.yaml": (3, 19, "range z-a is reversed"),
    "param_glob_unclosed.yaml": (4, 26, "bad glob '/etc/['"),
    "regex_lookbehind.yaml": (4, 28, "regex '(?<=sudo )rm' is not valid RE2 syntax"),
    "regex_backreference.yaml": (4, 28, "is not valid RE2 syntax"),
    "regex_unbalanced.yaml": (4, 28, "regex '(rm' is not valid RE2 syntax: missing )"),
    "regex_huge_repeat.yaml": (4, 28, "is not valid RE2 syntax: invalid repetition size"),
    "regex_not_string.yaml": (4, 28, "must be a string or a list, not a number (42)"),
    "empty_rule_name.yaml": (2, 11, "'rules[0].name' must not be empty"),
    "rule_not_mapping.yaml": (2, 5, "'rules[0]' must be a mapping, not a string"),
    "null_rule.yaml": (2, 4, "'rules[0]' must be a mapping, not null"),
    "top_level_list.yaml": (1, 1, "the policy must be a mapping, not a list"),
    "top_level_string.yaml": (1, 1, "the policy must be a mapping, not a string"),
    "multiple_documents.yaml": (2, 1, "expected a single YAML document, found several"),
    "invalid_yaml.yaml": (4, 1, "invalid YAML: expected ',' or ']'"),
    "tab_indent.yaml": (2, 1, "invalid YAML: found character '\\t' that cannot start any token"),
    "null_key.yaml": (3, 5, "unknown key 'null' in 'rules[0]'"),
    "complex_key.yaml": (1, 3, "mapping keys must be plain strings"),
    "merge_scalar.yaml": (4, 11, "'<<' merges only mappings"),
    "huge_integer.yaml": (4, 25, "is too long"),
    "recursive_alias.yaml": (1, 8, "nesting deeper than 64 levels"),
    "deep_nesting.yaml": (4, 80, "nesting deeper than 64 levels"),
    "very_deep_nesting.yaml": (1, 71, "nesting deeper than 64 levels"),
    "deep_not.yaml": (64, 127, "nesting deeper than 64 levels"),
    "billion_laughs.yaml": (7, 7, "document expands to more than 2,000,000 values (an alias bomb?)"),
    "invalid_utf8.yaml": (2, 14, "not UTF-8: byte 0xe9 cannot be decoded"),
    "utf16.yaml": (1, 1, "not UTF-8: byte 0xff"),
    "nul_byte.yaml": (2, 12, "NUL byte in file"),
    "control_character.yaml": (2, 12, "control character U+001B is not allowed in YAML"),
    "bidi_in_name_ok_but_ctrl.yaml": (3, 14, "control character U+0007 is not allowed"),
}

LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<message>.+)$")


def test_the_corpus_and_the_table_agree() -> None:
    on_disk = {p.name for p in HOSTILE.glob("*.yaml")}
    assert on_disk == set(EXPECTED), "every hostile file needs an expectation, and every expectation a file"
    assert len(on_disk) >= 60


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_refuses_with_a_located_error(name: str) -> None:
    line, col, words = EXPECTED[name]
    path = HOSTILE / name
    started = time.perf_counter()
    with pytest.raises(PolicyError) as info:
        Policy.from_yaml(path)
    elapsed = time.perf_counter() - started
    first = info.value.issues[0]
    assert (first.file, first.line, first.column) == (str(path), line, col), str(first)
    assert words in first.message
    assert first.severity == "error"
    assert elapsed < 10  # generous: a refusal must never hang (the bomb takes milliseconds)
    report = check_files([path])
    assert report.policy is None and report.errors
    assert str(report.errors[0]) == str(first)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_validate_refuses_with_exit_2(name: str) -> None:
    line, col, words = EXPECTED[name]
    path = HOSTILE / name
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    stderr = result.stderr
    assert "Traceback" not in stderr
    first = stderr.splitlines()[0]
    match = LOCATED.match(first)
    assert match, first
    assert (match["file"], int(match["line"]), int(match["col"])) == (str(path), line, col)
    assert words in match["message"]
    assert result.stdout == ""  # nothing claims the file is fine


def test_cli_validate_as_a_subprocess_reports_every_file() -> None:
    paths = sorted(HOSTILE.glob("*.yaml"))
    proc = subprocess.run([sys.executable, "-m", "aegis_cli", "validate", *map(str, paths)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    firsts: dict[str, str] = {}
    for line in proc.stderr.splitlines():
        match = LOCATED.match(line)
        assert match, line  # every line is file:line:col: error: ...
        firsts.setdefault(Path(match["file"]).name, line)
    assert set(firsts) == set(EXPECTED)
    for name, (line_no, col, words) in EXPECTED.items():
        assert f"{name}:{line_no}:{col}: error: " in firsts[name] and words in firsts[name], firsts[name]


def test_a_python_tag_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "p.yaml"
    path.write_text(f'rules:\n  - name: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8")
    with pytest.raises(PolicyError):
        Policy.from_yaml(path)
    assert not marker.exists()


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w", encoding="utf-8") as f:
        f.write("rules:\n")
        line = "  - {name: r, approval: auto}  # padding padding padding\n"
        f.write(line * (MAX_BYTES // len(line) + 1))
    assert path.stat().st_size > MAX_BYTES
    with pytest.raises(PolicyError) as info:
        Policy.from_yaml(path)
    assert "the limit is 10,485,760" in str(info.value)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}: error: file is ")


def test_size_limit_also_applies_to_text() -> None:
    with pytest.raises(PolicyError, match="the limit is"):
        Policy.from_string("#" * (MAX_BYTES + 1))


def test_many_errors_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - name: a\n    approval: nope\n  - name: b\n    risk_level: huge\n"
                    "  - name: c\n    conditions: {time_after: '25:00'}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert [ln.split(": error:")[0] for ln in result.stderr.splitlines()] == [
        f"{path}:3:15", f"{path}:5:17", f"{path}:7:30"]


# -- what is not an attack loads fine ----------------------------------------------------------


def test_catastrophic_backtracking_regex_is_accepted_and_fast() -> None:
    # RE2 compiles (a+)+$ and matches it in linear time, so it is a valid policy, not a hang
    policy = Policy.from_string(
        "rules:\n  - name: evil_regex\n    conditions: {param_matches: {s: '(a+)+$'}}\n    approval: block\n"
        "  - name: nested\n    conditions: {param_matches: {s: '^(a|aa)*b$'}}\n    approval: block\n")
    started = time.perf_counter()
    d = policy.evaluate(Action("x", "y", {"s": "a" * 50_000 + "!"}))
    assert time.perf_counter() - started < 5  # a backtracking engine would run for ages
    assert d.rule is None
    assert policy.evaluate(Action("x", "y", {"s": "aaa"})).approval is Approval.BLOCK


def test_normal_anchors_aliases_and_merge_keys_validate(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "rules:\n"
        "  - name: prod_deletes\n"
        "    match: &prod {type: 'delete*', target: 'prod*'}\n"
        "    conditions: &night {time_after: 18:00, time_before: 08:00}\n"
        "    approval: block\n"
        "  - name: prod_writes\n"
        "    match: {<<: *prod, type: 'write*'}\n"
        "    conditions: *night\n"
        "    approval: approve\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"ok: {path} (2 rules, sha256:")


def test_shadowed_rules_warn_but_validate(tmp_path: Path) -> None:
    path = tmp_path / "shadow.yaml"
    path.write_text("rules:\n  - name: all\n    approval: auto\n  - name: dead\n    match: {type: rm}\n",
                    encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0
    assert f"{path}:4: warning: rule 'dead' can never match" in result.stderr
    assert CliRunner().invoke(app, ["validate", "--strict", str(path)]).exit_code == 1
