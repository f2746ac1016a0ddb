"""A deliberately plain reference evaluator for aegis policies.

It reads the policy as data (the file format, already validated), walks every rule in order and
interprets conditions straight from the dict. It shares no code with the engine: globs are matched
by a hand-written backtracking matcher instead of ``fnmatch`` -> ``re``, numeric strings are read
with ``Decimal`` instead of ``float``, regexes are run by Python's ``re`` instead of RE2. The
property tests check that the compiled engine decides every action exactly as this does.

The semantics it writes down (the engine's docstrings state the same):

- An action whose type, target or agent holds a control or format character (Unicode category
  Cc or Cf, or U+2028/U+2029) is blocked, critical risk, with rule None, before any rule is tried.
- type, target and agent are compared after NFKC normalisation and case folding, on both sides.
  A missing match key is ``*``. Globs: ``*`` any run, ``?`` one character, ``[seq]``/``[!seq]``
  one character in / not in seq, ``a-z`` ranges inside a set, ``]`` first in a set is literal,
  ``!`` only negates first, ``^`` is literal.
- Rules are tried in order; the first whose match and conditions hold decides. Unnamed rules are
  called ``rule_<index>``. No match: the defaults, medium/approve when the file has none.
- Conditions: every operator must hold, and every parameter under an operator. They are checked
  left to right, stopping as soon as the answer is known, except that the time window
  (``time_after``/``time_before``) is always checked first. An empty or null condition map holds.
- Evaluation errors fail closed: if checking a rule's conditions raises, the decision is block,
  critical risk, naming that rule.
- A missing parameter makes its condition false (``param_exists: {k: false}`` asks for absence).
  Parameters are looked up by the whole key first; only when absent, a dotted key walks into
  nested mappings, and into lists by ASCII decimal index.
- Numeric operators accept numbers and numeric strings. Booleans, NaN, other strings, null,
  lists and mappings are not numbers: the rule raises, so the action is blocked.
- Equality is strict about types at every depth: booleans equal only booleans, 1 == 1.0.
- ``param_contains``: substring of a string, element of a list, key of a mapping.
- ``param_matches`` is a regex search; a non-string value is searched as its compact JSON.
- ``param_glob`` matches only strings, case-sensitively, with the same glob syntax.
- Time is UTC; ``time_after`` includes its minute, ``time_before`` excludes its minute; after later
  than before wraps midnight, after equal to before is an empty window. ``weekdays`` are ISO 1-7.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any

_MISSING = object()


class ReferenceError_(Exception):
    """A condition met a value it cannot judge."""


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def bad_char(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs") or c in "\u2028\u2029" for c in text)


# -- globs: a backtracking matcher over a parsed pattern ------------------------------------------


def _parse_glob(pattern: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if not tokens or tokens[-1][0] != "star":
                tokens.append(("star", None))
            i += 1
        elif c == "?":
            tokens.append(("any", None))
            i += 1
        elif c == "[":
            j = i + 1
            negate = j < len(pattern) and pattern[j] == "!"
            if negate:
                j += 1
            members_start = j
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                tokens.append(("lit", "["))
                i += 1
                continue
            body = pattern[members_start:close]
            ranges: list[tuple[str, str]] = []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    ranges.append((body[k], body[k + 2]))
                    k += 3
                else:
                    ranges.append((body[k], body[k]))
                    k += 1
            tokens.append(("set", (negate, ranges)))
            i = close + 1
        else:
            tokens.append(("lit", c))
            i += 1
    return tokens


def glob_match(pattern: str, text: str) -> bool:
    tokens = _parse_glob(pattern)
    memo: dict[tuple[int, int], bool] = {}

    def at(t: int, s: int) -> bool:
        key = (t, s)
        if key in memo:
            return memo[key]
        if t == len(tokens):
            result = s == len(text)
        else:
            kind, arg = tokens[t]
            if kind == "star":
                result = any(at(t + 1, k) for k in range(s, len(text) + 1))
            elif s == len(text):
                result = False
            elif kind == "any":
                result = at(t + 1, s + 1)
            elif kind == "lit":
                result = text[s] == arg and at(t + 1, s + 1)
            else:
                negate, ranges = arg
                inside = any(lo <= text[s] <= hi for lo, hi in ranges)
                result = inside != negate and at(t + 1, s + 1)
        memo[key] = result
        return result

    return at(0, 0)


# -- conditions --------------------------------------------------------------------------------


def lookup(params: Any, key: str) -> Any:
    if isinstance(params, dict) and key in params:
        return params[key]
    if "." not in key:
        return _MISSING
    node = params
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"[0-9]+", part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def number(value: Any) -> Decimal | float | int:
    if isinstance(value, bool) or value is None:
        raise ReferenceError_("not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value:
            raise ReferenceError_("NaN")
        return value
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise ReferenceError_("not numeric") from None
        if d.is_nan():
            raise ReferenceError_("NaN")
        return d
    raise ReferenceError_("not a number")


def strict_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is bool and type(b) is bool and a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a == b


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _param(op: str, actual: Any, expected: Any) -> bool:
    if op == "param_exists":
        return (actual is not _MISSING) == bool(expected)
    if actual is _MISSING:
        return False
    if op in ("param_gt", "param_gte", "param_lt", "param_lte"):
        a = number(actual)
        return {"param_gt": a > expected, "param_gte": a >= expected,
                "param_lt": a < expected, "param_lte": a <= expected}[op]
    if op == "param_eq":
        return strict_equal(actual, expected)
    if op == "param_in":
        return any(strict_equal(actual, c) for c in expected)
    if op == "param_not_in":
        return not any(strict_equal(actual, c) for c in expected)
    if op == "param_contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        if isinstance(actual, list):
            return any(strict_equal(x, expected) for x in actual)
        if isinstance(actual, dict):
            return isinstance(expected, str) and expected in actual
        return False
    patterns = [expected] if isinstance(expected, str) else expected
    if op == "param_matches":
        return any(re.search(p, _compact(actual)) for p in patterns)
    if op == "param_glob":
        return isinstance(actual, str) and any(glob_match(p, actual) for p in patterns)
    raise AssertionError(f"reference does not know {op}")


def _hhmm(text: str) -> dt.time:
    h, m = text.split(":")
    return dt.time(int(h), int(m))


def _utc(now: dt.datetime) -> dt.datetime:
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def holds(spec: dict[str, Any] | None, params: dict[str, Any], now: dt.datetime) -> bool:
    if not spec:
        return True
    if "time_after" in spec or "time_before" in spec:
        t = _utc(now).time()
        after = _hhmm(spec["time_after"]) if "time_after" in spec else None
        before = _hhmm(spec["time_before"]) if "time_before" in spec else None
        if after is not None and before is not None and after > before:
            inside = t >= after or t < before
        else:
            inside = (after is None or t >= after) and (before is None or t < before)
        if not inside:
            return False
    for op, value in spec.items():
        if op in ("time_after", "time_before"):
            continue
        if op == "weekdays":
            ok = _utc(now).isoweekday() in value
        elif op == "any":
            ok = False
            for alt in value:
                if holds(alt, params, now):
                    ok = True
                    break
        elif op == "all":
            ok = all(holds(s, params, now) for s in value)
        elif op == "not":
            ok = not holds(value, params, now)
        elif op == "param_exists" and isinstance(value, list):
            ok = all(lookup(params, k) is not _MISSING for k in value)
        else:
            ok = all(_param(op, lookup(params, k), v) for k, v in value.items())
        if not ok:
            return False
    return True


# -- the evaluator -----------------------------------------------------------------------------


def evaluate(policy: dict[str, Any], type_: str, target: str, params: dict[str, Any] | None = None,
             agent: str = "", now: dt.datetime | None = None) -> tuple[str, str, str | None]:
    """(approval, risk_level, rule name or None) for one action."""
    now = now or dt.datetime.now(dt.UTC)
    params = params or {}
    if bad_char(type_) or bad_char(target) or bad_char(agent):
        return "block", "critical", None
    action = {"type": fold(type_), "target": fold(target), "agent": fold(agent)}
    for i, rule in enumerate(policy.get("rules") or []):
        rule = rule or {}
        name = rule.get("name") or f"rule_{i}"
        match = rule.get("match") or {}
        if not all(glob_match(fold(match.get(k, "*")), action[k]) for k in ("type", "target", "agent")):
            continue
        try:
            ok = holds(rule.get("conditions"), params, now)
        except Exception:  # the reference fails closed exactly like the engine
            return "block", "critical", name
        if ok:
            return rule.get("approval", "approve"), rule.get("risk_level", "medium"), name
    defaults = policy.get("defaults") or {}
    return defaults.get("approval", "approve"), defaults.get("risk_level", "medium"), None
