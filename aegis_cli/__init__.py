"""aegis: governance for AI agent actions.

    from aegis_cli import Policy, Action, Approval, RiskLevel
    decision = Policy.from_yaml("policy.yaml").evaluate(Action("delete", "production"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aegis_cli.errors import AegisError, InputError, Issue, PolicyError
from aegis_cli.models import Action, Approval, Decision, RiskLevel, RuleCheck
from aegis_cli.policy import Policy, Rule

__version__ = "0.1.0"

# The runtime, audit sinks and approval handlers are imported on first use, so that
# `import aegis_cli` (and the CLI's start-up) stays light.
_LAZY = {
    "Runtime": "aegis_cli.runtime",
    "Result": "aegis_cli.runtime",
    "Plan": "aegis_cli.runtime",
    "SQLiteAuditLogger": "aegis_cli.audit",
    "LoggingAuditLogger": "aegis_cli.audit",
    "AuditLogger": "aegis_cli.audit",
}

if TYPE_CHECKING:  # pragma: no cover
    pass


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aegis_cli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Action",
    "AegisError",
    "Approval",
    "AuditLogger",
    "Decision",
    "InputError",
    "Issue",
    "LoggingAuditLogger",
    "Plan",
    "Policy",
    "PolicyError",
    "Result",
    "RiskLevel",
    "Rule",
    "RuleCheck",
    "Runtime",
    "SQLiteAuditLogger",
    "__version__",
]
