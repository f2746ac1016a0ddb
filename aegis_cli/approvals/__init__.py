"""Approval handlers: who is asked when the policy says ``approve``, and how.

    from aegis_cli.approvals import CLIApprovalHandler, WebhookApprovalHandler, QueueApprovalHandler

Every handler has a ``timeout``; no answer in time, an exception or no handler at all means denied.
The terminal, webhook and queue handlers are imported on first use (they pull in rich and httpx).
"""

from __future__ import annotations

from typing import Any

from aegis_cli.approvals.base import (
    ApprovalAnswer,
    ApprovalHandler,
    ApprovalRequestInfo,
    DenyAllApprovalHandler,
    ask,
)

_LAZY = {
    "CLIApprovalHandler": "aegis_cli.approvals.cli",
    "WebhookApprovalHandler": "aegis_cli.approvals.webhook",
    "QueueApprovalHandler": "aegis_cli.approvals.queue",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aegis_cli.approvals' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ApprovalAnswer",
    "ApprovalHandler",
    "ApprovalRequestInfo",
    "CLIApprovalHandler",
    "DenyAllApprovalHandler",
    "QueueApprovalHandler",
    "WebhookApprovalHandler",
    "ask",
]
