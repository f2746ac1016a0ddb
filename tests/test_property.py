"""Differential tests: the compiled, indexed, cached engine against the plain reference evaluator."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis_cli import Action, Policy
from aegis_cli.engine.conditions import compile_conditions

settings.register_profile(
    "aegis", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False,
)
settings.register_profile("aegis-thorough", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("AEGIS_HYPOTHESIS_PROFILE", "aegis"))  # aegis-thorough: 3000 examples

# Small alphabets so random rules and random actions actually meet.
NAMES = ["read", "delete", "Delete", "ＤＥＬＥＴＥ", "deploy", "straße", "STRASSE", "de", "", "d"]
TARGETS = ["prod", "PROD-db", "staging", "ｐｒｏｄ", "db_1", "x"]
AGENTS = ["", "bot-1", "BOT-12", "alice", "ﬁle"]
BAD = ["de\nlete", "prod\x00", "bot\u200b", "a\u202eb"]
GLOBS = ["*", "d*", "de*", "del*", "DEL*", "?", "??", "d?l*", "*e", "[rd]*", "[!r]*", "[a-e]*", "read", "delete",
         "ＤＥＬＥＴＥ", "straße", "STRASSE", "prod*", "PROD*", "*-db", "db_[0-9]", "bot-*", "bot-?", "ﬁle", "**",
         "[]]*"]
KEYS = ["n", "s", "user.role", "flag", "tags", "missing"]
HHMM = ["00:00", "06:30", "08:00", "12:00", "17:59", "18:00", "23:59"]

ints = st.one_of(st.sampled_from([0, 1, 7, 42, 100, 150]), st.integers(-5, 200))  # few values: they meet
values = st.one_of(
    ints, st.sampled_from([0.5, 100.0, float("inf"), float("nan")]), st.booleans(), st.none(),
    st.sampled_from(["", "7", "150", " 42 ", "1e3", "abc", "nan", "rm -rf /", "admin", "prod", "a.b"]),
    st.lists(st.sampled_from([1, True, "a", "admin", 0]), max_size=3),
    st.dictionaries(st.sampled_from(["role", "a"]), st.sampled_from(["admin", 1, True]), max_size=2),
)
json_values = st.one_of(ints, st.booleans(), st.none(), st.sampled_from(["admin", "7", "a", ""]),
                        st.lists(st.sampled_from([1, True, "a"]), max_size=2))
numbers = st.one_of(ints, st.sampled_from([0.5, 99.5, 150.0]))
regexes = st.sampled_from(["^a", "rm", "^[0-9]+$", "min$", "(?i)ADMIN", "true", "^\\[", "a|b", "(a+)+$", ""])
param_globs = st.sampled_from(["*", "a*", "*n", "?dmin", "[ab]*", "[!a]*", "prod"])


def param_op() -> st.SearchStrategy[dict[str, Any]]:
    key = st.sampled_from(KEYS)

    def one(op: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.dictionaries(key, value, min_size=1, max_size=2).map(lambda m: {op: m})

    return st.one_of(
        one("param_eq", json_values),
        *(one(op, numbers) for op in ("param_gt", "param_gte", "param_lt", "param_lte")),
        one("param_contains", json_values),
        one("param_matches", st.one_of(regexes, st.lists(regexes, min_size=1, max_size=2))),
        one("param_glob", st.one_of(param_globs, st.lists(param_globs, min_size=1, max_size=2))),
        one("param_in", st.lists(json_values, max_size=3)),
        one("param_not_in", st.lists(json_values, max_size=3)),
        one("param_exists", st.booleans()),
        st.lists(key, min_size=1, max_size=2, unique=True).map(lambda ks: {"param_exists": ks}),
    )


def time_op() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries({"time_after": st.sampled_from(HHMM)}),
        st.fixed_dictionaries({"time_before": st.sampled_from(HHMM)}),
        st.fixed_dictionaries({"time_after": st.sampled_from(HHMM), "time_before": st.sampled_from(HHMM)}),
        st.fixed_dictionaries({"weekdays": st.lists(st.integers(1, 7), min_size=1, max_size=3, unique=True)}),
    )


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for op, value in part.items():
            out.setdefault(op, value)
    return out


conditions = st.recursive(
    st.lists(st.one_of(param_op(), time_op()), min_size=0, max_size=3).map(merge),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        inner.map(lambda x: {"not": x}),
        st.tuples(inner, param_op()).map(lambda t: merge([t[1], t[0]])),
    ),
    max_leaves=6,
)


@st.composite
def rules(draw: st.DrawFn, index: int) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule["name"] = f"r{index}"
    match = {k: draw(st.sampled_from(GLOBS)) for k in ("type", "target", "agent") if draw(st.integers(0, 2))}
    if match or draw(st.booleans()):
        rule["match"] = match
    if draw(st.integers(0, 2)):
        rule["conditions"] = draw(conditions)
    if draw(st.booleans()):
        rule["approval"] = draw(st.sampled_from(["auto", "approve", "block"]))
    if draw(st.booleans()):
        rule["risk_level"] = draw(st.sampled_from(["low", "medium", "high", "critical"]))
    return rule


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 8))
    policy: dict[str, Any] = {"rules": [draw(rules(i)) for i in range(n)]}
    if draw(st.booleans()):
        policy["defaults"] = draw(st.fixed_dictionaries({}, optional={
            "approval": st.sampled_from(["auto", "approve", "block"]),
            "risk_level": st.sampled_from(["low", "medium", "high", "critical"])}))
    return policy


params = st.dictionaries(
    st.sampled_from(["n", "s", "flag", "tags", "user", "user.role", "other"]),
    st.one_of(values, st.fixed_dictionaries({}, optional={"role": values})),
    max_size=4,
)
random_times = st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2024, 12, 31),
                            timezones=st.just(dt.UTC))


@st.composite
def boundary_times(draw: st.DrawFn) -> dt.datetime:
    """Times on and one second either side of the minutes the policies use, any weekday."""
    h, m = map(int, draw(st.sampled_from(HHMM)).split(":"))
    at = dt.datetime(2024, 5, draw(st.integers(13, 19)), h, m, tzinfo=dt.UTC)
    return at + dt.timedelta(seconds=draw(st.sampled_from([-1, 0, 0, 1])))


times = st.one_of(boundary_times(), random_times)
actions = st.tuples(
    st.one_of(st.sampled_from(NAMES), st.sampled_from(BAD), st.text(max_size=4)),
    st.one_of(st.sampled_from(TARGETS), st.sampled_from(BAD)),
    params,
    st.sampled_from(AGENTS + BAD[:1]),
)


def check(policy_data: dict[str, Any], action: tuple[str, str, dict[str, Any], str], now: dt.datetime,
          policy: Policy | None = None) -> None:
    policy = policy or Policy.from_dict(policy_data)
    type_, target, params_, agent = action
    expected = reference.evaluate(policy_data, type_, target, params_, agent, now)
    act = Action(type_, target, params_, agent)
    for d in (policy.evaluate(act, now), policy.evaluate(act, now), policy.evaluate(act, now, explain=True)):
        assert (d.approval.value, d.risk_level.value, d.rule) == expected, (policy_data, action, d.reason)


@given(policies(), st.lists(actions, min_size=1, max_size=6), times)
def test_engine_agrees_with_reference(policy_data: dict[str, Any], batch: list[Any], now: dt.datetime) -> None:
    policy = Policy.from_dict(policy_data)
    for action in batch:  # several actions through one policy exercise the cache and the index
        check(policy_data, action, now, policy)


BOUNDARIES = [dt.datetime(2024, 5, day, *map(int, hhmm.split(":")), tzinfo=dt.UTC) + dt.timedelta(seconds=s)
              for day in (15, 19) for hhmm in HHMM for s in (-1, 0, 1)]


@settings(max_examples=40)
@given(policies(), actions)
def test_engine_agrees_with_reference_at_fixed_times(policy_data: dict[str, Any], action: Any) -> None:
    policy = Policy.from_dict(policy_data)
    for now in BOUNDARIES:  # every minute the policies name, and a second either side
        check(policy_data, action, now, policy)


def outcome(fn: Any) -> Any:
    try:
        return bool(fn())
    except Exception:
        return "raises"


flat_params = st.dictionaries(st.sampled_from([*KEYS, "user"]), values, max_size=4)


@settings(max_examples=300)
@given(conditions, st.lists(st.one_of(params, flat_params), min_size=1, max_size=8))
def test_conditions_agree_with_reference(spec: dict[str, Any], param_sets: list[Any]) -> None:
    # cheaper than whole policies, so many more condition/parameter/time triples per second
    pred = compile_conditions(spec)
    for p in param_sets:
        for now in BOUNDARIES:
            engine = outcome(lambda p=p, now=now: True if pred is None else pred(p, now))
            assert engine == outcome(lambda p=p, now=now: reference.holds(spec, p, now)), (spec, p, now)


@settings(max_examples=40)
@given(policies(), policies(), actions, times)
def test_merge_agrees_with_reference(first: dict[str, Any], second: dict[str, Any], action: Any,
                                     now: dt.datetime) -> None:
    # merge semantics written plainly: the later file's rules first, minus replaced named rules,
    # the later file's defaults when it has any
    # (an unnamed earlier rule whose rule_<i> the later file also uses is renamed <source>:rule_<i>)
    replaced = {r["name"] for r in second["rules"] if "name" in r}
    second_rules = [dict(r, name=r.get("name", f"rule_{i}")) for i, r in enumerate(second["rules"])]
    taken = {r["name"] for r in second_rules}
    first_rules = []
    for i, r in enumerate(first["rules"]):
        if "name" in r:
            if r["name"] not in replaced:
                first_rules.append(r)
        else:
            auto = f"rule_{i}"
            first_rules.append(dict(r, name=f"<dict>:{auto}" if auto in taken else auto))
    merged = {"rules": second_rules + first_rules,
              "defaults": second.get("defaults", first.get("defaults", {}))}
    policy = Policy.from_dict(first).merge(Policy.from_dict(second))
    type_, target, params_, agent = action
    expected = reference.evaluate(merged, type_, target, params_, agent, now)
    d = policy.evaluate(Action(type_, target, params_, agent), now)
    assert (d.approval.value, d.risk_level.value, d.rule) == expected


@settings(max_examples=40)
@given(policies())
def test_round_trip_keeps_meaning(policy_data: dict[str, Any]) -> None:
    policy = Policy.from_dict(policy_data)
    assert Policy.from_dict(policy.to_dict()).hash == policy.hash


@settings(max_examples=40)
@given(policies(), actions)
def test_shadowed_rules_really_never_decide(policy_data: dict[str, Any], action: Any) -> None:
    # the shadowing warning must be sound: a rule reported as shadowed never decides anything
    policy = Policy.from_dict(policy_data)
    shadowed = {r.name for r, _ in policy.shadowed_rules()}
    type_, target, params_, agent = action
    now = dt.datetime(2024, 5, 15, 12, tzinfo=dt.UTC)
    d = policy.evaluate(Action(type_, target, params_, agent), now)
    assert d.rule not in shadowed
