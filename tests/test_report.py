"""``aegis report`` over the clinic demo's month: figures equal counts computed independently from
``aegis export --jsonl``, a tampered trail says so first and exits 1, the HTML renders in Chromium
offline with every section and chart, the JSON validates against its schema."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_serve_helpers import aegis

from aegis_cli import Action, Policy
from aegis_cli.audit.trail import open_audit
from aegis_cli.engine import schemas

ROOT = Path(__file__).parent.parent
DEMO = ROOT / "examples" / "compliance"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SECTIONS = ("overview", "soc2-cc6", "soc2-cc7", "soc2-cc8", "gdpr-art30", "hipaa-312b", "hipaa-308")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh month of clinic activity, written by the demo script through the runtime."""
    tmp = tmp_path_factory.mktemp("clinic")
    r = subprocess.run([sys.executable, str(DEMO / "simulate_month.py"), "--audit-db", str(tmp / "clinic.db")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return tmp / "clinic.db"


def report_json(db: Path | str, *args: str) -> dict[str, Any]:
    r = aegis("report", "--audit-db", str(db), "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert not list(schemas.validator("report").iter_errors(data))
    return data


def exported(db: Path) -> list[dict[str, Any]]:
    r = aegis("export", "--jsonl", "--audit-db", str(db))
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def section(data: dict[str, Any], id_: str) -> dict[str, Any]:
    return next(s for s in data["sections"] if s["id"] == id_)


def table(sec: dict[str, Any], id_: str) -> list[list[Any]]:
    return next(t for t in sec["tables"] if t["id"] == id_)["rows"]


def figures(sec: dict[str, Any]) -> dict[str, Any]:
    return {f["label"]: f["value"] for f in sec["figures"]}


def in_period(recs: list[dict[str, Any]], since: str | None, until: str | None) -> list[dict[str, Any]]:
    return [r for r in recs if (since is None or r["ts"] >= since) and (until is None or r["ts"] < until)]


@pytest.mark.parametrize("period", [(None, None), ("2026-03-09T00:00:00.000000Z", "2026-03-23T00:00:00.000000Z")])
def test_report_figures_equal_independent_counts_from_the_export(demo: Path, period: tuple[Any, Any]) -> None:
    since, until = period
    args = [*(["--since", since] if since else []), *(["--until", until] if until else [])]
    data = report_json(demo, *args)
    everything = exported(demo)
    recs = in_period(everything, since, until)
    decisions = [r for r in recs if r["kind"] == "decision"]
    by_id = {r["id"]: r for r in everything if r["kind"] == "decision"}
    assert data["integrity"]["ok"] and data["integrity"]["records_total"] == len(everything)
    assert data["integrity"]["head_hash"] == everything[-1]["hash"]
    assert data["integrity"]["records_in_period"] == len(recs)
    assert (data["integrity"]["first"], data["integrity"]["last"]) == (recs[0]["ts"], recs[-1]["ts"])

    over = figures(section(data, "overview"))
    assert over["decisions"] == len(decisions)
    for a in ("auto", "approve", "block"):
        assert over[f"decisions: {a}"] == sum(d["decision"]["approval"] == a for d in decisions)
    chart = section(data, "overview")["charts"][0]
    per_day = Counter((d["ts"][:10], d["decision"]["approval"]) for d in decisions)
    for s in chart["series"]:
        assert s["values"] == [per_day[day, s["name"]] for day in chart["labels"]]

    # SOC 2 CC6: agents by system, blocks, refusals and approvers, joined by decision_id
    cc6 = section(data, "soc2-cc6")
    access = Counter((d["action"]["agent"], d["action"]["target"], d["decision"]["approval"]) for d in decisions)
    for agent, target, auto, approve, block, _ in table(cc6, "access"):
        assert (auto, approve, block) == (access[agent, target, "auto"], access[agent, target, "approve"],
                                          access[agent, target, "block"])
    blocked = Counter((d["action"]["agent"], d["action"]["type"], d["action"]["target"], d["decision"]["rule"])
                      for d in decisions if d["decision"]["approval"] == "block")
    assert {tuple(r[:4]): r[4] for r in table(cc6, "blocked")} == dict(blocked)
    answers = [r for r in recs if r["kind"] == "approval"]
    approvers = Counter((r["data"]["by"], by_id[r["decision_id"]]["decision"]["rule"],
                         r["data"]["status"] == "approved") for r in answers if r["decision_id"] in by_id)
    for who, rule, yes, no in table(cc6, "approvers"):
        assert (yes, no) == (approvers[who, rule, True], approvers[who, rule, False])
    assert figures(cc6)["approved"] == sum(r["data"]["status"] == "approved" for r in answers)

    # CC7: rules; CC8: policy changes and versions
    rules = Counter((d["decision"]["rule"], d["decision"]["approval"]) for d in decisions)
    for rule, auto, approve, block in table(section(data, "soc2-cc7"), "rules"):
        assert (auto, approve, block) == (rules[rule, "auto"], rules[rule, "approve"], rules[rule, "block"])
    changes = [r for r in recs if r["kind"] == "policy_change"]
    assert [row[0] for row in table(section(data, "soc2-cc8"), "changes")] == [r["id"] for r in changes]
    versions = Counter(d["policy_hash"] for d in decisions)
    assert {row[0]: row[1] for row in table(section(data, "soc2-cc8"), "versions")} == dict(versions)

    # GDPR: per tag
    tags: dict[str, list[dict[str, Any]]] = {}
    for d in decisions:
        for t in d["decision"].get("tags", []):
            tags.setdefault(t, []).append(d)
    rows = table(section(data, "gdpr-art30"), "tags")
    assert [r[0] for r in rows] == sorted(tags)
    for tag, n, first, last, auto, approve, block, agents, systems in rows:
        ds = tags[tag]
        assert (n, first, last) == (len(ds), ds[0]["ts"], ds[-1]["ts"])
        assert (auto, approve, block) == tuple(sum(d["decision"]["approval"] == a for d in ds)
                                               for a in ("auto", "approve", "block"))
        assert (agents, systems) == (len({d["action"]["agent"] for d in ds}), len({d["action"]["target"] for d in ds}))

    # HIPAA: every phi decision, with its approval and execution as the export links them
    phi = [d for d in decisions if "phi" in d["decision"].get("tags", [])]
    accesses = data["phi_accesses"]
    assert [a["decision_id"] for a in accesses] == [d["id"] for d in phi]
    follow = {(r["decision_id"], r["kind"]): r for r in everything if r["kind"] in ("approval", "execution")}
    for a in accesses:
        answer, run = follow.get((a["decision_id"], "approval")), follow.get((a["decision_id"], "execution"))
        assert (a["answer"] or {}).get("by") == (answer["data"]["by"] if answer else None)
        assert (a["answer"] or {}).get("status") == (answer["data"]["status"] if answer else None)
        assert (a["execution"] or {}).get("status") == (run["data"]["status"] if run else None)
    assert figures(section(data, "hipaa-312b"))["phi decisions"] == len(phi)
    if since is None:  # the whole month holds every kind of outcome the demo produces
        assert {"ran", "blocked", "denied", "timed_out"} <= {a["outcome"] for a in accesses}
        assert any(a["answer"] and a["wait_s"] > 0 for a in accesses)


def test_a_tampered_trail_is_the_first_thing_the_report_says(demo: Path, tmp_path: Path) -> None:
    db = tmp_path / "tampered.db"
    shutil.copy(demo, db)
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET body = replace(body, '\"approval\":\"block\"', '\"approval\":\"auto\"') "
                 "WHERE id = (SELECT min(id) FROM audit WHERE approval = 'block')")
    bad = conn.execute("SELECT min(id) FROM audit WHERE body LIKE '%no-bulk%' OR body LIKE '%no-external%' "
                       "AND approval = 'auto'").fetchone()[0]
    conn.commit()
    conn.close()
    for fmt in ("md", "json", "html"):
        r = aegis("report", "--audit-db", str(db), "--format", fmt)
        assert r.returncode == 1, r.stderr
        assert "chain broken at record #" in r.stderr
        if fmt == "md":
            assert r.stdout.startswith("> **CHAIN BROKEN at record #")
        elif fmt == "json":
            data = json.loads(r.stdout)
            assert data["integrity"]["ok"] is False and data["integrity"]["bad_id"] is not None
            assert data["integrity"]["bad_id"] <= bad
            assert not list(schemas.validator("report").iter_errors(data))
        else:
            body = r.stdout.split("<body>", 1)[1]
            assert body.startswith('<div class="banner bad" id="integrity-banner">CHAIN BROKEN')


def test_markdown_report_from_the_demo(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    r = aegis("report", "--audit-db", str(demo), "-o", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert text.startswith("> Chain intact: all ")
    for heading in ("## Integrity of the trail", "SOC 2 CC6.1 / CC6.3", "SOC 2 CC7.2", "SOC 2 CC8.1",
                    "GDPR Article 30", "164.312(b)", "164.308(a)(1)(ii)(D)", "### Every phi access"):
        assert heading in text
    assert text.count("not a certification") >= 8
    phi = report_json(demo)["phi_accesses"]
    rows = [line for line in text.splitlines() if line.startswith("| #")]
    assert len(rows) == len(phi) > 100


def test_only_the_chosen_frameworks(demo: Path) -> None:
    data = report_json(demo, "--framework", "gdpr")
    assert [s["id"] for s in data["sections"]] == ["overview", "gdpr-art30"] and data["phi_accesses"] == []
    assert aegis("report", "--audit-db", str(demo), "--framework", "pci").returncode == 2
    assert aegis("report", "--audit-db", str(demo), "--since", "yesterday-ish").returncode == 2
    r = aegis("report", "--audit-db", str(demo.parent / "nope.db"))
    assert r.returncode == 2 and r.stderr.startswith("aegis: ") and "Traceback" not in r.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_html_renders_offline_in_chromium(demo: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    r = aegis("report", "--audit-db", str(demo), "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html
    url = out.as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(java_script_enabled=False)
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(url)
            page.wait_for_load_state("networkidle")
            for id_ in ("integrity", *SECTIONS):
                assert page.locator(f"section#{id_}").is_visible(), id_
            charts = ["decisions-per-day", "approval-waits", "refused-per-day", "top-blocking-rules", "tag-activity"]
            for chart in charts:
                svg = page.locator(f"figure#chart-{chart} svg").first
                assert svg.is_visible(), chart
                box = svg.bounding_box()
                assert box and box["width"] > 200 and box["height"] > 50, chart
                assert svg.locator("rect").count() > 0, chart
            rows = page.locator("#hipaa-308 table tbody tr").count()
            assert rows == len(report_json(demo)["phi_accesses"])
            assert "Chain intact" in page.locator("#integrity-banner").inner_text()
            pdf = page.pdf()  # prints (headless Chromium's print-to-PDF)
            assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
        finally:
            browser.close()
    assert errors == []
    assert requests == [url]


def test_report_on_postgres_equals_sqlite(pg_url: str, tmp_path: Path) -> None:
    policy = Policy.from_yaml(DEMO / "policy.yaml")
    actions = [Action("read_chart", "ehr", {"appointment_id": "A1"}, agent="r"), Action("read_chart", "ehr", agent="r"),
               Action("read_charts_bulk", "ehr", agent="r"), Action("book_appointment", "calendar", agent="s")]
    results = []
    for target in (str(tmp_path / "a.db"), pg_url):
        with open_audit(target) as log:
            for a in actions:
                rid = log.record_decision(a, policy.evaluate(a))
                if policy.evaluate(a).approval.value == "approve":
                    log.record_event("approval", rid, {"status": "denied", "by": "dr.okafor"})
        data = report_json(target)
        assert data["integrity"]["ok"]
        results.append((data["phi_accesses"], [(s["figures"], [t["rows"] for t in s["tables"]])
                                               for s in data["sections"] if s["id"] not in ("soc2-cc8",)]))
    strip = [[{k: v for k, v in a.items() if k not in ("ts", "wait_s", "answer")} for a in r[0]] for r in results]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    assert [a["outcome"] for a in results[0][0]] == ["allowed, no execution recorded", "denied", "blocked"]


@pytest.mark.parametrize("period", [(None, None), ("2026-03-09T00:00:00.000000Z", "2026-03-23T00:00:00.000000Z")])
def test_counting_in_batches_gives_the_same_report(demo: Path, period: tuple[Any, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Decisions are counted per distinct shape and added to the figures in batches, and phi chains
    are spooled in batches: tiny batches (a flush every few records, first and last seen carried
    across them) must give the report that one batch gives."""
    import io

    from aegis_cli.report import build_report, collect, render

    def report() -> dict[str, Any]:
        out = io.StringIO()
        with build_report(demo, since=period[0], until=period[1]) as rep:
            render("json", rep, out)
        data = json.loads(out.getvalue())
        del data["generated_at"]
        return data

    whole = report()
    assert whole["phi_accesses"] and whole["integrity"]["ok"]
    monkeypatch.setattr(collect, "COMBO_CAPACITY", 2)
    monkeypatch.setattr(collect, "SPOOL_BATCH", 3)
    assert report() == whole
