"""The report as one self-contained HTML file: inline CSS and SVG, no script, no external request.

It reads without JavaScript, opens offline, and prints to PDF cleanly (print styles keep tables
and charts from splitting and repeat table headers on each page). The phi access table is written
row by row from the spool, so a large period costs file size, not memory.
"""

from __future__ import annotations

from html import escape
from typing import IO, Any

from aegis_cli.report.charts import svg

CSS = """
:root{--ink:#1b1f24;--muted:#5b6570;--line:#d5dbe1;--bad:#b71c1c;--ok:#1b5e20}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0 auto;
max-width:1100px;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 4px;border-bottom:2px solid var(--line);
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta,.query,.disclaimer{color:var(--muted)}.query code{white-space:normal}
.banner{padding:12px 16px;border-radius:6px;margin:0 0 16px;font-weight:600}
.banner.bad{background:#ffebee;border:2px solid var(--bad);color:var(--bad)}
.banner.ok{background:#e8f5e9;border:1px solid var(--ok);color:var(--ok)}
.control{font-weight:600}
dl.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px;margin:10px 0}
dl.figures div{border:1px solid var(--line);border-radius:6px;padding:6px 10px}
dl.figures dt{color:var(--muted);font-size:12px}dl.figures dd{margin:0;font-size:18px;font-weight:600}
table{border-collapse:collapse;width:100%;margin:6px 0 14px;font-size:12.5px}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.hash{font-family:ui-monospace,monospace;font-size:11.5px;word-break:break-all}
svg.chart{max-width:720px;display:block;margin:8px 0}svg text{font-size:10px;fill:#333}
svg line.grid{stroke:#e3e7eb}
.note{color:var(--muted);font-size:12px}.empty{color:var(--muted);font-style:italic}
nav ol{columns:2}
@media print{body{max-width:none;padding:0;font-size:11px}nav{display:none}
section{break-inside:auto}h2{break-after:avoid}svg,tr,dl.figures div{break-inside:avoid}
thead{display:table-header-group}a{color:inherit;text-decoration:none}}
"""


def _cell(v: Any) -> str:
    if v is None:
        return "<td></td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, (int, float)):
        return f'<td class="n">{v:,}</td>' if isinstance(v, int) else f'<td class="n">{v:,.3f}</td>'
    text = str(v)
    if len(text) >= 64 and (text.startswith("sha256:") or all(c in "0123456789abcdef" for c in text)):
        return f'<td class="hash">{escape(text)}</td>'
    return f"<td>{escape(text)}</td>"


def _table(t: dict[str, Any], out: IO[str]) -> None:
    out.write(f'<h3 id="{escape(t["id"])}">{escape(t["title"])}</h3>')
    if not t["rows"]:
        out.write('<p class="empty">None in this period.</p>')
        return
    notes = [t["note"]] if t.get("note") else []
    if t.get("approximate"):
        notes.append("counted with a bounded counter: figures are lower bounds")
    if notes:
        out.write(f'<p class="note">{escape("; ".join(notes))}</p>')
    out.write("<table><thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in t["columns"]) + "</tr></thead><tbody>")
    for row in t["rows"]:
        out.write("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    out.write("</tbody></table>")


ACCESS_COLUMNS = ("decision", "when", "who asked", "action", "rule", "decision", "answer", "by", "wait",
                  "ran", "outcome")


_cells: dict[str, str] = {}  # short text -> its escaped cell: most cells of the phi list recur
_middles: dict[Any, str] = {}  # (type, target, rule, approval, risk, answer, by) -> their five cells
_PLAIN = frozenset((str, type(None)))


def _text_cell(v: Any) -> str:
    """``_cell(v)``, remembered for the short strings that fill the phi access list."""
    if type(v) is str and len(v) < 64:  # shorter than any hash, so never a "hash" cell
        cell = _cells.get(v)
        if cell is None:
            if len(_cells) >= 20_000:
                _cells.clear()
            cell = _cells[v] = f"<td>{escape(v)}</td>"
        return cell
    return _cell(v)


def _access_row(c: dict[str, Any]) -> str:
    answer, run = c.get("answer") or {}, c.get("execution") or {}
    origin = c.get("origin") or {}
    via = ", ".join(f"{k}={v}" for k, v in origin.items() if k in ("via", "client", "server", "file", "plan"))
    who = c["agent"] or "(none)"
    if c.get("session"):
        who += f" / {c['session']}"
    if via:
        who += f" ({via})"
    wait = "" if c.get("wait_s") is None else f"{c['wait_s']:,.0f} s"
    ran = ""
    if run:
        ran = run["status"] + (f", {run['duration_ms']:.0f} ms" if isinstance(run.get("duration_ms"), (int, float))
                               else "")
    ts = c["ts"]
    # ts differs on every row: escaped, not remembered
    when = f"<td>{escape(ts)}</td>" if type(ts) is str and len(ts) < 64 else _cell(ts)
    # the five cells from action to approver recur together: built once per combination
    # (only strings and None as keys: 1, 1.0 and True are equal keys but different cells)
    key: Any = (c["type"], c["target"], c["rule"], c["approval"], c["risk_level"], answer.get("status"),
                answer.get("by"))
    if not all(map(_PLAIN.__contains__, map(type, key))):
        key = None
    middle = _middles.get(key) if key is not None else None
    if middle is None:
        cell = _text_cell
        action = f"{c['type']} → {c['target']}"
        decision = f"{c['approval']} ({c['risk_level']})"
        middle = (cell(action) + cell(c["rule"] or "(defaults)") + cell(decision) + cell(answer.get("status"))
                  + cell(answer.get("by")))
        if key is not None:
            if len(_middles) >= 20_000:
                _middles.clear()
            _middles[key] = middle
    return (f'<tr><td class="n">#{c["decision_id"]}</td>{when}{_text_cell(who)}{middle}'
            f'<td class="n">{wait}</td>{_text_cell(ran)}{_text_cell(c["outcome"])}</tr>')


def render_html(report: Any, out: IO[str]) -> None:
    d = report.data
    integ = d["integrity"]
    period = d["period"]
    span = f"{period['since'] or 'the first record'} to {period['until'] or 'the last record'}"
    out.write('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
              '<meta name="viewport" content="width=device-width, initial-scale=1">'
              # no external fetch of any kind, even by accident: the file must stand alone
              "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
              "img-src data:\">"
              f"<title>aegis compliance evidence: {escape(span)}</title><style>{CSS}</style></head><body>")
    cls = "ok" if integ["ok"] else "bad"
    out.write(f'<div class="banner {cls}" id="integrity-banner">{escape(integ["message"])}</div>')
    out.write(f"<h1>Compliance evidence from the aegis audit trail</h1>"
              f'<p class="meta">Period: {escape(span)} · Trail: {escape(d["trail"])} · Frameworks: '
              f'{escape(", ".join(x.upper() for x in d["frameworks"]))} · Generated {escape(d["generated_at"])} '
              f'by aegis {escape(d["aegis_version"])}</p>'
              f'<p class="disclaimer"><strong>{escape(d["disclaimer"])}</strong></p>')
    out.write('<nav><h2>Contents</h2><ol><li><a href="#integrity">Integrity of the trail</a></li>')
    for s in d["sections"]:
        out.write(f'<li><a href="#{escape(s["id"])}">{escape(s["framework"] if s["framework"] != "all" else "")} '
                  f'{escape(s["control"])}</a></li>')
    out.write("</ol></nav>")
    out.write('<section id="integrity"><h2>Integrity of the trail</h2>'
              '<p class="control">Precondition for every section: the records are the ones aegis wrote.</p>'
              '<p class="query">Query: every record from #1, in id order: sha256 of each body against its hash, '
              "each prev_hash against the record before it, the last against the stored head.</p>"
              '<table><tbody>')
    for label, key in (("result", "message"), ("records in the trail", "records_total"),
                       ("records verified", "records_verified"), ("head record", "head_id"),
                       ("head hash", "head_hash"), ("first bad record", "bad_id"),
                       ("records in the period", "records_in_period"), ("first record in the period", "first"),
                       ("last record in the period", "last"), ("period's last record", "period_last_id"),
                       ("its hash", "period_last_hash")):
        if integ.get(key) is not None and integ.get(key) != "":
            out.write(f"<tr><th>{escape(label)}</th>{_cell(integ[key])}</tr>")
    out.write("</tbody></table><p class=\"note\">Anchor the head hash somewhere the trail's writers cannot "
              "reach (a ticket, a CI log); a later report whose chain includes it proves nothing before it "
              "changed.</p></section>")
    for s in d["sections"]:
        out.write(f'<section id="{escape(s["id"])}"><h2>{escape(s["title"])}</h2>'
                  f'<p class="control">Evidence for: {escape(s["framework"] + " " if s["framework"] != "all" else "")}'
                  f'{escape(s["control"])}</p><p>{escape(s["evidence"])}</p>'
                  f'<p class="query">Query: <code>{escape(s["query"])}</code></p>'
                  f'<p class="disclaimer">{escape(s["disclaimer"])}</p>')
        if s["figures"]:
            out.write('<dl class="figures">' + "".join(
                f"<div><dt>{escape(f['label'])}</dt><dd>"
                f"{escape(f'{v:,}' if isinstance((v := f['value']), int) else ('—' if v is None else str(v)))}"
                f"</dd></div>" for f in s["figures"]) + "</dl>")
        for chart in s["charts"]:
            out.write(f'<figure id="chart-{escape(chart["id"])}"><h3>{escape(chart["title"])}</h3>{svg(chart)}'
                      "</figure>")
        for t in s["tables"]:
            _table(t, out)
        if s.get("accesses"):
            out.write('<h3 id="phi-accesses">Every phi access and its approval chain</h3><table><thead><tr>'
                      + "".join(f"<th>{escape(c)}</th>" for c in ACCESS_COLUMNS) + "</tr></thead><tbody>")
            n = 0
            rows: list[str] = []
            for chain in report.accesses():
                rows.append(_access_row(chain))
                n += 1
                if len(rows) >= 1000:
                    out.write("".join(rows))
                    rows.clear()
            out.write("".join(rows) + "</tbody></table>")
            if not n:
                out.write('<p class="empty">No phi-tagged actions in this period.</p>')
        out.write("</section>")
    out.write("</body></html>\n")
