"""Agent hooks: ``aegis hook claude-code | codex | gemini``.

One module per agent speaks that agent's hook events and answers; ``common`` holds the one path
they share (decide, audit before answering, record what ran, refuse with exit 2 whatever cannot be
read). ``run_hook(agent, raw, policy_paths, audit_db)`` answers one event; ``run_hook_fast`` is
the same with the compiled-policy cache and the standard-library SQLite writer (what ``aegis hook``
runs); ``plan_hook`` decides without writing, for the server (``serve/hooks_api.py``).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from aegis_cli.hooks.common import Answer, run

AGENTS = {"claude-code": "claude_code", "codex": "codex", "gemini": "gemini"}


def agent_module(name: str) -> ModuleType:
    return import_module(f"aegis_cli.hooks.{AGENTS[name]}")


def run_hook(agent: str, raw: str, policy_paths: list[str], audit_db: str | None,
             approval_timeout: float | None = None) -> Answer:
    """Answer one hook event of ``agent`` (a key of ``AGENTS``); never raises.

    ``approval_timeout``: hold ``approve`` decisions in the approval queue that long (see ``common.run``).
    """
    return run(agent_module(agent).AGENT, raw, policy_paths, audit_db, approval_timeout=approval_timeout)


def run_hook_fast(agent: str, raw: str, policy_paths: list[str], audit_db: str | None,
                  approval_timeout: float | None = None) -> Answer:
    """``run_hook`` with the compiled-policy cache and the standard-library SQLite append path."""
    from aegis_cli.hooks.fast_sqlite import FastTrail
    from aegis_cli.hooks.policy_cache import load

    return run(agent_module(agent).AGENT, raw, policy_paths, audit_db, load_policy=load, open_trail=FastTrail,
               approval_timeout=approval_timeout)


__all__ = ["AGENTS", "Answer", "agent_module", "run_hook", "run_hook_fast"]
