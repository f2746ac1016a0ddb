"""Every condition operator, dotted paths, combinators, time windows and weekdays."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import reference

from aegis_cli import Action, Approval, Policy
from aegis_cli.engine.conditions import (
    MISSING,
    ConditionError,
    ConditionSyntaxError,
    compile_conditions,
    lookup,
    uses_time,
)
from aegis_cli.engine.errors import PolicyError

NOON = dt.datetime(2024, 5, 15, 12, 0, tzinfo=dt.UTC)  # a Wednesday (ISO 3)


def holds(spec: dict[str, Any], params: dict[str, Any], now: dt.datetime = NOON) -> bool:
    """Engine and reference must agree; returns their answer."""
    pred = compile_conditions(spec)
    engine = True if pred is None else pred(params, now)
    assert engine is reference.holds(spec, params, now)
    return engine


def raises(spec: dict[str, Any], params: dict[str, Any]) -> str:
    pred = compile_conditions(spec)
    assert pred is not None
    with pytest.raises(ConditionError) as info:
        pred(params, NOON)
    with pytest.raises(reference.ReferenceError_):
        reference.holds(spec, params, NOON)
    return str(info.value)


# -- numeric ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "bound", "value", "expected"),
    [
        ("param_gt", 100, 101, True),
        ("param_gt", 100, 100, False),
        ("param_gte", 100, 100, True),
        ("param_gte", 100, 99.9, False),
        ("param_lt", 100, 99, True),
        ("param_lt", 100, 100, False),
        ("param_lte", 100, 100.0, True),
        ("param_lte", 100, 100.5, False),
        ("param_gt", 0.5, 1, True),
        ("param_gt", -1, 0, True),
        ("param_gt", 100, "101", True),  # numeric strings compare as numbers
        ("param_gt", 100, " 101 ", True),
        ("param_gt", 100, "1e3", True),
        ("param_lt", 100, "-5.5", True),
        ("param_gt", 100, "99", False),
        ("param_gt", 10**20, 10**20 + 1, True),  # big ints stay exact
        ("param_gt", 100, float("inf"), True),
        ("param_lt", 100, "-inf", True),
    ],
)
def test_numeric(op: str, bound: float, value: Any, expected: bool) -> None:
    assert holds({op: {"n": bound}}, {"n": value}) is expected


@pytest.mark.parametrize("value", ["abc", "", "12abc", True, False, None, [1], {"a": 1}, "nan", float("nan")])
@pytest.mark.parametrize("op", ["param_gt", "param_gte", "param_lt", "param_lte"])
def test_non_numbers_under_a_numeric_operator_raise(op: str, value: Any) -> None:
    message = raises({op: {"n": 1}}, {"n": value})
    assert "'n'" in message and "number" in message


def test_numeric_missing_is_false_not_an_error() -> None:
    assert holds({"param_gt": {"n": 1}}, {}) is False
    assert holds({"param_lt": {"n": 1}}, {"m": 0}) is False


def test_nan_parameter_fails_closed_in_a_policy() -> None:
    # a float NaN compares false with everything; if that made the rule not match, the next
    # rule could let a huge payment through. It must block like the string "nan" does.
    policy = Policy.from_dict({"rules": [
        {"name": "big", "match": {"type": "pay"}, "conditions": {"param_gt": {"amount": 1000}}, "approval": "block"},
        {"name": "small", "match": {"type": "pay"}, "approval": "auto"},
    ]})
    for amount in (float("nan"), "nan", "NaN", True):
        decision = policy.evaluate(Action("pay", "bank", {"amount": amount}))
        assert (decision.approval, decision.rule) == (Approval.BLOCK, "big"), amount
        assert "fail closed" in decision.reason
    assert policy.evaluate(Action("pay", "bank", {"amount": 5})).rule == "small"


def test_nan_bound_is_a_validation_error() -> None:
    with pytest.raises(PolicyError, match="NaN"):
        Policy.from_string("rules:\n  - name: r\n    conditions: {param_gt: {x: .nan}}\n")


# -- equality and membership --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "value", "result"),
    [
        ("admin", "admin", True),
        ("admin", "Admin", False),  # parameters are compared exactly, unlike names
        (1, 1, True),
        (1, 1.0, True),
        (1, "1", False),
        (1, True, False),  # booleans are not numbers
        (0, False, False),
        (True, True, True),
        (True, 1, False),
        (None, None, True),
        (None, "", False),
        ([1, 2], [1, 2], True),
        ([1], [True], False),  # strict at every depth
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": True}, False),
        ({"a": [0]}, {"a": [False]}, False),
    ],
)
def test_param_eq(expected: Any, value: Any, result: bool) -> None:
    assert holds({"param_eq": {"k": expected}}, {"k": value}) is result


def test_param_eq_missing_is_false_even_for_null() -> None:
    assert holds({"param_eq": {"k": None}}, {}) is False


@pytest.mark.parametrize(
    ("expected", "value", "result"),
    [
        ("rm", "sudo rm -rf /", True),
        ("RM", "sudo rm -rf /", False),
        ("x", "", False),
        ("", "anything", True),
        ("b", ["a", "b"], True),
        ("c", ["a", "b"], False),
        (1, [1, 2], True),
        (1, [True], False),
        ("key", {"key": 1}, True),
        ("val", {"key": "val"}, False),  # a mapping contains its keys
        ("1", 123, False),  # numbers contain nothing
        (1, "123", False),
    ],
)
def test_param_contains(expected: Any, value: Any, result: bool) -> None:
    assert holds({"param_contains": {"k": expected}}, {"k": value}) is result


def test_param_in_and_not_in() -> None:
    assert holds({"param_in": {"env": ["dev", "staging"]}}, {"env": "dev"}) is True
    assert holds({"param_in": {"env": ["dev", "staging"]}}, {"env": "prod"}) is False
    assert holds({"param_in": {"n": [1, 2]}}, {"n": True}) is False
    assert holds({"param_in": {"n": [1, 2]}}, {"n": 2.0}) is True
    assert holds({"param_in": {"env": []}}, {"env": "x"}) is False
    assert holds({"param_not_in": {"env": ["dev", "staging"]}}, {"env": "prod"}) is True
    assert holds({"param_not_in": {"env": ["dev", "staging"]}}, {"env": "dev"}) is False
    assert holds({"param_not_in": {"env": []}}, {"env": "x"}) is True
    # a missing parameter makes not_in false too: absence is not evidence
    assert holds({"param_not_in": {"env": ["prod"]}}, {}) is False
    assert holds({"param_in": {"env": ["prod"]}}, {}) is False


def test_param_exists() -> None:
    assert holds({"param_exists": {"token": True}}, {"token": None}) is True
    assert holds({"param_exists": {"token": True}}, {}) is False
    assert holds({"param_exists": {"token": False}}, {}) is True  # false asks for absence
    assert holds({"param_exists": {"token": False}}, {"token": ""}) is False
    assert holds({"param_exists": ["a", "b"]}, {"a": 1, "b": 2}) is True
    assert holds({"param_exists": ["a", "b"]}, {"a": 1}) is False
    assert holds({"param_exists": {"user.id": True}}, {"user": {"id": 0}}) is True


@pytest.mark.parametrize(
    ("pattern", "value", "result"),
    [
        ("^rm ", "rm -rf /", True),
        ("rm", "echo rm", True),  # a search, not a full match
        ("^rm", "echo rm", False),
        ("(?i)DROP\\s+TABLE", "drop   table users", True),
        ("^1\\d{2}$", 150, True),  # non-strings are searched as compact JSON
        ("^true$", True, True),
        ("^null$", None, True),
        ('"a":1', {"a": 1}, True),
        ('^\\["x","y"\\]$', ["x", "y"], True),
        ("é", "café", True),
        (["^a", "^b"], "bcd", True),
        (["^a", "^b"], "cd", False),
    ],
)
def test_param_matches(pattern: Any, value: Any, result: bool) -> None:
    assert holds({"param_matches": {"k": pattern}}, {"k": value}) is result


def test_param_matches_json_is_compact_and_unescaped() -> None:
    assert holds({"param_matches": {"k": "^\\{\"name\":\"日本\"\\}$"}}, {"k": {"name": "日本"}}) is True


@pytest.mark.parametrize(
    ("pattern", "value", "result"),
    [
        ("*.pem", "id.pem", True),
        ("*.pem", "id.PEM", False),  # parameter globs are exact, not folded
        ("/etc/*", "/etc/passwd", True),
        ("/etc/*", "/etc/ssl/certs", True),
        ("?.txt", "a.txt", True),
        ("[!.]*", ".hidden", False),
        (["*.pem", "*.key"], "x.key", True),
        ("*", 5, False),  # only strings match globs
        ("*", None, False),
    ],
)
def test_param_glob(pattern: Any, value: Any, result: bool) -> None:
    assert holds({"param_glob": {"k": pattern}}, {"k": value}) is result


def test_every_param_operator_is_false_on_a_missing_parameter() -> None:
    for op, expected in [("param_eq", 1), ("param_gt", 1), ("param_gte", 1), ("param_lt", 1), ("param_lte", 1),
                         ("param_contains", "x"), ("param_matches", "."), ("param_in", [1]),
                         ("param_not_in", [1]), ("param_glob", "*"), ("param_exists", True)]:
        assert holds({op: {"absent": expected}}, {"present": 1}) is False, op


def test_several_keys_under_one_operator_must_all_hold() -> None:
    spec = {"param_eq": {"a": 1, "b": 2}}
    assert holds(spec, {"a": 1, "b": 2}) is True
    assert holds(spec, {"a": 1, "b": 3}) is False


# -- dotted paths ------------------------------------------------------------------------------


def test_lookup_dotted_paths() -> None:
    params = {"user": {"role": "admin", "tags": ["a", "b"]}, "a.b": "literal", "list": [{"x": 1}]}
    assert lookup(params, "user.role") == "admin"
    assert lookup(params, "user.tags.1") == "b"
    assert lookup(params, "list.0.x") == 1
    assert lookup(params, "a.b") == "literal"  # a key with a dot wins over walking
    for missing in ("user.missing", "user.role.x", "user.tags.5", "user.tags.-1", "nope.x", "user..role", "list.x"):
        assert lookup(params, missing) is MISSING
        assert reference.lookup(params, missing) is reference._MISSING
        assert holds({"param_exists": {missing: True}}, params) is False, missing


def test_dotted_path_with_a_non_ascii_digit_is_simply_missing() -> None:
    # '²'.isdigit() is True but int('²') raises: such a segment must not crash the rule
    params = {"a": [1, 2, 3]}
    assert holds({"param_eq": {"a.²": 1}}, params) is False
    assert holds({"param_eq": {"a.١": 2}}, params) is False


def test_dotted_conditions_in_a_policy() -> None:
    policy = Policy.from_dict({"rules": [
        {"name": "admins", "conditions": {"param_eq": {"user.role": "admin"}}, "approval": "auto"},
    ]})
    assert policy.evaluate(Action("x", "y", {"user": {"role": "admin"}})).rule == "admins"
    assert policy.evaluate(Action("x", "y", {"user": {"role": "guest"}})).rule is None
    assert policy.evaluate(Action("x", "y", {"user": "admin"})).rule is None


# -- combinators -------------------------------------------------------------------------------


def test_any_all_not() -> None:
    spec = {"any": [{"param_eq": {"env": "prod"}}, {"param_gt": {"count": 100}}]}
    assert holds(spec, {"env": "prod"}) is True
    assert holds(spec, {"env": "dev", "count": 101}) is True
    assert holds(spec, {"env": "dev", "count": 1}) is False
    spec = {"all": [{"param_eq": {"env": "prod"}}, {"param_gt": {"count": 100}}]}
    assert holds(spec, {"env": "prod", "count": 101}) is True
    assert holds(spec, {"env": "prod", "count": 1}) is False
    spec = {"not": {"param_in": {"env": ["dev", "test"]}}}
    assert holds(spec, {"env": "prod"}) is True
    assert holds(spec, {"env": "dev"}) is False
    assert holds(spec, {}) is True  # not(false) where the parameter is missing


def test_nested_combinators() -> None:
    spec = {"not": {"any": [{"all": [{"param_eq": {"a": 1}}, {"param_eq": {"b": 2}}]}, {"param_exists": ["c"]}]}}
    assert holds(spec, {"a": 1, "b": 2}) is False
    assert holds(spec, {"a": 1, "b": 3}) is True
    assert holds(spec, {"c": 0}) is False


def test_empty_maps_hold() -> None:
    assert holds({"any": [{}, {"param_eq": {"a": 1}}]}, {}) is True
    assert holds({"not": {}}, {}) is False
    assert holds({"all": [{}]}, {}) is True
    assert holds({"any": [None]}, {}) is True
    assert compile_conditions({}) is None and compile_conditions(None) is None


def test_conditions_stop_left_to_right() -> None:
    # once the answer is known nothing further is evaluated, so an erroring check after it is moot
    assert holds({"param_eq": {"a": 1}, "param_gt": {"b": 1}}, {"a": 2, "b": "x"}) is False
    assert holds({"any": [{"param_eq": {"a": 1}}, {"param_gt": {"b": 1}}]}, {"a": 1, "b": "x"}) is True
    # and an error met before the answer is known raises (the policy blocks)
    raises({"any": [{"param_gt": {"b": 1}}, {"param_eq": {"a": 1}}]}, {"a": 1, "b": "x"})


def test_any_with_an_empty_alternative_keeps_order() -> None:
    # an empty alternative holds, but alternatives before it are still evaluated first
    raises({"any": [{"param_gt": {"b": 1}}, {}]}, {"b": "x"})
    assert holds({"any": [{}, {"param_gt": {"b": 1}}]}, {"b": "x"}) is True


# -- time and weekdays ---------------------------------------------------------------------------


def at(hhmm: str, day: int = 15, second: int = 0) -> dt.datetime:
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(2024, 5, day, h, m, second, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("spec", "now", "expected"),
    [
        ({"time_after": "09:00"}, "08:59", False),
        ({"time_after": "09:00"}, "09:00", True),  # inclusive start
        ({"time_after": "09:00"}, "23:59", True),
        ({"time_before": "17:00"}, "16:59", True),
        ({"time_before": "17:00"}, "17:00", False),  # exclusive end
        ({"time_before": "17:00"}, "00:00", True),
        ({"time_after": "09:00", "time_before": "17:00"}, "12:00", True),
        ({"time_after": "09:00", "time_before": "17:00"}, "17:30", False),
        ({"time_after": "09:00", "time_before": "17:00"}, "08:00", False),
        # after > before wraps midnight: 18:00-08:00 is overnight
        ({"time_after": "18:00", "time_before": "08:00"}, "18:00", True),
        ({"time_after": "18:00", "time_before": "08:00"}, "23:59", True),
        ({"time_after": "18:00", "time_before": "08:00"}, "00:00", True),
        ({"time_after": "18:00", "time_before": "08:00"}, "07:59", True),
        ({"time_after": "18:00", "time_before": "08:00"}, "08:00", False),
        ({"time_after": "18:00", "time_before": "08:00"}, "12:00", False),
        ({"time_after": "18:00", "time_before": "08:00"}, "17:59", False),
        ({"time_after": "08:00", "time_before": "08:00"}, "08:00", False),  # equal bounds: empty window
        ({"time_after": "00:00", "time_before": "23:59"}, "23:59", False),
        ({"time_after": "23:59"}, "23:59", True),
    ],
)
def test_time_windows(spec: dict[str, str], now: str, expected: bool) -> None:
    assert holds(spec, {}, at(now)) is expected


def test_time_window_seconds() -> None:
    assert holds({"time_before": "08:00"}, {}, at("07:59", second=59)) is True
    assert holds({"time_after": "08:00"}, {}, at("07:59", second=59)) is False


def test_time_is_utc() -> None:
    # 20:00 in UTC+02:00 is 18:00 UTC; a naive datetime is taken as UTC
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert holds({"time_after": "18:00"}, {}, dt.datetime(2024, 5, 15, 20, 0, tzinfo=plus2)) is True
    assert holds({"time_after": "18:30"}, {}, dt.datetime(2024, 5, 15, 20, 0, tzinfo=plus2)) is False
    assert holds({"time_after": "18:00"}, {}, dt.datetime(2024, 5, 15, 18, 0)) is True


@pytest.mark.parametrize(("day", "iso"), [(13, 1), (14, 2), (15, 3), (16, 4), (17, 5), (18, 6), (19, 7)])
def test_weekdays(day: int, iso: int) -> None:
    assert holds({"weekdays": [iso]}, {}, at("12:00", day)) is True
    others = [d for d in range(1, 8) if d != iso]
    assert holds({"weekdays": others}, {}, at("12:00", day)) is False


def test_weekdays_use_the_utc_date() -> None:
    # Monday 01:00 at UTC+03:00 is still Sunday in UTC
    plus3 = dt.timezone(dt.timedelta(hours=3))
    assert holds({"weekdays": [7]}, {}, dt.datetime(2024, 5, 13, 1, 0, tzinfo=plus3)) is True


def test_business_hours_rule_in_a_policy() -> None:
    policy = Policy.from_string(
        "rules:\n"
        "  - name: night_deploys\n"
        "    match: {type: deploy}\n"
        "    conditions: {time_after: 18:00, time_before: 08:00}\n"  # unquoted times work
        "    approval: block\n"
        "  - name: weekend\n"
        "    match: {type: deploy}\n"
        "    conditions: {weekdays: [6, 7]}\n"
        "    approval: approve\n"
        "  - name: deploys\n"
        "    match: {type: deploy}\n"
        "    approval: auto\n"
    )
    assert policy.uses_time
    deploy = Action("deploy", "prod")
    assert policy.evaluate(deploy, now=at("23:00")).rule == "night_deploys"
    assert policy.evaluate(deploy, now=at("12:00", 18)).rule == "weekend"
    assert policy.evaluate(deploy, now=at("12:00", 15)).rule == "deploys"


def test_uses_time() -> None:
    assert uses_time({"not": {"any": [{"weekdays": [1]}]}})
    assert uses_time({"all": [{"time_before": "01:00"}]})
    assert not uses_time({"param_eq": {"a": 1}})
    assert not uses_time(None)


# -- regexes are user input --------------------------------------------------------------------


def test_catastrophic_regex_runs_in_linear_time() -> None:
    # (a+)+$ takes exponential time in a backtracking engine; RE2 accepts it and stays linear
    pred = compile_conditions({"param_matches": {"s": "(a+)+$"}})
    assert pred is not None
    started = time.perf_counter()
    assert pred({"s": "a" * 100_000 + "!"}, NOON) is False
    assert time.perf_counter() - started < 5  # a backtracking engine would not finish at all


@pytest.mark.parametrize("pattern", ["(?<=a)b", "(a)\\1", "(?P<n>a)(?P=n)", "a{1001}", "[z-a]", "(", "a**"])
def test_patterns_re2_cannot_compile_are_syntax_errors(pattern: str) -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        compile_conditions({"param_matches": {"s": pattern}}, ("rules", 0, "conditions"))
    assert info.value.path == ("rules", 0, "conditions", "param_matches", "s")
    assert "RE2" in str(info.value)


def test_unknown_operator_is_a_syntax_error() -> None:
    with pytest.raises(ConditionSyntaxError, match="unknown condition operator 'param_regex'"):
        compile_conditions({"param_regex": {"a": "b"}})
