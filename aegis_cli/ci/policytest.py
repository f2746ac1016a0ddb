"""Policy tests: YAML files of actions and the decisions expected for them (``aegis test``).

    policy: policy.yaml            # or a list, merged in order; paths relative to this file
    now: "2025-03-04T10:00:00Z"    # optional: the time conditions see (per case too)
    cases:
      - name: production deletes are blocked
        action: {type: delete, target: production}
        expect: {approval: block, risk_level: critical, rule: no-prod-deletes}
      - name: email goes through the tools mapping
        tool_call: {name: send_email, arguments: {to: a@example.com}}
        expect: {approval: approve}

A case's time is its ``now``, else its action's ``timestamp``, else the file's ``now``, else the
current time. ``expect.rule: null`` means "decided by the policy defaults". The file is checked
against ``schemas/test-file.schema.json`` first; a malformed file raises ``TestFileError`` with
every problem located, and runs nothing.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aegis_cli.engine import schemas
from aegis_cli.engine.errors import InputError, Issue, PolicyError
from aegis_cli.engine.models import Action, Decision, parse_timestamp
from aegis_cli.engine.policy import Policy
from aegis_cli.engine.toolcalls import tool_call_to_action
from aegis_cli.engine.yamlload import Locations, load_yaml

EXPECT_FIELDS = ("approval", "risk_level", "rule")


class TestFileError(PolicyError):
    """A test file that is not valid YAML or not of the test-file schema."""

    __test__ = False  # not a pytest test class, whatever its name


@dataclass
class CaseResult:
    """One case: what was expected, what the policy decided, and whether they agree."""

    __test__ = False

    file: str
    index: int
    name: str
    line: int | None
    action: Action
    expected: dict[str, Any]
    decision: Decision
    seconds: float = 0.0

    @property
    def actual(self) -> dict[str, Any]:
        d = self.decision
        return {"approval": d.approval.value, "risk_level": d.risk_level.value, "rule": d.rule}

    @property
    def mismatches(self) -> list[tuple[str, Any, Any]]:
        """(field, expected, actual) for each expectation that does not hold."""
        actual = self.actual
        return [(k, v, actual[k]) for k, v in self.expected.items() if actual[k] != v]

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def diff(self) -> str:
        """Expected against actual, one line per field that differs."""
        return "\n".join(f"{k}: expected {_show(e)}, got {_show(a)}" for k, e, a in self.mismatches)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "line": self.line, "passed": self.passed,
                "action": self.action.to_dict(), "expected": self.expected, "actual": self.actual,
                "mismatches": [{"field": k, "expected": e, "actual": a} for k, e, a in self.mismatches],
                "reason": self.decision.reason, "explanation": self.decision.explain(),
                "policy_hash": self.decision.policy_hash, "seconds": round(self.seconds, 6)}


@dataclass
class FileResult:
    """The cases of one test file."""

    __test__ = False

    file: str
    name: str
    policy_files: list[str]
    cases: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "name": self.name, "policy": self.policy_files, "passed": self.passed,
                "cases": [c.to_dict() for c in self.cases], "failures": len(self.failures),
                "seconds": round(self.seconds, 6)}


def _show(value: Any) -> str:
    return "null (defaults)" if value is None else str(value)


def load_test_file(path: str | Path) -> tuple[dict[str, Any], Locations, str]:
    """Read and schema-check a test file; raises ``TestFileError`` with located issues."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TestFileError(Issue(name, None, None, f"cannot read: {exc.strerror or exc}")) from None
    try:
        document, locations = load_yaml(data, name)
    except PolicyError as exc:
        raise TestFileError(exc.issues) from None
    if not isinstance(document, dict):
        raise TestFileError(Issue(name, 1, 1, "a test file must be a mapping with 'policy' and 'cases'"))
    issues = schemas.validate("test-file", document, name, locations)
    issues.extend(_time_issues(document, name, locations))
    if issues:
        raise TestFileError(issues)
    return document, locations, name


def _time_issues(document: dict[str, Any], source: str, locations: Locations) -> list[Issue]:
    out = []
    spots: list[tuple[tuple[Any, ...], Any]] = [(("now",), document.get("now"))]
    for i, case in enumerate(document.get("cases") or []):
        spots.append((("cases", i, "now"), case.get("now")))
        action = case.get("action")
        if isinstance(action, dict):
            spots.append((("cases", i, "action", "timestamp"), action.get("timestamp")))
    for path, value in spots:
        if value is None:
            continue
        try:
            parse_timestamp(value)
        except InputError as exc:
            line, col = locations.get(path, (None, None))
            out.append(Issue(source, line, col, str(exc), path="/".join(map(str, path))))
    return out


def _policy_files(spec: str | list[str], base: Path) -> list[str]:
    files = [spec] if isinstance(spec, str) else list(spec)
    return [str(base / f) if not Path(f).is_absolute() else f for f in files]


def run_test_file(path: str | Path, policies: dict[tuple[str, ...], Policy] | None = None) -> FileResult:
    """Run every case of one test file. Raises ``TestFileError`` (bad test file) or ``PolicyError``."""
    start = time.perf_counter()
    document, locations, name = load_test_file(path)
    base = Path(path).parent
    cache = policies if policies is not None else {}

    def policy_for(spec: str | list[str]) -> tuple[Policy, list[str]]:
        files = _policy_files(spec, base)
        key = tuple(files)
        if key not in cache:
            cache[key] = Policy.from_yaml_files(*files)
        return cache[key], files

    _, default_files = policy_for(document["policy"])
    result = FileResult(name, document.get("name") or Path(name).name, default_files)
    file_now = parse_timestamp(document["now"]) if document.get("now") else None
    for i, case in enumerate(document["cases"]):
        t0 = time.perf_counter()
        policy, _ = policy_for(case.get("policy", document["policy"]))
        action = _case_action(case, policy)
        if case.get("now"):
            when: _dt.datetime | None = parse_timestamp(case["now"])
        else:
            when = action.timestamp or file_now
        decision = policy.evaluate(action, when, explain=True)
        expected = {k: case["expect"][k] for k in EXPECT_FIELDS if k in case["expect"]}
        line = locations.get(("cases", i), (None, None))[0]
        case_name = case.get("name") or f"case {i + 1}: {action.type} {action.target}"
        result.cases.append(CaseResult(name, i, case_name, line, action, expected, decision,
                                       time.perf_counter() - t0))
    result.seconds = time.perf_counter() - start
    return result


def _case_action(case: dict[str, Any], policy: Policy) -> Action:
    if "action" in case:
        return Action.from_dict(case["action"])
    call = case["tool_call"]
    return tool_call_to_action(call["name"], call.get("arguments"), namespace=call.get("namespace"),
                               tools=policy.tools, agent=call.get("agent", ""))


def run_test_files(paths: list[str]) -> list[FileResult]:
    """Run several test files, loading each distinct policy (or set of policies) once."""
    cache: dict[tuple[str, ...], Policy] = {}
    return [run_test_file(p, cache) for p in paths]
