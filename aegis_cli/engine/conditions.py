"""Rule conditions, compiled once into plain predicates ``(params, now) -> bool``.

Semantics worth knowing (also in the README):
- every operator in a map must hold, and every parameter named under an operator must hold;
- a missing parameter makes its condition false (``param_exists: {x: false}`` is the way to
  ask for absence);
- numeric comparisons accept numbers and numeric strings; any other value cannot be compared
  and raises ``ConditionError``, which the policy turns into a block (fail closed);
- ``param_matches`` is an RE2 search (linear time, no backtracking); non-string values are
  searched as their compact JSON text;
- times are UTC; ``time_after`` later than ``time_before`` is a window over midnight.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Mapping

from aegis_cli.engine.matching import GlobError, compile_glob

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

    Predicate = Callable[[Mapping[str, Any], _dt.datetime | None], bool]

MISSING: Any = object()


class ConditionError(Exception):
    """A condition met a value it cannot judge; the policy blocks the action."""


class ConditionSyntaxError(ValueError):
    """A condition that cannot be compiled. ``path`` locates it inside the conditions map."""

    def __init__(self, message: str, path: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.path = path


def lookup(params: Mapping[str, Any], key: str) -> Any:
    """``params[key]``, following dots into nested objects (``user.role``) when no key has the dot."""
    value = params.get(key, MISSING)
    if value is not MISSING or "." not in key:
        return value
    node: Any = params
    for part in key.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, MISSING)
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConditionError(f"parameter '{key}' is a boolean, not a number")
    if isinstance(value, int) or (isinstance(value, float) and not math.isnan(value)):
        return value  # NaN compares false with everything: letting it through would fail open
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if not math.isnan(number):
                return number
    raise ConditionError(f"parameter '{key}' is {json.dumps(value, default=str)[:60]}, not a number")


def _equal(actual: Any, expected: Any) -> bool:
    """``==`` except that booleans are not numbers, at any depth (Python has ``[True] == [1]``)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(map(_equal, actual, expected))
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        return actual.keys() == expected.keys() and all(_equal(actual[k], expected[k]) for k in actual)
    return bool(actual == expected)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    if isinstance(actual, Mapping):
        return isinstance(expected, str) and expected in actual
    return False


def _compare(op: str) -> Callable[[float, float], bool]:
    return {
        "param_gt": lambda a, b: a > b,
        "param_gte": lambda a, b: a >= b,
        "param_lt": lambda a, b: a < b,
        "param_lte": lambda a, b: a <= b,
    }[op]


def _param_predicate(op: str, key: str, expected: Any, path: tuple[str | int, ...]) -> Predicate:
    if op in ("param_gt", "param_gte", "param_lt", "param_lte"):
        cmp = _compare(op)
        bound = expected
        if isinstance(bound, float) and math.isnan(bound):
            raise ConditionSyntaxError(f"{op} bound for '{key}' is NaN, which no value is above or below", (*path, key))

        def numeric(params: Mapping[str, Any], now: Any) -> bool:
            value = lookup(params, key)
            return value is not MISSING and cmp(_number(value, key), bound)

        return numeric
    if op == "param_eq":
        return lambda p, now: (v := lookup(p, key)) is not MISSING and _equal(v, expected)
    if op == "param_contains":
        return lambda p, now: (v := lookup(p, key)) is not MISSING and _contains(v, expected)
    if op == "param_in":
        choices = list(expected)
        return lambda p, now: (v := lookup(p, key)) is not MISSING and any(_equal(v, c) for c in choices)
    if op == "param_not_in":
        choices = list(expected)
        return lambda p, now: (v := lookup(p, key)) is not MISSING and not any(_equal(v, c) for c in choices)
    if op == "param_exists":
        want = bool(expected)
        return lambda p, now: (lookup(p, key) is not MISSING) == want
    if op == "param_matches":
        searches = [compile_regex(pat, (*path, key)).search for pat in _patterns(expected)]
        return lambda p, now: (v := lookup(p, key)) is not MISSING and any(
            s(_as_text(v)) is not None for s in searches
        )
    if op == "param_glob":
        try:
            tests = [compile_glob(pat, fold=False).test for pat in _patterns(expected)]
        except GlobError as exc:
            raise ConditionSyntaxError(str(exc), (*path, key)) from None
        return lambda p, now: (v := lookup(p, key)) is not MISSING and isinstance(v, str) and any(t(v) for t in tests)
    raise ConditionSyntaxError(f"unknown condition operator '{op}'", path)


def _patterns(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def compile_regex(pattern: str, path: tuple[str | int, ...]) -> Any:
    """Compile with RE2: linear-time matching, so no pattern can hang the engine."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ConditionSyntaxError(f"regex {pattern!r} is not valid RE2 syntax: {detail}", path) from None


def parse_hhmm(text: str) -> _dt.time:
    hours, minutes = text.split(":")
    return _dt.time(int(hours), int(minutes))


def _time_window(after: str | None, before: str | None) -> Predicate:
    start = parse_hhmm(after) if after else None
    end = parse_hhmm(before) if before else None

    def in_window(params: Mapping[str, Any], now: _dt.datetime | None) -> bool:
        t = _utc(now).time()
        if start is not None and end is not None and start > end:
            return t >= start or t < end  # wraps midnight: 18:00-08:00 is overnight
        return (start is None or t >= start) and (end is None or t < end)

    return in_window


def _utc(now: _dt.datetime | None) -> _dt.datetime:
    if now is None:
        return _dt.datetime.now(_dt.UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=_dt.UTC)
    return now.astimezone(_dt.UTC)


def _weekdays(days: list[int]) -> Predicate:
    allowed = frozenset(days)
    return lambda p, now: _utc(now).isoweekday() in allowed


def compile_conditions(spec: Mapping[str, Any] | None, path: tuple[str | int, ...] = ()) -> Predicate | None:
    """Compile a conditions map (already schema-valid) into one predicate; None when empty."""
    if not spec:
        return None
    parts: list[Predicate] = []
    if "time_after" in spec or "time_before" in spec:
        parts.append(_time_window(spec.get("time_after"), spec.get("time_before")))
    for op, value in spec.items():
        here = (*path, op)
        if op in ("time_after", "time_before"):
            continue
        if op == "weekdays":
            parts.append(_weekdays(value))
        elif op == "any":
            # an empty alternative holds, but those before it still run first (they may raise)
            preds = [compile_conditions(s, (*here, i)) or _holds for i, s in enumerate(value)]
            parts.append(lambda p, now, preds=preds: any(f(p, now) for f in preds))
        elif op == "all":
            for i, s in enumerate(value):
                sub = compile_conditions(s, (*here, i))
                if sub is not None:
                    parts.append(sub)
        elif op == "not":
            sub = compile_conditions(value, here)
            parts.append((lambda p, now: False) if sub is None else (lambda p, now, sub=sub: not sub(p, now)))
        elif op == "param_exists" and isinstance(value, list):
            parts.extend(_param_predicate(op, key, True, here) for key in value)
        elif op.startswith("param_"):
            parts.extend(_param_predicate(op, key, expected, here) for key, expected in value.items())
        else:
            raise ConditionSyntaxError(f"unknown condition operator '{op}'", here)
    if len(parts) == 1:
        return parts[0]
    return lambda p, now: all(f(p, now) for f in parts)


def _holds(params: Mapping[str, Any], now: _dt.datetime | None) -> bool:
    return True


def uses_time(spec: Mapping[str, Any] | None) -> bool:
    """Whether a conditions map reads the clock (so callers know a decision depends on ``now``)."""
    if not spec:
        return False
    for op, value in spec.items():
        if op in ("time_after", "time_before", "weekdays"):
            return True
        if op in ("any", "all") and any(uses_time(s) for s in value):
            return True
        if op == "not" and uses_time(value):
            return True
    return False
