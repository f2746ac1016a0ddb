"""simulate, test: what a policy would have done to recorded agents, and policy tests for CI."""

from __future__ import annotations

import sys
from enum import Enum
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

# Kept here (not imported) so `aegis --help` loads no reader; a test checks it matches FORMATS.
TRACE_FORMATS = ("aegis-audit", "aegis", "claude-code", "mcp", "atif", "agentdojo", "tau-bench", "swe-agent",
                 "bfcl", "openai-responses", "anthropic", "openai")
PROBLEMS_SHOWN = 20  # problem lines written to stderr before the rest are only counted
RECORD_BATCH = 1000


class TestFormat(str, Enum):
    text = "text"
    json = "json"


def simulate(
    traces: list[str] = typer.Argument(..., metavar="TRACE...",
                                       help="Trace files or directories (read recursively); '-' is stdin."),
    policy: list[str] = policy_option(),
    baseline: list[str] = typer.Option([], "--baseline", "-b", metavar="OLD_POLICY",
                                       help="Compare with this policy (repeat for several files)."),
    format: Format = typer.Option(Format.text, "--format", "-f",
                                  help="text: summary; json: the summary as data; jsonl: one decision per call."),
    fail_on: FailOn = typer.Option(FailOn.block, "--fail-on",
                                   help="Exit 1 when any call's new decision is at least this strict."),
    trace_format: str | None = typer.Option(None, "--trace-format",
                                            help=f"Skip detection: {', '.join(TRACE_FORMATS)}."),
    strict: bool = typer.Option(False, "--strict", help="A malformed record is fatal (exit 2), not skipped."),
    now: str | None = typer.Option(None, "--now",
                                   help="Time for calls the trace does not timestamp (ISO 8601; default: now)."),
    show: int = typer.Option(20, "--show", help="Blocked/approval calls and changes listed in the text report."),
    record: bool = typer.Option(False, "--record", help="Write every decision to the audit trail."),
    audit_db: str = audit_db_option(),
) -> None:
    """Replay recorded agent traces against a policy: what it would have decided, and what a change changes.

    Formats are detected per file: aegis actions and audit exports, OpenAI chat and Responses,
    Anthropic messages, Claude Code transcripts, MCP JSON-RPC logs and cassettes, ATIF,
    AgentDojo, tau-bench, SWE-agent, BFCL.
    """
    import json

    from aegis_cli.engine.errors import InputError
    from aegis_cli.engine.models import parse_timestamp
    from aegis_cli.traces import Problem, ReadStats, read_traces
    from aegis_cli.traces.simulate import Outcome, Summary, replay, to_json_line

    if trace_format is not None and trace_format not in TRACE_FORMATS:
        fail(f"--trace-format: unknown format '{trace_format}'; known: {', '.join(TRACE_FORMATS)}")
    at = None
    if now is not None:
        try:
            at = parse_timestamp(now)
        except InputError as exc:
            fail(f"--now: {exc}")
    pol = load_policy(policy)
    old = load_policy(baseline) if baseline else None
    stats = ReadStats()
    summary = Summary(pol.hash, old.hash if old is not None else None)
    log = _open_audit(audit_db, pol) if record else None
    pending: list[Outcome] = []
    lines: list[str] = []  # JSONL written in blocks: one write per line costs as much as the line
    jsonl = format is Format.jsonl
    out = sys.stdout
    dumps = json.dumps
    try:
        for item in replay(pol, read_traces(traces, format=trace_format, stats=stats), baseline=old, now=at):
            summary.add(item)
            if type(item) is Problem:
                if strict:
                    out.write("".join(lines))  # what was decided before the bad record stands
                    out.flush()
                    fail(f"{item} (--strict)")
                if summary.problems_total <= PROBLEMS_SHOWN:
                    sys.stderr.write(f"aegis: warning: {item}; skipped\n")
                continue
            if log is not None:
                pending.append(item)
                if len(pending) >= RECORD_BATCH:
                    _flush(pending, log, out if jsonl else None)
            elif jsonl:
                lines.append(to_json_line(item))
                if len(lines) >= 512:
                    out.write("".join(lines))
                    lines.clear()
        if log is not None:
            _flush(pending, log, out if jsonl else None)
        out.write("".join(lines))
    except InputError as exc:
        fail(str(exc))
    except BrokenPipeError:
        _quiet_stdout()
        raise typer.Exit(141) from None
    finally:
        if log is not None:
            log.close()
    if summary.problems_total > PROBLEMS_SHOWN:
        sys.stderr.write(f"aegis: warning: {summary.problems_total - PROBLEMS_SHOWN} more malformed records "
                         "skipped (see the report)\n")
    if not stats.read:
        fail("no trace found in " + ", ".join(traces) + " (see --trace-format)")
    files = [f.to_dict() for f in stats.files]
    if format is Format.json:
        out.write(dumps(summary.to_dict(files), indent=2, ensure_ascii=False) + "\n")
    elif format is Format.text:
        _render_summary(summary, stats, show)
    elif summary.problems_total or stats.skipped:
        sys.stderr.write(f"aegis: read {stats.calls:,} calls from {len(stats.read)} file(s); "
                         f"{summary.problems_total} malformed record(s), {len(stats.skipped)} file(s) skipped\n")
    failing = sum(n for (approval, *_), n in summary.counts.items() if fails(approval, fail_on))
    raise typer.Exit(EXIT_DENIED if failing else EXIT_OK)


def _open_audit(audit_db: str, policy: Any) -> Any:
    from aegis_cli.audit.trail import open_audit, shown

    try:
        return open_audit(audit_db, redact=policy.redact)
    except Exception as exc:  # decisions that cannot be audited must not be reported as recorded
        fail(f"cannot open audit database {shown(audit_db)}: {exc}")


def _flush(pending: list[Any], log: Any, out: Any) -> None:
    """Record a batch, then print it: a decision that has been reported is already on disk."""
    if not pending:
        return
    import json

    ids = log.record_decisions([(o.action, o.decision, {"via": "simulate", **o.call.source()}) for o in pending])
    if out is not None:
        out.write("".join(json.dumps({**o.to_dict(), "audit_id": i}, ensure_ascii=False) + "\n"
                          for o, i in zip(pending, ids, strict=True)))
    pending.clear()


def _quiet_stdout() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_STYLE = {"auto": "green", "approve": "yellow", "block": "bold red"}


def _where(source: dict[str, Any]) -> str:
    where = f"{source['file']}:{source['line']}" if "line" in source else f"{source['file']} #{source['index']}"
    return where + (f" {source['pointer']}" if source.get("pointer") else "")


def _short(value: Any, width: int = 60) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _render_summary(summary: Any, stats: Any, show: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    data = summary.to_dict()
    con = console()
    con.print(f"[bold]aegis simulate[/]: {data['calls']:,} calls from {len(stats.read)} file(s), "
              f"policy {escape(data['policy_hash'][:19])}")
    problems = data["problems_total"]
    con.print(f"read {stats.records:,} records, {stats.calls:,} calls; evaluated {data['calls']:,}; "
              f"skipped {problems:,} malformed record(s) and {len(stats.skipped)} file(s)")
    if data["formats"]:
        con.print("formats: " + ", ".join(f"{escape(k)} {v:,}" for k, v in data["formats"].items()))

    table = Table(title="Decisions by approval and risk", title_justify="left", box=None, pad_edge=False)
    table.add_column("approval")
    risks = list(data["risk_level"])
    for r in risks:
        table.add_column(r, justify="right")
    table.add_column("total", justify="right")
    for a, row in data["approval_by_risk"].items():
        table.add_row(f"[{_STYLE[a]}]{a}[/]", *(f"{row[r]:,}" for r in risks), f"{data['approval'][a]:,}")
    table.add_row("total", *(f"{data['risk_level'][r]:,}" for r in risks), f"{data['calls']:,}")
    con.print(table)

    rules = Table(title="By rule", title_justify="left", box=None, pad_edge=False)
    for col, just in (("rule", "left"), ("calls", "right"), ("decision", "left")):
        rules.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in data["rules"]:
        rules.add_row(escape(r["rule"] or "(defaults)"), f"{r['count']:,}",
                      f"[{_STYLE[r['approval']]}]{r['approval']}[/] / {r['risk_level']}")
    con.print(rules)

    tools = Table(title="By tool", title_justify="left", box=None, pad_edge=False)
    for col in ("tool", "calls", "auto", "approve", "block"):
        tools.add_column(col, justify="left" if col == "tool" else "right")
    for t in data["tools"][:max(show, 1)]:
        tools.add_row(escape(t["tool"]), f"{t['count']:,}", f"{t['auto']:,}", f"{t['approve']:,}", f"{t['block']:,}")
    con.print(tools)
    if len(data["tools"]) > show:
        con.print(f"  … and {len(data['tools']) - show} more tools (--format json lists all)")

    for approval, title, key in (("block", "Blocked", "blocked"), ("approve", "Needing approval", "needs_approval")):
        flagged = data[key]
        total = data["approval"][approval]
        if not total:
            continue
        con.print(f"\n[{_STYLE[approval]}]{title}: {total:,}[/]")
        for f in flagged[:show]:
            con.print(f"  {escape(_where(f['source']))}  {escape(f['tool'])} "
                      f"{escape(_short(f['action']['params']))}  [dim]{escape(f['rule'] or '(defaults)')}[/]")
        if total > min(len(flagged), show):
            con.print(f"  … and {total - min(len(flagged), show):,} more (--format jsonl lists every call)")

    base = data.get("baseline")
    if base is not None:
        con.print(f"\n[bold]Against baseline {escape(base['policy_hash'][:19])}[/]: "
                  f"{base['changed']:,} of {data['calls']:,} calls change decision")
        for move, n in base["transitions"].items():
            con.print(f"  {escape(move)}: {n:,}")
        for g in base["groups"][:show]:
            moves = ", ".join(f"{m} {n:,}" for m, n in g["transitions"].items())
            con.print(f"  rule {escape(g['old_rule'])} → {escape(g['new_rule'])}: {g['count']:,} ({escape(moves)})")
            for ex in g["examples"][:3]:
                con.print(f"      {escape(_where(ex['source']))}  {escape(ex['tool'])} "
                          f"{escape(_short(ex['action']['params'], 50))}")
    if data["problems"]:
        con.print(f"\n[yellow]Malformed records skipped: {problems:,}[/]")
        for p in data["problems"][:show]:
            con.print(f"  {escape(p['where'])}: {escape(p['message'])}")
    if stats.skipped:
        con.print(f"\nFiles skipped: {len(stats.skipped)}")
        for f in stats.skipped[:show]:
            con.print(f"  {escape(f.file)}: {escape(f.skipped)}")
        if len(stats.skipped) > show:
            con.print(f"  … and {len(stats.skipped) - show} more")


def test(
    files: list[str] = typer.Argument(..., metavar="TESTFILE...", help="Policy test files (YAML)."),
    format: TestFormat = typer.Option(TestFormat.text, "--format", "-f", help="Output format."),
    junit_xml: str | None = typer.Option(None, "--junit-xml", metavar="FILE", help="Also write JUnit XML here."),
) -> None:
    """Run policy test files; exit 1 when a case's decision differs from what it expects."""
    import json

    from aegis_cli.ci.policytest import run_test_files
    from aegis_cli.engine.errors import InputError, PolicyError

    try:
        results = run_test_files(files)
    except PolicyError as exc:
        for issue in exc.issues:
            sys.stderr.write(f"{issue}\n")
        raise typer.Exit(EXIT_USAGE) from None
    except InputError as exc:
        fail(str(exc))
    if junit_xml:
        from aegis_cli.ci.junit import write_junit_xml

        try:
            write_junit_xml(results, junit_xml)
        except OSError as exc:
            fail(f"--junit-xml {junit_xml}: {exc.strerror or exc}")
    total = sum(len(r.cases) for r in results)
    failed = sum(len(r.failures) for r in results)
    if format is TestFormat.json:
        sys.stdout.write(json.dumps({"passed": failed == 0, "cases": total, "failures": failed,
                                     "files": [r.to_dict() for r in results]}, indent=2, ensure_ascii=False) + "\n")
    else:
        _render_tests(results, total, failed)
    raise typer.Exit(EXIT_DENIED if failed else EXIT_OK)


def _render_tests(results: list[Any], total: int, failed: int) -> None:
    from rich.markup import escape

    con = console()
    for r in results:
        mark = "[green]ok[/]" if r.passed else "[bold red]FAIL[/]"
        con.print(f"{mark}  {escape(r.file)}: {len(r.cases) - len(r.failures)}/{len(r.cases)} cases passed")
        for case in r.failures:
            con.print(f"  [bold red]FAIL[/] {escape(case.where)}  {escape(case.name)}")
            con.print(f"       action: {escape(_short(case.action.to_dict(), 100))}")
            for line in case.diff().splitlines():
                con.print(f"       {escape(line)}")
            for line in case.decision.explain().splitlines():
                con.print(f"       {escape(line)}")
    word = "case" if total == 1 else "cases"
    con.print(f"{total - failed} passed, {failed} failed ({total} {word} in {len(results)} file(s))")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.command("test")(test)
