"""tail-audit, export, audit verify|stats, approvals list|approve|deny."""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Any

import typer

from aegis_cli.cli._common import EXIT_DENIED, Format, audit_db_option, console, fail, use_color


class TailFormat(str, Enum):
    text = "text"
    jsonl = "jsonl"


class StatusChoice(str, Enum):
    pending = "pending"
    approved = "approved"
    denied = "denied"
    timed_out = "timed_out"
    cancelled = "cancelled"
    all = "all"


_APPROVAL_STYLE = {"auto": "green", "approve": "yellow", "block": "bold red"}
_STATUS_STYLE = {"approved": "green", "ok": "green", "denied": "red", "error": "red", "timed_out": "yellow",
                 "cancelled": "yellow", "pending": "cyan"}


def _filters(approval: str | None = None, agent: str | None = None, type_: str | None = None,
             kind: str | None = None, since: str | None = None, until: str | None = None) -> Any:
    from aegis_cli.audit.query import Filters, parse_time

    try:
        return Filters(approval=approval, agent=agent, type=type_, kind=kind,
                       since=parse_time(since) if since else None, until=parse_time(until) if until else None)
    except ValueError as exc:
        fail(str(exc))


def _reader(path: str) -> Any:
    from aegis_cli.audit.errors import AuditError
    from aegis_cli.audit.trail import open_reader

    try:
        return open_reader(path)
    except ImportError as exc:  # a PostgreSQL URL without the postgres extra
        fail(str(exc))
    except AuditError as exc:
        fail(str(exc))


def _reader_when_it_appears(path: str) -> Any:
    """For ``tail-audit -f``: like ``tail -F``, wait for an SQLite trail that does not exist yet.

    People start the follower before the agent. Once the file appears, the writer may still be
    creating its tables: a file that is not an audit trail yet is retried for a few seconds.
    """
    import time

    from aegis_cli.audit.errors import AuditError, NotAnAuditDatabase
    from aegis_cli.audit.trail import is_postgres, open_reader

    if is_postgres(path) or os.path.exists(path):
        return _reader(path)
    sys.stderr.write(f"aegis: {path} does not exist yet; waiting for it to appear (Ctrl-C to stop)\n")
    sys.stderr.flush()
    appeared = None
    while True:
        if os.path.exists(path):
            appeared = appeared or time.monotonic()
            try:
                return open_reader(path)
            except NotAnAuditDatabase as exc:
                if time.monotonic() - appeared > 10:  # not being created: something else is there
                    fail(str(exc))
            except AuditError as exc:
                fail(str(exc))
        time.sleep(0.1)


def _option_approval() -> Any:
    return typer.Option(None, "--approval", help="Only decisions with this approval (auto, approve, block).")


def _option_agent() -> Any:
    return typer.Option(None, "--agent", help="Only decisions by agents matching this glob.")


def _option_type() -> Any:
    return typer.Option(None, "--type", help="Only decisions on action types matching this glob.")


def _option_kind() -> Any:
    return typer.Option(None, "--kind", help="Only records of this kind (decision, approval, execution, "
                        "policy_change).")


def _option_since() -> Any:
    return typer.Option(None, "--since", help="From this time on: ISO 8601 (UTC if no zone) or a duration "
                        "ago like 15m, 24h, 7d.")


def _option_until() -> Any:
    return typer.Option(None, "--until", help="Before this time (ISO 8601 or a duration ago).")


def render_text(rec: dict[str, Any]) -> tuple[str, str]:
    """One line for a record, and the rich style of its key word."""
    ts = rec["ts"]
    if rec["kind"] == "decision":
        a, d = rec["action"], rec["decision"]
        who = f"  agent={a['agent']}" if a.get("agent") else ""
        rule = d["rule"] or "(defaults)"
        reason = f"  {d['reason']}" if d.get("reason") else ""
        rid = f"#{rec['id']}"
        line = (f"{rid:<7} {ts}  {d['approval']:<7}  {d['risk_level']:<8}  {a['type']} -> {a['target']}"
                f"{who}  rule={rule}{reason}")
        return line, _APPROVAL_STYLE.get(d["approval"], "")
    data = rec.get("data") or {}
    status = data.get("status", "")
    of = f" of #{rec['decision_id']}" if rec.get("decision_id") else ""
    detail = []
    if data.get("by"):
        detail.append(f"by {data['by']}")
    if "duration_ms" in data:
        detail.append(f"{data['duration_ms']:.1f} ms")
    if data.get("error"):
        detail.append(str(data["error"]))
    if data.get("note"):
        detail.append(f"({data['note']})")
    if rec["kind"] == "policy_change":
        detail.append(f"{data.get('old_hash', '')} -> {data.get('new_hash', '')}")
    line = f"{'#' + str(rec['id']):<7} {ts}  {rec['kind']}{of}: {status} {' '.join(detail)}".rstrip()
    return line, _STATUS_STYLE.get(status, "")


class _Printer:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.rich = console() if fmt == "text" and use_color() else None

    def __call__(self, row: Any) -> None:
        from aegis_cli.audit.query import record, record_line

        if self.fmt == "jsonl":
            sys.stdout.write(record_line(row) + "\n")
            return
        line, style = render_text(record(row))
        if self.rich is not None:
            from rich.text import Text

            self.rich.print(Text(line, style=style or ""), soft_wrap=True)
        else:
            sys.stdout.write(line + "\n")

    def flush(self) -> None:
        sys.stdout.flush()


def tail_audit(
    audit_db: str = audit_db_option(),
    lines: int = typer.Option(10, "-n", "--lines", min=0, help="How many of the newest records to show."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new records until Ctrl-C (waiting "
                                "for an SQLite trail that does not exist yet, like tail -F)."),
    fmt: TailFormat = typer.Option(TailFormat.text, "--format", help="text, or jsonl (exported records)."),
    approval: str | None = _option_approval(),
    agent: str | None = _option_agent(),
    type_: str | None = _option_type(),
    kind: str | None = _option_kind(),
    since: str | None = _option_since(),
) -> None:
    """Show the newest audit records; with -f, keep showing new ones as they are written."""
    from aegis_cli.audit.errors import AuditError

    filters = _filters(approval, agent, type_, kind, since)
    try:
        db = _reader_when_it_appears(audit_db) if follow else _reader(audit_db)
    except KeyboardInterrupt:
        return
    show = _Printer(fmt.value)
    try:
        last = db.head()[0]
        for row in db.newest(lines, filters):
            show(row)
        show.flush()
        if follow:
            for row in db.follow(filters, after_id=last):
                show(row)
                show.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # `aegis tail-audit | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except AuditError as exc:  # the database went away while following
        fail(str(exc))
    finally:
        db.close()


def export(
    audit_db: str = audit_db_option(),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON record per line (the default)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row; nested values as JSON."),
    output: str | None = typer.Option(None, "-o", "--output", help="Write here (atomically) instead of "
                                      "stdout; the format follows the suffix unless given."),
    since: str | None = _option_since(),
    until: str | None = _option_until(),
    approval: str | None = _option_approval(),
    agent: str | None = _option_agent(),
    type_: str | None = _option_type(),
    kind: str | None = _option_kind(),
) -> None:
    """Export audit records in id order, with their hashes, for auditors and other tools."""
    from aegis_cli.audit import export as ex
    from aegis_cli.audit.errors import AuditError

    chosen = [f for f, on in (("jsonl", jsonl), ("json", as_json), ("csv", as_csv)) if on]
    if len(chosen) > 1:
        fail("choose one of --jsonl, --json, --csv")
    fmt = chosen[0] if chosen else _format_from_suffix(output)
    filters = _filters(approval, agent, type_, kind, since, until)
    db = _reader(audit_db)
    try:
        if output is None or output == "-":
            ex.write(fmt, db.rows(filters), sys.stdout)
            sys.stdout.flush()
            return
        with ex.atomic_output(output) as out, _progress(db, filters, output) as advance:
            n = ex.write(fmt, db.rows(filters), out, advance)
        sys.stderr.write(f"exported {n:,} records to {output}\n")
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    except AuditError as exc:  # the database went away mid-export (nothing was renamed into place)
        fail(str(exc))
    finally:
        db.close()


def _format_from_suffix(output: str | None) -> str:
    if output:
        for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv")):
            if output.lower().endswith(suffix):
                return fmt
    return "jsonl"


class _progress:
    """A progress bar on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, db: Any, filters: Any, output: str) -> None:
        self.db, self.filters, self.output = db, filters, output
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        total = self.db.count(self.filters)
        self.bar = Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("export", total=total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def verify(
    audit_db: str = audit_db_option(),
    export_file: str | None = typer.Option(None, "--export", help="Verify an export (JSONL or JSON) "
                                           "instead of the database."),
    partial: bool = typer.Option(False, "--partial", help="With --export: the export starts mid-chain "
                                 "(--since); accept its first record's prev_hash."),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
) -> None:
    """Check the hash chain. Exit 0 intact, 1 broken (naming the first bad record), 2 not an audit trail."""
    import json

    from aegis_cli.audit import verify as v
    from aegis_cli.audit.canonical import GENESIS
    from aegis_cli.audit.errors import AuditError

    if export_file is not None:
        try:
            result = v.verify_records(v.read_export(export_file), None if partial else GENESIS)
        except OSError as exc:
            fail(f"cannot read {export_file}: {exc.strerror or exc}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            fail(f"{export_file} is not an aegis audit export ({exc})")
    else:
        db = _reader(audit_db)
        try:
            result = db.verify()
        except AuditError as exc:
            fail(str(exc))
        finally:
            db.close()
    if fmt is Format.text:
        if result.ok:
            sys.stdout.write(f"{result}\n")
        else:
            sys.stderr.write(f"aegis: {result}\n")
    else:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    if not result.ok:
        raise typer.Exit(EXIT_DENIED)


def stats(
    audit_db: str = audit_db_option(),
    since: str | None = _option_since(),
    until: str | None = _option_until(),
    agent: str | None = _option_agent(),
    type_: str | None = _option_type(),
    top: int = typer.Option(10, "--top", min=1, help="How many rules and agents to list."),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
) -> None:
    """Summarise decisions by approval, risk, rule and agent, and what became of them."""
    import json

    from aegis_cli.audit.errors import AuditError

    filters = _filters(None, agent, type_, None, since, until)
    db = _reader(audit_db)
    try:
        s = db.stats(filters, top=top)
    except AuditError as exc:
        fail(str(exc))
    finally:
        db.close()
    if fmt is not Format.text:
        sys.stdout.write(json.dumps(s, indent=None if fmt is Format.jsonl else 2) + "\n")
        return
    out = [f"{s['records']:,} records" + (f" from {s['first']} to {s['last']}" if s["records"] else "")]
    out.append("  " + ", ".join(f"{k}: {n:,}" for k, n in s["by_kind"].items()) if s["by_kind"] else "")
    tables = (("decisions by approval", s["decisions"]["by_approval"]),
              ("decisions by risk level", s["decisions"]["by_risk_level"]),
              (f"top {top} rules", s["decisions"]["by_rule"]),
              (f"top {top} agents", s["decisions"]["by_agent"]),
              ("approval answers", s["approvals"]), ("executions", s["executions"]))
    width = max((len(k) for _, table in tables for k in table), default=0)
    for title, table in tables:
        if table:
            out.append(f"{title}:")
            out.extend(f"  {k:<{width}}  {n:>10,}" for k, n in table.items())
    sys.stdout.write("\n".join(line for line in out if line) + "\n")


def copy(
    source: str = typer.Argument(..., metavar="SRC", help="The trail to copy: an SQLite file or a PostgreSQL URL."),
    destination: str = typer.Argument(..., metavar="DST", help="An empty store to copy into (SQLite file or "
                                      "PostgreSQL URL); created if missing."),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
) -> None:
    """Copy a trail and its approval queue between stores (SQLite <-> PostgreSQL), ids and hashes intact.

    Exit 0 when the copy verifies with the source's head, 1 when it does not, 2 when either store
    cannot be used, the destination is not empty or the source's chain is broken.
    """
    import json

    from aegis_cli.audit.copy import copy_trail
    from aegis_cli.audit.errors import AuditError
    from aegis_cli.audit.trail import shown

    try:
        result = copy_trail(source, destination)
    except (AuditError, ValueError, ImportError) as exc:
        fail(str(exc))
    if fmt is Format.text:
        sys.stdout.write(f"copied {result.records:,} records and {result.approvals:,} approval requests "
                         f"from {shown(source)} to {shown(destination)}\n")
        out = sys.stdout if result.ok else sys.stderr
        out.write(f"{'' if result.ok else 'aegis: '}copy: {result.copy}\n")
        if result.ok is False and result.copy.ok:
            sys.stderr.write(f"aegis: the copy's head differs from the source's ({result.source})\n")
    else:
        sys.stdout.write(json.dumps({"records": result.records, "approvals": result.approvals, "ok": result.ok,
                                     "source": result.source.to_dict(), "copy": result.copy.to_dict()}) + "\n")
    if not result.ok:
        raise typer.Exit(EXIT_DENIED)


# -- approvals ----------------------------------------------------------------------------------


def _queue(path: str) -> Any:
    from aegis_cli.audit.approvals import ApprovalQueue
    from aegis_cli.audit.errors import AuditError

    try:
        return ApprovalQueue(path)
    except (AuditError, ImportError) as exc:
        fail(str(exc))


def _default_user() -> str:
    import getpass

    try:
        return os.environ.get("AEGIS_USER") or getpass.getuser()
    except Exception:
        return "unknown"


def _show_requests(reqs: list[Any], fmt: Format) -> None:
    import json

    if fmt is Format.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in reqs], indent=2) + "\n")
        return
    if fmt is Format.jsonl:
        sys.stdout.write("".join(json.dumps(r.to_dict()) + "\n" for r in reqs))
        return
    for r in reqs:
        a = r.action
        expires = f"  expires {r.expires_at:%Y-%m-%d %H:%M:%S}Z" if r.expires_at and r.pending else ""
        answered = f"  {r.status} by {r.answered_by or '-'}" if not r.pending else ""
        note = f" ({r.note})" if r.note else ""
        sys.stdout.write(f"#{r.id}  {r.status:<9}  {r.risk_level.value:<8}  {a.type} -> {a.target}"
                         f"{'  agent=' + a.agent if a.agent else ''}  rule={r.rule or '(defaults)'}"
                         f"{expires}{answered}{note}\n")
        if a.params:
            sys.stdout.write(f"      params: {json.dumps(a.params, ensure_ascii=False)}\n")


def approvals_list(
    audit_db: str = audit_db_option(),
    status: StatusChoice = typer.Option(StatusChoice.pending, "--status", help="Which requests; all for every one."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, newest first."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json or jsonl."),
) -> None:
    """List approval requests (pending ones by default)."""
    from aegis_cli.audit.errors import AuditError

    q = _queue(audit_db)
    try:
        reqs = q.list(None if status is StatusChoice.all else status.value, limit)
    except AuditError as exc:
        fail(str(exc))
    finally:
        q.close()
    if not reqs and fmt is Format.text:
        sys.stderr.write(f"no {'' if status is StatusChoice.all else status.value + ' '}approval requests\n")
        return
    _show_requests(reqs, fmt)


def _answer(audit_db: str, request_id: int, approved: bool, note: str, by: str | None, fmt: Format) -> None:
    from aegis_cli.audit.errors import AuditError

    q = _queue(audit_db)
    try:
        req = q.answer(request_id, approved, by=by or _default_user(), note=note)
    except (ValueError, AuditError) as exc:
        fail(str(exc))
    finally:
        q.close()
    if fmt is Format.text:
        sys.stdout.write(f"#{req.id} {req.status} by {req.answered_by}\n")
    else:
        _show_requests([req], Format.jsonl)


def approve(
    request_id: int = typer.Argument(..., metavar="ID", help="The request's id (see `aegis approvals list`)."),
    note: str = typer.Option("", "--note", help="Why; kept in the audit trail."),
    by: str | None = typer.Option(None, "--by", help="Who answers (default: $AEGIS_USER or your login)."),
    audit_db: str = audit_db_option(),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
) -> None:
    """Approve a pending request: the waiting action runs."""
    _answer(audit_db, request_id, True, note, by, fmt)


def deny(
    request_id: int = typer.Argument(..., metavar="ID", help="The request's id (see `aegis approvals list`)."),
    note: str = typer.Option("", "--note", help="Why; kept in the audit trail."),
    by: str | None = typer.Option(None, "--by", help="Who answers (default: $AEGIS_USER or your login)."),
    audit_db: str = audit_db_option(),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
) -> None:
    """Deny a pending request: the waiting action does not run."""
    _answer(audit_db, request_id, False, note, by, fmt)


def register(app: typer.Typer) -> None:
    app.command("tail-audit")(tail_audit)
    app.command("export")(export)
    audit_app = typer.Typer(name="audit", help="Check and summarise the audit trail.", no_args_is_help=True)
    audit_app.command("verify")(verify)
    audit_app.command("stats")(stats)
    audit_app.command("copy")(copy)
    app.add_typer(audit_app, name="audit")
    approvals_app = typer.Typer(name="approvals", no_args_is_help=True,
                                help="Answer actions waiting for a human (from any shell, same database).")
    approvals_app.command("list")(approvals_list)
    approvals_app.command("approve")(approve)
    approvals_app.command("deny")(deny)
    app.add_typer(approvals_app, name="approvals")


