"""The runtime: governed execution in your agent (decide, ask, audit, run) and its executors.

``watcher`` (policy hot reload, needs watchdog) is imported on its own: ``aegis_cli.runtime.watcher``.
"""

from aegis_cli.runtime.core import ActionNotCompleted, Plan, PlannedAction, Result, Runtime, Status
from aegis_cli.runtime.executors import Executor, FunctionExecutor, RoutingExecutor

__all__ = ["ActionNotCompleted", "Executor", "FunctionExecutor", "Plan", "PlannedAction", "Result",
           "RoutingExecutor", "Runtime", "Status"]
