"""``aegis hook <agent>`` without the CLI framework: the path an agent runs before every tool call.

The `aegis` entry point (``main`` of the command-line package) hands ``hook <agent> ...`` here
before Typer is imported (Typer and the commands it registers cost more than the decision). This
parser reads the options the Typer command (``cli/hook_cmds.py``) declares, the same way
(``-p``/``--policy`` repeatable, else ``$AEGIS_POLICY`` split on whitespace; ``--audit-db``, else
``$AEGIS_AUDIT_DB``, else ``aegis_audit.db``; ``--approvals``, ``--approval-timeout``; the last
value wins; a value is the next argument whatever it looks like), and gives up on anything else
(``--help``, ``--print-settings``, a stray argument, an unknown option, a value out of range),
which then goes to the Typer command: its help, its settings snippets and its usage errors. A
test checks both accept the same options.

The event is answered with the compiled-policy cache (``policy_cache``) and the standard-library
SQLite writer (``fast_sqlite``); the records are the ones the normal path writes.
"""

from __future__ import annotations

import os
import sys

POLICY_ENV = "AEGIS_POLICY"  # as the command-line options declare them (their module imports Typer)
AUDIT_DB_ENV = "AEGIS_AUDIT_DB"
DEFAULT_AUDIT_DB = "aegis_audit.db"
_MATCHER = frozenset({"claude-code", "gemini"})  # the commands that take --matcher
_VALUED = ("-p", "--policy", "--audit-db", "--matcher", "--approvals", "--approval-timeout")
APPROVALS = ("agent", "queue")  # who asks the person on `approve`: the agent itself, or aegis's queue
APPROVALS_DEFAULT = "agent"
APPROVAL_TIMEOUT_DEFAULT = 120.0
APPROVAL_TIMEOUT_MIN = 0.001


def parse(agent: str, args: list[str], environ: os._Environ[str] | dict[str, str] = os.environ
          ) -> tuple[list[str], str, float | None] | None:
    """(policy paths, audit database, approval timeout) for ``aegis hook <agent> ARGS``, or None to
    let Typer parse them. The timeout is None unless ``--approvals queue`` (see ``common.run``)."""
    policies: list[str] = []
    audit_db: str | None = None
    approvals, timeout = APPROVALS_DEFAULT, APPROVAL_TIMEOUT_DEFAULT
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _VALUED and not eq:
            if i + 1 >= len(args):
                return None
            value, i = args[i + 1], i + 2
        elif eq and name in _VALUED and name != "-p":
            value, i = inline, i + 1
        elif arg.startswith("-p") and len(arg) > 2:
            name, value, i = "-p", arg[2:], i + 1
        else:
            return None
        if name in ("-p", "--policy"):
            policies.append(value)
        elif name == "--audit-db":
            audit_db = value
        elif name == "--approvals":
            if value not in APPROVALS:
                return None  # Typer names the choices
            approvals = value
        elif name == "--approval-timeout":
            try:
                timeout = float(value)
            except ValueError:
                return None
            if not timeout >= APPROVAL_TIMEOUT_MIN or timeout == float("inf"):
                return None
        elif agent not in _MATCHER:  # --matcher only shapes --print-settings; codex has none
            return None
    if not policies:
        policies = environ.get(POLICY_ENV, "").split()
    if audit_db is None:
        audit_db = environ.get(AUDIT_DB_ENV) or DEFAULT_AUDIT_DB
    out: list[str] = []
    for p in policies:  # cli/_common.split_policy_paths
        out.extend(x for x in p.split(os.pathsep) if x) if os.pathsep in p else out.append(p)
    return out, audit_db, timeout if approvals == "queue" else None


def main(agent: str, args: list[str]) -> int | None:
    """Answer one event from stdin; the exit status, or None when Typer must handle ``args``."""
    parsed = parse(agent, args)
    if parsed is None:
        return None
    from aegis_cli.hooks.common import refuse

    try:
        from aegis_cli.hooks import run_hook_fast
        from aegis_cli.hooks.common import read_stdin

        answer = run_hook_fast(agent, read_stdin(sys.stdin.buffer.read), *parsed)
    except BaseException as exc:  # whatever happened, the call is refused, in one line
        answer = refuse(f"the {agent} hook failed ({type(exc).__name__}: {exc})")
    try:
        sys.stdout.write(answer.stdout)
        sys.stdout.flush()
    except Exception:
        answer = refuse(f"the {agent} hook could not write its answer")
    sys.stderr.write(answer.stderr)
    return answer.exit_code
