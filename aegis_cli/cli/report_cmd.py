"""aegis report: compliance evidence from the audit trail (the library is aegis_cli.report)."""

from __future__ import annotations

import sys
from enum import Enum

import typer

from aegis_cli.cli._common import EXIT_DENIED, audit_db_option, console, fail


class Framework(str, Enum):
    soc2 = "soc2"
    gdpr = "gdpr"
    hipaa = "hipaa"
    all = "all"


class ReportFormat(str, Enum):
    html = "html"
    md = "md"
    json = "json"


def report(
    since: str | None = typer.Option(None, "--since", help="From this time on: ISO 8601 (UTC if no zone) or a "
                                     "duration ago like 24h, 30d."),
    until: str | None = typer.Option(None, "--until", help="Before this time (ISO 8601 or a duration ago)."),
    framework: list[Framework] | None = typer.Option(None, "--framework", help="Which sections: soc2, gdpr, "
                                                     "hipaa or all (the default)."),
    output: str | None = typer.Option(None, "-o", "--output", help="Write here (atomically) instead of stdout."),
    fmt: ReportFormat | None = typer.Option(None, "--format", help="html, md or json; default: from the -o "
                                            "suffix, else md."),
    audit_db: str = audit_db_option(),
) -> None:
    """Build a compliance evidence pack (SOC 2, GDPR Art. 30, HIPAA) for a period from the audit trail.

    The chain is verified first: exit 0 when it is intact, 1 when it is broken (the report says so
    first), 2 on bad usage or a trail that cannot be read.
    """
    from aegis_cli.audit.errors import AuditError
    from aegis_cli.audit.export import atomic_output
    from aegis_cli.audit.query import parse_time
    from aegis_cli.report import FRAMEWORKS, build_report, render

    try:
        start = parse_time(since) if since else None
        end = parse_time(until) if until else None
    except ValueError as exc:
        fail(str(exc))
    chosen = FRAMEWORKS if not framework or Framework.all in framework else tuple(f.value for f in framework)
    kind = fmt.value if fmt is not None else _format_from_suffix(output)
    try:
        with _progress() as progress:
            rep = build_report(audit_db, since=start, until=end, frameworks=chosen, progress=progress)
    except ImportError as exc:  # a PostgreSQL URL without the postgres extra
        fail(str(exc))
    except AuditError as exc:
        fail(str(exc))
    with rep:
        try:
            if output is None or output == "-":
                render(kind, rep, sys.stdout)
                sys.stdout.flush()
            else:
                with atomic_output(output) as out:
                    render(kind, rep, out)
        except BrokenPipeError:
            pass
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        integ = rep.data["integrity"]
    if output not in (None, "-"):
        sys.stderr.write(f"wrote {kind} report to {output}: {integ['records_in_period']:,} records in the period\n")
    if not rep.ok:
        sys.stderr.write(f"aegis: chain broken at record #{integ['bad_id']}: {integ['problem']}\n")
        raise typer.Exit(EXIT_DENIED)


def _format_from_suffix(output: str | None) -> str:
    if output:
        for suffix, kind in ((".html", "html"), (".htm", "html"), (".md", "md"), (".markdown", "md"),
                             (".json", "json")):
            if output.lower().endswith(suffix):
                return kind
    return "md"


class _progress:
    """A progress bar on stderr when it is a terminal (the report's one pass over the trail)."""

    def __init__(self) -> None:
        self.bar = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not sys.stderr.isatty():
            return None

        def start(total: int):  # type: ignore[no-untyped-def]
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("reading the trail"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=console(stderr=True), transient=True)
            self.bar.start()
            task = self.bar.add_task("report", total=total)
            return lambda n: self.bar.advance(task, n)

        return start

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def register(app: typer.Typer) -> None:
    app.command("report")(report)
