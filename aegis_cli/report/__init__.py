"""``aegis report``: compliance evidence built from the audit trail in one streaming pass.

    with build_report("aegis_audit.db", since="2026-05-01", frameworks=("hipaa",)) as report:
        render("html", report, out)     # or "md", "json"
        report.ok                       # False when the chain does not verify (the CLI exits 1)

``collect`` walks and verifies the trail, ``sections`` turns the figures into evidence per control,
``render_html``, ``render_md`` and ``render_json`` lay the same sections out.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from aegis_cli.report.sections import FRAMEWORKS, NOT_CERTIFICATION

FORMATS = ("html", "md", "json")


@dataclass
class Report:
    """The report's data (``data``: JSON-ready) and the phi accesses, streamed from a spool file."""

    data: dict[str, Any]
    facts: Any = field(repr=False)

    @property
    def ok(self) -> bool:
        return bool(self.data["integrity"]["ok"])

    def accesses(self) -> Iterator[dict[str, Any]]:
        if "hipaa" not in self.data["frameworks"]:
            return iter(())
        return self.facts.accesses()

    def close(self) -> None:
        if self.facts.spool is not None:
            self.facts.spool.close()

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_report(target: str | os.PathLike[str], *, since: str | None = None, until: str | None = None,
                 frameworks: tuple[str, ...] = FRAMEWORKS,
                 progress: Callable[[int, int], Callable[[int], None] | None] | None = None) -> Report:
    """Read the trail at ``target`` (SQLite path or PostgreSQL URL) once and build the report.

    ``since``/``until`` are in the trail's ts format (``audit.query.parse_time``). ``progress``, if
    given, is called with the number of records to read and returns a callback taking increments.
    Raises ``AuditError`` when the trail cannot be read.
    """
    from aegis_cli import __version__
    from aegis_cli.audit.trail import open_reader, shown
    from aegis_cli.report import sections
    from aegis_cli.report.collect import collect

    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        raise ValueError(f"unknown framework(s) {', '.join(sorted(unknown))}; expected {', '.join(FRAMEWORKS)}")
    chosen = tuple(x for x in FRAMEWORKS if x in frameworks)
    with open_reader(target) as reader:
        advance = progress(reader.head()[0]) if progress is not None else None
        facts = collect(reader.rows(), reader.head, since=since, until=until, progress=advance)
    data = {
        "report": "aegis compliance evidence",
        "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aegis_version": __version__,
        "trail": shown(target),
        "period": {"since": since, "until": until},
        "frameworks": list(chosen),
        "disclaimer": NOT_CERTIFICATION,
        "integrity": sections.integrity(facts),
        "sections": sections.build(facts, chosen),
    }
    return Report(data, facts)


def render(fmt: str, report: Report, out: IO[str]) -> None:
    """Write ``report`` to ``out`` as ``html``, ``md`` or ``json``."""
    if fmt == "html":
        from aegis_cli.report.render_html import render_html as fn
    elif fmt == "md":
        from aegis_cli.report.render_md import render_md as fn
    elif fmt == "json":
        from aegis_cli.report.render_json import render_json as fn
    else:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")
    fn(report, out)


__all__ = ["FORMATS", "FRAMEWORKS", "Report", "build_report", "render"]
