"""Charts as inline SVG: no script, no font or file to fetch, and they print as they look.

Three kinds serve every chart in the report: ``stacked`` (vertical bars, one per label, series
stacked), ``bars`` (vertical, one series) and ``hbars`` (horizontal, for long labels like rule
names). Each bar carries a ``<title>`` so a reader hovering it sees the exact figure.
"""

from __future__ import annotations

from html import escape
from typing import Any

COLORS = ("#2e7d32", "#f9a825", "#c62828", "#6a1b9a", "#1565c0", "#00838f")
SERIES_COLORS = {"auto": "#2e7d32", "approve": "#f9a825", "block": "#c62828", "approval refused": "#6a1b9a"}


def _color(name: str, i: int) -> str:
    return SERIES_COLORS.get(name, COLORS[i % len(COLORS)])


def _nice(n: float) -> int:
    """A round axis maximum at or above ``n``."""
    if n <= 5:
        return 5
    step = 10 ** (len(str(int(n))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= n:
            return int(m * step)
    return int(10 * step)


def svg(chart: dict[str, Any]) -> str:
    kind = chart["kind"]
    if not chart["labels"] or not any(any(s["values"]) for s in chart["series"]):
        return f'<p class="empty">No data for "{escape(chart["title"])}" in this period.</p>'
    if kind == "hbars":
        return _hbars(chart)
    return _vbars(chart)


def _legend(chart: dict[str, Any], y: int) -> str:
    parts, x = [], 50
    for i, s in enumerate(chart["series"]):
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{_color(s["name"], i)}"/>'
                     f'<text x="{x + 14}" y="{y + 9}">{escape(s["name"])}</text>')
        x += 24 + 7 * len(s["name"])
    return "".join(parts)


def _vbars(chart: dict[str, Any]) -> str:
    labels, series = chart["labels"], chart["series"]
    width, height, left, top, bottom = 720, 240, 50, 10, 50
    plot_w, plot_h = width - left - 10, height - top - bottom
    totals = [sum(s["values"][j] for s in series) for j in range(len(labels))]
    peak = _nice(max(totals) or 1)
    slot = plot_w / len(labels)
    bar = max(1.0, slot * 0.8)
    out = [f'<svg class="chart" role="img" aria-label="{escape(chart["title"])}" viewBox="0 0 {width} {height + 16}" '
           f'width="100%" xmlns="http://www.w3.org/2000/svg">', f'<title>{escape(chart["title"])}</title>']
    for k in range(5):  # grid and axis figures
        v = peak * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    every = max(1, len(labels) // 12)
    for j, label in enumerate(labels):
        x = left + j * slot + (slot - bar) / 2
        y = top + plot_h
        for i, s in enumerate(series):
            v = s["values"][j]
            if not v:
                continue
            h = plot_h * v / peak
            y -= h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                       f'fill="{_color(s["name"], i)}"><title>{escape(str(label))} {escape(s["name"])}: {v:,}'
                       f'</title></rect>')
        if j % every == 0:
            short = str(label)[5:] if len(str(label)) == 10 and str(label)[4] == "-" else str(label)
            out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                       f'{escape(short)}</text>')
    out.append(_legend(chart, height - 14))
    out.append("</svg>")
    return "".join(out)


def _hbars(chart: dict[str, Any]) -> str:
    labels, values = chart["labels"], chart["series"][0]["values"]
    row, left, width = 22, 220, 720
    height = row * len(labels) + 10
    peak = max(values) or 1
    out = [f'<svg class="chart" role="img" aria-label="{escape(chart["title"])}" viewBox="0 0 {width} {height}" '
           f'width="100%" xmlns="http://www.w3.org/2000/svg">', f'<title>{escape(chart["title"])}</title>']
    for j, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = 5 + j * row
        w = (width - left - 80) * v / peak
        text = str(label) if len(str(label)) <= 32 else str(label)[:31] + "…"
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(text)}</text>'
                   f'<rect x="{left}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 6}" fill="{_color("", 4)}">'
                   f'<title>{escape(str(label))}: {v:,}</title></rect>'
                   f'<text x="{left + w + 6:.1f}" y="{y + 14}">{v:,}</text>')
    out.append("</svg>")
    return "".join(out)
