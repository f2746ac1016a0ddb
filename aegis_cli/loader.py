"""From policy files to ``Policy`` objects: read, check against the schema, compile, analyse."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aegis_cli import schemas
from aegis_cli.errors import Issue, PolicyError
from aegis_cli.matching import GlobError, compile_glob
from aegis_cli.models import Approval, RiskLevel
from aegis_cli.policy import Policy, Rule, compile_issues
from aegis_cli.yamlload import Locations, load_yaml


def read_source(path: str | Path) -> tuple[bytes, str]:
    """The bytes of a policy file (``-`` is stdin) and the name to report it by."""
    name = str(path)
    if name == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    p = Path(path)
    try:
        if p.is_dir():
            raise PolicyError(Issue(name, None, None, "is a directory, not a policy file"))
        return p.read_bytes(), name
    except FileNotFoundError:
        raise PolicyError(Issue(name, None, None, "no such file")) from None
    except PermissionError:
        raise PolicyError(Issue(name, None, None, "permission denied")) from None
    except OSError as exc:
        raise PolicyError(Issue(name, None, None, f"cannot read: {exc.strerror or exc}")) from None


def load_file(path: str | Path) -> Policy:
    data, name = read_source(path)
    return load_text(data, name)


def load_text(text: bytes | str, source: str) -> Policy:
    document, locations = load_yaml(text, source)
    return build_policy(document, source, locations)


def build_policy(document: Any, source: str, locations: Locations) -> Policy:
    """Validate ``document`` against the policy schema and compile it; raises ``PolicyError``."""
    if document is None:
        document = {}
    issues = schemas.validate("policy", document, source, locations)
    if issues:
        raise PolicyError(issues)
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
    )


def _rule(index: int, data: Mapping[str, Any], source: str, locations: Locations) -> Rule:
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
        named="name" in data,
        source=source,
        line=line,
    )


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
            policy = load_file(path)
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
