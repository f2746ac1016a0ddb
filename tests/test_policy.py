"""The compiled policy: first match, defaults, merging, fail-closed, explanations, hashing, caching."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import aegis_cli.engine.policy as policy_module
from aegis_cli import Action, Approval, Decision, Policy, PolicyError, RiskLevel
from aegis_cli.engine.check import check_files

NOON = dt.datetime(2024, 5, 15, 12, 0, tzinfo=dt.UTC)

BASE = """\
version: "1"
defaults: {risk_level: low, approval: auto, reason: "nothing special"}
rules:
  - name: no_prod_deletes
    description: optional text
    match: {type: "delete*", target: "prod*", agent: "*"}
    conditions:
      param_gt: {count: 100}
    risk_level: critical
    approval: block
    reason: "Deleting production data is never automated"
  - name: prod_writes
    match: {type: "write", target: "prod*"}
    risk_level: high
    approval: approve
  - name: reads
    match: {type: "read"}
    risk_level: low
    approval: auto
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def base() -> Policy:
    return Policy.from_string(BASE, "base.yaml")


def test_the_issue_example(base: Policy) -> None:
    d = base.evaluate(Action("delete_rows", "production", {"count": 500}))
    assert (d.approval, d.risk_level, d.rule) == (Approval.BLOCK, RiskLevel.CRITICAL, "no_prod_deletes")
    assert d.reason == "Deleting production data is never automated"
    assert not d.allowed
    # the same delete under the threshold falls through every rule to the defaults
    d = base.evaluate(Action("delete_rows", "production", {"count": 5}))
    assert (d.approval, d.risk_level, d.rule, d.reason) == (Approval.AUTO, RiskLevel.LOW, None, "nothing special")


def test_first_match_wins() -> None:
    policy = Policy.from_dict({"rules": [
        {"name": "first", "match": {"type": "write"}, "approval": "block", "risk_level": "high"},
        {"name": "second", "match": {"type": "write"}, "approval": "auto", "risk_level": "low"},
        {"name": "third", "approval": "approve"},
    ]})
    assert policy.evaluate(Action("write", "x")).rule == "first"
    assert policy.evaluate(Action("read", "x")).rule == "third"


def test_conditional_rule_falls_through_to_the_next() -> None:
    policy = Policy.from_dict({"rules": [
        {"name": "big", "match": {"type": "pay"}, "conditions": {"param_gt": {"n": 10}}, "approval": "block"},
        {"name": "literal", "match": {"type": "pay"}, "approval": "approve"},
        {"name": "wild", "match": {"type": "p*"}, "approval": "auto"},
    ]})
    assert policy.evaluate(Action("pay", "x", {"n": 11})).rule == "big"
    assert policy.evaluate(Action("pay", "x", {"n": 1})).rule == "literal"
    assert policy.evaluate(Action("PAY", "x", {"n": 11})).rule == "big"
    assert policy.evaluate(Action("post", "x")).rule == "wild"


def test_wildcard_rule_before_a_literal_one_keeps_file_order() -> None:
    # the literal-type index must merge with wildcard rules in file order, not check literals first
    policy = Policy.from_dict({"rules": [
        {"name": "wild", "match": {"type": "de*"}, "approval": "block"},
        {"name": "literal", "match": {"type": "delete"}, "approval": "auto"},
    ]})
    assert policy.evaluate(Action("delete", "x")).rule == "wild"


def test_defaults_when_the_file_has_none() -> None:
    policy = Policy.from_dict({"rules": [{"name": "r", "match": {"type": "x"}}]})
    d = policy.evaluate(Action("y", "z"))
    assert (d.approval, d.risk_level, d.rule) == (Approval.APPROVE, RiskLevel.MEDIUM, None)
    assert d.reason  # always says why
    d = policy.evaluate(Action("x", "z"))
    assert (d.approval, d.risk_level, d.rule) == (Approval.APPROVE, RiskLevel.MEDIUM, "r")
    assert d.reason == "matched rule 'r'"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "rules: []\n", "rules:\n", "version: '1'\n"])
def test_empty_policies_give_the_defaults(text: str) -> None:
    d = Policy.from_string(text).evaluate(Action("anything", "at all"))
    assert (d.approval, d.risk_level, d.rule) == (Approval.APPROVE, RiskLevel.MEDIUM, None)


# -- Aegis compatibility ---------------------------------------------------------------------------

AEGIS_STYLE = """\
version: "1"
scope: project
rules:
  - match: {type: "read*"}
    risk_level: low
    approval: auto
  - match: {type: "delete", target: "prod*"}
    risk_level: critical
    approval: block
  - match: {type: "*", agent: "intern-*"}
    risk_level: high
    approval: approve
  - match: {type: "write", target: "db_[0-9]"}
    risk_level: medium
    approval: approve
"""


def test_aegis_style_file_loads_and_decides_as_aegis_documents() -> None:
    policy = Policy.from_string(AEGIS_STYLE, "aegis.yaml")
    assert [r.name for r in policy.rules] == ["rule_0", "rule_1", "rule_2", "rule_3"]
    assert [r.to_dict().get("name") for r in policy.rules] == [None] * 4  # unnamed stays unnamed
    cases = [
        (Action("read_file", "x"), ("auto", "low", "rule_0")),
        (Action("read", "prod", agent="intern-7"), ("auto", "low", "rule_0")),  # first match wins
        (Action("delete", "production"), ("block", "critical", "rule_1")),
        (Action("delete", "staging", agent="intern-7"), ("approve", "high", "rule_2")),
        (Action("write", "db_7"), ("approve", "medium", "rule_3")),
        (Action("write", "db_77"), ("approve", "medium", None)),  # no defaults: medium/approve
        (Action("delete", "staging"), ("approve", "medium", None)),
    ]
    for action, (approval, risk, rule) in cases:
        d = policy.evaluate(action)
        assert (d.approval.value, d.risk_level.value, d.rule) == (approval, risk, rule), action


def test_unnamed_rule_names_cannot_collide_with_explicit_ones() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_string("rules:\n  - name: rule_1\n    match: {type: a}\n  - match: {type: b}\n", "p.yaml")
    issue = info.value.issues[0]
    assert (issue.line, issue.column) == (4, 5)
    assert "rule_1" in issue.message


# -- merging -----------------------------------------------------------------------------------

OVERRIDE = """\
defaults: {risk_level: high, approval: block}
rules:
  - name: reads
    match: {type: "read"}
    conditions: {param_eq: {sensitive: true}}
    risk_level: high
    approval: approve
  - name: deploys
    match: {type: "deploy"}
    approval: auto
    risk_level: low
"""


def test_from_yaml_files_later_overrides_earlier(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", BASE)
    b = write(tmp_path, "b.yaml", OVERRIDE)
    policy = Policy.from_yaml_files(a, b)
    assert [r.name for r in policy.rules] == ["reads", "deploys", "no_prod_deletes", "prod_writes"]
    assert policy.sources == (str(a), str(b))
    # the later file's rules are checked first
    assert policy.evaluate(Action("deploy", "prod")).rule == "deploys"
    # the named rule 'reads' of a.yaml is replaced, not merely shadowed: a non-sensitive read no
    # longer reaches a.yaml's unconditional 'reads' rule but the (later file's) defaults
    d = policy.evaluate(Action("read", "x", {"sensitive": False}))
    assert (d.rule, d.approval, d.risk_level) == (None, Approval.BLOCK, RiskLevel.HIGH)
    assert policy.evaluate(Action("read", "x", {"sensitive": True})).approval is Approval.APPROVE
    # the earlier file's other rules still apply
    assert policy.evaluate(Action("write", "prod-db")).rule == "prod_writes"
    assert Policy.from_yaml(a).merge(Policy.from_yaml(b)).hash == policy.hash


def test_merge_keeps_earlier_defaults_when_the_later_file_has_none(base: Policy) -> None:
    later = Policy.from_string("rules:\n  - name: x\n    match: {type: x}\n    approval: block\n")
    merged = base.merge(later)
    d = merged.evaluate(Action("nothing", "matches"))
    assert (d.approval, d.risk_level, d.reason) == (Approval.AUTO, RiskLevel.LOW, "nothing special")
    # and the other way round the later file's explicit defaults win
    merged = later.merge(base)
    assert merged.evaluate(Action("nothing", "matches")).approval is Approval.AUTO
    explicit = Policy.from_string("defaults: {approval: block}\n")
    d = base.merge(explicit).evaluate(Action("nothing", "matches"))
    assert (d.approval, d.risk_level) == (Approval.BLOCK, RiskLevel.MEDIUM)


def test_merge_three_files_in_order(tmp_path: Path) -> None:
    files = [write(tmp_path, f"{i}.yaml", f"rules:\n  - name: r\n    approval: auto\n    reason: file {i}\n")
             for i in range(3)]
    policy = Policy.from_yaml_files(*files)
    assert len(policy.rules) == 1
    assert policy.evaluate(Action("a", "b")).reason == "file 2"


def test_from_yaml_files_needs_a_path() -> None:
    with pytest.raises(ValueError):
        Policy.from_yaml_files()


def test_check_files_collects_errors_from_every_file(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", BASE)
    bad1 = write(tmp_path, "bad1.yaml", "rules:\n  - name: a\n    approval: nope\n")
    bad2 = write(tmp_path, "bad2.yaml", "rules:\n  - name: a\n  - name: a\n")
    report = check_files([good, bad1, bad2])
    assert report.policy is None
    assert [(i.file, i.line) for i in report.errors] == [(str(bad1), 3), (str(bad2), 3)]
    report = check_files([good, write(tmp_path, "c.yaml", OVERRIDE)])
    assert report.policy is not None and not report.errors


def test_shadowed_rule_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "rules:\n  - name: all\n    approval: auto\n  - name: never\n"
                                     "    match: {type: delete}\n    approval: block\n")
    report = check_files([path])
    assert not report.errors
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert (warning.line, warning.severity) == (4, "warning")
    assert "'never' can never match" in warning.message and "'all'" in warning.message


# -- fail closed -------------------------------------------------------------------------------


def test_an_exception_inside_a_condition_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_dict({"defaults": {"approval": "auto"}, "rules": [
        {"name": "regex", "match": {"type": "run"}, "conditions": {"param_matches": {"cmd": "rm"}},
         "approval": "auto"},
        {"name": "fallback", "approval": "auto"},
    ]})

    # a params mapping whose lookups blow up, as a buggy adapter might hand over
    class Exploding(dict):
        def get(self, *args: object) -> object:
            raise RuntimeError("boom")

    d = policy.evaluate(Action("run", "sh", Exploding(cmd="ls")))
    assert (d.approval, d.risk_level, d.rule) == (Approval.BLOCK, RiskLevel.CRITICAL, "regex")
    assert "RuntimeError: boom" in d.reason and "fail closed" in d.reason
    d = policy.evaluate(Action("run", "sh", Exploding(cmd="ls")), explain=True)
    assert (d.approval, d.rule) == (Approval.BLOCK, "regex")
    # params that are not a mapping at all
    d = policy.evaluate(Action("run", "sh", None))  # type: ignore[arg-type]
    assert (d.approval, d.rule) == (Approval.BLOCK, "regex")
    # a rule without conditions never touches params, so it still decides
    assert policy.evaluate(Action("other", "sh", None)).rule == "fallback"  # type: ignore[arg-type]


def test_a_non_numeric_value_blocks_naming_the_rule(base: Policy) -> None:
    d = base.evaluate(Action("delete", "prod", {"count": "lots"}))
    assert (d.approval, d.risk_level, d.rule) == (Approval.BLOCK, RiskLevel.CRITICAL, "no_prod_deletes")
    assert "'count'" in d.reason


def test_a_hostile_string_subclass_fails_closed() -> None:
    class Evil(str):
        def isascii(self) -> bool:
            raise RuntimeError("gotcha")

        def isprintable(self) -> bool:
            raise RuntimeError("gotcha")

        __hash__ = str.__hash__

    policy = Policy.from_dict({"rules": [{"name": "r", "approval": "auto"}]})
    d = policy.evaluate(Action(Evil("read"), "x"))
    assert d.approval is Approval.BLOCK and d.rule is None


# -- explanations and serialisation ------------------------------------------------------------


def test_explain(base: Policy) -> None:
    d = base.evaluate(Action("write", "production", {"count": 1}), explain=True)
    assert d.rule == "prod_writes" and d.trace is not None
    assert [(c.rule, c.matched) for c in d.trace] == [("no_prod_deletes", False), ("prod_writes", True)]
    assert "type 'write' does not match 'delete*'" in d.trace[0].why
    text = d.explain()
    assert text.splitlines()[0] == "approve (high risk) by rule 'prod_writes': matched rule 'prod_writes'"
    assert "✗ no_prod_deletes" in text and "✓ prod_writes" in text

    d = base.evaluate(Action("delete", "prod", {"count": 5}), explain=True)
    assert d.trace is not None
    assert d.trace[0].rule == "no_prod_deletes" and not d.trace[0].matched
    assert d.trace[0].why == 'condition {"param_gt": {"count": 100}} does not hold'
    assert d.trace[-1].rule == "(defaults)"
    assert "by the policy defaults" in d.explain()


def test_explain_agrees_with_evaluate(base: Policy) -> None:
    actions = [Action("delete", "prod", {"count": c}) for c in (5, 500, "x")] + [
        Action("read", "a"), Action("write", "prod"), Action("x\ny", "z"),
        Action("ＤＥＬＥＴＥ", "PROD", {"count": 101})]
    for action in actions:
        plain, explained = base.evaluate(action, NOON), base.evaluate(action, NOON, explain=True)
        assert (plain.approval, plain.risk_level, plain.rule, plain.reason) == (
            explained.approval, explained.risk_level, explained.rule, explained.reason)
        assert plain.trace is None and explained.trace


def test_decision_to_dict(base: Policy) -> None:
    d = base.evaluate(Action("read", "x"))
    data = d.to_dict()
    assert data == {"approval": "auto", "risk_level": "low", "rule": "reads", "reason": "matched rule 'reads'",
                    "policy_hash": base.hash}
    assert json.loads(json.dumps(data)) == data
    data = base.evaluate(Action("zzz", "x"), explain=True).to_dict()
    assert data["rule"] is None
    assert data["explanation"][-1] == {"rule": "(defaults)", "matched": True, "why": "no rule matched"}
    assert len(data["explanation"]) == 4


def test_decision_matches_its_json_schema(base: Policy) -> None:
    from aegis_cli.engine import schemas

    for action in (Action("read", "x"), Action("nothing", "x"), Action("delete", "prod", {"count": "x"})):
        for explain in (False, True):
            assert schemas.validate("decision", base.evaluate(action, explain=explain).to_dict(), "<d>") == []


def test_decision_is_a_frozen_value(base: Policy) -> None:
    d = base.evaluate(Action("read", "x"))
    assert isinstance(d, Decision)
    with pytest.raises(AttributeError):
        d.approval = Approval.BLOCK  # type: ignore[misc]


def test_to_dict_round_trips(base: Policy) -> None:
    again = Policy.from_dict(base.to_dict())
    assert again.hash == base.hash
    aegis = Policy.from_string(AEGIS_STYLE)
    assert Policy.from_dict(aegis.to_dict()).hash == aegis.hash


# -- the hash ------------------------------------------------------------------------------------


def test_hash_ignores_comments_whitespace_quoting_and_key_order() -> None:
    reformatted = (
        "# a comment\n"
        "version: '1'\n"
        "defaults:\n  approval: auto   # trailing comment\n  risk_level: low\n  reason: nothing special\n"
        "rules:\n"
        "- name: no_prod_deletes\n"
        "  description: optional text\n"
        "  approval: block\n  risk_level: critical\n"
        "  reason: Deleting production data is never automated\n"
        "  conditions: {param_gt: {count: 100}}\n"
        "  match: {agent: '*', target: 'prod*', type: 'delete*'}\n"
        "- {name: prod_writes, match: {type: write, target: prod*}, risk_level: high, approval: approve}\n"
        "- {name: reads, match: {type: read}, risk_level: low, approval: auto}\n"
    )
    assert Policy.from_string(reformatted).hash == Policy.from_string(BASE).hash
    assert Policy.from_string(BASE).hash.startswith("sha256:") and len(Policy.from_string(BASE).hash) == 71


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("param_gt: {count: 100}", "param_gt: {count: 101}"),
        ("approval: block", "approval: approve"),
        ("risk_level: critical", "risk_level: high"),
        ('target: "prod*"', 'target: "prod-*"'),
        ("reason: \"Deleting", "reason: \"Removing"),
        ("risk_level: low, approval: auto", "risk_level: low, approval: approve"),
        ("name: reads", "name: readers"),
    ],
)
def test_hash_changes_with_meaning(old: str, new: str) -> None:
    assert old in BASE
    assert Policy.from_string(BASE.replace(old, new, 1)).hash != Policy.from_string(BASE).hash


def test_hash_changes_with_rule_order() -> None:
    swapped = Policy.from_dict({"rules": list(reversed(Policy.from_string(BASE).to_dict()["rules"]))})
    assert swapped.hash != Policy.from_string(BASE).hash


def test_decisions_carry_the_policy_hash(base: Policy) -> None:
    actions = (Action("read", "x"), Action("zzz", "x"), Action("a\x00", "x"), Action("delete", "prod", {"count": "x"}))
    for action in actions:
        assert base.evaluate(action).policy_hash == base.hash


# -- the index and the cache -------------------------------------------------------------------


def test_same_action_twice_gives_the_same_decision(base: Policy) -> None:
    for action in (Action("delete", "prod", {"count": 500}), Action("delete", "prod", {"count": 5}),
                   Action("DELETE", "PROD", {"count": "x"}), Action("zzz", "x"), Action("a\nb", "x")):
        first = base.evaluate(action, NOON)
        assert base.evaluate(action, NOON) == first
        assert base.evaluate(action, NOON, explain=True).rule == first.rule


def test_cache_does_not_remember_parameters_or_time() -> None:
    # the cache is keyed on (type, target, agent); conditions must still run on every call
    policy = Policy.from_dict({"rules": [
        {"name": "night", "match": {"type": "deploy"}, "conditions": {"time_after": "18:00"}, "approval": "block"},
        {"name": "big", "match": {"type": "deploy"}, "conditions": {"param_gt": {"n": 5}}, "approval": "approve"},
        {"name": "rest", "approval": "auto"},
    ]})
    night = NOON.replace(hour=19)
    assert policy.evaluate(Action("deploy", "p", {"n": 1}), NOON).rule == "rest"
    assert policy.evaluate(Action("deploy", "p", {"n": 9}), NOON).rule == "big"
    assert policy.evaluate(Action("deploy", "p", {"n": 1}), night).rule == "night"
    assert policy.evaluate(Action("deploy", "p", {"n": 1}), NOON).rule == "rest"


def test_cache_filling_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module, "_CACHE_LIMIT", 8)
    policy = Policy.from_dict({"rules": [
        {"name": "odd", "match": {"type": "*1", "target": "t*"}, "approval": "block"},
        {"name": "rest", "match": {"target": "t*"}, "approval": "auto"},
    ]})
    expected = {}
    for round_ in range(3):
        for i in range(50):  # far more distinct actions than the cache holds
            action = Action(f"type{i}", f"t{i}")
            rule = policy.evaluate(action).rule
            assert rule == ("odd" if str(i).endswith("1") else "rest")
            assert expected.setdefault(i, rule) == rule, round_
            assert len(policy._cache) <= 8


def test_agent_is_part_of_the_cache_key() -> None:
    policy = Policy.from_dict({"rules": [{"name": "bots", "match": {"agent": "bot*"}, "approval": "block"}]})
    assert policy.evaluate(Action("a", "b", agent="bot1")).rule == "bots"
    assert policy.evaluate(Action("a", "b", agent="human")).rule is None
    assert policy.evaluate(Action("a", "b", agent="bot1")).rule == "bots"


def test_policy_is_usable_from_threads(base: Policy) -> None:
    from concurrent.futures import ThreadPoolExecutor

    actions = [Action(f"delete{i % 7}", "prod", {"count": i}) for i in range(2000)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda a: base.evaluate(a, NOON).rule, actions))
    assert results == [base.evaluate(a, NOON).rule for a in actions]


# -- anchors, aliases, merge keys ------------------------------------------------------------


def test_anchors_aliases_and_merge_keys_in_normal_use() -> None:
    text = """\
rules:
  - name: prod_deletes
    match: &prod_delete {type: "delete*", target: "prod*"}
    conditions: &big
      param_gt: {count: 100}
    risk_level: critical
    approval: block
  - name: prod_deletes_by_bots
    match:
      <<: *prod_delete
      agent: "bot-*"
    risk_level: high
    approval: approve
  - name: big_anything
    conditions:
      <<: *big
      param_exists: [confirmed]
    approval: approve
  - name: night
    conditions: {time_after: 18:00, time_before: 06:30}
    approval: block
"""
    policy = Policy.from_string(text)
    rules = {r.name: r for r in policy.rules}
    assert rules["prod_deletes_by_bots"].match_type == "delete*"
    assert rules["prod_deletes_by_bots"].match_agent == "bot-*"
    assert rules["big_anything"].conditions == {"param_gt": {"count": 100}, "param_exists": ["confirmed"]}
    assert rules["night"].conditions == {"time_after": "18:00", "time_before": "06:30"}
    assert policy.evaluate(Action("delete", "prod", {"count": 500}), NOON).rule == "prod_deletes"
    assert policy.evaluate(Action("delete", "prod", {"count": 1}), NOON).rule is None
    assert policy.evaluate(Action("delete", "prod", {"count": 1}), NOON.replace(hour=20)).rule == "night"


def test_merge_key_explicit_keys_win() -> None:
    text = "rules:\n  - name: a\n    match: &m {type: read, target: x}\n  - name: b\n    match: {<<: *m, type: write}\n"
    rule = Policy.from_string(text).rules[1]
    assert (rule.match_type, rule.match_target) == ("write", "x")


def test_yaml_1_2_scalars() -> None:
    # 'no', 'on', 'yes' are strings in YAML 1.2; an unquoted time is a string, not sexagesimal
    text = "rules:\n  - name: r\n    conditions:\n      param_eq: {answer: no, flag: true, n: 0x10, f: 1.5}\n" \
           "      time_before: 23:59\n"
    rule = Policy.from_string(text).rules[0]
    assert rule.conditions == {"param_eq": {"answer": "no", "flag": True, "n": 16, "f": 1.5}, "time_before": "23:59"}


def test_values_built_field_by_field_set_every_field() -> None:
    # Action and Pending store their fields one by one (not through values.init, on the hot path):
    # an unset slot would raise here, a field stored in another's place would compare unequal.
    from aegis_cli.audit.canonical import Pending

    when = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    assert Action("t", "g", {"k": 1}, "ag", "se", when)._tuple() == ("t", "g", {"k": 1}, "ag", "se", when)
    assert Action("t", "g")._tuple() == ("t", "g", {}, "", "", None)
    assert Pending("h", "d", "m")._tuple() == ("h", "d", "m")
