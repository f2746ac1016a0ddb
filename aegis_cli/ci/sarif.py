"""Policy problems as SARIF 2.1.0, so ``aegis validate`` findings show in code-scanning views.

Each kind of problem is a SARIF rule with a stable id (``AEGIS001``...), so a view can group,
filter and suppress by kind; each issue is a result located at its file, line and column.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from aegis_cli.engine.errors import Issue

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


# (id, name, short description, pattern over the message). The first pattern that matches wins (so the
# order is by specificity, not by id); the last is the catch-all.
RULES: tuple[tuple[str, str, str, str], ...] = (
    ("AEGIS001", "yaml-syntax", "The file is not valid YAML (or uses a YAML feature policies forbid).",
     r"invalid YAML|YAML tag|control character|NUL byte|single YAML document|alias bomb|nesting deeper|"
     r"nested too deeply|duplicate key"),
    ("AEGIS002", "unreadable-file", "The file could not be read.",
     r"no such file|permission denied|cannot read|is a directory|not UTF-8|bytes; the limit"),
    ("AEGIS010", "unreachable-rule", "A rule can never match: an earlier rule takes every action it would.",
     r"can never match"),
    ("AEGIS011", "empty-policy", "The policy has no rules.", r"has no rules"),
    ("AEGIS003", "unknown-key", "A key or condition operator the policy format does not define.", r"^unknown "),
    ("AEGIS004", "missing-key", "A required key is missing.", r"missing required key"),
    ("AEGIS005", "wrong-type", "A value has the wrong type.", r" must be (a|an|true) "),
    ("AEGIS006", "invalid-value", "A value is not one of those allowed, or out of range.",
     r"expected one of|expected a UTC time|weekdays|only policy version|must not be empty|at least \d+ item|"
     r"repeated items"),
    ("AEGIS007", "duplicate-rule-name", "Two rules share a name.", r"duplicate rule name"),
    ("AEGIS008", "invalid-pattern", "A glob or regular expression does not compile.",
     r"glob|regex|regular expression|pattern"),
    ("AEGIS009", "invalid-condition", "A condition cannot be evaluated as written.", r"condition"),
    ("AEGIS000", "policy-error", "Any other problem in a policy file.", r""),
)
_COMPILED = [(rid, name, desc, re.compile(pat, re.IGNORECASE)) for rid, name, desc, pat in RULES]


def rule_for(issue: Issue) -> tuple[str, str, str]:
    """(id, name, description) of the kind of problem ``issue`` is."""
    for rid, name, desc, pattern in _COMPILED:
        if pattern.search(issue.message):
            return rid, name, desc
    raise AssertionError("unreachable: the last rule matches everything")


def _uri(file: str) -> str:
    # SARIF wants a URI reference: relative paths stay relative (to the checkout), with '/'.
    return quote(PurePath(file).as_posix(), safe="/:._-~")


def _is_real_file(file: str) -> bool:
    return bool(file) and not (file.startswith("<") and file.endswith(">"))


def to_sarif(issues: list[Issue], files: list[str]) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run of aegis over ``files``, one result per issue."""
    from aegis_cli import __version__

    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    results = []
    for issue in issues:
        rid, name, desc = rule_for(issue)
        level = "warning" if issue.severity == "warning" else "error"
        if rid not in index:
            index[rid] = len(rules)
            rules.append({"id": rid, "name": name, "shortDescription": {"text": desc},
                          "defaultConfiguration": {"level": level}})
        result: dict[str, Any] = {"ruleId": rid, "ruleIndex": index[rid], "level": level,
                                  "message": {"text": issue.message}}
        if _is_real_file(issue.file):
            region: dict[str, int] = {}
            if issue.line is not None and issue.line >= 1:
                region["startLine"] = issue.line
                if issue.column is not None and issue.column >= 1:
                    region["startColumn"] = issue.column
            location: dict[str, Any] = {"artifactLocation": {"uri": _uri(issue.file)}}
            if region:
                location["region"] = region
            result["locations"] = [{"physicalLocation": location}]
        else:
            result["message"]["text"] = f"{issue.file}: {issue.message}"
        if issue.path:
            result["properties"] = {"path": issue.path}
        results.append(result)
    artifacts = [{"location": {"uri": _uri(f)}} for f in dict.fromkeys(files) if _is_real_file(f) and f != "-"]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "aegis", "version": __version__,
                            "semanticVersion": __version__, "rules": rules}},
        "results": results,
        "columnKind": "unicodeCodePoints",
    }
    if artifacts:
        run["artifacts"] = artifacts
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
