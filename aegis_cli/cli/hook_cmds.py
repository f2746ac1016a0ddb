"""hook: put the policy inside coding agents (Claude Code, Codex, Gemini CLI), one event per process.

An agent runs ``aegis hook <agent>`` before every tool call; ``aegis_cli.cli.main`` answers those
calls through ``aegis_cli.hooks.command`` without loading this module (or Typer). These commands
are what ``--help``, ``--print-settings``, shell completion and docs/cli.md see, and the reference
the fast parser is tested against: the options declared here are the options it reads.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import click
import typer

from aegis_cli.cli._common import EXIT_USAGE, audit_db_option, fail, policy_option, split_policy_paths
from aegis_cli.hooks.command import APPROVAL_TIMEOUT_DEFAULT, APPROVAL_TIMEOUT_MIN, APPROVALS, APPROVALS_DEFAULT

hook_app = typer.Typer(help="Hooks that put the policy inside coding agents (Claude Code, Codex, Gemini CLI).",
                       no_args_is_help=True)


def _print_settings_option(where: str) -> Any:
    return typer.Option(False, "--print-settings", help=f"Print the {where} snippet that installs this hook.")


def _server_option() -> Any:
    return typer.Option(None, "--server", metavar="URL", help="With --print-settings: a hook that posts each "
                        "event to this aegis serve (curl), which decides and audits it; blocks when it is down.")


def _token_env_option() -> Any:
    return typer.Option(None, "--token-env", metavar="VAR", help="With --server: send the bearer token held in "
                        "$VAR when the hook runs (the settings hold no secret).")


def _approvals_option() -> Any:
    return typer.Option(APPROVALS_DEFAULT, "--approvals", click_type=click.Choice(APPROVALS),
                        help="Who asks a person when a rule says approve: 'agent' (Claude Code and Gemini CLI "
                        "ask in their own prompt; Codex cannot, so it is denied) or 'queue' (aegis holds the "
                        "call until it is answered with 'aegis approvals approve ID' or on the aegis serve page).")


def _approval_timeout_option() -> Any:
    return typer.Option(APPROVAL_TIMEOUT_DEFAULT, "--approval-timeout", metavar="SECONDS",
                        min=APPROVAL_TIMEOUT_MIN, help="With --approvals queue: seconds to wait; no answer = denied.")


def _hook(agent: str, policy: list[str] | None, audit_db: str, approvals: str, approval_timeout: float,
          print_settings: bool, server: str | None = None, token_env: str | None = None, **settings: Any) -> None:
    """Print the settings snippet, or answer one hook event from stdin (exit 2 = blocked, reason on stderr)."""
    paths = split_policy_paths(policy)
    from aegis_cli.hooks import agent_module

    if not math.isfinite(approval_timeout):
        fail(f"--approval-timeout must be a number of seconds, not {approval_timeout}", EXIT_USAGE)
    held = approval_timeout if approvals == "queue" else None
    if print_settings:
        if server is None and not paths:
            fail("no policy given: use -p FILE or set $AEGIS_POLICY (or --server URL)", EXIT_USAGE)
        if token_env is not None and server is None:
            fail("--token-env only applies with --server", EXIT_USAGE)
        if held is not None and server is not None:
            fail("--approvals queue applies to the local hook, not with --server", EXIT_USAGE)
        try:
            snippet = agent_module(agent).settings(paths, audit_db, server=server, token_env=token_env,
                                                   approval_timeout=held, **settings)
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
        sys.stdout.write(snippet if isinstance(snippet, str) else json.dumps(snippet, indent=2) + "\n")
        return
    if server is not None or token_env is not None:
        fail("--server and --token-env only apply with --print-settings", EXIT_USAGE)
    from aegis_cli.hooks import run_hook
    from aegis_cli.hooks.common import read_stdin

    answer = run_hook(agent, read_stdin(sys.stdin.buffer.read), paths, audit_db, held)
    sys.stdout.write(answer.stdout)
    sys.stderr.write(answer.stderr)
    raise typer.Exit(answer.exit_code)


@hook_app.command("claude-code")
def claude_code(
    policy: list[str] = policy_option(required=False),
    audit_db: str = audit_db_option(),
    approvals: str = _approvals_option(),
    approval_timeout: float = _approval_timeout_option(),
    print_settings: bool = _print_settings_option(".claude/settings.json"),
    matcher: str = typer.Option("*", "--matcher", help="Tool-name matcher for --print-settings."),
    server: str | None = _server_option(),
    token_env: str | None = _token_env_option(),
) -> None:
    """Claude Code PreToolUse / PostToolUse hook: answer allow / ask / deny, audit it, record what ran.

    Anything it cannot decide (another agent's event, bad input, an unloadable policy, an audit
    failure) exits 2, which Claude Code takes as a block.
    """
    _hook("claude-code", policy, audit_db, approvals, approval_timeout, print_settings, server, token_env,
          matcher=matcher)


@hook_app.command("codex")
def codex(
    policy: list[str] = policy_option(required=False),
    audit_db: str = audit_db_option(),
    approvals: str = _approvals_option(),
    approval_timeout: float = _approval_timeout_option(),
    print_settings: bool = _print_settings_option("~/.codex/config.toml"),
    server: str | None = _server_option(),
    token_env: str | None = _token_env_option(),
) -> None:
    """Codex CLI PreToolUse / PermissionRequest / PostToolUse hook: deny what the policy does not allow.

    Anything it cannot decide exits 2, which Codex takes as a block.
    """
    _hook("codex", policy, audit_db, approvals, approval_timeout, print_settings, server, token_env)


@hook_app.command("gemini")
def gemini(
    policy: list[str] = policy_option(required=False),
    audit_db: str = audit_db_option(),
    approvals: str = _approvals_option(),
    approval_timeout: float = _approval_timeout_option(),
    print_settings: bool = _print_settings_option("~/.gemini/settings.json"),
    matcher: str = typer.Option("*", "--matcher", help="Tool-name matcher (a regex) for --print-settings."),
    server: str | None = _server_option(),
    token_env: str | None = _token_env_option(),
) -> None:
    """Gemini CLI BeforeTool / AfterTool hook: answer allow / ask / deny, audit it, record what ran.

    Anything it cannot decide exits 2, which Gemini CLI takes as a block.
    """
    _hook("gemini", policy, audit_db, approvals, approval_timeout, print_settings, server, token_env,
          matcher=matcher)


def register(app: typer.Typer) -> None:
    app.add_typer(hook_app, name="hook")
