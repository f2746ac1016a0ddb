"""`aegis serve`: the REST API and approvals page."""

from __future__ import annotations

import importlib.util
from enum import Enum

import typer

from aegis_cli.cli._common import audit_db_option, fail, load_policy, policy_option, split_policy_paths


class AuditSync(str, Enum):
    normal = "normal"
    full = "full"


SERVE_NEEDS = ("starlette", "uvicorn", "prometheus_client", "watchdog")  # the [serve] extra's modules


def serve(
    policy: list[str] = policy_option(),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs tokens."),
    port: int = typer.Option(8787, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    audit_db: str = audit_db_option(),
    tokens: str | None = typer.Option(
        None, "--tokens", help="YAML file of named tokens with roles (evaluate, approve, admin). "
        "$AEGIS_API_TOKEN adds one admin token."),
    approval_timeout: float = typer.Option(
        3600.0, "--approval-timeout", min=1.0, help="Seconds before an unanswered approval times out (= denied)."),
    watch: bool = typer.Option(True, "--watch/--no-watch", help="Reload the policy files when they change."),
    audit_sync: AuditSync = typer.Option(
        AuditSync.normal, "--audit-sync", envvar="AEGIS_AUDIT_SYNC", show_envvar=True,
        help="normal: every decision is committed to the audit database before it is "
        "answered, so a killed server loses none; full: also fsync each commit, so none is lost to a power "
        "cut either (slower)."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Server processes to run on this host, sharing one port. "
        "Needs a PostgreSQL --audit-db (an SQLite trail is written by one process)."),
) -> None:
    """Serve decisions, approvals and the audit trail over HTTP, with an approvals page at /."""
    missing = [name for name in SERVE_NEEDS if importlib.util.find_spec(name) is None]
    if missing:  # the core install has no web stack: say which extra brings it, not a traceback
        fail(f"aegis serve needs {', '.join(missing)}: pip install 'aegis-cli[serve]'")
    from aegis_cli.serve.server import ServeError, ServeOptions
    from aegis_cli.serve.server import serve as run

    pol = load_policy(policy)
    options = ServeOptions(split_policy_paths(policy), host, port, audit_db, tokens, approval_timeout, watch,
                           audit_sync.value, workers)
    try:
        if workers > 1:
            from aegis_cli.serve.workers import supervise

            supervise(options, pol)
        else:
            run(options, pol)
    except ServeError as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    app.command()(serve)
