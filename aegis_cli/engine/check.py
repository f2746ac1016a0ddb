"""What ``aegis validate`` reports: every file's errors, then warnings about rules that cannot match."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aegis_cli.engine.errors import Issue, PolicyError
from aegis_cli.engine.policy import Policy


@dataclass
class Report:
    """What ``aegis validate`` found: the merged policy when every file loaded, and all issues."""

    files: list[str]
    policy: Policy | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]


def check_files(paths: Sequence[str | Path]) -> Report:
    """Load every file, collecting all errors (not only the first) and the warnings of each."""
    report = Report([str(p) for p in paths])
    policies = []
    for path in paths:
        try:
            policy = Policy.from_yaml(path)
        except PolicyError as exc:
            report.issues.extend(exc.issues)
            continue
        policies.append(policy)
        report.issues.extend(warnings_for(policy))
    if policies and not report.errors:
        merged = policies[0]
        for later in policies[1:]:
            merged = merged.merge(later)
        report.policy = merged
    return report


def warnings_for(policy: Policy) -> list[Issue]:
    out = []
    for rule, earlier in policy.shadowed_rules():
        where = f" (line {earlier.line})" if earlier.line else ""
        out.append(Issue(rule.source or "<policy>", rule.line, None,
                         f"rule '{rule.name}' can never match: rule '{earlier.name}'{where} matches "
                         "every action it would, and has no conditions", severity="warning"))
    if not policy.rules:
        out.append(Issue(policy.sources[0] if policy.sources else "<policy>", None, None,
                         "policy has no rules; every action gets the defaults", severity="warning"))
    return out
