"""Replay recorded tool calls against a policy: what it would have decided, and what a change changes.

``replay`` is a generator, so a million-call trace streams through in flat memory; ``Summary``
keeps counters and a bounded list of examples, never every call. Calls are decided at their
recorded time when the trace has one, otherwise at one fixed ``now`` for the whole run, so the
new policy and the baseline always see the same clock.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.engine.policy import Policy
from aegis_cli.traces.base import Problem, ToolCall

EXAMPLES = 1000  # blocked / approval calls and problems listed in the report; counts are always complete
CHANGE_EXAMPLES = 5  # example calls kept per changed (old rule, new rule) group
DEFAULTS = "(defaults)"


@dataclass(slots=True)
class Outcome:
    """One replayed call: the action it became, the new decision, and the baseline's if asked."""

    call: ToolCall
    action: Action
    decision: Decision
    baseline: Decision | None = None

    @property
    def changed(self) -> bool:
        b, d = self.baseline, self.decision
        return b is not None and (b.approval, b.risk_level, b.rule) != (d.approval, d.risk_level, d.rule)

    def to_dict(self) -> dict[str, Any]:
        """``aegis evaluate``'s JSONL shape plus ``source`` (and ``baseline``/``changed`` with one)."""
        out = {"action": self.action.to_dict(), **self.decision.to_dict(), "source": self.call.source()}
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
            out["changed"] = self.changed
        return out


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def _make_fast_dumps() -> Any:
    """``json.dumps(value, ensure_ascii=False)`` with the C encoder built once, not per call."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _dumps
    encoder = make({}, json.JSONEncoder().default, json.encoder.encode_basestring, None, ": ", ", ",
                   False, False, True)

    def dumps(value: Any) -> str:
        if isinstance(value, str):
            return json.encoder.encode_basestring(value)
        return "".join(encoder(value, 0))

    return dumps


_fast_dumps = _make_fast_dumps()
_decision_json: dict[int, tuple[Decision, str]] = {}


def _decision_fragment(decision: Decision) -> str:
    """``"approval": ..., "policy_hash": ...`` for a decision, serialised once per decision object.

    A policy hands out the same few Decision objects again and again; keeping the object in the
    cache next to its text stops its id from being reused while the entry lives.
    """
    hit = _decision_json.get(id(decision))
    if hit is not None and hit[0] is decision:
        return hit[1]
    text = _dumps(decision.to_dict())[1:-1]
    if len(_decision_json) > 4096:
        _decision_json.clear()
    _decision_json[id(decision)] = (decision, text)
    return text


_string = json.encoder.encode_basestring  # what the encoder above uses for str (ensure_ascii=False)


def _action_json(a: Action) -> str:
    out = f'{{"type": {_string(a.type)}, "target": {_string(a.target)}, "params": {_fast_dumps(a.params)}'
    if a.agent:
        out += f', "agent": {_string(a.agent)}'
    if a.session:
        out += f', "session": {_string(a.session)}'
    if a.timestamp is not None:
        out += f', "timestamp": "{a.timestamp.isoformat()}"'
    return out + "}"


_file_json: dict[str, str] = {}


def _source_json(call: ToolCall) -> str:
    where = call.where
    file = _file_json.get(where.file)
    if file is None:
        if len(_file_json) > 4096:
            _file_json.clear()
        file = _file_json[where.file] = _string(where.file)
    at = f'"line": {where.line}' if where.line is not None else f'"index": {call.index}'
    pointer = f', "pointer": {_string(where.pointer)}' if where.pointer else ""
    ident = "null" if call.call_id is None else _string(call.call_id)
    return f'{{"file": {file}, {at}{pointer}, "call_id": {ident}, "format": "{call.format}"}}'


def to_json_line(outcome: Outcome) -> str:
    """``json.dumps(outcome.to_dict(), ensure_ascii=False)`` plus a newline, built faster.

    JSONL of a million calls is mostly this function, so it writes the same text field by field:
    the decision part is serialised once per decision object. A test holds it to ``to_dict``.
    """
    if outcome.baseline is not None:
        return _dumps(outcome.to_dict()) + "\n"
    return (f'{{"action": {_action_json(outcome.action)}, {_decision_fragment(outcome.decision)}, '
            f'"source": {_source_json(outcome.call)}}}\n')


def replay(policy: Policy, items: Iterable[ToolCall | Problem], *, baseline: Policy | None = None,
           now: _dt.datetime | None = None) -> Iterator[Outcome | Problem]:
    """Decide every call in ``items``; problems pass through for the caller to report."""
    if now is None:
        now = _dt.datetime.now(_dt.UTC)
    evaluate = policy.evaluate
    tools = policy.tools
    same_tools = baseline is not None and baseline.tools == tools
    for item in items:
        if type(item) is not ToolCall:  # a Problem: passed on for the caller to report
            yield item
            continue
        action = item.to_action(tools)
        when = item.timestamp or now
        decision = evaluate(action, when)
        old = None
        if baseline is not None:
            old = baseline.evaluate(action if same_tools else item.to_action(baseline.tools), when)
        yield Outcome(item, action, decision, old)


def _flag(outcome: Outcome) -> dict[str, Any]:
    d = outcome.decision
    return {"source": outcome.call.source(), "tool": outcome.call.name, "action": outcome.action.to_dict(),
            "approval": d.approval.value, "risk_level": d.risk_level.value, "rule": d.rule, "reason": d.reason}


@dataclass
class ChangeGroup:
    """Calls whose decision moved from ``old_rule`` to ``new_rule``."""

    old_rule: str
    new_rule: str
    count: int = 0
    transitions: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"old_rule": self.old_rule, "new_rule": self.new_rule, "count": self.count,
                "transitions": dict(self.transitions.most_common()), "examples": self.examples}


@dataclass
class Summary:
    """What a replay found, in counters (complete) and examples (bounded)."""

    policy_hash: str = ""
    baseline_hash: str | None = None
    calls: int = 0
    # One counter keyed by (approval, risk, rule, tool, format): a single increment per call, and
    # every breakdown the report shows is a sum over it (the key space is small: rules x tools).
    counts: Counter[tuple[str, str, str, str, str]] = field(default_factory=Counter)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    needs_approval: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    problems_total: int = 0
    changed: int = 0
    transitions: Counter[str] = field(default_factory=Counter)
    changes: dict[tuple[str, str], ChangeGroup] = field(default_factory=dict)
    baseline_by_approval: Counter[str] = field(default_factory=Counter)

    def add(self, item: Outcome | Problem) -> None:
        if type(item) is not Outcome:
            self.problems_total += 1
            if len(self.problems) < EXAMPLES:
                self.problems.append(item)
            return
        d = item.decision
        self.calls += 1
        self.counts[d.approval, d.risk_level, d.rule or DEFAULTS, item.call.name, item.call.format] += 1
        if d.approval is not Approval.AUTO:
            kept = self.blocked if d.approval is Approval.BLOCK else self.needs_approval
            if len(kept) < EXAMPLES:
                kept.append(_flag(item))
        old = item.baseline
        if old is None:
            return
        self.baseline_by_approval[old.approval.value] += 1
        if not item.changed:
            return
        self.changed += 1
        move = f"{old.approval.value} -> {d.approval.value}"
        if old.risk_level is not d.risk_level:
            move += f" ({old.risk_level.value} -> {d.risk_level.value} risk)"
        self.transitions[move] += 1
        key = (old.rule or DEFAULTS, d.rule or DEFAULTS)
        group = self.changes.get(key)
        if group is None:
            group = self.changes[key] = ChangeGroup(*key)
        group.count += 1
        group.transitions[move] += 1
        if len(group.examples) < CHANGE_EXAMPLES:
            group.examples.append({"source": item.call.source(), "tool": item.call.name,
                                   "action": item.action.to_dict(),
                                   "old": old.to_dict(), "new": d.to_dict()})

    def to_dict(self, files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The report as data (``--format json``)."""
        approvals = [a.value for a in Approval]
        by_ar: Counter[tuple[str, str]] = Counter()
        by_rule: Counter[tuple[str, str, str]] = Counter()
        by_tool: Counter[str] = Counter()
        by_tool_approval: Counter[tuple[str, str]] = Counter()
        by_format: Counter[str] = Counter()
        for (approval, risk, rule, tool, fmt), n in self.counts.items():
            by_ar[approval.value, risk.value] += n
            by_rule[rule, approval.value, risk.value] += n
            by_tool[tool] += n
            by_tool_approval[tool, approval.value] += n
            by_format[fmt] += n
        out: dict[str, Any] = {
            "policy_hash": self.policy_hash,
            "calls": self.calls,
            "approval": {a: sum(by_ar[a, r.value] for r in RiskLevel) for a in approvals},
            "risk_level": {r.value: sum(by_ar[a, r.value] for a in approvals) for r in RiskLevel},
            "approval_by_risk": {a: {r.value: by_ar[a, r.value] for r in RiskLevel} for a in approvals},
            "rules": [{"rule": None if rule == DEFAULTS else rule, "count": n, "approval": approval,
                       "risk_level": risk} for (rule, approval, risk), n in by_rule.most_common()],
            "tools": [{"tool": tool, "count": n, **{a: by_tool_approval[tool, a] for a in approvals}}
                      for tool, n in by_tool.most_common()],
            "formats": dict(by_format.most_common()),
            "blocked": self.blocked,
            "needs_approval": self.needs_approval,
            "problems": [{"where": str(p.where), "file": p.where.file, "line": p.where.line,
                          "pointer": p.where.pointer, "message": p.message} for p in self.problems],
            "problems_total": self.problems_total,
        }
        if self.baseline_hash is not None:
            out["baseline"] = {
                "policy_hash": self.baseline_hash,
                "approval": {a: self.baseline_by_approval.get(a, 0) for a in approvals},
                "changed": self.changed,
                "transitions": dict(self.transitions.most_common()),
                "groups": [g.to_dict() for g in sorted(self.changes.values(), key=lambda g: -g.count)],
            }
        if files is not None:
            out["files"] = files
        return out


def simulate(policy: Policy, items: Iterable[ToolCall | Problem], *, baseline: Policy | None = None,
             now: _dt.datetime | None = None) -> Summary:
    """Replay ``items`` and summarise; the library form of ``aegis simulate`` without output."""
    summary = Summary(policy.hash, baseline.hash if baseline is not None else None)
    for outcome in replay(policy, items, baseline=baseline, now=now):
        summary.add(outcome)
    return summary
