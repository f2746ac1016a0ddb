"""The report as Markdown, for tickets and wikis: the same sections, charts as tables of figures."""

from __future__ import annotations

from typing import IO, Any


def _md(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(columns: list[str] | tuple[str, ...], rows: Any, out: IO[str]) -> int:
    out.write("| " + " | ".join(_md(c) for c in columns) + " |\n|" + "---|" * len(columns) + "\n")
    n = 0
    for row in rows:
        out.write("| " + " | ".join(_md(v) for v in row) + " |\n")
        n += 1
    out.write("\n")
    return n


def render_md(report: Any, out: IO[str]) -> None:
    d = report.data
    integ = d["integrity"]
    p = d["period"]
    # integrity first: a broken chain is the first line anyone reads
    out.write(("> **" if not integ["ok"] else "> ") + integ["message"] + ("**\n\n" if not integ["ok"] else "\n\n"))
    out.write("# Compliance evidence from the aegis audit trail\n\n")
    out.write(f"Period: {p['since'] or 'the first record'} to {p['until'] or 'the last record'} · "
              f"Trail: `{d['trail']}` · Frameworks: {', '.join(x.upper() for x in d['frameworks'])} · "
              f"Generated {d['generated_at']} by aegis {d['aegis_version']}\n\n*{d['disclaimer']}*\n\n")
    out.write("## Integrity of the trail\n\n")
    rows = [(k, integ[key]) for k, key in (
        ("records in the trail", "records_total"), ("records verified", "records_verified"),
        ("head record", "head_id"), ("head hash", "head_hash"), ("first bad record", "bad_id"),
        ("problem", "problem"), ("records in the period", "records_in_period"), ("first", "first"),
        ("last", "last"), ("period's last record", "period_last_id"), ("its hash", "period_last_hash"))
        if integ.get(key) not in (None, "")]
    _table(("", "value"), rows, out)
    for s in d["sections"]:
        fw = f"{s['framework']} " if s["framework"] != "all" else ""
        out.write(f"## {s['title']}\n\n**Evidence for:** {fw}{s['control']}\n\n{s['evidence']}\n\n"
                  f"**Query:** `{s['query']}`\n\n*{s['disclaimer']}*\n\n")
        if s["figures"]:
            _table(("figure", "value"), ((f["label"], f["value"]) for f in s["figures"]), out)
        for c in s["charts"]:
            out.write(f"### {c['title']}\n\n")
            if not c["labels"]:
                out.write("None in this period.\n\n")
                continue
            _table(["", *(x["name"] for x in c["series"])],
                   ([label, *(x["values"][j] for x in c["series"])] for j, label in enumerate(c["labels"])), out)
        for t in s["tables"]:
            out.write(f"### {t['title']}\n\n")
            if not t["rows"]:
                out.write("None in this period.\n\n")
                continue
            notes = [t["note"]] if t.get("note") else []
            if t.get("approximate"):
                notes.append("counted with a bounded counter: figures are lower bounds")
            if notes:
                out.write(f"*{'; '.join(notes)}*\n\n")
            _table(t["columns"], t["rows"], out)
        if s.get("accesses"):
            out.write("### Every phi access and its approval chain\n\n")
            n = _table(("decision", "when", "agent", "action", "rule", "decision", "answer", "by", "wait (s)", "ran",
                        "outcome"), (_access(c) for c in report.accesses()), out)
            if not n:
                out.write("No phi-tagged actions in this period.\n\n")


def _access(c: dict[str, Any]) -> list[Any]:
    answer, run = c.get("answer") or {}, c.get("execution") or {}
    return [f"#{c['decision_id']}", c["ts"], c["agent"] or "(none)", f"{c['type']} -> {c['target']}",
            c["rule"] or "(defaults)", c["approval"], answer.get("status"), answer.get("by"),
            None if c.get("wait_s") is None else round(c["wait_s"]), run.get("status"), c["outcome"]]
