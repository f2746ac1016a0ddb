"""The Typer app: every command, registered from its module (see ``aegis_cli.cli``).

Each group of commands lives in its own module with a ``register(app)`` function. Modules import
only typer at the top; anything heavy is imported inside the command that needs it.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(
    name="aegis",
    help="Governance for AI agent actions: decide every action against a YAML policy, audit it, "
    "and hold risky ones for a human.\n\nExit codes: 0 success; 1 the policy said no; 2 bad usage or input.",
    no_args_is_help=True,
    add_completion=False,  # static scripts in completions/ complete without starting Python
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _show_version(value: bool) -> None:
    if value:
        from aegis_cli import __version__

        typer.echo(f"aegis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Governance for AI agent actions."""


COMMAND_MODULES = (
    "policy_cmds",    # validate, evaluate, init, schema
    "audit_cmds",     # tail-audit, export, audit verify|stats, approvals
    "simulate_cmds",  # simulate, test
    "serve_cmd",      # serve
    "wrap_cmds",      # wrap
    "hook_cmds",      # hook (answered without Typer: see aegis_cli.cli.main)
    "report_cmd",     # report
)


def _register() -> None:
    for name in COMMAND_MODULES:
        full = f"aegis_cli.cli.{name}"
        if importlib.util.find_spec(full) is None:
            continue
        importlib.import_module(full).register(app)


_register()

