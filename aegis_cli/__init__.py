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
    "PlannedAction": "aegis_cli.runtime",
    "Status": "aegis_cli.runtime",
    "ActionNotCompleted": "aegis_cli.runtime",
    "Executor": "aegis_cli.executors",
    "FunctionExecutor": "aegis_cli.executors",
    "RoutingExecutor": "aegis_cli.executors",
    "SQLiteAuditLogger": "aegis_cli.audit",
    "LoggingAuditLogger": "aegis_cli.audit",
    "AuditLogger": "aegis_cli.audit",
    "AuditError": "aegis_cli.audit",
    "ApprovalHandler": "aegis_cli.approvals",
    "ApprovalAnswer": "aegis_cli.approvals",
    "CLIApprovalHandler": "aegis_cli.approvals",
    "WebhookApprovalHandler": "aegis_cli.approvals",
    "QueueApprovalHandler": "aegis_cli.approvals",
    "DenyAllApprovalHandler": "aegis_cli.approvals",
    "PolicyWatcher": "aegis_cli.watcher",
    "tool_call_to_action": "aegis_cli.toolcalls",
}

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.approvals import (
        ApprovalAnswer,
        ApprovalHandler,
        CLIApprovalHandler,
        DenyAllApprovalHandler,
        QueueApprovalHandler,
        WebhookApprovalHandler,
    )
    from aegis_cli.audit import AuditError, AuditLogger, LoggingAuditLogger, SQLiteAuditLogger
    from aegis_cli.executors import Executor, FunctionExecutor, RoutingExecutor
    from aegis_cli.runtime import ActionNotCompleted, Plan, PlannedAction, Result, Runtime, Status
    from aegis_cli.toolcalls import tool_call_to_action
    from aegis_cli.watcher import PolicyWatcher


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aegis_cli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Action",
    "ActionNotCompleted",
    "AegisError",
    "Approval",
    "ApprovalAnswer",
    "ApprovalHandler",
    "AuditError",
    "AuditLogger",
    "CLIApprovalHandler",
    "Decision",
    "DenyAllApprovalHandler",
    "Executor",
    "FunctionExecutor",
    "InputError",
    "Issue",
    "LoggingAuditLogger",
    "Plan",
    "PlannedAction",
    "Policy",
    "PolicyError",
    "PolicyWatcher",
    "QueueApprovalHandler",
    "Result",
    "RiskLevel",
    "RoutingExecutor",
    "Rule",
    "RuleCheck",
    "Runtime",
    "SQLiteAuditLogger",
    "Status",
    "WebhookApprovalHandler",
    "__version__",
    "tool_call_to_action",
]
