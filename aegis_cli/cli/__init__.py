"""The `aegis` command line: a thin layer that parses, calls the library and renders.

The Typer app lives in ``root`` and is imported on first use (``from aegis_cli.cli import app``
works as ever). ``main`` first looks for ``aegis hook <agent>``: an agent runs that before every
tool call, as a new process, so it is answered by ``aegis_cli.hooks.command`` without importing
Typer or any command module; its help, ``--print-settings`` and usage errors still go to Typer.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

_HOOK_AGENTS = ("claude-code", "codex", "gemini")  # aegis_cli.hooks.AGENTS, without importing it


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "hook" and argv[1] in _HOOK_AGENTS:
        from aegis_cli.hooks.command import main as hook_main

        code = hook_main(argv[1], argv[2:])
        if code is not None:
            sys.exit(code)
    from aegis_cli.cli.root import app

    app(prog_name="aegis")


def __getattr__(name: str) -> Any:
    if name in ("app", "COMMAND_MODULES"):
        from aegis_cli.cli import root

        return getattr(root, name)
    raise AttributeError(f"module 'aegis_cli.cli' has no attribute {name!r}")
