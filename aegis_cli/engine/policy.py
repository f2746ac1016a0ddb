"""Policies: load, validate, compile once, evaluate fast.

Compilation turns each rule's globs into matchers and its conditions into a predicate, and
indexes rules by literal action type. For each distinct (type, target, agent) the engine works
out once which rules can match at all, in order, stopping at the first without conditions;
evaluation then only runs those rules' conditions. Nothing in here does I/O after loading.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Mapping

from aegis_cli.engine.conditions import (
    ConditionError,
    ConditionSyntaxError,
    compile_conditions,
    uses_time,
)
from aegis_cli.engine.errors import Issue, PolicyError
from aegis_cli.engine.matching import Glob, GlobError, compile_glob, forbidden_char, glob_covers, normalize
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel, RuleCheck
from aegis_cli.engine.values import Value, init

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from aegis_cli.engine.conditions import Predicate

_CACHE_LIMIT = 16_384


class Rule(Value):
    """One policy rule. ``named`` is False when the file gave no name (it is then ``rule_<index>``)."""

    _fields = ("name", "match_type", "match_target", "match_agent", "conditions", "risk_level", "approval",
                 "reason", "description", "tags", "named", "source", "line")
    __slots__ = _fields
    name: str
    match_type: str
    match_target: str
    match_agent: str
    conditions: Mapping[str, Any] | None
    risk_level: RiskLevel
    approval: Approval
    reason: str
    description: str
    tags: tuple[str, ...]  # data categories (pii, phi ...) carried by the decisions it makes
    named: bool
    source: str
    line: int | None

    def __init__(self, name: str, match_type: str = "*", match_target: str = "*", match_agent: str = "*",
                 conditions: Mapping[str, Any] | None = None, risk_level: RiskLevel = RiskLevel.MEDIUM,
                 approval: Approval = Approval.APPROVE, reason: str = "", description: str = "",
                 tags: tuple[str, ...] = (), named: bool = True, source: str = "", line: int | None = None) -> None:
        init(self, name, match_type, match_target, match_agent, conditions, risk_level, approval, reason,
             description, tags, named, source, line)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.named:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        match = {k: v for k, v in (("type", self.match_type), ("target", self.match_target),
                                   ("agent", self.match_agent)) if v != "*"}
        if match:
            out["match"] = match
        if self.conditions:
            out["conditions"] = self.conditions
        out["risk_level"] = self.risk_level.value
        out["approval"] = self.approval.value
        if self.reason:
            out["reason"] = self.reason
        if self.tags:  # only when set: the hash of an untagged policy is what it always was
            out["tags"] = list(self.tags)
        return out


class _Compiled:
    """A rule ready to match: its globs and conditions compiled, its decision made."""

    __slots__ = ("agent", "cond", "decision", "index", "rule", "target", "type")

    def __init__(self, index: int, rule: Rule, type: Glob, target: Glob, agent: Glob, cond: Predicate | None,
                 decision: Decision) -> None:
        self.index, self.rule, self.type, self.target, self.agent = index, rule, type, target, agent
        self.cond, self.decision = cond, decision


class _Blocked:
    """A pseudo-rule for actions whose names hold control characters."""

    __slots__ = ("decision",)
    cond = None

    def __init__(self, decision: Decision) -> None:
        self.decision = decision


class Policy:
    """An ordered list of rules plus defaults; ``evaluate`` gives the first matching rule's decision."""

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        default_risk_level: RiskLevel | str = RiskLevel.MEDIUM,
        default_approval: Approval | str = Approval.APPROVE,
        default_reason: str = "",
        *,
        tools: Mapping[str, Mapping[str, str]] | None = None,
        redact: Iterable[str] = (),
        sources: Iterable[str] = (),
        explicit_defaults: bool = True,
        name: str = "",
        default_tags: Iterable[str] = (),
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.default_risk_level = RiskLevel(default_risk_level)
        self.default_approval = Approval(default_approval)
        self.default_reason = default_reason
        self.default_tags: tuple[str, ...] = tuple(default_tags)
        self.tools: dict[str, dict[str, str]] = {k: dict(v) for k, v in (tools or {}).items()}
        self.redact: tuple[str, ...] = tuple(redact)
        self.sources: tuple[str, ...] = tuple(sources)
        self.explicit_defaults = explicit_defaults
        self.name = name
        self.loaded_at = _dt.datetime.now(_dt.UTC)
        self.hash = "sha256:" + hashlib.sha256(
            json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
        self._compile()

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> Policy:
        """Load and validate one policy file. Raises ``PolicyError`` with located issues."""
        from aegis_cli.engine.loader import read_source  # YAML and the schemas load on first use

        data, name = read_source(path)
        return cls.from_string(data, name)

    @classmethod
    def from_yaml_files(cls, *paths: str | Path) -> Policy:
        """Load several files; later files override earlier ones (see ``merge``)."""
        if not paths:
            raise ValueError("from_yaml_files needs at least one path")
        policies = [cls.from_yaml(p) for p in paths]
        merged = policies[0]
        for later in policies[1:]:
            merged = merged.merge(later)
        return merged

    @classmethod
    def from_string(cls, text: str | bytes, source: str = "<string>") -> Policy:
        """Load a policy from YAML (or JSON) text; ``source`` names it in error messages."""
        from aegis_cli.engine.yamlload import load_yaml

        document, locations = load_yaml(text, source)
        return build_policy(document, source, locations)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Policy:
        """Build a policy from already-parsed data, validated exactly as a file would be."""
        return build_policy(data, source, {})

    def merge(self, other: Policy) -> Policy:
        """``other`` overrides ``self``: its rules are checked first, its defaults win when it sets them.

        A named rule in ``other`` replaces the rule of the same name in ``self``.
        """
        from pathlib import Path

        replaced = {r.name for r in other.rules if r.named}
        taken = {r.name for r in other.rules}
        kept = [r for r in self.rules if not (r.named and r.name in replaced)]
        # Unnamed rules are rule_<index> in each file; keep decisions unambiguous after a merge.
        kept = [r.replace(name=f"{Path(r.source).name or 'policy'}:{r.name}") if not r.named and r.name in taken
                else r for r in kept]
        rules = list(other.rules) + kept
        base = other if other.explicit_defaults else self
        return Policy(
            rules,
            base.default_risk_level,
            base.default_approval,
            base.default_reason,
            tools={**self.tools, **other.tools},
            redact=dict.fromkeys(self.redact + other.redact),
            sources=self.sources + other.sources,
            explicit_defaults=self.explicit_defaults or other.explicit_defaults,
            name=other.name or self.name,
            default_tags=base.default_tags,
        )

    def to_dict(self) -> dict[str, Any]:
        """The policy as data, in the file format (``aegis`` can load what this returns)."""
        out: dict[str, Any] = {"version": "1"}
        if self.name:
            out["name"] = self.name
        defaults: dict[str, Any] = {"risk_level": self.default_risk_level.value,
                                    "approval": self.default_approval.value}
        if self.default_reason:
            defaults["reason"] = self.default_reason
        if self.default_tags:
            defaults["tags"] = list(self.default_tags)
        out["defaults"] = defaults
        out["rules"] = [r.to_dict() for r in self.rules]
        if self.tools:
            out["tools"] = self.tools
        if self.redact:
            out["audit"] = {"redact": list(self.redact)}
        return out

    # -- compilation ---------------------------------------------------------------------------

    def _compile(self) -> None:
        compiled: list[_Compiled] = []
        literal: dict[str, list[int]] = {}
        wild: dict[str, list[int]] = {}  # glob rules keyed by the literal prefix of their type glob
        for i, rule in enumerate(self.rules):
            decision = Decision(rule.approval, rule.risk_level, rule.name,
                                rule.reason or f"matched rule '{rule.name}'", self.hash, tags=rule.tags)
            entry = _Compiled(i, rule, compile_glob(rule.match_type), compile_glob(rule.match_target),
                              compile_glob(rule.match_agent), compile_conditions(rule.conditions), decision)
            compiled.append(entry)
            if entry.type.literal is not None:
                literal.setdefault(entry.type.literal, []).append(i)
            else:
                norm = normalize(rule.match_type)
                cut = min((norm.find(c) for c in "*?[" if c in norm), default=len(norm))
                wild.setdefault(norm[:cut], []).append(i)
        self._rules = compiled
        self._literal = literal
        self._wild = wild
        self._prefix_lengths = sorted({len(p) for p in wild})
        self._cache: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._by_type: dict[str, tuple[_Compiled, ...]] = {}  # rules whose type glob matches, in order
        self._default = Decision(self.default_approval, self.default_risk_level, None,
                                 self.default_reason or "no rule matched; the policy defaults apply", self.hash,
                                 tags=self.default_tags)
        self.uses_time = any(uses_time(r.conditions) for r in self.rules)

    def _candidates(self, type_: str, target: str, agent: str) -> tuple[Any, ...]:
        for field_name, value in (("type", type_), ("target", target), ("agent", agent)):
            bad = forbidden_char(value)
            if bad is not None:
                reason = f"action {field_name} contains control character {bad!r}; blocked rather than matched"
                return (_Blocked(Decision(Approval.BLOCK, RiskLevel.CRITICAL, None, reason, self.hash)),)
        ntype, ntarget, nagent = normalize(type_), normalize(target), normalize(agent)
        # Tool names repeat far more than targets (paths, record ids): which rules a type can
        # reach is worked out once per type, and new targets only run the target/agent globs.
        typed = self._by_type.get(ntype)
        if typed is None:
            typed = self._typed(ntype)
        out: list[_Compiled] = []
        for entry in typed:
            if entry.target.test(ntarget) and entry.agent.test(nagent):
                out.append(entry)
                if entry.cond is None:
                    break  # nothing after an unconditional match can decide
        return tuple(out)

    def _typed(self, ntype: str) -> tuple[_Compiled, ...]:
        indexes = list(self._literal.get(ntype, ()))
        wild = self._wild
        for n in self._prefix_lengths:
            if n > len(ntype):
                break
            indexes.extend(wild.get(ntype[:n], ()))
        indexes.sort()
        typed = tuple(self._rules[i] for i in indexes if self._rules[i].type.test(ntype))
        if len(self._by_type) >= _CACHE_LIMIT:
            self._by_type.clear()
        self._by_type[ntype] = typed
        return typed

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, action: Action, now: _dt.datetime | None = None, *, explain: bool = False) -> Decision:
        """Decide ``action``. ``now`` (UTC) is the time conditions see; default: the current time."""
        if explain:
            return self._explain(action, now)
        key = (action.type, action.target, action.agent)
        candidates = self._cache.get(key)
        if candidates is None:
            try:
                candidates = self._candidates(*key)
            except Exception as exc:  # a str subclass with a hostile __eq__, say: fail closed
                return self._failed(None, exc)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = candidates
        for entry in candidates:
            cond = entry.cond
            if cond is None:
                return entry.decision
            try:
                if cond(action.params, now):
                    return entry.decision
            except Exception as exc:
                return self._failed(entry.rule, exc)
        return self._default

    def _failed(self, rule: Rule | None, exc: Exception) -> Decision:
        what = f"rule '{rule.name}'" if rule else "the policy"
        detail = str(exc) if isinstance(exc, ConditionError) else f"{type(exc).__name__}: {exc}"
        # the rule's tags stay: the action was aimed at that rule's data even though it was blocked
        return Decision(Approval.BLOCK, RiskLevel.CRITICAL, rule.name if rule else None,
                        f"{what} could not be evaluated ({detail}); blocked (fail closed)", self.hash,
                        tags=rule.tags if rule else ())

    def _explain(self, action: Action, now: _dt.datetime | None) -> Decision:
        checks: list[RuleCheck] = []
        fields = (("type", action.type), ("target", action.target), ("agent", action.agent))
        for _, value in fields:
            bad = forbidden_char(value)
            if bad is not None:
                d = self._candidates(action.type, action.target, action.agent)[0].decision
                return _with_trace(d, (RuleCheck("(input)", False, d.reason),))
        normalized = {name: normalize(value) for name, value in fields}
        for entry in self._rules:
            rule = entry.rule
            why = _mismatch(entry, normalized)
            if why:
                checks.append(RuleCheck(rule.name, False, why))
                continue
            if entry.cond is not None:
                try:
                    failing = _failing_condition(rule.conditions or {}, action.params, now)
                except Exception as exc:
                    decision = self._failed(rule, exc)
                    checks.append(RuleCheck(rule.name, True, decision.reason))
                    return _with_trace(decision, tuple(checks))
                if failing:
                    checks.append(RuleCheck(rule.name, False, f"condition {failing} does not hold"))
                    continue
            pattern = ", ".join(f"{k} {v!r}" for k, v in (("type", rule.match_type), ("target", rule.match_target),
                                                         ("agent", rule.match_agent)) if v != "*") or "any action"
            conds = " and its conditions hold" if entry.cond is not None else ""
            checks.append(RuleCheck(rule.name, True, f"matches {pattern}{conds}"))
            return _with_trace(entry.decision, tuple(checks))
        checks.append(RuleCheck("(defaults)", True, "no rule matched"))
        return _with_trace(self._default, tuple(checks))

    # -- analysis ------------------------------------------------------------------------------

    def shadowed_rules(self) -> list[tuple[Rule, Rule]]:
        """Pairs (rule, earlier) where ``earlier`` matches every action ``rule`` could, so ``rule`` never decides."""
        out = []
        for j, later in enumerate(self._rules):
            for earlier in self._rules[:j]:
                if (earlier.cond is None and glob_covers(earlier.type, later.type)
                        and glob_covers(earlier.target, later.target) and glob_covers(earlier.agent, later.agent)):
                    out.append((later.rule, earlier.rule))
                    break
        return out

    def __repr__(self) -> str:
        return f"<Policy {len(self.rules)} rules {self.hash[:19]}>"


def _with_trace(decision: Decision, trace: tuple[RuleCheck, ...]) -> Decision:
    return Decision(decision.approval, decision.risk_level, decision.rule, decision.reason,
                    decision.policy_hash, trace, decision.tags)


def _mismatch(entry: _Compiled, normalized: dict[str, str]) -> str:
    for name, glob in (("type", entry.type), ("target", entry.target), ("agent", entry.agent)):
        if not glob.test(normalized[name]):
            return f"{name} {normalized[name]!r} does not match {glob.pattern!r}"
    return ""


def _failing_condition(spec: Mapping[str, Any], params: Mapping[str, Any], now: _dt.datetime | None) -> str:
    """The first top-level condition that does not hold, as text; '' when all hold."""
    if "time_after" in spec or "time_before" in spec:
        window = {k: spec[k] for k in ("time_after", "time_before") if k in spec}
        pred = compile_conditions(window)
        if pred is not None and not pred(params, now):
            return json.dumps(window)
    for op, value in spec.items():
        if op in ("time_after", "time_before"):
            continue
        items = value.items() if isinstance(value, Mapping) and op.startswith("param_") else [(None, value)]
        for key, expected in items:
            sub = {op: {key: expected}} if key is not None else {op: value}
            pred = compile_conditions(sub)
            if pred is not None and not pred(params, now):
                return json.dumps(sub, default=str)
    return ""


def compile_issues(rules: list[Rule], locations: Mapping[tuple[Any, ...], tuple[int, int]],
                   source: str) -> list[Issue]:
    """Errors the schema cannot see: bad globs, RE2-invalid regexes, duplicate rule names."""
    issues: list[Issue] = []
    names: dict[str, int] = {}

    def loc(path: tuple[Any, ...]) -> tuple[int | None, int | None]:
        while path and path not in locations:
            path = path[:-1]
        return locations.get(path, (None, None))

    for i, rule in enumerate(rules):
        base = ("rules", i)
        # an unnamed rule is called rule_<index>, so an explicit 'rule_3' elsewhere would make two
        # rules answer to one name in decisions and audit records
        if rule.name not in names:
            names[rule.name] = i
        elif rule.named:
            line, col = loc((*base, "name"))
            issues.append(Issue(source, line, col,
                                f"duplicate rule name '{rule.name}' (first used by rules[{names[rule.name]}])",
                                path=f"rules/{i}/name"))
        else:
            line, col = loc(base)
            issues.append(Issue(source, line, col,
                                f"rules[{i}] has no name, so it is called '{rule.name}', which "
                                f"rules[{names[rule.name]}] already uses; give it a name", path=f"rules/{i}"))
        for key, pattern in (("type", rule.match_type), ("target", rule.match_target), ("agent", rule.match_agent)):
            try:
                compile_glob(pattern)
            except GlobError as exc:
                line, col = loc((*base, "match", key))
                issues.append(Issue(source, line, col, str(exc), path=f"rules/{i}/match/{key}"))
        try:
            compile_conditions(rule.conditions, (*base, "conditions"))
        except ConditionSyntaxError as exc:
            line, col = loc(exc.path)
            issues.append(Issue(source, line, col, str(exc), path="/".join(map(str, exc.path))))
    return issues


def build_policy(document: Any, source: str, locations: Mapping[tuple[Any, ...], tuple[int, int]]) -> Policy:
    """Check ``document`` against the policy schema and compile it; raises ``PolicyError`` with every issue."""
    from aegis_cli.engine.loader import check_document

    document = check_document(document, source, locations)
    rules = [_rule(i, r or {}, source, locations) for i, r in enumerate(document.get("rules") or [])]
    issues = compile_issues(rules, locations, source)
    for i, pattern in enumerate((document.get("audit") or {}).get("redact", ())):
        try:
            compile_glob(pattern)
        except GlobError as exc:
            line, col = locations.get(("audit", "redact", i), (None, None))
            issues.append(Issue(source, line, col, f"audit.redact: {exc}", path=f"audit/redact/{i}"))
    if issues:
        raise PolicyError(issues)
    defaults = document.get("defaults")
    return Policy(
        rules,
        (defaults or {}).get("risk_level", RiskLevel.MEDIUM),
        (defaults or {}).get("approval", Approval.APPROVE),
        (defaults or {}).get("reason", ""),
        tools=document.get("tools") or {},
        redact=(document.get("audit") or {}).get("redact", ()),
        sources=(source,),
        explicit_defaults=defaults is not None,
        name=document.get("name", ""),
        default_tags=(defaults or {}).get("tags", ()),
    )


def _rule(index: int, data: Mapping[str, Any], source: str,
          locations: Mapping[tuple[Any, ...], tuple[int, int]]) -> Rule:
    match = data.get("match") or {}
    line = locations.get(("rules", index), (None, None))[0]
    return Rule(
        name=data.get("name") or f"rule_{index}",
        match_type=match.get("type", "*"),
        match_target=match.get("target", "*"),
        match_agent=match.get("agent", "*"),
        conditions=data.get("conditions") or None,
        risk_level=RiskLevel(data.get("risk_level", "medium")),
        approval=Approval(data.get("approval", "approve")),
        reason=data.get("reason", ""),
        description=data.get("description", ""),
        tags=tuple(data.get("tags") or ()),
        named="name" in data,
        source=source,
        line=line,
    )
