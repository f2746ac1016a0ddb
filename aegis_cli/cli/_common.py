"""What every command shares: options read from the environment, exit codes, error rendering."""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Any, NoReturn

import typer

EXIT_OK = 0
EXIT_DENIED = 1  # the policy said no: a block, a failing test, a decision at or above --fail-on
EXIT_USAGE = 2  # bad usage or bad input

POLICY_ENV = "AEGIS_POLICY"
AUDIT_DB_ENV = "AEGIS_AUDIT_DB"
DEFAULT_AUDIT_DB = "aegis_audit.db"


class Format(str, Enum):
    text = "text"
    json = "json"
    jsonl = "jsonl"


class FailOn(str, Enum):
    block = "block"
    approve = "approve"
    never = "never"


def policy_option(required: bool = True) -> Any:
    return typer.Option(
        ... if required else None,
        "--policy",
        "-p",
        envvar=POLICY_ENV,
        help="Policy file; repeat for several (later files override earlier ones). "
        f"${POLICY_ENV} may hold one or more, separated by '{os.pathsep}'.",
        show_envvar=True,
    )


def audit_db_option() -> Any:
    return typer.Option(
        DEFAULT_AUDIT_DB, "--audit-db", envvar=AUDIT_DB_ENV, show_envvar=True,
        help="Audit database: an SQLite file, or a PostgreSQL URL (postgresql://user@host/db) shared by a fleet.",
    )


def split_policy_paths(paths: list[str] | None) -> list[str]:
    """Expand `-p` values; an environment value may hold several paths separated by os.pathsep."""
    out: list[str] = []
    for p in paths or []:
        out.extend(x for x in p.split(os.pathsep) if x) if os.pathsep in p else out.append(p)
    return out


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr, then exit. Used for bad input: never a traceback."""
    sys.stderr.write(f"aegis: {message}\n")
    raise typer.Exit(code)


def load_policy(paths: list[str] | None) -> Any:
    """Load and merge policy files, or exit 2 with every located error on stderr."""
    from aegis_cli.engine.errors import PolicyError
    from aegis_cli.engine.policy import Policy

    files = split_policy_paths(paths)
    if not files:
        fail(f"no policy given: use -p FILE or set ${POLICY_ENV}")
    try:
        return Policy.from_yaml_files(*files)
    except PolicyError as exc:
        for issue in exc.issues:
            sys.stderr.write(f"{issue}\n")
        raise typer.Exit(EXIT_USAGE) from None


def fails(approval: Any, fail_on: FailOn) -> bool:
    """Whether a decision reaches the --fail-on threshold."""
    if fail_on is FailOn.never:
        return False
    threshold = 2 if fail_on is FailOn.block else 1
    return approval.severity >= threshold


def use_color() -> bool:
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, no_color="NO_COLOR" in os.environ, highlight=False,
                   force_terminal=None, soft_wrap=not stream.isatty())
