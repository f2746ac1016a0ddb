"""validate, evaluate, init, schema: the commands CI and shell pipelines use most."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from aegis_cli.cli._common import (
    EXIT_DENIED,
    EXIT_OK,
    EXIT_USAGE,
    FailOn,
    Format,
    audit_db_option,
    console,
    fail,
    fails,
    load_policy,
    policy_option,
)


class ValidateFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


class EvalFormat(str, Enum):
    text = "text"
    json = "json"


def validate(
    policies: list[str] = typer.Argument(..., metavar="POLICY...", help="Policy files ('-' for stdin)."),
    format: ValidateFormat = typer.Option(ValidateFormat.text, "--format", "-f", help="Output format."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when there are warnings."),
) -> None:
    """Check policy files against the schema and the engine; exit 0 valid, 1 warnings with --strict, 2 invalid."""
    from aegis_cli.engine.check import check_files

    report = check_files(policies)
    if format is ValidateFormat.json:
        import json

        out = {
            "valid": not report.errors,
            "files": report.files,
            "policy_hash": report.policy.hash if report.policy else None,
            "rules": len(report.policy.rules) if report.policy else None,
            "errors": [i.to_dict() for i in report.errors],
            "warnings": [i.to_dict() for i in report.warnings],
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    elif format is ValidateFormat.sarif:
        import json

        from aegis_cli.ci.sarif import to_sarif

        sys.stdout.write(json.dumps(to_sarif(report.issues, report.files), indent=2) + "\n")
    else:
        for issue in report.issues:
            sys.stderr.write(f"{issue}\n")
        if report.policy is not None:
            names = ", ".join(report.files)
            noun = "rule" if len(report.policy.rules) == 1 else "rules"
            sys.stdout.write(f"ok: {names} ({len(report.policy.rules)} {noun}, {report.policy.hash[:19]})\n")
    if report.errors:
        raise typer.Exit(EXIT_USAGE)
    if strict and report.warnings:
        raise typer.Exit(EXIT_DENIED)


def _parse_params(items: list[str]) -> dict[str, Any]:
    import json

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def evaluate(
    input_path: str | None = typer.Argument(
        None, metavar="[-]", help="Read actions as JSON Lines from stdin ('-') or a file, one decision per line out."
    ),
    policy: list[str] = policy_option(),
    type_: str | None = typer.Option(None, "--type", "-t", help="Action type, e.g. delete."),
    target: str | None = typer.Option(None, "--target", help="Action target, e.g. production."),
    param: list[str] = typer.Option([], "--param", help="KEY=VALUE; VALUE is JSON if it parses, else a string."),
    agent: str = typer.Option("", "--agent", help="The agent asking."),
    now: str | None = typer.Option(None, "--now", help="Time conditions see this ISO 8601 time."),
    explain: bool = typer.Option(False, "--explain", help="Show every rule tried and why it did or did not match."),
    format: EvalFormat = typer.Option(EvalFormat.text, "--format", "-f", help="Output for a single action."),
    fail_on: FailOn = typer.Option(FailOn.block, "--fail-on", help="Exit 1 when a decision is at least this strict."),
    input_file: str | None = typer.Option(None, "--input", "-i", help="Read actions as JSON Lines from FILE."),
    record: bool = typer.Option(False, "--record", help="Write every decision to the audit trail."),
    audit_db: str = audit_db_option(),
) -> None:
    """Decide one action (--type/--target), or a stream of JSON Lines actions ('-' or --input)."""
    from aegis_cli.engine.errors import InputError
    from aegis_cli.engine.models import Action, parse_timestamp

    source = input_file or input_path
    if source is not None and type_ is not None:
        fail("give either --type/--target or an input stream, not both")
    at = None
    if now is not None:
        try:
            at = parse_timestamp(now)
        except InputError as exc:
            fail(f"--now: {exc}")
    pol = load_policy(policy)
    if source is not None:
        from aegis_cli.evaluate_stream import evaluate_stream

        code = evaluate_stream(pol, source, now=at, fail_on=fail_on.value, explain=explain,
                               audit_db=audit_db if record else None)
        raise typer.Exit(code)
    if type_ is None or target is None:
        fail("give --type and --target, or '-' to read actions from stdin")
    action = Action(type_, target, _parse_params(param), agent)
    decision = pol.evaluate(action, at, explain=explain)
    audit_id = None
    if record:
        audit_id = _record_one(audit_db, pol, action, decision)
    if format is EvalFormat.json:
        import json

        out = {"action": action.to_dict(), **decision.to_dict()}
        if audit_id is not None:
            out["audit_id"] = audit_id
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    else:
        _render_decision(decision, explain)
    raise typer.Exit(EXIT_DENIED if fails(decision.approval, fail_on) else EXIT_OK)


def _record_one(audit_db: str, policy: Any, action: Any, decision: Any) -> int:
    from aegis_cli.audit.trail import open_audit, shown

    try:
        log = open_audit(audit_db, redact=policy.redact)
    except Exception as exc:  # a decision that cannot be audited must not be reported as recorded
        fail(f"cannot open audit database {shown(audit_db)}: {exc}")
    try:
        return log.record_decision(action, decision, source={"via": "cli"})
    finally:
        log.close()


_STYLE = {"auto": "bold green", "approve": "bold yellow", "block": "bold red"}


def _render_decision(decision: Any, explain: bool) -> None:
    from rich.markup import escape

    out = console()
    verdict = decision.approval.value.upper()
    rule = f"rule [bold]{escape(decision.rule)}[/]" if decision.rule else "policy defaults"
    out.print(f"[{_STYLE[decision.approval.value]}]{verdict}[/]  {decision.risk_level.value} risk  {rule}")
    if decision.reason:
        out.print(f"  {escape(decision.reason)}")
    if decision.tags:
        out.print(f"  tags: {escape(', '.join(decision.tags))}")
    if explain and decision.trace:
        for check in decision.trace:
            mark = "[green]✓[/]" if check.matched else "[dim]✗[/]"
            out.print(f"  {mark} {escape(check.rule)}: {escape(check.why)}")


def init(
    path: Path = typer.Argument(Path("policy.yaml"), help="Where to write the starter policy."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter policy (never overwrites without --force)."""
    from importlib.resources import files

    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite it")
    text = files("aegis_cli").joinpath("templates/starter.yaml").read_text(encoding="utf-8")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    sys.stderr.write(f"wrote {path}; check it with: aegis validate {path}\n")


def schema(
    name: str = typer.Argument("policy", help="policy, action, decision, audit-record, approval, test-file, openapi."),
) -> None:
    """Print a JSON Schema (for editors: yaml-language-server, VS Code)."""
    from aegis_cli.engine.schemas import SCHEMA_NAMES, schema_path

    if name not in SCHEMA_NAMES:
        fail(f"unknown schema {name!r}; choose from {', '.join(SCHEMA_NAMES)}")
    path = schema_path(name)
    if not path.exists():
        fail(f"schema {name!r} is not installed")
    sys.stdout.write(path.read_text(encoding="utf-8"))


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(evaluate)
    app.command()(init)
    app.command()(schema)


__all__ = ["Format", "register"]
