"""aegis: governance for AI agent actions.

    from aegis_cli import Policy, Action, Approval, RiskLevel
    decision = Policy.from_yaml("policy.yaml").evaluate(Action("delete", "production"))
"""

from __future__ import annotations

from aegis_cli.engine.errors import AegisError, InputError, Issue, PolicyError
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel, RuleCheck
from aegis_cli.engine.policy import Policy, Rule

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up

__version__ = "0.1.0"

# The runtime, audit sinks and approval handlers are imported on first use, so that
# `import aegis_cli` (and the CLI's start-up) stays light.
_LAZY = {
    "Runtime": "aegis_cli.runtime.core",
    "Result": "aegis_cli.runtime.core",
    "Plan": "aegis_cli.runtime.core",
    "PlannedAction": "aegis_cli.runtime.core",
    "Status": "aegis_cli.runtime.core",
    "ActionNotCompleted": "aegis_cli.runtime.core",
    "Executor": "aegis_cli.runtime.executors",
    "FunctionExecutor": "aegis_cli.runtime.executors",
    "RoutingExecutor": "aegis_cli.runtime.executors",
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
    "PolicyWatcher": "aegis_cli.runtime.watcher",
    "tool_call_to_action": "aegis_cli.engine.toolcalls",
}

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from aegis_cli.approvals import (
        ApprovalAnswer,
        ApprovalHandler,
        CLIApprovalHandler,
        DenyAllApprovalHandler,
        QueueApprovalHandler,
        WebhookApprovalHandler,
    )
    from aegis_cli.audit import AuditError, AuditLogger, LoggingAuditLogger, SQLiteAuditLogger
    from aegis_cli.engine.toolcalls import tool_call_to_action
    from aegis_cli.runtime.core import ActionNotCompleted, Plan, PlannedAction, Result, Runtime, Status
    from aegis_cli.runtime.executors import Executor, FunctionExecutor, RoutingExecutor
    from aegis_cli.runtime.watcher import PolicyWatcher


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
